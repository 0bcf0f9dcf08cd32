"""RetrievalEvaluator: the point-in-time protocol, its metrics, and a SavedModel scored through `retrieve`."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from benchmarks import bench_quality
from components.retrieval_evaluator import executor, protocol
from contract import names
from trainer import hparams as hp
from trainer import signatures
from trainer.signatures import raw_spec_without_label
from trainer.task import build_model
from transforms import features as f

from conftest import make_raw_rows, serialize_row

pytestmark = pytest.mark.unit


def test_ranking_metrics_count_hits_and_discount_by_rank():
  metrics = protocol.ranking_metrics([b'a', b'x', b'b'] + [b'y'] * 97, {b'a', b'b', b'c', b'd'})
  assert metrics['recall_at_10'] == 0.5 and metrics['recall_at_100'] == 0.5
  ideal = sum(1 / np.log2(i + 2) for i in range(4))
  assert metrics['ndcg_at_10'] == pytest.approx((1 + 1 / np.log2(4)) / ideal)


def test_cases_split_each_users_test_ratings_in_time_and_exclude_the_past():
  test = {f.USER_ID: [b'u'] * 4 + [b'v'], f.MOVIE_ID: [b'm1', b'm2', b'm3', b'm4', b'm9'],
          f.TIMESTAMP: [10, 20, 30, 40, 15]}
  everything = {f.USER_ID: [b'u', b'u'] + test[f.USER_ID], f.MOVIE_ID: [b'm0', b'm4'] + test[f.MOVIE_ID],
                f.TIMESTAMP: [1, 2] + test[f.TIMESTAMP]}
  # v has one test rating: no history half, no case. u's first target is m3 at t=30.
  [(query_index, seen, targets)] = protocol.retrieval_cases(everything, test)
  assert query_index == 2
  assert seen == {b'm0', b'm4', b'm1', b'm2'}
  assert targets == {b'm3'}  # m4 was rated before, so it is not a target


def test_popularity_ranks_by_count_before_the_test_period_minus_seen():
  everything = {f.USER_ID: [b'a', b'b', b'c', b'a', b'u'], f.MOVIE_ID: [b'p', b'p', b'q', b'r', b'p'],
                f.TIMESTAMP: [1, 2, 3, 4, 5]}
  metrics = protocol.popularity_metrics(everything, 5, [(0, {b'p'}, {b'q'})])
  assert metrics['recall_at_10'] == 1.0
  assert metrics['ndcg_at_10'] == 1.0  # q is the most popular unseen movie


def test_model_metrics_ask_for_enough_to_fill_the_list_after_dropping_seen():
  asked = []

  def retrieve(serialized, k):
    asked.append(k)
    return [[b's1', b's2', b't']] * len(serialized)

  test = {'serialized': [b'q']}
  metrics = protocol.model_metrics(retrieve, test, [(0, {b's1', b's2'}, {b't'})])
  assert asked == [102] and metrics['recall_at_10'] == 1.0 and metrics['ndcg_at_10'] == 1.0


def _write_split(root, split, rows):
  os.makedirs(os.path.join(root, f'Split-{split}'))
  with tf.io.TFRecordWriter(os.path.join(root, f'Split-{split}', 'data.gz'), options='GZIP') as writer:
    for row in rows:
      writer.write(serialize_row(row, with_label=True))


def test_saved_model_is_scored_through_retrieve_as_in_process(tiny_transform, tmp_path):
  out_dir, _, _ = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  rows = sorted(make_raw_rows(n_rows=300, seed=3), key=lambda r: r[f.TIMESTAMP][0])
  examples = str(tmp_path / 'examples')
  for split, part in (('train', rows[:150]), ('eval', rows[150:200]), ('test', rows[200:])):
    _write_split(examples, split, part)
  tf.keras.utils.set_random_seed(0)
  model = build_model(hp.resolve({'hparams': {'model': 'retrieval', 'embedding_dim': 8, 'layer_sizes': '8'}}),
                      output)
  model.tft_layer = output.transform_features_layer()  # tracked, so saved with the model
  retrieve = signatures.make_retrieve_signature(
      model, model.tft_layer, raw_spec_without_label(output), output.vocabulary_by_name(f.MOVIE_VOCAB))
  model_dir = str(tmp_path / 'model')
  tf.saved_model.save(model, model_dir, signatures={names.RETRIEVE: retrieve})

  result = executor.evaluate(examples, model_dir)
  assert result['evaluated'] and result['cases'] > 0
  splits = {s: protocol.read_split(examples, s) for s in ('train', 'eval', 'test')}
  everything = {k: sum((splits[s][k] for s in splits), []) for k in (f.USER_ID, f.MOVIE_ID, f.TIMESTAMP)}
  cases = protocol.retrieval_cases(everything, splits['test'])
  context = protocol.list_context(splits, min(splits['test'][f.TIMESTAMP]), cases)
  assert result['model'] == bench_quality.model_retrieval_metrics(model, output, cases, splits['test'], context)
  for source in ('model', 'popularity'):
    assert 0.0 < result[source]['coverage_at_10'] <= 1.0 and result[source]['novelty_at_10'] >= 0.0
    assert {'recall_at_10_gender_spread', 'recall_at_10_age_spread', 'recall_at_10_user_spread'} <= set(result[source])
  assert 0.0 <= result['model']['recall_at_10'] <= result['model']['recall_at_100'] <= 1.0

  plain_dir = str(tmp_path / 'plain')
  tf.saved_model.save(model, plain_dir, signatures={})
  plain = executor.evaluate(examples, plain_dir)
  assert not plain['evaluated'] and 'retrieve' in plain['reason'] and 'model' not in plain
  assert plain['popularity'] == result['popularity']
  assert 'baseline' not in result['per_case'] and 'baseline_evaluated' not in result

  # A baseline is scored on the same cases: the same model gives the same figures, user by user.
  paired = executor.evaluate(examples, model_dir, baseline_dir=model_dir)
  assert paired['baseline_evaluated'] and paired['baseline'] == paired['model'] == result['model']
  assert paired['per_case']['baseline'] == paired['per_case']['model']
  without_lists = executor.evaluate(examples, model_dir, baseline_dir=plain_dir)
  assert not without_lists['baseline_evaluated'] and 'latest blessed model' in without_lists['baseline_reason']
  assert 'baseline' not in without_lists['per_case']


def test_popularity_breaks_ties_by_movie_id_whatever_the_row_order():
  everything = {f.USER_ID: [b'a', b'b', b'c', b'd'], f.MOVIE_ID: [b'z', b'y', b'y', b'z'], f.TIMESTAMP: [1, 2, 3, 4]}
  cases = [(0, set(), {b'y'})]
  reversed_rows = {k: v[::-1] for k, v in everything.items()}
  # y and z have two ratings each: y comes first either way.
  assert protocol.popularity_metrics(everything, 9, cases) == protocol.popularity_metrics(reversed_rows, 9, cases)
  assert protocol.popularity_metrics(everything, 9, cases)['ndcg_at_10'] == 1.0


def _context(**overrides):
  values = dict(raters={b'a': 8, b'b': 2, b'c': 1, b'd': 1}, users=8,
                genres={b'a': frozenset({b'Drama'}), b'b': frozenset({b'Drama', b'War'}), b'c': frozenset({b'Comedy'}),
                        b'd': frozenset()},
                head=frozenset({b'a'}), groups=[])
  return protocol.ListContext(**{**values, **overrides})


def test_list_metrics_read_self_information_genre_overlap_and_the_head():
  metrics = protocol.list_metrics([b'a', b'b', b'c'], _context())
  # -log2(8/8) = 0, -log2(2/8) = 2, -log2(1/8) = 3.
  assert metrics['novelty_at_10'] == pytest.approx(5 / 3)
  # Pairs: a-b share Drama of {Drama, War}: 1/2; a-c and b-c share nothing: 1 each.
  assert metrics['diversity_at_10'] == pytest.approx((0.5 + 1 + 1) / 3)
  assert metrics['popularity_share_at_10'] == pytest.approx(1 / 3)
  # Only the top 10 count: an eleventh movie changes nothing.
  assert protocol.list_metrics([b'a'] * 10 + [b'c'], _context())['diversity_at_10'] == 0.0


def test_score_lists_counts_coverage_once_and_reports_recall_by_group_with_the_spread():
  cases = [(0, set(), {b'a'}), (1, set(), {b'b'}), (2, set(), {b'c'})]
  groups = [{'gender': 'F', 'age': '18_24', 'user': 'new'}, {'gender': 'M', 'age': '18_24', 'user': 'new'},
            {'gender': 'M', 'age': '25_34', 'user': 'returning'}]
  lists = [[b'a', b'b'], [b'a', b'b'], [b'a', b'd']]
  per_case, means = protocol.score_lists(lists, cases, _context(groups=groups))
  assert [c['recall_at_10'] for c in per_case] == [1.0, 1.0, 0.0]
  assert means['coverage_at_10'] == 0.75  # a, b and d of four catalogue movies
  assert means['recall_at_10_gender_F'] == 1.0 and means['recall_at_10_gender_M'] == 0.5
  assert means['recall_at_10_gender_spread'] == 0.5
  assert means['recall_at_10_user_new'] == 1.0 and means['recall_at_10_user_spread'] == 1.0


def test_age_groups_follow_the_feature_tables_boundaries():
  assert [protocol.age_group(a) for a in (0, 7, 18, 24, 25, 49, 50, 56, 73)] == [
      'unknown', 'under_18', '18_24', '18_24', '25_34', '45_49', '50_55', '56_plus', '56_plus']
