"""The explain signature on tiny real SavedModels: completeness, the baseline, leave-one-out, groups from the table.

And the evaluation report's explanations of test users, which call it (components/eval_report/explanations.py).
"""
import itertools
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from components.eval_report import explanations, report
from contract import names
from trainer import explain, hparams as hp
from trainer.signatures import make_serving_signatures, save_model
from trainer.task import build_model
from transforms import features as f

from conftest import make_raw_rows, serialize_row
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


@pytest.fixture(scope='module')
def test_split(tmp_path_factory):
  """A Split-test of tiny rows as ExampleGen writes it (labels included), and the rows."""
  root = tmp_path_factory.mktemp('examples')
  rows = make_raw_rows(n_rows=120, n_users=10, seed=3)
  (root / 'Split-test').mkdir()
  with tf.io.TFRecordWriter(str(root / 'Split-test' / 'data_tfrecord-00000.gz'), 'GZIP') as writer:
    for row in rows:
      writer.write(serialize_row(row, with_label=True))
  return str(root), rows


def test_the_eval_report_explains_test_users_with_the_models_own_signatures(tiny_models, test_split):  # noqa: F811
  uri, rows = test_split
  path = tiny_models['history_ranking']
  loaded = tf.saved_model.load(path)
  found = explanations.explain_users(loaded, uri, 'test', path, n_users=3, k=3)
  assert found.reason is None and found.candidates == len({r[f.USER_ID][0] for r in rows})
  last = {}
  for row in rows:  # the user's last rating of the split, as ExampleGen wrote it
    if row[f.USER_ID][0] not in last or row[f.TIMESTAMP][0] >= last[row[f.USER_ID][0]][f.TIMESTAMP][0]:
      last[row[f.USER_ID][0]] = row
  lengths = sorted(len(r[f.HISTORY_MOVIE_IDS]) for r in last.values())
  assert [u.history_length for u in found.users] == [lengths[0], lengths[(len(lengths) - 1) // 2], lengths[-1]]
  recommend = loaded.signatures[names.RECOMMEND]
  for user in found.users:
    row = last[user.user_id.encode()]
    history = [m.decode() for m in row[f.HISTORY_MOVIE_IDS]]
    assert user.timestamp == row[f.TIMESTAMP][0] and user.history_length == len(history)
    request = {n: tf.constant([row[n][0]], s.dtype) for n, s in recommend.structured_input_signature[1].items()
               if n not in (names.K, f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS)}
    top = recommend(**request, k=tf.constant([3]), history_movie_ids=tf.constant([history + ['']]),
                    history_ratings=tf.constant([list(row[f.HISTORY_RATINGS]) + [0.0]]))
    assert [m.movie_id for m in user.recommendations] == [m.decode() for m in top[names.MOVIE_IDS].numpy()[0]]
    for movie in user.recommendations:
      e = movie.explanation
      # history_ranking's recommend ranks by the rating explain explains, movie statistics unknown in both.
      assert e['score'] == pytest.approx(movie.recommend_score, abs=1e-4)
      assert e['completeness_error'] < names.EXPLAIN_TOLERANCE
      assert {h['movie_id'] for h in e['history']} <= set(history)
      if e['history']:
        assert sum(h['share'] for h in e['history']) <= 1.0 + 1e-6
        assert all(h['contribution'] > 0 for h in e['history'])
  assert any(m.explanation['history'] for u in found.users for m in u.recommendations)
  page = report.explanations_html(found, 'test')
  for user in found.users:
    assert f'data-user="{user.user_id}"' in page
    for movie in user.recommendations:
      for h in movie.explanation['history']:
        assert f'data-because="{h["movie_id"]}" data-share="{h["share"]!r}"' in page


def test_a_model_without_explain_gets_the_reason_not_an_error(tiny_transform, tmp_path, test_split):
  uri, _ = test_split
  out_dir, _, _ = tiny_transform
  model = build_model(hp.resolve({'hparams': {'model': 'ranking', 'embedding_dim': 4, 'layer_sizes': '8'}}),
                      tft.TFTransformOutput(out_dir))
  save_model(model, str(tmp_path / 'm'), make_serving_signatures(model, tft.TFTransformOutput(out_dir)))
  found = explanations.explain_users(tf.saved_model.load(str(tmp_path / 'm')), uri, 'test', str(tmp_path / 'm'))
  assert found.users == [] and 'no explain signature' in found.reason and 'python -m trainer.explain' in found.reason
  assert 'No explanations: the candidate has no explain signature' in report.explanations_html(found, 'test')
