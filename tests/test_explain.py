"""The explain signature on tiny real SavedModels: completeness, the baseline, leave-one-out, groups from the table."""
import itertools
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from contract import names
from trainer import explain
from transforms import features as f

from test_serving import history_instance, tiny_models  # noqa: F401 (a fixture)

pytestmark = pytest.mark.unit


def test_shapley_weights_give_the_textbook_values_of_a_small_game():
  # v(S) = 1 if a in S, + 2 if b in S, + 3 if a and b are both in S; c is a dummy.
  present = explain.coalitions(3)
  value = present[:, 0] * 1.0 + present[:, 1] * 2.0 + (present[:, 0] & present[:, 1]) * 3.0
  phi = value @ explain.shapley_weights(present)
  np.testing.assert_allclose(phi, [2.5, 3.5, 0.0], atol=1e-12)
  assert phi.sum() == pytest.approx(value[-1] - value[0])


@pytest.fixture(scope='module', params=['history_ranking', 'ranking'])
def loaded(request, tiny_models):  # noqa: F811
  return tf.saved_model.load(tiny_models[request.param])


def _call(signature, instances):
  specs = signature.structured_input_signature[1]
  return {k: v.numpy() for k, v in signature(**{
      n: tf.constant([x[n] for x in instances], s.dtype) for n, s in specs.items()}).items()}


def _instances(loaded, tiny_transform):
  """Instances with histories of 0 to 4 ratings, cut to the inputs serving_default takes."""
  _, rows, _ = tiny_transform
  specs = loaded.signatures[names.SERVING_DEFAULT].structured_input_signature[1]
  histories = [(), (('1', 5.0),), (('1', 4.0), ('2', 1.0)), (('3', 5.0), ('4', 2.0), ('5', 4.0), ('6', 3.0))]
  out = []
  for i, history in zip(range(0, 40, 5), itertools.cycle(histories)):
    x = history_instance(rows, i, history)
    x['history_movie_ids'] = (x['history_movie_ids'] + [''] * 5)[:5]
    x['history_ratings'] = (x['history_ratings'] + [0.0] * 5)[:5]
    x.setdefault(f.USER_ID, rows[i][f.USER_ID][0].decode())
    out.append({n: x[n] for n in specs})
  return out


def test_attributions_sum_to_the_score_minus_the_baseline(loaded, tiny_transform):
  instances = _instances(loaded, tiny_transform)
  out = _call(loaded.signatures[names.EXPLAIN], instances)
  gap = out[names.PREDICTION_KEY] - out[names.BASELINE_SCORE]
  error = np.abs(out[names.GROUP_ATTRIBUTIONS].sum(1) - gap)
  print(f'completeness error: max {error.max():.2e} over {len(instances)} pairs; |score - baseline| up to '
        f'{np.abs(gap).max():.3f}')
  assert error.max() < names.EXPLAIN_TOLERANCE
  # Not a vacuous sum: the groups move the score.
  assert np.abs(out[names.GROUP_ATTRIBUTIONS]).max() > 1e-3


def test_the_score_is_serving_defaults_and_the_baseline_is_the_all_unknown_request(loaded, tiny_transform):
  instances = _instances(loaded, tiny_transform)
  serve = loaded.signatures[names.SERVING_DEFAULT]
  out = _call(loaded.signatures[names.EXPLAIN], instances)
  np.testing.assert_allclose(out[names.PREDICTION_KEY], _call(serve, instances)[names.PREDICTION_KEY][:, 0],
                             atol=1e-5)
  grouped = {n for members in f.groups(instances[0]).values() for n in members}
  unknown = [{n: (['' if f.BY_NAME[n].dtype == 'string' else 0.0] * len(v) if f.BY_NAME[n].shape == f.MULTI
                  else f.BY_NAME[n].unknown) if n in grouped else v for n, v in x.items()} for x in instances]
  # The timestamp's unknown is "now", so the baseline is compared within seconds of the call.
  np.testing.assert_allclose(out[names.BASELINE_SCORE], _call(serve, unknown)[names.PREDICTION_KEY][:, 0], atol=1e-4)


def test_groups_come_from_the_feature_table(loaded):
  inputs = loaded.signatures[names.SERVING_DEFAULT].structured_input_signature[1]
  out = _call(loaded.signatures[names.EXPLAIN], [
      {n: [''] if s.shape.rank == 2 and s.dtype == tf.string else [0.0] if s.shape.rank == 2 else
       ('' if s.dtype == tf.string else 0) for n, s in inputs.items()}])
  assert [g.decode() for g in out[names.GROUP_NAMES][0]] == list(f.groups(inputs))
  # Every feature the model reads is in exactly one group.
  assert sorted(n for members in f.groups(inputs).values() for n in members) == sorted(inputs)


def test_history_contributions_are_exact_leave_one_out(tiny_models, tiny_transform):  # noqa: F811
  loaded = tf.saved_model.load(tiny_models['history_ranking'])
  instance = _instances(loaded, tiny_transform)[3]  # four ratings, one pad
  out = _call(loaded.signatures[names.EXPLAIN], [instance])
  contributions = out[names.HISTORY_CONTRIBUTIONS][0]
  assert contributions[4] == 0.0
  serve = loaded.signatures[names.SERVING_DEFAULT]
  for t in range(4):
    without = dict(instance)
    without['history_movie_ids'] = [m for j, m in enumerate(instance['history_movie_ids']) if j != t] + ['']
    without['history_ratings'] = [r for j, r in enumerate(instance['history_ratings']) if j != t] + [0.0]
    expected = out[names.PREDICTION_KEY][0] - _call(serve, [without])[names.PREDICTION_KEY][0, 0]
    assert contributions[t] == pytest.approx(expected, abs=1e-5)
  assert np.abs(contributions).max() > 1e-4


def test_docs_name_every_explanation_group_and_the_tolerance():
  text = (pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'app.md').read_text()
  for group in f.groups(f.SERVING_FEATURES):
    assert f'`{group}`' in text, group
  assert f'{names.EXPLAIN_TOLERANCE:g}' in text
