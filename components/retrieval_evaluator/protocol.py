"""The point-in-time retrieval protocol, shared by the pipeline and make bench-quality.

For each test user with at least two test ratings:

* history: every rating of theirs before the test period, plus the first
  half (by time) of their test-period ratings;
* targets: the second half, minus movies already in the history;
* excluded from the ranked list: every movie in the history.

The query is the first target's own example, whose history lists hold exactly
that history (its most recent ``HISTORY_LENGTH``), so a model sees what it
would see at serving time. Metrics are Recall@10, Recall@100 and NDCG@10,
averaged over users, next to a popularity baseline: the most rated movies
before the test period.
"""
import collections
from typing import Callable, Dict, List, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf

from components.common.splits import split_files
from transforms import features as f

# (index of the query example in the test split, seen movies, target movies)
Case = Tuple[int, Set[bytes], Set[bytes]]
CUTOFFS = (10, 100)


def read_split(uri: str, split: str) -> Dict[str, list]:
  """Serialized examples of one split of an Examples artifact, and the raw fields the protocol needs."""
  spec = {f.USER_ID: tf.io.FixedLenFeature([], tf.string), f.MOVIE_ID: tf.io.FixedLenFeature([], tf.string),
          f.RATING: tf.io.FixedLenFeature([], tf.float32), f.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
          f.HISTORY_MOVIE_IDS: tf.io.VarLenFeature(tf.string), f.HISTORY_RATINGS: tf.io.VarLenFeature(tf.float32)}
  out = collections.defaultdict(list)
  for batch in tf.data.TFRecordDataset(split_files(uri, split), compression_type='GZIP').batch(8192):
    parsed = tf.io.parse_example(batch, spec)
    out['serialized'] += list(batch.numpy())
    for key in (f.USER_ID, f.MOVIE_ID, f.RATING, f.TIMESTAMP):
      out[key] += parsed[key].numpy().tolist()
    for key in (f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS):
      out[key] += tf.RaggedTensor.from_sparse(parsed[key]).to_list()
  return out


def retrieval_cases(everything: Dict[str, list], test: Dict[str, list]) -> List[Case]:
  """Point-in-time cases, one per test user with a history half and a target half.

  Args:
    everything: user ids, movie ids and timestamps of every split.
    test: the test split, as ``read_split`` gives it.
  """
  by_user = collections.defaultdict(list)
  for i, (u, t) in enumerate(zip(test[f.USER_ID], test[f.TIMESTAMP])):
    by_user[u].append((t, i))
  rated = collections.defaultdict(list)
  for u, m, t in zip(everything[f.USER_ID], everything[f.MOVIE_ID], everything[f.TIMESTAMP]):
    rated[u].append((t, m))
  cases = []
  for u, rows in by_user.items():
    rows.sort()
    if len(rows) < 2:
      continue
    first_target = rows[len(rows) // 2]
    targets = {test[f.MOVIE_ID][i] for _, i in rows[len(rows) // 2:]}
    seen = {m for t, m in rated[u] if t < first_target[0]}
    cases.append((first_target[1], seen, targets - seen))
  return [c for c in cases if c[2]]


def ranking_metrics(ranked: Sequence[bytes], targets: Set[bytes]) -> Dict[str, float]:
  """Recall@10, Recall@100 and NDCG@10 of one ranked list against its targets."""
  hits = [m in targets for m in ranked]
  out = {f'recall_at_{k}': sum(hits[:k]) / len(targets) for k in CUTOFFS}
  dcg = sum(1.0 / np.log2(i + 2) for i, hit in enumerate(hits[:10]) if hit)
  ideal = sum(1.0 / np.log2(i + 2) for i in range(min(10, len(targets))))
  out['ndcg_at_10'] = dcg / ideal
  return out


def mean_metrics(per_case: Sequence[Dict[str, float]]) -> Dict[str, float]:
  return {k: round(float(np.mean([c[k] for c in per_case])), 4) for k in per_case[0]}


def popularity_per_case(everything: Dict[str, list], test_start: int, cases: Sequence[Case]) -> List[Dict[str, float]]:
  """The baseline, case by case: most-rated movies before the test period, minus what each user has seen."""
  counts = collections.Counter(m for m, t in zip(everything[f.MOVIE_ID], everything[f.TIMESTAMP]) if t < test_start)
  # Ties by movie id, so the ranking does not depend on the order rows were read in.
  order = sorted(counts, key=lambda m: (-counts[m], m))
  per_case = []
  for _, seen, targets in cases:
    ranked = [m for m in order if m not in seen][:max(CUTOFFS)]
    per_case.append(ranking_metrics(ranked, targets))
  return per_case


def popularity_metrics(everything: Dict[str, list], test_start: int, cases: Sequence[Case]) -> Dict[str, float]:
  """``popularity_per_case`` averaged over the cases."""
  return mean_metrics(popularity_per_case(everything, test_start, cases))


def retriever(signature) -> Callable[[List[bytes], int], List[List[bytes]]]:
  """The ``retrieve`` signature (trainer/retrieval.py) as ``model_metrics`` calls it."""

  def retrieve(serialized, k):
    out = signature(examples=tf.constant(serialized), k=tf.constant(k, tf.int32))
    return out['movie_ids'].numpy().tolist()

  return retrieve


def model_per_case(retrieve: Callable[[List[bytes], int], List[List[bytes]]], test: Dict[str, list],
                   cases: Sequence[Case], batch_size: int = 256) -> List[Dict[str, float]]:
  """Scores a retriever on each case.

  Args:
    retrieve: serialized query examples and k to ranked movie id lists.
    test: the test split, as ``read_split`` gives it.
    cases: from ``retrieval_cases``.
    batch_size: queries per call.
  """
  per_case = []
  for start in range(0, len(cases), batch_size):
    batch = cases[start:start + batch_size]
    # Ask for enough to fill the list after dropping what each user has seen.
    k = max(CUTOFFS) + max(len(seen) for _, seen, _ in batch)
    lists = retrieve([test['serialized'][i] for i, _, _ in batch], k)
    for ranked, (_, seen, targets) in zip(lists, batch):
      per_case.append(ranking_metrics([m for m in ranked if m not in seen][:max(CUTOFFS)], targets))
  return per_case


def model_metrics(retrieve: Callable[[List[bytes], int], List[List[bytes]]], test: Dict[str, list],
                  cases: Sequence[Case], batch_size: int = 256) -> Dict[str, float]:
  """``model_per_case`` averaged over the cases."""
  return mean_metrics(model_per_case(retrieve, test, cases, batch_size))
