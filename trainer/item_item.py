"""Item-to-item retrieval from the user's history: what the Trainer computes from the ratings after training.

Two tables and a small model over every rating before the test period (the
train and eval splits; computed after the rating model, they rate nothing):

* EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW
  2019): with ``G = X^T X`` the movie co-occurrence counts (``X`` users x
  movies, 1 where the user rated the movie) and ``P = (G + l2 I)^-1``, the
  item-item weights are ``B = -P / diag(P)`` with a zero diagonal;
* a sequential table: how often each movie was rated within a few ratings
  after each other one (``sequence_table``), which EASE's user-level counts
  cannot tell from a rating months apart;
* a sequence model (``trainer.sequential.SequenceModel``): which movie a
  rating is, given its history, its user's gender and age bucket and the
  movies' genres, learned by a catalogue softmax.

A user is scored by each table's weighted sum of their history movies'
rows and by the model, the three standardized and blended
(``ItemItemScorer``); the tables' weights favour recent ratings (a
half-life in history positions, short for the sequential table) and high
ratings. It needs only the history and demographics a request carries, so
it serves users with no id in training (90% of the test users).
docs/models.md has what it scores on the RetrievalEvaluator's protocol and
what else was tried.

Cost at N movies: two N x N float32 tables in the SavedModel (20 MB at
ML-100K's 1,625; 800 MB at 10K) and the Trainer inverts an N x N matrix
(O(N^3): seconds at 10K). A request costs reading its T history rows of
each table (a sparse [T] x [T, N] product each) and one pass of the model
(an attention over T entries and a [d] x [d, N] product). Past about 20K
movies the dense tables stop fitting a serving replica; docs/models.md says
what replaces them (the model scales like the towers).
"""
from typing import Dict, NamedTuple, Optional

import numpy as np
from scipy import sparse
import tensorflow as tf

from transforms import features as f

# Past this many movies the dense table and its inverse are too big to build
# in the Trainer's memory (20K: 1.6 GB float32, and a 3.2 GB float64 inverse).
MAX_MOVIES = 20_000


def ease_table(users: np.ndarray, movies: np.ndarray, num_movies: int, l2: float,
               max_movies: int = MAX_MOVIES) -> np.ndarray:
  """The EASE item-item weights of a set of ratings.

  Args:
    users, movies: int ids of each rating (any user ids; movie ids are
      vocabulary ids, the most rated first). Movies at or past
      ``num_movies`` (OOV buckets) are left out.
    num_movies: the movie vocabulary size, without OOV buckets.
    l2: the ridge penalty; larger values favour popular movies less.
    max_movies: refuse a catalogue larger than this (see MAX_MOVIES).

  Returns:
    float32 [num_movies, num_movies]: row h holds how much history movie h
    votes for each candidate; the diagonal is 0.
  """
  if num_movies > max_movies:
    raise ValueError(f'The dense item-item table covers at most {max_movies} movies; the vocabulary has '
                     f'{num_movies}. Use the towers (docs/models.md says how it scales).')
  users, movies = np.asarray(users, np.int64), np.asarray(movies, np.int64)
  keep = (movies >= 0) & (movies < num_movies)
  users, movies = users[keep], movies[keep]
  if not len(users):
    raise ValueError('No ratings to compute the item-item table from: are the train and eval splits empty?')
  _, rows = np.unique(users, return_inverse=True)
  rated = sparse.csr_matrix((np.ones(len(rows)), (rows, movies)), shape=(int(rows.max()) + 1, num_movies))
  rated.data[:] = 1.0  # a user who rated a movie twice counts once
  gram = (rated.T @ rated).toarray()
  precision = np.linalg.inv(gram + l2 * np.eye(num_movies))
  table = -precision / np.diag(precision)[None, :]
  np.fill_diagonal(table, 0.0)
  return table.astype(np.float32)


def sequence_table(history_ids: np.ndarray, movies: np.ndarray, num_movies: int, window: int) -> np.ndarray:
  """How often each movie followed each other one closely: the sequential table of ``ItemItemScorer``.

  ``C[h, j]`` counts the ratings of movie j whose history holds h among its
  ``window`` most recent entries, divided by ``sqrt(n_h n_j)`` (``n`` a
  movie's ratings), so popular pairs do not crowd out the rest (cosine). It
  is built from each rating's history lists alone: no user id and no
  timestamp, so ratings by users outside the vocabulary count too.

  Args:
    history_ids: int [R, T] each rating's history, movie vocabulary ids
      oldest first, padded at the end with ``features.HISTORY_PAD_ID``.
    movies: int [R] the rated movie's vocabulary id.
    num_movies: the movie vocabulary size; OOV ids on either side are left out.
    window: how many of the most recent history entries count.

  Returns:
    float32 [num_movies, num_movies], zero on the diagonal.
  """
  history_ids, movies = np.asarray(history_ids, np.int64), np.asarray(movies, np.int64)
  present = history_ids != f.HISTORY_PAD_ID
  recent = present & (np.cumsum(present[:, ::-1], axis=1)[:, ::-1] <= window)
  known = recent & (history_ids >= 0) & (history_ids < num_movies) & ((movies >= 0) & (movies < num_movies))[:, None]
  rows, cols = np.nonzero(known)
  counts = sparse.coo_matrix((np.ones(len(rows)), (history_ids[rows, cols], movies[rows])),
                             shape=(num_movies, num_movies)).toarray()
  np.fill_diagonal(counts, 0.0)
  rated = np.maximum(np.bincount(movies[(movies >= 0) & (movies < num_movies)], minlength=num_movies), 1.0)
  return (counts / np.sqrt(rated[:, None] * rated[None, :])).astype(np.float32)


class Ratings(NamedTuple):
  """The columns of a transformed dataset the item-item stage is computed from."""
  users: np.ndarray  # [R] user vocabulary ids
  movies: np.ndarray  # [R] movie vocabulary ids
  history_ids: np.ndarray  # [R, T] as ItemItemScorer takes them
  history_ratings: np.ndarray  # [R, T]
  gender: np.ndarray  # [R] the user's gender vocabulary id
  age_bucket: np.ndarray  # [R] the user's age bucket
  genres: np.ndarray  # [R, G] the movie's genres, multi-hot


# Ratings' fields and the Transform outputs they are read from.
_RATINGS_COLUMNS = {'users': f.USER_ID, 'movies': f.MOVIE_ID, 'history_ids': f.HISTORY_MOVIE_IDS,
                    'history_ratings': f.HISTORY_RATINGS, 'gender': f.USER_GENDER, 'age_bucket': f.AGE_BUCKET,
                    'genres': f.GENRES}
_SCALARS = ('users', 'movies', 'gender', 'age_bucket')


def ratings_of(dataset: tf.data.Dataset) -> Ratings:
  """``Ratings`` of a transformed dataset (batches of feature dicts)."""
  columns = {name: [] for name in Ratings._fields}
  for batch in dataset:
    for name, feature in _RATINGS_COLUMNS.items():
      value = np.asarray(batch[f.transformed_name(feature)])
      columns[name].append(np.ravel(value) if name in _SCALARS else value)
  if not columns['users']:
    raise ValueError('The dataset is empty: no ratings to compute the item-item stage from.')
  return Ratings(**{name: np.concatenate(values) for name, values in columns.items()})


def movie_genres(ratings: Ratings, num_movies: int) -> np.ndarray:
  """float32 [num_movies, G]: each movie's genres, from its ratings' rows (a movie has one set of genres)."""
  out = np.zeros((num_movies, ratings.genres.shape[1]), np.float32)
  known = (ratings.movies >= 0) & (ratings.movies < num_movies)
  out[ratings.movies[known]] = ratings.genres[known]
  return out


class ItemItemScorer(tf.keras.layers.Layer):
  """Scores every movie for each user from their history: two item-item tables and a sequence model.

  ``score(u) = z(sum_t w_t E[h_t]) + sequence_weight * z(sum_t v_t S[h_t])
  + model_weight * z(M(h))`` over the history movies ``h_t``: ``E`` the EASE
  table (``ease_table``), ``S`` the sequential one (``sequence_table``),
  ``M`` a ``trainer.sequential.SequenceModel`` (optional), ``z`` a
  standardization over the movies of each row (the scores are on different
  scales). Each entry weighs ``0.5 ** (age_t / half_life) * max(0, 1 +
  rating_weight * (r_t - rating_center))``, with ``age_t`` 0 for the most
  recent rating; ``w_t`` and ``v_t`` differ only in their half-lives.
  Padding and movies outside the tables (OOV ids) weigh 0; a history with no
  known movie scores 0 everywhere, and ``has_history`` says so, for a
  fallback.

  Args:
    table, sequence: float32 [N, N] the EASE and sequential tables, or None
      to start at zeros (a load restores the saved values); then
      ``num_movies`` gives N.
    model: the sequence model over the same vocabulary, or None.
    half_life, sequence_half_life, sequence_weight, model_weight,
      rating_weight: as ``HParams.item_item_*`` (trainer/hparams.py)
      describes them; ``model_weight`` is 0 without a model.
    rating_center: the rating with weight 1 (the middle of the rating range).

  Call args:
    history_ids: int64 [B, T] movie vocabulary ids, oldest first, padded at
      the end with ``features.HISTORY_PAD_ID``.
    history_ratings: float32 [B, T], aligned.
    gender, age_bucket: int64 [B], for a model that reads them
      (``SequenceModel``'s ``side``).

  Returns:
    float32 [B, N] scores, row j being movie vocabulary id j.
  """

  def __init__(self, table: Optional[np.ndarray] = None, sequence: Optional[np.ndarray] = None,
               model: Optional[tf.keras.layers.Layer] = None, *, half_life: float, sequence_half_life: float,
               sequence_weight: float, model_weight: float, rating_weight: float, num_movies: Optional[int] = None,
               rating_center: float = float(np.mean(f.RATING_RANGE)), **kwargs):
    super().__init__(**kwargs)
    self.num_movies = int(table.shape[0] if table is not None else num_movies)
    self.half_life = float(half_life)
    self.sequence_half_life = float(sequence_half_life)
    self.sequence_weight = float(sequence_weight)
    self.model = model
    self.model_weight = float(model_weight) if model is not None else 0.0
    self.rating_weight = float(rating_weight)
    self.rating_center = float(rating_center)
    self.table = self._table('table', table)
    self.sequence = self._table('sequence', sequence)

  def _table(self, name: str, values: Optional[np.ndarray]) -> tf.Variable:
    if values is not None and values.shape != (self.num_movies, self.num_movies):
      raise ValueError(f'The {name} table is {values.shape}; the scorer covers {self.num_movies} movies.')
    initializer = tf.constant_initializer(values) if values is not None else 'zeros'
    return self.add_weight(name=name, shape=(self.num_movies, self.num_movies), dtype=tf.float32, trainable=False,
                           initializer=initializer)

  def weights_of(self, history_ids: tf.Tensor, history_ratings: tf.Tensor,
                 half_life: Optional[float] = None) -> tf.Tensor:
    """float32 [B, T]: each history entry's weight (0 for padding and movies outside the table)."""
    present = tf.not_equal(history_ids, f.HISTORY_PAD_ID)
    length = tf.reduce_sum(tf.cast(present, tf.float32), axis=1, keepdims=True)
    position = tf.cast(tf.range(tf.shape(history_ids)[1]), tf.float32)[None, :]
    age = tf.maximum(length - 1.0 - position, 0.0)
    recency = tf.pow(0.5, age / (self.half_life if half_life is None else half_life))
    liking = tf.nn.relu(1.0 + self.rating_weight * (history_ratings - self.rating_center))
    known = present & (history_ids >= 0) & (history_ids < self.num_movies)
    return tf.where(known, recency * liking, 0.0)

  def _votes(self, history_ids: tf.Tensor, weights: tf.Tensor, table: tf.Variable) -> tf.Tensor:
    # The weights as a sparse [B, N] times the table: the rows are read once
    # and summed in place, where a gather would first copy them into a
    # [B, T, N] tensor (half the time: 25 histories of 50 movies, a 1,682 x
    # 1,682 table, docs/serving.md). A movie twice in a history adds its row
    # twice.
    cells = tf.where(weights != 0)  # [nnz, 2]: (row, history position); padding and unknown movies weigh 0
    movies = tf.gather_nd(history_ids, cells)
    batch = tf.shape(history_ids, out_type=tf.int64)[0]
    votes = tf.SparseTensor(tf.stack([cells[:, 0], movies], axis=1), tf.gather_nd(weights, cells),
                            tf.stack([batch, self.num_movies]))
    return tf.sparse.sparse_dense_matmul(votes, table)

  def call(self, history_ids: tf.Tensor, history_ratings: tf.Tensor, gender: Optional[tf.Tensor] = None,
           age_bucket: Optional[tf.Tensor] = None) -> tf.Tensor:
    scores = _standardize(self._votes(history_ids, self.weights_of(history_ids, history_ratings), self.table))
    if self.sequence_weight:
      weights = self.weights_of(history_ids, history_ratings, self.sequence_half_life)
      scores += self.sequence_weight * _standardize(self._votes(history_ids, weights, self.sequence))
    if self.model_weight:
      scores += self.model_weight * _standardize(self.model(history_ids, history_ratings, gender, age_bucket))
    return scores

  def has_history(self, history_ids: tf.Tensor, history_ratings: tf.Tensor) -> tf.Tensor:
    """bool [B]: the history has a movie in the table with a positive weight."""
    return tf.reduce_any(self.weights_of(history_ids, history_ratings) > 0, axis=1)

  def get_config(self):
    return {**super().get_config(), 'num_movies': self.num_movies, 'half_life': self.half_life,
            'sequence_half_life': self.sequence_half_life, 'sequence_weight': self.sequence_weight,
            'model_weight': self.model_weight,
            'rating_weight': self.rating_weight, 'rating_center': self.rating_center}


def _standardize(scores: tf.Tensor) -> tf.Tensor:
  """Each row minus its mean, over its standard deviation; a constant row becomes 0."""
  mean, variance = tf.nn.moments(scores, axes=[1], keepdims=True)
  return tf.math.divide_no_nan(scores - mean, tf.sqrt(variance))


# The transformed features ``ItemItemScorer`` is called with, in its call's
# order: the history lists, then what a sequence model with side
# information reads (``trainer.sequential.Side``).
SCORER_INPUTS = tuple(f.transformed_name(name) for name in (f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS, f.USER_GENDER,
                                                            f.AGE_BUCKET))


def scorer_inputs(features: Dict[str, tf.Tensor]) -> tuple:
  """``ItemItemScorer``'s call arguments from transformed features; the user's are None where absent."""
  return tuple(features[name] for name in SCORER_INPUTS[:2]) + tuple(features.get(name) for name in SCORER_INPUTS[2:])


def scores_or_fallback(scorer: ItemItemScorer, features: Dict[str, tf.Tensor], fallback: tf.Tensor,
                       columns: Optional[np.ndarray] = None) -> tf.Tensor:
  """[B, M]: the item-item scores of each row with a usable history, else its ``fallback`` scores [B, M].

  Args:
    scorer: the item-item stage.
    features: transformed features holding the history lists (and the
      user's gender and age bucket, where the sequence model reads them).
    fallback: float32 [B, M], the model's own scores.
    columns: int [M], the movie vocabulary id of each of the M columns
      (default: column j is vocabulary id j, M = N).
  """
  inputs = scorer_inputs(features)
  scores = scorer(*inputs)
  if columns is not None:
    scores = tf.gather(scores, tf.constant(columns, tf.int64), axis=1)
  return tf.where(scorer.has_history(*inputs[:2])[:, None], scores, fallback)
