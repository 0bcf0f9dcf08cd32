"""The Evaluator's rating metrics as TFMA metrics that share one pass over the examples.

TFMA's own RMSE (a Keras metric, run through TensorFlow per slice), MSE, MAE
and mean label/prediction each turn every (example, slice) pair into labels
and predictions again: on the test split with about ten slice keys per
example, that was more than half of the Evaluator's time. Here one
preprocessor reads each example's label and prediction once, before TFMA
fans the example out to its slices, as five weighted sums; one combiner adds
them up per slice; and each metric is derived from the sums. The metrics keep
the names TFMA gives its own (``root_mean_squared_error``, ...), so
thresholds, the diff against the baseline and the report read them as
before, and ``tests/test_rating_metrics.py`` checks them against TFMA's.

A prediction that is NaN or missing makes every error metric of its slices
NaN, which no threshold passes: a broken model is not scored on the examples
it happened to predict.

``eval_config.make_eval_config`` names these classes with ``module=
'pipeline.rating_metrics'``; TFMA imports the module in the Evaluator.
"""
import math
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import config_pb2


# Metric names as TFMA writes them (its own metrics' names).
RMSE = 'root_mean_squared_error'
MAE = 'mean_absolute_error'
MSE = 'mean_squared_error'
MEAN_LABEL = 'mean_label'
MEAN_PREDICTION = 'mean_prediction'
CALIBRATION = 'calibration'
# Where each example's sums sit in the vector the preprocessor yields.
WEIGHT, LABEL, PREDICTION, ABS_ERROR, SQUARED_ERROR = range(5)
_SUMS_NAME = '_rating_sums'


def _scalar(value: np.ndarray) -> float:
  """The one value of ``value``; NaN when it is missing (TFMA passes an empty array)."""
  return float(np.asarray(value).reshape(-1)[0]) if np.size(value) else float('nan')


class _SumsPreprocessor(metric_types.Preprocessor):
  """One example's weight, weighted label, prediction, |error| and error², once per example and model."""

  def __init__(self, eval_config: Optional[config_pb2.EvalConfig], model_name: str, output_name: str,
               example_weighted: bool):
    super().__init__(name=f'{_SUMS_NAME}_preprocessor:{model_name}:{output_name}:{example_weighted}')
    self._eval_config = eval_config
    self._model_name = model_name
    self._output_name = output_name
    self._example_weighted = example_weighted

  def process(self, extracts: Dict[str, Any]) -> Iterator[np.ndarray]:
    sums = np.zeros(5)
    for label, prediction, weight in metric_util.to_label_prediction_example_weight(
        metric_util.to_standard_metric_inputs(extracts), eval_config=self._eval_config,
        model_name=self._model_name, output_name=self._output_name, example_weighted=self._example_weighted):
      label, prediction, weight = _scalar(label), _scalar(prediction), _scalar(weight)
      error = label - prediction
      sums += (weight, weight * label, weight * prediction, weight * abs(error), weight * error * error)
    yield sums


class _SumsCombiner(beam.CombineFn):
  """Adds the preprocessor's vectors of one slice."""

  def __init__(self, key: metric_types.MetricKey):
    self._key = key

  def create_accumulator(self) -> np.ndarray:
    return np.zeros(5)

  def add_input(self, accumulator: np.ndarray, element: np.ndarray) -> np.ndarray:
    accumulator += element
    return accumulator

  def merge_accumulators(self, accumulators: Iterable[np.ndarray]) -> np.ndarray:
    return np.sum(list(accumulators), axis=0)

  def extract_output(self, accumulator: np.ndarray) -> Dict[metric_types.MetricKey, np.ndarray]:
    return {self._key: accumulator}


def _ratio(numerator: float, denominator: float) -> float:
  return numerator / denominator if denominator else float('nan')


# Each metric from the slice's sums, in the order the Evaluator lists them.
FORMULAS: Dict[str, Callable[[np.ndarray], float]] = {
    RMSE: lambda s: math.sqrt(_ratio(s[SQUARED_ERROR], s[WEIGHT])),
    MAE: lambda s: _ratio(s[ABS_ERROR], s[WEIGHT]),
    MSE: lambda s: _ratio(s[SQUARED_ERROR], s[WEIGHT]),
    MEAN_LABEL: lambda s: _ratio(s[LABEL], s[WEIGHT]),
    MEAN_PREDICTION: lambda s: _ratio(s[PREDICTION], s[WEIGHT]),
    # TFMA's calibration: total weighted prediction over total weighted label.
    CALIBRATION: lambda s: _ratio(s[PREDICTION], s[LABEL]),
}


def _computations(formula: str, name: str, eval_config: Optional[config_pb2.EvalConfig] = None,
                  model_name: str = '', output_name: str = '',
                  example_weighted: bool = False) -> metric_types.MetricComputations:
  """The shared sums (TFMA keeps one copy: same name, combiner and key) and the metric derived from them."""
  sums_key = metric_types.MetricKey(name=_SUMS_NAME, model_name=model_name, output_name=output_name,
                                    example_weighted=example_weighted)
  key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                               example_weighted=example_weighted)
  compute = FORMULAS[formula]
  return [
      metric_types.MetricComputation(
          keys=[sums_key],
          preprocessors=[_SumsPreprocessor(eval_config, model_name, output_name, example_weighted)],
          combiner=_SumsCombiner(sums_key)),
      metric_types.DerivedMetricComputation(
          keys=[key], result=lambda metrics: {key: compute(metrics[sums_key])}),
  ]


class _RatingMetric(metric_types.Metric):
  FORMULA = ''

  def __init__(self, name: Optional[str] = None):
    formula = self.FORMULA

    def create(name: str = formula, eval_config=None, model_name: str = '', output_name: str = '',
               example_weighted: bool = False):
      return _computations(formula, name, eval_config, model_name, output_name, example_weighted)

    super().__init__(metric_util.merge_per_key_computations(create), name=name or formula)


def _class_name(metric: str) -> str:
  """'root_mean_squared_error' -> 'RatingRootMeanSquaredError'.

  Not TFMA's class names: a MetricConfig picks TFMA's registered classes first.
  """
  return 'Rating' + ''.join(word.capitalize() for word in metric.split('_'))


# The metric name to its class. TFMA imports a class by name from this
# module (MetricConfig's ``module`` and ``class_name``), so each is a module
# attribute too.
CLASSES = {name: type(_class_name(name), (_RatingMetric,), {'FORMULA': name, '__module__': __name__})
           for name in FORMULAS}
globals().update({cls.__name__: cls for cls in CLASSES.values()})
