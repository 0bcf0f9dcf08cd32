"""Item-item similarities from co-ratings, for the ranking model's kNN term.

Classic neighbourhood collaborative filtering (Koren, "Factor in the
Neighbors", 2010): remove a global mean and regularised user and movie biases
from every train rating, then score two movies by the cosine of their
residual columns, shrunk by how many users rated both,
``cos(i, j) * n_ij / (n_ij + shrinkage)``. On the seed's time split it takes
``history_ranking`` from test RMSE 0.9546 to 0.9452 and ``multitask`` from
0.9542 to 0.9439 (3 seeds, docs/models.md).

The tables are computed by the Trainer, in memory, from the transformed
train split (65k ratings: about a second) for training; once trained
(early stopping included), the model gets the tables of the train and eval
splits (``Similarity.refresh``), since what it scores comes after both:
``multitask``'s test RMSE 0.9439 -> 0.9416 (docs/models.md). They are
saved in the SavedModel as non-trainable weights, so serving needs nothing
beyond the history a request carries, and training and serving compute the
term with the same graph. The movie vocabulary is ranked by frequency, so
the tables cover the ``max_movies`` most-rated movies; the rest have
similarity 0.
"""
from typing import Dict, Optional, Tuple

import numpy as np
from scipy import sparse
import tensorflow as tf

from transforms import features as f

# 3,000 movies: two 36 MB float32 tables in the SavedModel.
MAX_MOVIES = 3000


def _biases(users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, num_users: int, num_movies: int,
            shrinkage: float, iterations: int = 10) -> Tuple[float, np.ndarray, np.ndarray]:
  """Global mean, user and movie biases by alternating ridge updates."""
  mean = float(ratings.mean())
  user_count = np.bincount(users, minlength=num_users)
  movie_count = np.bincount(movies, minlength=num_movies)
  user_bias, movie_bias = np.zeros(num_users), np.zeros(num_movies)
  for _ in range(iterations):
    movie_bias = np.bincount(movies, ratings - mean - user_bias[users], num_movies) / (movie_count + shrinkage)
    user_bias = np.bincount(users, ratings - mean - movie_bias[movies], num_users) / (user_count + shrinkage)
  return mean, user_bias, movie_bias


def neighbour_statistics(users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, num_users: int,
                         num_movies: int, bias_shrinkage: float = 5.0,
                         max_movies: int = MAX_MOVIES) -> Dict[str, np.ndarray]:
  """What the similarities are made of: residual dot products, co-rater counts, norms and the biases.

  Args:
    users, movies: int ids of each rating (movies ranked by frequency, so
      the first ``max_movies`` ids are the most rated); ids below
      ``num_users`` and ``num_movies``.
    ratings: the ratings, aligned.
    bias_shrinkage: pseudo-count of the bias model removed first.
    max_movies: the most movies in the tables.

  Returns:
    ``dot`` and ``co_raters`` float32 [K, K] with K = min(num_movies,
    max_movies), ``square`` [K] (the diagonal of ``dot``), ``movie_bias``
    [K], ``user_bias`` [num_users] and ``mean`` (a scalar).
  """
  users, movies = np.asarray(users, np.int64), np.asarray(movies, np.int64)
  ratings = np.asarray(ratings, np.float64)
  size = min(num_movies, max_movies)
  keep = (movies >= 0) & (movies < size) & (users >= 0) & (users < num_users)
  users, movies, ratings = users[keep], movies[keep], ratings[keep]
  if not len(ratings):
    raise ValueError('No train ratings to compute item similarities from: is the train split empty?')
  mean, user_bias, movie_bias = _biases(users, movies, ratings, num_users, size, bias_shrinkage)
  residuals = ratings - mean - user_bias[users] - movie_bias[movies]
  r = sparse.csr_matrix((residuals, (users, movies)), shape=(num_users, size))
  rated = sparse.csr_matrix((np.ones_like(residuals), (users, movies)), shape=(num_users, size))
  dot = (r.T @ r).toarray()
  return {'dot': dot.astype(np.float32), 'co_raters': (rated.T @ rated).toarray().astype(np.float32),
          'square': np.diag(dot).astype(np.float32), 'movie_bias': movie_bias.astype(np.float32),
          'user_bias': user_bias.astype(np.float32), 'mean': np.float32(mean)}


def from_dataset(dataset: tf.data.Dataset, num_users: int, num_movies: int) -> Dict[str, np.ndarray]:
  """``neighbour_statistics`` of the ratings in a transformed dataset (batches of feature dicts)."""
  users, movies, ratings = [], [], []
  for batch in dataset:
    users.append(np.ravel(batch[f.transformed_name(f.USER_ID)]))
    movies.append(np.ravel(batch[f.transformed_name(f.MOVIE_ID)]))
    ratings.append(np.ravel(batch[f.LABEL_KEY]))
  if not users:
    raise ValueError('The train split is empty: no ratings to compute item similarities from.')
  return neighbour_statistics(np.concatenate(users), np.concatenate(movies), np.concatenate(ratings),
                              num_users, num_movies)


class Similarity(tf.keras.layers.Layer):
  """Similarities of candidate movies to history movies, from ``neighbour_statistics``.

  ``s(i, h) = dot(i, h) / sqrt(square(i) square(h)) * n(i, h) / (n(i, h) + shrinkage)``,
  0 where either movie is outside the tables or ``h`` is padding.

  A train row's own user is in the tables: their rating of the candidate is
  part of ``dot(i, h)``, so a model trained on raw similarities learns to
  read its own label (test RMSE 0.979 against 0.954 without the term). In
  training the layer therefore takes the user's ratings out first (exact
  leave-one-user-out: subtract ``r_i r_h`` from ``dot``, 1 from ``n`` and
  the squares from the norms, with the residuals of the same bias model).
  Rows scored with ``training=False`` (eval, test and serving) come from
  after the train period and use the tables as they are.

  Args:
    statistics: ``neighbour_statistics`` output; the tables are constants.
    shrinkage: pseudo-count of co-raters.
  """

  def __init__(self, statistics: Dict[str, np.ndarray], shrinkage: float = 25.0, **kwargs):
    super().__init__(**kwargs)
    self.shrinkage = float(shrinkage)
    self.size = int(statistics['square'].shape[0])
    self.tables = {name: self.add_weight(name=name, shape=np.shape(value), dtype=tf.float32, trainable=False,
                                         initializer=tf.constant_initializer(value))
                   for name, value in statistics.items() if name in _TABLES}
    self.mean = float(statistics['mean'])

  def refresh(self, statistics: Dict[str, np.ndarray]):
    """Replaces the tables with ``statistics`` of more ratings (the same vocabularies, so the same shapes)."""
    for name, table in self.tables.items():
      if tuple(table.shape) != np.shape(statistics[name]):
        raise ValueError(f'The {name} table is {tuple(table.shape)}; the new statistics are '
                         f'{np.shape(statistics[name])}: were they computed with another vocabulary?')
      table.assign(statistics[name])

  def call(self, movie_ids: tf.Tensor, history_ids: tf.Tensor, history_ratings: tf.Tensor,
           mask: tf.Tensor, user_ids: Optional[tf.Tensor] = None,
           labels: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Similarities [B, T] of ``movie_ids`` [B] to ``history_ids`` [B, T].

    With ``user_ids`` and ``labels`` (train rows), the row's user is left
    out of the tables first.
    """
    size = tf.constant(self.size, tf.int64)
    covered = mask & (history_ids >= 0) & (history_ids < size) & (movie_ids[:, None] < size)
    candidate = tf.broadcast_to(tf.where(movie_ids < size, movie_ids, 0)[:, None], tf.shape(history_ids))
    history = tf.where(covered, history_ids, 0)
    cells = candidate * size + history
    t = self.tables
    dot = tf.gather(tf.reshape(t['dot'], [-1]), cells)
    co_raters = tf.gather(tf.reshape(t['co_raters'], [-1]), cells)
    square_i, square_h = tf.gather(t['square'], candidate), tf.gather(t['square'], history)
    if user_ids is not None:
      user_bias = tf.gather(t['user_bias'], user_ids)[:, None]
      own_i = labels[:, None] - self.mean - tf.gather(t['movie_bias'], candidate) - user_bias
      own_h = history_ratings - self.mean - tf.gather(t['movie_bias'], history) - user_bias
      dot -= own_i * own_h
      co_raters -= 1.0
      square_i -= own_i ** 2
      square_h -= own_h ** 2
    similarity = (dot / tf.sqrt(tf.maximum(square_i * square_h, 1e-9))
                  * tf.maximum(co_raters, 0.0) / (tf.maximum(co_raters, 0.0) + self.shrinkage))
    return tf.where(covered, similarity, 0.0)


_TABLES = ('dot', 'co_raters', 'square', 'movie_bias', 'user_bias')
