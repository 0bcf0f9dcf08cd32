"""The Evaluator's TFMA config: metrics, slices, the gate, and the slice names."""
import datetime

import pytest
import tensorflow_model_analysis as tfma

from pipeline import configs, eval_config as ec
from transforms import features as f

from conftest import raw_feature_spec

pytestmark = pytest.mark.unit


def _config(**kwargs):
  return ec.make_eval_config(configs.PipelineConfig(pipeline_root='root', serving_model_dir='serving', **kwargs))


def test_the_gate_is_on_the_overall_slice_only():
  config = _config(rmse_threshold=1.05, rmse_tolerance=0.02)
  thresholds = tfma.metrics.metric_thresholds_from_metrics_specs(config.metrics_specs, eval_config=config)
  assert {(k.name, k.is_diff) for k in thresholds} == {(ec.RMSE, False), (ec.RMSE, True)}
  for key, specs in thresholds.items():
    # A threshold on every slice would let one rare genre veto every model.
    assert [spec for spec, _ in specs] == [tfma.SlicingSpec()]
    [(_, threshold)] = specs
    if key.is_diff:
      assert threshold.absolute.value == pytest.approx(0.02)
      assert threshold.direction == tfma.MetricDirection.LOWER_IS_BETTER
    else:
      assert threshold.upper_bound.value == pytest.approx(1.05)


def test_metrics_and_slices_are_the_ones_reviewers_asked_for():
  config = _config()
  metrics = [tfma.metrics.metric_specs.metric_instance(m) for m in config.metrics_specs[0].metrics]
  assert {m.name for m in metrics} == {ec.RMSE, ec.MAE, ec.MSE, ec.MEAN_LABEL, ec.MEAN_PREDICTION, ec.CALIBRATION,
                                       ec.EXAMPLE_COUNT}
  keys = [tuple(s.feature_keys) for s in config.slicing_specs]
  assert keys[0] == ()  # overall first
  assert sorted(k for (k,) in keys[1:]) == sorted([
      f.GENRES, f.USER_GENDER, ec.AGE_BUCKET_KEY, f.USER_OCCUPATION, ec.NEW_USER_KEY, ec.POPULARITY_KEY,
      ec.WEEKDAY_KEY])
  [spec] = config.model_specs
  assert spec.preprocessing_function_names == [ec.TRANSFORM_SIGNATURE]
  assert (spec.model_type, spec.signature_name, spec.label_key) == ('tf_generic', ec.SERVING_SIGNATURE, f.LABEL_KEY)


def test_every_slice_feature_is_a_raw_feature_or_a_transform_output(tiny_transform):
  _, _, transformed = tiny_transform
  available = set(raw_feature_spec()) | set(transformed[0])
  missing = [s.key for s in ec.SLICE_FEATURES if s.key not in available]
  assert not missing, f'TFMA cannot slice on {missing}: neither raw nor produced by preprocessing_fn'


def test_slice_value_names_agree_with_what_transform_computes(tiny_transform):
  _, rows, transformed = tiny_transform
  weekday, age = ec.slice_feature(ec.WEEKDAY_KEY), ec.slice_feature(ec.AGE_BUCKET_KEY)
  for raw, out in zip(rows, transformed):
    moment = datetime.datetime.fromtimestamp(raw[f.TIMESTAMP][0], datetime.timezone.utc)
    assert weekday.value_name(int(out[ec.WEEKDAY_KEY])) == moment.strftime('%A')
    name, years = age.value_name(int(out[ec.AGE_BUCKET_KEY])), raw[f.USER_AGE][0]
    if name.startswith('under '):
      assert years < int(name.split()[1])
    elif name.endswith('+'):
      assert years >= int(name[:-1])
    else:
      low, high = (int(x) for x in name.split('-'))
      assert low <= years <= high, (years, name)
  popularity = ec.slice_feature(ec.POPULARITY_KEY)
  assert [popularity.value_name(i) for i in range(3)] == list(f.POPULARITY_NAMES)
  assert ec.slice_feature(f.GENRES).value_name(b'Drama') == 'Drama'
  with pytest.raises(KeyError, match='not a slicing feature'):
    ec.slice_feature('user_zip')


def test_fairness_is_reported_for_gender_and_age():
  assert {s.key for s in ec.SLICE_FEATURES if s.fairness} == {f.USER_GENDER, ec.AGE_BUCKET_KEY}
