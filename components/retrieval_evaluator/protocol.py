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

Beyond accuracy, of each top-10 list (``list_context`` holds what they read,
all from before the test period but the users' own features):

* ``coverage_at_10``: the share of the catalogue (movies rated before the
  test period) in at least one user's list;
* ``novelty_at_10``: the mean self-information ``-log2(raters / users)`` of
  the listed movies (Zhou et al., PNAS 2010), in bits;
* ``diversity_at_10``: intra-list diversity, the mean over pairs of listed
  movies of ``1 - Jaccard`` of their genre sets;
* ``popularity_share_at_10``: the share of listed movies in the head (the
  most rated ``features.POPULARITY_EDGES[0]`` of the catalogue);
* ``recall_at_10_<group>_<value>`` by gender, age bucket
  (``features.AGE_BOUNDARIES``) and new or returning user (in the train
  split or not), and ``recall_at_10_<group>_spread``, the largest minus the
  smallest of a group's values.
"""
import collections
import dataclasses
import itertools
import math
from typing import Callable, Dict, FrozenSet, List, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf

from components.common.splits import split_files
from transforms import features as f

# (index of the query example in the test split, seen movies, target movies)
Case = Tuple[int, Set[bytes], Set[bytes]]
CUTOFFS = (10, 100)


def read_split(uri: str, split: str, with_history: bool = False) -> Dict[str, list]:
  """Serialized examples of one split of an Examples artifact, and the raw fields the protocol needs.

  ``with_history`` adds each example's history lists (the benchmarks' own
  scorers read them; the protocol does not: turning them into Python lists
  was a third of the RetrievalEvaluator's time).
  """
  spec = {f.USER_ID: tf.io.FixedLenFeature([], tf.string), f.MOVIE_ID: tf.io.FixedLenFeature([], tf.string),
          f.RATING: tf.io.FixedLenFeature([], tf.float32), f.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
          f.USER_GENDER: tf.io.FixedLenFeature([], tf.string, default_value=b''),
          f.USER_AGE: tf.io.FixedLenFeature([], tf.int64, default_value=0), f.GENRES: tf.io.VarLenFeature(tf.string)}
  lists = [f.GENRES]
  if with_history:
    spec.update({f.HISTORY_MOVIE_IDS: tf.io.VarLenFeature(tf.string),
                 f.HISTORY_RATINGS: tf.io.VarLenFeature(tf.float32)})
    lists += [f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS]
  out = collections.defaultdict(list)
  for batch in tf.data.TFRecordDataset(split_files(uri, split), compression_type='GZIP').batch(8192):
    parsed = tf.io.parse_example(batch, spec)
    out['serialized'] += list(batch.numpy())
    for key in (f.USER_ID, f.MOVIE_ID, f.RATING, f.TIMESTAMP, f.USER_GENDER, f.USER_AGE):
      out[key] += parsed[key].numpy().tolist()
    for key in lists:
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


def popularity_lists(everything: Dict[str, list], test_start: int, cases: Sequence[Case]) -> List[List[bytes]]:
  """The baseline's top-100 lists: most-rated movies before the test period, minus what each user has seen."""
  counts = collections.Counter(m for m, t in zip(everything[f.MOVIE_ID], everything[f.TIMESTAMP]) if t < test_start)
  # Ties by movie id, so the ranking does not depend on the order rows were read in.
  order = sorted(counts, key=lambda m: (-counts[m], m))
  return [[m for m in order if m not in seen][:max(CUTOFFS)] for _, seen, _ in cases]


def popularity_per_case(everything: Dict[str, list], test_start: int, cases: Sequence[Case]) -> List[Dict[str, float]]:
  """``ranking_metrics`` of ``popularity_lists``, case by case."""
  return [ranking_metrics(ranked, targets)
          for ranked, (_, _, targets) in zip(popularity_lists(everything, test_start, cases), cases)]


def popularity_metrics(everything: Dict[str, list], test_start: int, cases: Sequence[Case]) -> Dict[str, float]:
  """``popularity_per_case`` averaged over the cases."""
  return mean_metrics(popularity_per_case(everything, test_start, cases))


def retriever(signature) -> Callable[[List[bytes], int], List[List[bytes]]]:
  """The ``retrieve`` signature (trainer/retrieval.py) as ``model_metrics`` calls it."""

  def retrieve(serialized, k):
    out = signature(examples=tf.constant(serialized), k=tf.constant(k, tf.int32))
    return out['movie_ids'].numpy().tolist()

  return retrieve


def model_lists(retrieve: Callable[[List[bytes], int], List[List[bytes]]], test: Dict[str, list],
                cases: Sequence[Case], batch_size: int = 256) -> List[List[bytes]]:
  """A retriever's top-100 list for each case, minus what the user has seen.

  Args:
    retrieve: serialized query examples and k to ranked movie id lists.
    test: the test split, as ``read_split`` gives it.
    cases: from ``retrieval_cases``.
    batch_size: queries per call.
  """
  out = []
  for start in range(0, len(cases), batch_size):
    batch = cases[start:start + batch_size]
    # Ask for enough to fill the list after dropping what each user has seen.
    k = max(CUTOFFS) + max(len(seen) for _, seen, _ in batch)
    lists = retrieve([test['serialized'][i] for i, _, _ in batch], k)
    out += [[m for m in ranked if m not in seen][:max(CUTOFFS)] for ranked, (_, seen, _) in zip(lists, batch)]
  return out


def model_per_case(retrieve: Callable[[List[bytes], int], List[List[bytes]]], test: Dict[str, list],
                   cases: Sequence[Case], batch_size: int = 256) -> List[Dict[str, float]]:
  """``ranking_metrics`` of ``model_lists``, case by case."""
  return [ranking_metrics(ranked, targets)
          for ranked, (_, _, targets) in zip(model_lists(retrieve, test, cases, batch_size), cases)]


def model_metrics(retrieve: Callable[[List[bytes], int], List[List[bytes]]], test: Dict[str, list],
                  cases: Sequence[Case], batch_size: int = 256) -> Dict[str, float]:
  """``model_per_case`` averaged over the cases."""
  return mean_metrics(model_per_case(retrieve, test, cases, batch_size))


LIST_LENGTH = 10
# The user groups Recall@10 is reported by, and each case's value.
GROUPS = ('gender', 'age', 'user')


@dataclasses.dataclass(frozen=True)
class ListContext:
  """What the beyond-accuracy metrics read (see the module docstring).

  Attributes:
    raters: movie id to how many users rated it before the test period; its
      keys are the catalogue.
    users: how many users rated anything before the test period.
    genres: movie id to its genre names.
    head: the most rated ``features.POPULARITY_EDGES[0]`` of the catalogue.
    groups: per case, group name (``GROUPS``) to the user's value.
  """
  raters: Dict[bytes, int]
  users: int
  genres: Dict[bytes, FrozenSet[bytes]]
  head: FrozenSet[bytes]
  groups: List[Dict[str, str]]


def age_group(age: int) -> str:
  """The bucket of ``features.AGE_BOUNDARIES`` an age falls in, e.g. '25_34'; 'unknown' for 0."""
  if not age:
    return 'unknown'
  edges = [int(b) for b in f.AGE_BOUNDARIES]
  below = sum(age >= e for e in edges)
  if below == 0:
    return f'under_{edges[0]}'
  return f'{edges[-1]}_plus' if below == len(edges) else f'{edges[below - 1]}_{edges[below] - 1}'


def list_context(splits: Dict[str, Dict[str, list]], test_start: int, cases: Sequence[Case]) -> ListContext:
  """``ListContext`` of the protocol's cases.

  Args:
    splits: 'train', 'eval' and 'test', as ``read_split`` gives them.
    test_start: the first test timestamp.
    cases: from ``retrieval_cases``.
  """
  pairs, genres = set(), {}
  for split in splits.values():
    for u, m, t, g in zip(split[f.USER_ID], split[f.MOVIE_ID], split[f.TIMESTAMP], split[f.GENRES]):
      genres.setdefault(m, frozenset(g))
      if t < test_start:
        pairs.add((u, m))
  raters = collections.Counter(m for _, m in pairs)
  users = {u for u, _ in pairs}
  order = sorted(raters, key=lambda m: (-raters[m], m))
  head = frozenset(order[:max(1, round(f.POPULARITY_EDGES[0] * len(order)))])
  train_users = set(splits['train'][f.USER_ID])
  test = splits['test']
  groups = [{'gender': test[f.USER_GENDER][i].decode() or 'unknown', 'age': age_group(test[f.USER_AGE][i]),
             'user': 'returning' if test[f.USER_ID][i] in train_users else 'new'} for i, _, _ in cases]
  return ListContext(dict(raters), len(users), genres, head, groups)


def list_metrics(ranked: Sequence[bytes], context: ListContext) -> Dict[str, float]:
  """Novelty, intra-list diversity and popularity share of one list's top ``LIST_LENGTH``."""
  top = list(ranked[:LIST_LENGTH])
  if not top:
    return {'novelty_at_10': 0.0, 'diversity_at_10': 0.0, 'popularity_share_at_10': 0.0}
  novelty = np.mean([-math.log2(max(context.raters.get(m, 0), 1) / max(context.users, 1)) for m in top])
  pairs = [(context.genres.get(a, frozenset()), context.genres.get(b, frozenset()))
           for a, b in itertools.combinations(top, 2)]
  diversity = np.mean([1.0 - len(a & b) / len(a | b) if a | b else 0.0 for a, b in pairs]) if pairs else 0.0
  return {'novelty_at_10': float(novelty), 'diversity_at_10': float(diversity),
          'popularity_share_at_10': float(np.mean([m in context.head for m in top]))}


def score_lists(lists: Sequence[Sequence[bytes]], cases: Sequence[Case],
                context: ListContext) -> Tuple[List[Dict[str, float]], Dict[str, float]]:
  """Every protocol metric of one method's lists.

  Returns:
    (per case: ranking and list metrics; their means, with coverage@10 and
    Recall@10 by user group and each group's spread).
  """
  per_case = [{**ranking_metrics(ranked, targets), **list_metrics(ranked, context)}
              for ranked, (_, _, targets) in zip(lists, cases)]
  means = mean_metrics(per_case) if per_case else {}
  if not per_case:
    return per_case, means
  listed = {m for ranked in lists for m in ranked[:LIST_LENGTH]}
  means['coverage_at_10'] = round(len(listed & set(context.raters)) / max(len(context.raters), 1), 4)
  for group in GROUPS:
    values = collections.defaultdict(list)
    for case, groups in zip(per_case, context.groups):
      values[groups[group]].append(case['recall_at_10'])
    recalls = {value: float(np.mean(v)) for value, v in values.items()}
    for value, recall in sorted(recalls.items()):
      means[f'recall_at_10_{group}_{value}'] = round(recall, 4)
    means[f'recall_at_10_{group}_spread'] = round(max(recalls.values()) - min(recalls.values()), 4)
  return per_case, means
