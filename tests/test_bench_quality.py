"""The quality benchmark's protocol and metrics, on hand-made cases."""
import numpy as np
import pytest

from benchmarks import bench_quality as bq
from transforms import features as f

pytestmark = pytest.mark.unit


def test_ranking_metrics_count_hits_and_discount_by_rank():
  metrics = bq._ranking_metrics([b'a', b'x', b'b'] + [b'y'] * 97, {b'a', b'b', b'c', b'd'})
  assert metrics['recall_at_10'] == 0.5 and metrics['recall_at_100'] == 0.5
  ideal = sum(1 / np.log2(i + 2) for i in range(4))
  assert metrics['ndcg_at_10'] == pytest.approx((1 + 1 / np.log2(4)) / ideal)


def test_protocol_splits_each_users_test_ratings_in_time_and_excludes_the_past():
  test = {f.USER_ID: [b'u'] * 4 + [b'v'], f.MOVIE_ID: [b'm1', b'm2', b'm3', b'm4', b'm9'],
          f.TIMESTAMP: [10, 20, 30, 40, 15]}
  everything = {f.USER_ID: [b'u', b'u'] + test[f.USER_ID], f.MOVIE_ID: [b'm0', b'm4'] + test[f.MOVIE_ID],
                f.TIMESTAMP: [1, 2] + test[f.TIMESTAMP]}
  cases = bq.retrieval_protocol(everything, test)
  # v has one test rating: no history half, no case. u's first target is m3 at t=30.
  [(query_index, seen, targets)] = cases
  assert query_index == 2
  assert seen == {b'm0', b'm4', b'm1', b'm2'}
  assert targets == {b'm3'}  # m4 was rated before, so it is not a target


def test_popularity_ranks_by_count_before_the_test_period_minus_seen():
  everything = {f.USER_ID: [b'a', b'b', b'c', b'a', b'u'], f.MOVIE_ID: [b'p', b'p', b'q', b'r', b'p'],
                f.TIMESTAMP: [1, 2, 3, 4, 5]}
  cases = [(0, {b'p'}, {b'q'})]
  metrics = bq.popularity_metrics(everything, 5, cases)
  assert metrics['recall_at_10'] == 1.0
  assert metrics['ndcg_at_10'] == 1.0  # q is the most popular unseen movie
