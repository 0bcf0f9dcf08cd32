"""What the Evaluator measures, on which slices, and when it blesses a model.

One TFMA ``EvalConfig`` for the pipeline's Evaluator, and the names the
evaluation report (``components/eval_report/``) gives its slices.

- **Metrics**: RMSE, MAE and MSE; mean label, mean prediction and their
  ratio (``calibration``); the example count. All but the count share one
  pass over the examples (``pipeline/rating_metrics.py``), under the names
  TFMA gives its own. No TFMA calibration plot: with
  every slice it doubled the Evaluator's time, so the report draws the
  prediction histogram and calibration from the candidate's predictions and
  checks their mean against TFMA's.
- **Slices**: genre, user gender, age bucket and occupation, new against
  returning users, movie popularity (head, torso, tail) and day of week. The
  raw features come from the examples; the others are Transform outputs that
  TFMA gets by calling each model's ``transform_features`` signature.
- **Gate**: on the overall slice only, RMSE under a value threshold and at
  most a tolerance above the baseline (the latest blessed model); EvalReport
  can require as well that the paired difference is not significantly worse.
- **Fairness**: the spread of RMSE across the gender and the age slices,
  which the report computes from TFMA's per-slice values.
"""
import dataclasses
import datetime
from typing import Dict, Optional, Tuple

import tensorflow_model_analysis as tfma

from pipeline import rating_metrics
from pipeline.configs import PipelineConfig
from pipeline.rating_metrics import CALIBRATION, MAE, MEAN_LABEL, MEAN_PREDICTION, MSE, RMSE  # noqa: F401
from contract import names
from transforms import features as f

# The split the Evaluator evaluates: held out in time after train and eval.
EVAL_SPLIT = 'test'
# TFMA calls the model's transform_features signature (serialized examples
# to Transform's outputs, slice-only features included) and, with
# ``tf_generic``, its serving_tf_example signature instead of
# ``model.evaluate``, which fails on a TFRS model with compiled metrics.
TRANSFORM_SIGNATURE = names.TRANSFORM_FEATURES
SERVING_SIGNATURE = names.SERVING_TF_EXAMPLE

# Transform outputs spelled by preprocessing_fn without a constant in
# transforms/features.py.
AGE_BUCKET_KEY = f.transformed_name(f.AGE_BUCKET)
WEEKDAY_KEY = f.transformed_name(f.WEEKDAY)
NEW_USER_KEY = f.transformed_name(f.NEW_USER)
POPULARITY_KEY = f.transformed_name(f.MOVIE_POPULARITY)

# Metric names as TFMA writes them.
EXAMPLE_COUNT = 'example_count'


def _age_bucket_names() -> Dict[int, str]:
  """'under 18', '18-24', ..., '56+' for the buckets of f.AGE_BOUNDARIES."""
  edges = [int(b) for b in f.AGE_BOUNDARIES]
  names = {0: f'under {edges[0]}'}
  for i, (low, high) in enumerate(zip(edges, edges[1:]), start=1):
    names[i] = f'{low}-{high - 1}'
  names[len(edges)] = f'{edges[-1]}+'
  return names


# Transform's weekday_xf: 0 is Monday (UTC).
_WEEKDAY_NAMES = {i: datetime.date(2024, 1, 1 + i).strftime('%A') for i in range(7)}


@dataclasses.dataclass(frozen=True)
class SliceFeature:
  """A feature the Evaluator slices on, and how the report names its values.

  Attributes:
    key: the raw or transformed feature name TFMA slices on.
    title: what the report calls the feature.
    value_names: readable names of coded values (e.g. age bucket indices);
      None when the values are readable as they are.
    fairness: report the spread of RMSE across this feature's slices.
  """
  key: str
  title: str
  value_names: Optional[Dict[int, str]] = None
  fairness: bool = False

  def value_name(self, value) -> str:
    if self.value_names is not None and isinstance(value, int):
      return self.value_names.get(value, str(value))
    return value.decode() if isinstance(value, bytes) else str(value)


# In the order the report shows them. Each adds one slice per value: 19
# genres (a movie with several counts in each), 2 genders, 7 age buckets,
# 21 occupations, 2, 3 and 7: about 60 slices.
SLICE_FEATURES: Tuple[SliceFeature, ...] = (
    SliceFeature(f.GENRES, 'Genre'),
    SliceFeature(f.USER_GENDER, 'User gender', fairness=True),
    SliceFeature(AGE_BUCKET_KEY, 'User age', _age_bucket_names(), fairness=True),
    SliceFeature(f.USER_OCCUPATION, 'User occupation'),
    SliceFeature(NEW_USER_KEY, 'New or returning user', {0: 'returning', 1: 'new (not in train)'}),
    SliceFeature(POPULARITY_KEY, 'Movie popularity', dict(enumerate(f.POPULARITY_NAMES))),
    SliceFeature(WEEKDAY_KEY, 'Day of week (UTC)', _WEEKDAY_NAMES),
)


def slice_feature(key: str) -> SliceFeature:
  """The SliceFeature of ``key``; raises KeyError for a feature not sliced on."""
  for feature in SLICE_FEATURES:
    if feature.key == key:
      return feature
  raise KeyError(f'{key!r} is not a slicing feature; these are: {[s.key for s in SLICE_FEATURES]}')


def rmse_threshold(value_threshold: float, tolerance: Optional[float]) -> tfma.MetricThreshold:
  """RMSE below ``value_threshold`` and, with a ``tolerance``, at most that above the baseline's.

  Without a tolerance there is no change threshold: TFMA needs a baseline
  model for one, and a pipeline without the Resolver has none.
  """
  change = None if tolerance is None else tfma.GenericChangeThreshold(
      direction=tfma.MetricDirection.LOWER_IS_BETTER, absolute={'value': tolerance})
  return tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(upper_bound={'value': value_threshold}),
      change_threshold=change)


def make_eval_config(config: PipelineConfig) -> tfma.EvalConfig:
  """The Evaluator's TFMA config: metrics, slices and the blessing gate.

  Args:
    config: the pipeline settings; ``rmse_threshold`` and ``rmse_tolerance``
      (None: no change threshold) set TFMA's part of the gate.

  Returns:
    An EvalConfig for one model; TFX's Evaluator adds the baseline's spec.
  """
  # A MetricConfig's plain ``threshold`` applies to every slice, and a small
  # slice (a rare genre) would then veto every model: gate the overall slice.
  tolerance = config.rmse_tolerance if config.baseline_resolver else None  # None: no change threshold
  gate = tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()],
                                      threshold=rmse_threshold(config.rmse_threshold, tolerance))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(
          model_type='tf_generic', signature_name=SERVING_SIGNATURE,
          preprocessing_function_names=[TRANSFORM_SIGNATURE],
          label_key=f.LABEL_KEY, prediction_key=names.PREDICTION_KEY)],
      slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[s.key]) for s in SLICE_FEATURES],
      metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name='ExampleCount')] + [
          tfma.MetricConfig(class_name=cls.__name__, module=rating_metrics.__name__,
                            per_slice_thresholds=[gate] if name == RMSE else [])
          for name, cls in rating_metrics.CLASSES.items()])])
