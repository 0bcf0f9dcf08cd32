"""Item-to-item retrieval methods on the RetrievalEvaluator's protocol: what docs/models.md's table holds.

Reads one pipeline run's ExampleGen splits (``--output-root``, as
bench-quality does), builds each method's item-item table from the ratings
the Trainer reads (train and eval), scores every case from the history
lists of its query example (what ``recommend`` and ``retrieve`` see) and
prints the protocol's metrics, accuracy and beyond
(components/retrieval_evaluator/protocol.py). The shipped stage is scored
through ``trainer.item_item.ItemItemScorer`` itself, the other methods in
numpy. ``--mmr`` adds the diversity trade-off: MMR over genres on the
shipped lists. The towers are scored by bench-quality ("towers alone").

  python -m benchmarks.bench_item_item --output-root /tmp/main-run/out --mmr
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
from typing import Dict, List, Tuple  # noqa: E402

import numpy as np  # noqa: E402
from scipy import sparse  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import bench_quality  # noqa: E402
from components.retrieval_evaluator import protocol  # noqa: E402
from trainer import hparams, item_item, sequential, task  # noqa: E402
from transforms import features as f  # noqa: E402

# The sequence model's gender ids here: 1 + the index in the feature contract's domain, 0 unknown.
GENDERS = tuple(g.encode() for g in f.GENDERS)
KEYS = ('recall_at_10', 'recall_at_100', 'ndcg_at_10', 'coverage_at_10', 'novelty_at_10', 'diversity_at_10',
        'popularity_share_at_10')


class Data:
  """The protocol's cases as arrays: the ratings matrix, each case's history and what it must leave out.

  The ratings are those the Trainer computes its tables from: every split
  Transform analyzes (``features.ANALYZED_SPLITS``), before the test period.
  """

  def __init__(self, splits: Dict[str, Dict[str, list]]):
    self.splits, test = splits, splits['test']
    self.ratings = {k: sum((splits[s][k] for s in f.ANALYZED_SPLITS), [])
                    for k in (f.USER_ID, f.MOVIE_ID, f.TIMESTAMP, f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS,
                              f.USER_GENDER, f.USER_AGE)}
    everything = {k: sum((splits[s][k] for s in splits), []) for k in (f.USER_ID, f.MOVIE_ID, f.TIMESTAMP)}
    self.cases = protocol.retrieval_cases(everything, test)
    self.test_start = min(test[f.TIMESTAMP])
    self.context = protocol.list_context(splits, self.test_start, self.cases)
    self.everything = everything
    counts = collections.Counter(self.ratings[f.MOVIE_ID])
    # The movie vocabulary's order: most rated first, ties by id.
    self.movies = sorted(counts, key=lambda m: (-counts[m], m))
    self.index = {m: i for i, m in enumerate(self.movies)}
    users = {u: i for i, u in enumerate(dict.fromkeys(self.ratings[f.USER_ID]))}
    self.users = np.array([users[u] for u in self.ratings[f.USER_ID]])
    self.items = np.array([self.index[m] for m in self.ratings[f.MOVIE_ID]])
    self.rated = sparse.csr_matrix((np.ones(len(self.users)), (self.users, self.items)),
                                   shape=(len(users), len(self.movies)))
    self.rated.data[:] = 1.0
    self.rating_history_ids = self.padded(self.ratings[f.HISTORY_MOVIE_IDS])
    self.count = np.asarray(self.rated.sum(0)).ravel()
    # Each case's history as the query example holds it: ids, ratings, age (0 = most recent).
    self.history = []
    for i, _, _ in self.cases:
      ids, ratings = test[f.HISTORY_MOVIE_IDS][i], test[f.HISTORY_RATINGS][i]
      known = [(self.index[m], r, len(ids) - 1 - p) for p, (m, r) in enumerate(zip(ids, ratings)) if m in self.index]
      self.history.append(np.array(known, dtype=float).reshape(-1, 3))

  def padded(self, histories: List[List[bytes]]) -> np.ndarray:
    """int [R, HISTORY_LENGTH]: history lists as vocabulary ids, padded at the end; unknown movies get an OOV id."""
    out = np.full((len(histories), f.HISTORY_LENGTH), f.HISTORY_PAD_ID, np.int64)
    for r, ids in enumerate(histories):
      ids = ids[-f.HISTORY_LENGTH:]
      out[r, :len(ids)] = [self.index.get(m, len(self.movies)) for m in ids]
    return out

  @staticmethod
  def padded_ratings(ratings: List[List[float]]) -> np.ndarray:
    """float32 [R, HISTORY_LENGTH]: history ratings aligned with ``padded``'s ids."""
    out = np.zeros((len(ratings), f.HISTORY_LENGTH), np.float32)
    for r, values in enumerate(ratings):
      values = values[-f.HISTORY_LENGTH:]
      out[r, :len(values)] = values
    return out

  @staticmethod
  def demographics(genders: List[bytes], ages: List[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Gender ids (0 unknown) and Transform's age buckets, as the sequence model takes them."""
    return (np.array([GENDERS.index(g) + 1 if g in GENDERS else 0 for g in genders], np.int64),
            np.digitize(ages, f.AGE_BOUNDARIES).astype(np.int64))

  def sequence_model(self, params: hparams.HParams) -> sequential.SequenceModel:
    """``sequential.fit`` on the ratings, as the Trainer fits it."""
    genres = np.zeros((len(self.movies), len(f.GENRE_NAMES)), np.float32)
    for m, i in self.index.items():
      genres[i] = [g.encode() in self.context.genres.get(m, ()) for g in f.GENRE_NAMES]
    side = sequential.Side(genres, len(GENDERS) + 1)
    return sequential.fit(self.rating_history_ids, self.padded_ratings(self.ratings[f.HISTORY_RATINGS]),
                          self.items, len(self.movies), params.item_item_model_dim, params.item_item_model_epochs,
                          params.seed, side, *self.demographics(self.ratings[f.USER_GENDER],
                                                                self.ratings[f.USER_AGE]))

  def sequence_table(self, window: int) -> np.ndarray:
    """``item_item.sequence_table``, as the Trainer computes it."""
    return item_item.sequence_table(self.rating_history_ids, self.items, len(self.movies), window)

  def query_scores(self, score) -> np.ndarray:
    """[cases, movies]: ``score(ids, ratings, gender, age_bucket)`` of each case's query example.

    The history is padded as the signatures pad it.
    """
    test, rows = self.splits['test'], [i for i, _, _ in self.cases]
    ids = self.padded([test[f.HISTORY_MOVIE_IDS][i] for i in rows])
    ratings = self.padded_ratings([test[f.HISTORY_RATINGS][i] for i in rows])
    users = self.demographics([test[f.USER_GENDER][i] for i in rows], [test[f.USER_AGE][i] for i in rows])
    return score(ids, ratings, *users).numpy()

  def user_scores(self, table: np.ndarray, half_life=None, rating_weight=0.0) -> np.ndarray:
    """[cases, movies]: each case's history rows of ``table``, weighted as ``ItemItemScorer`` weighs them."""
    out = np.zeros((len(self.cases), len(self.movies)))
    for c, h in enumerate(self.history):
      if not len(h):
        continue
      weights = np.ones(len(h)) if half_life is None else 0.5 ** (h[:, 2] / half_life)
      weights = weights * np.maximum(0.0, 1.0 + rating_weight * (h[:, 1] - np.mean(f.RATING_RANGE)))
      out[c] = weights @ table[h[:, 0].astype(int)]
    return out

  def lists(self, scores: np.ndarray) -> List[List[bytes]]:
    out = []
    for s, (_, seen, _) in zip(scores, self.cases):
      order = np.argsort(-s, kind='stable')
      out.append([self.movies[j] for j in order if self.movies[j] not in seen][:max(protocol.CUTOFFS)])
    return out

  def score(self, lists) -> Dict[str, float]:
    return protocol.score_lists(lists, self.cases, self.context)[1]


def cooccurrence(data: Data, alpha: float, beta: float) -> np.ndarray:
  """``C[h, j] / (n_h^alpha n_j^beta)``: cosine at 0.5, 0.5; conditional probability P(j | h) at 1, 0."""
  counts = (data.rated.T @ data.rated).toarray()
  np.fill_diagonal(counts, 0.0)
  n = np.maximum(data.count, 1.0)
  return counts / (n[:, None] ** alpha * n[None, :] ** beta)


def time_ordered_cooccurrence(data: Data, window: int, alpha=0.5, beta=0.5) -> np.ndarray:
  """Co-occurrence of h and a movie the user rated within ``window`` ratings after it (in time)."""
  by_user = collections.defaultdict(list)
  for u, m, t in zip(data.ratings[f.USER_ID], data.ratings[f.MOVIE_ID], data.ratings[f.TIMESTAMP]):
    by_user[u].append((t, data.index[m]))
  counts = np.zeros((len(data.movies),) * 2)
  for rows in by_user.values():
    order = np.array([j for _, j in sorted(rows)])
    for d in range(1, window + 1):
      np.add.at(counts, (order[:-d], order[d:]), 1.0)
  np.fill_diagonal(counts, 0.0)
  n = np.maximum(data.count, 1.0)
  return counts / (n[:, None] ** alpha * n[None, :] ** beta)


def rp3beta(data: Data, beta: float) -> np.ndarray:
  """RP3beta (Paudel et al., 2017): a two-step walk movie -> user -> movie, damped by the target's popularity."""
  per_user = np.asarray(data.rated.sum(1)).ravel()
  walk = ((sparse.diags(1 / np.maximum(data.count, 1)) @ data.rated.T)
          @ (sparse.diags(1 / np.maximum(per_user, 1)) @ data.rated)).toarray()
  np.fill_diagonal(walk, 0.0)
  return walk / np.maximum(data.count, 1.0)[None, :] ** beta


def zscore(a: np.ndarray) -> np.ndarray:
  return (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-12)


def mmr(data: Data, scores: np.ndarray, weight: float, pool: int = 100) -> List[List[bytes]]:
  """Maximal marginal relevance over genres: greedily ``(1 - w) relevance - w max genre Jaccard to the list``.

  Relevance is the score min-max scaled over each case's ``pool`` best
  unseen movies; the first 10 are re-ranked, the rest keep their order.
  """
  out = []
  for ranked, s in zip(data.lists(scores), scores):
    ranked = ranked[:pool]
    rel = np.array([s[data.index[m]] for m in ranked])
    rel = (rel - rel.min()) / (rel.max() - rel.min() + 1e-12)
    genres = [data.context.genres.get(m, frozenset()) for m in ranked]
    chosen, left, closest = [], list(range(len(ranked))), np.zeros(len(ranked))
    while left and len(chosen) < protocol.LIST_LENGTH:
      best = max(left, key=lambda j: (1 - weight) * rel[j] - weight * closest[j])
      chosen.append(best)
      left.remove(best)
      for j in left:
        union = genres[j] | genres[best]
        closest[j] = max(closest[j], len(genres[j] & genres[best]) / len(union) if union else 0.0)
    out.append([ranked[j] for j in chosen] + [ranked[j] for j in left])
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--output-root', required=True, help='a pipeline run, as bench-quality --output-root')
  parser.add_argument('--mmr', action='store_true', help='the diversity trade-off on the shipped method')
  args = parser.parse_args(argv)
  examples_uri, _, _ = bench_quality._reference_run(args.output_root, '')
  data = Data({s: protocol.read_split(examples_uri, s, with_history=True) for s in ('train', 'eval', 'test')})
  params = hparams.HParams()
  before = dict(half_life=3.5, rating_weight=params.item_item_rating_weight)  # the stage before the sequential table
  ease = item_item.ease_table(data.users, data.items, len(data.movies), l2=params.item_item_l2)
  sequence = data.sequence_table(params.item_item_sequence_window)
  tf.keras.utils.set_random_seed(params.seed)
  model = data.sequence_model(params)

  def scorer(table=ease, **overrides):
    weights = {**task.item_item_weights(params), **overrides}
    return data.query_scores(item_item.ItemItemScorer(table, sequence, model, **weights))

  methods = {'popularity': lambda: data.score(protocol.popularity_lists(data.everything, data.test_start, data.cases))}

  def add(name, scores):
    methods[name] = lambda: data.score(data.lists(scores()))

  add('cosine co-occurrence', lambda: data.user_scores(cooccurrence(data, 0.5, 0.5)))
  add('cosine, recency half-life 3.5 + rating weight', lambda: data.user_scores(cooccurrence(data, 0.5, 0.5),
                                                                                **before))
  add('conditional probability P(j given h)', lambda: data.user_scores(cooccurrence(data, 1.0, 0.0), **before))
  add('P(j given h) / n_j^0.5 (popularity damping)', lambda: data.user_scores(cooccurrence(data, 1.0, 0.5), **before))
  add('sequential co-occurrence, window 20', lambda: data.user_scores(time_ordered_cooccurrence(data, 20), **before))
  add('RP3beta, beta 0.5', lambda: data.user_scores(rp3beta(data, 0.5), **before))
  for l2 in (300.0, 3000.0):
    add(f'EASE l2 {l2:g}', lambda l2=l2: data.user_scores(item_item.ease_table(data.users, data.items,
                                                                                len(data.movies), l2), **before))
  add('EASE l2 1000, no recency or rating weight', lambda: data.user_scores(ease))
  add('EASE l2 1000 (shipped before)', lambda: data.user_scores(ease, **before))
  add('EASE + RP3beta (z-scores, 1:1)', lambda: zscore(data.user_scores(ease, **before))
      + zscore(data.user_scores(rp3beta(data, 0.5), **before)))
  popularity = np.log1p(np.tile(data.count, (len(data.cases), 1)))
  add('EASE + 0.3 popularity (z-scores)', lambda: zscore(data.user_scores(ease, **before)) + 0.3 * zscore(popularity))
  add(f'EASE, half-life {params.item_item_half_life:g}', lambda: scorer(sequence_weight=0.0, model_weight=0.0))
  add(f'sequential table alone (window {params.item_item_sequence_window}, half-life '
      f'{params.item_item_sequence_half_life:g})',
      lambda: data.user_scores(sequence, half_life=params.item_item_sequence_half_life,
                               rating_weight=params.item_item_rating_weight))
  add('EASE half-life 3.5 + 0.5 sequential', lambda: scorer(half_life=3.5, model_weight=0.0))
  add('EASE + 1.0 sequential', lambda: scorer(sequence_weight=1.0, model_weight=0.0))
  add(f'EASE + {params.item_item_sequence_weight:g} sequential', lambda: scorer(model_weight=0.0))
  add(f'sequence model alone ({params.item_item_model_epochs} epochs)', lambda: data.query_scores(model))
  for weight in (1.0, 2.5):
    add(f'EASE + {params.item_item_sequence_weight:g} sequential + {weight:g} sequence model',
        lambda weight=weight: scorer(model_weight=weight))
  add(f'EASE + {params.item_item_sequence_weight:g} sequential + {params.item_item_model_weight:g} sequence model '
      '(shipped)', scorer)
  add('deliberately weak: EASE l2 0.001 alone (tests/test_pipeline_e2e.py)',
      lambda: scorer(item_item.ease_table(data.users, data.items, len(data.movies), l2=1e-3), sequence_weight=0.0,
                     model_weight=0.0))
  results = {}
  for name, run in methods.items():
    results[name] = {k: run_result for k, run_result in run().items() if k in KEYS}
    print(f'| {name} | ' + ' | '.join(f'{results[name][k]:.4f}' for k in KEYS) + ' |', flush=True)
  if args.mmr:
    scores = scorer()
    for weight in (0.0, 0.2, 0.4, 0.6):
      metrics = data.score(mmr(data, scores, weight))
      results[f'MMR weight {weight}'] = {k: metrics[k] for k in KEYS}
      print(f'| MMR over genres, weight {weight} | ' + ' | '.join(f'{metrics[k]:.4f}' for k in KEYS) + ' |',
            flush=True)
  print(json.dumps(results, indent=1))


if __name__ == '__main__':
  main()
