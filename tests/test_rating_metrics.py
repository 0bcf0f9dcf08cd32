"""The Evaluator's one-pass rating metrics give what TFMA's own metrics give, slice by slice."""
import numpy as np
import pandas as pd
import pytest
import tensorflow_model_analysis as tfma

from pipeline import eval_config as ec, rating_metrics

pytestmark = pytest.mark.unit

# TFMA's own metric for each of ours (RMSE is the Keras metric it falls back to).
TFMA_CLASSES = {ec.RMSE: 'RootMeanSquaredError', ec.MSE: 'MeanSquaredError', ec.MAE: 'MeanAbsoluteError',
                ec.MEAN_LABEL: 'MeanLabel', ec.MEAN_PREDICTION: 'MeanPrediction', ec.CALIBRATION: 'Calibration'}


def _evaluate(frame, metrics):
  config = tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(label_key='label', prediction_key='prediction')],
      slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=['group'])],
      metrics_specs=[tfma.MetricsSpec(metrics=metrics)])
  result = tfma.analyze_raw_data(frame, config)
  return {slice_key: {name: value.get('doubleValue') for name, value in by_output[''][''].items()}
          for slice_key, by_output in result.slicing_metrics}


def test_each_metric_matches_tfmas_own_on_every_slice():
  rng = np.random.default_rng(0)
  n = 600
  frame = pd.DataFrame({'label': rng.integers(1, 6, n).astype(float),
                        'prediction': rng.uniform(1, 5, n),
                        'group': rng.choice(['a', 'b', 'c'], n, p=[0.7, 0.25, 0.05])})
  ours = _evaluate(frame, [tfma.MetricConfig(class_name=cls.__name__, module=rating_metrics.__name__)
                           for cls in rating_metrics.CLASSES.values()])
  theirs = _evaluate(frame, [tfma.MetricConfig(class_name=name) for name in TFMA_CLASSES.values()])
  assert set(ours) == set(theirs) and len(ours) == 4  # overall and three groups
  for slice_key, metrics in theirs.items():
    for name in TFMA_CLASSES:
      assert ours[slice_key][name] == pytest.approx(metrics[name], rel=1e-5), (slice_key, name)
  # And against numpy, for one slice.
  small = frame[frame.group == 'c']
  assert ours[(('group', 'c'),)][ec.RMSE] == pytest.approx(np.sqrt(((small.label - small.prediction) ** 2).mean()))


def test_a_nan_prediction_makes_the_errors_nan_not_skipped():
  frame = pd.DataFrame({'label': [4.0, 3.0, 5.0], 'prediction': [4.0, float('nan'), 4.5], 'group': ['a'] * 3})
  ours = _evaluate(frame, [tfma.MetricConfig(class_name=cls.__name__, module=rating_metrics.__name__)
                           for cls in rating_metrics.CLASSES.values()])
  overall = ours[()]
  # TFMA's JSON spells a NaN metric 'NaN'.
  assert overall[ec.RMSE] == overall[ec.MAE] == overall[ec.MEAN_PREDICTION] == 'NaN'
  assert overall[ec.MEAN_LABEL] == pytest.approx(4.0)
