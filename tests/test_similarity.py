"""The kNN term's movie similarities: values, coverage, and leaving a train row's user out."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from trainer import hparams as hp
from trainer import similarity, task
from contract import names
from trainer.signatures import make_serving_signatures, save_model
from transforms import features as f

from conftest import serialize_row

pytestmark = pytest.mark.unit

SHRINKAGE = 3.0


@pytest.fixture(scope='module')
def ratings():
  """40 users rating 12 movies at random, movie 0 most often."""
  rng = np.random.default_rng(0)
  pairs = {(u, m) for u in range(40) for m in range(12) if rng.random() < 0.8 / (1 + m / 6)}
  users, movies = (np.array(x) for x in zip(*sorted(pairs)))
  return users, movies, rng.integers(1, 6, len(users)).astype(np.float32)


def _residuals(statistics, users, movies, ratings):
  return ratings - statistics['mean'] - statistics['user_bias'][users] - statistics['movie_bias'][movies]


def _cosine(residuals, users, movies, i, j):
  """Shrunk cosine of movies i and j over the given ratings, by brute force."""
  by_user = {(u, m): r for u, m, r in zip(users, movies, residuals)}
  col = lambda m: np.array([by_user.get((u, m), 0.0) for u in range(40)])  # noqa: E731
  both = sum((u, i) in by_user and (u, j) in by_user for u in range(40))
  return col(i) @ col(j) / np.sqrt((col(i) @ col(i)) * (col(j) @ col(j))) * both / (both + SHRINKAGE)


def _layer_similarity(layer, movie, history, **train_row):
  return layer(tf.constant([movie], tf.int64), tf.constant([history], tf.int64),
               tf.constant([[4.0] * len(history)], tf.float32), tf.constant([[True] * len(history)]),
               **train_row).numpy()[0]


def test_similarities_are_shrunk_cosines_of_bias_free_ratings(ratings):
  users, movies, values = ratings
  statistics = similarity.neighbour_statistics(users, movies, values, num_users=41, num_movies=13)
  layer = similarity.Similarity(statistics, shrinkage=SHRINKAGE)
  residuals = _residuals(statistics, users, movies, values)
  got = _layer_similarity(layer, 2, [0, 1, 5, 7])
  want = [_cosine(residuals, users, movies, 2, j) for j in (0, 1, 5, 7)]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert np.abs(got).max() > 0.01  # not all zero


def test_movies_outside_the_table_and_padding_have_similarity_zero(ratings):
  users, movies, values = ratings
  statistics = similarity.neighbour_statistics(users, movies, values, num_users=41, num_movies=13, max_movies=6)
  assert statistics['dot'].shape == (6, 6)
  layer = similarity.Similarity(statistics, shrinkage=SHRINKAGE)
  history = tf.constant([[1, 9, f.HISTORY_PAD_ID, 2]], tf.int64)
  got = layer(tf.constant([3], tf.int64), history, tf.constant([[4.0, 4.0, 0.0, 2.0]]), history >= 0).numpy()[0]
  assert got[1] == got[2] == 0.0 and got[0] != 0.0 and got[3] != 0.0
  beyond = layer(tf.constant([8], tf.int64), history, tf.constant([[4.0, 4.0, 0.0, 2.0]]), history >= 0)
  assert not np.any(beyond.numpy())


def test_a_train_row_sees_similarities_without_its_own_user(ratings):
  """Leave-one-user-out is exact: the same as tables built without that user's ratings."""
  users, movies, values = ratings
  statistics = similarity.neighbour_statistics(users, movies, values, num_users=41, num_movies=13)
  layer = similarity.Similarity(statistics, shrinkage=SHRINKAGE)
  user = 3
  rated = {m: r for u, m, r in zip(users, movies, values) if u == user}
  candidate, history = sorted(rated)[-1], sorted(rated)[:-1]
  got = layer(tf.constant([candidate], tf.int64), tf.constant([history], tf.int64),
              tf.constant([[rated[m] for m in history]]), tf.constant([[True] * len(history)]),
              user_ids=tf.constant([user], tf.int64), labels=tf.constant([rated[candidate]])).numpy()[0]
  others = users != user
  residuals = _residuals(statistics, users, movies, values)
  want = [_cosine(residuals[others], users[others], movies[others], candidate, j) for j in history]
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
  with_user = _layer_similarity(layer, candidate, history)
  assert np.abs(with_user - got).max() > 1e-3  # the user did count before


def test_an_empty_train_split_says_what_is_wrong():
  with pytest.raises(ValueError, match='train split'):
    similarity.neighbour_statistics(np.array([], np.int64), np.array([], np.int64), np.array([]), 1, 1)


def test_history_model_fits_with_neighbours_and_serves_what_it_computes(tiny_transform, tmp_path):
  """Through the Trainer's fit: tables from the train data, in the SavedModel, same answers served."""
  out_dir, rows, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  data = {k: np.stack([t[k] for t in transformed]) for k in transformed[0]}
  dataset = tf.data.Dataset.from_tensor_slices(data).batch(32)
  params = hp.resolve({'hparams': {'model': 'history_ranking', 'embedding_dim': 8, 'layer_sizes': '16',
                                   'epochs': 2, 'early_stopping_patience': 0}})
  assert params.neighbour_shrinkage > 0
  model = task.fit(params, output, dataset, dataset)
  tables = model.similarity.tables
  assert np.abs(tables['dot'].numpy()).sum() > 0
  assert tables['co_raters'].shape[0] == output.vocabulary_size_by_name(f.MOVIE_VOCAB) + f.OOV_BUCKETS
  export_dir = str(tmp_path / 'model')
  save_model(model, export_dir, make_serving_signatures(model, output))
  served = tf.saved_model.load(export_dir).signatures['serving_tf_example'](
      examples=tf.constant([serialize_row(r) for r in rows]))[names.PREDICTION_KEY].numpy()
  np.testing.assert_allclose(served, model(data).numpy(), rtol=1e-4, atol=1e-4)
  # Without the term the same weights predict something else: the term is used.
  weight = model.neighbour_weight.numpy()
  model.neighbour_weight.assign(0.0)
  assert np.abs(model(data).numpy() - served).max() > 1e-4
  model.neighbour_weight.assign(weight)


def test_refresh_replaces_the_tables_and_refuses_another_vocabulary(ratings):
  users, movies, values = ratings
  half = len(users) // 2
  layer = similarity.Similarity(similarity.neighbour_statistics(users[:half], movies[:half], values[:half], 41, 13))
  before = _layer_similarity(layer, 2, [0, 1, 5])
  everything = similarity.neighbour_statistics(users, movies, values, 41, 13)
  layer.refresh(everything)
  np.testing.assert_allclose(_layer_similarity(layer, 2, [0, 1, 5]),
                             _layer_similarity(similarity.Similarity(everything), 2, [0, 1, 5]), rtol=1e-6)
  assert np.abs(_layer_similarity(layer, 2, [0, 1, 5]) - before).max() > 1e-3
  with pytest.raises(ValueError, match='another vocabulary'):
    layer.refresh(similarity.neighbour_statistics(users, movies, values, 41, 14))


def test_fit_serves_with_the_tables_of_train_and_eval(tiny_transform):
  """Trained with the train split's tables; once fit returns, they hold the eval ratings too."""
  out_dir, _, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  data = {k: np.stack([t[k] for t in transformed]) for k in transformed[0]}
  half = len(transformed) // 2
  train, evaluation = (tf.data.Dataset.from_tensor_slices({k: v[s] for k, v in data.items()}).batch(32)
                       for s in (slice(None, half), slice(half, None)))
  params = hp.resolve({'hparams': {'model': 'history_ranking', 'embedding_dim': 8, 'layer_sizes': '16',
                                   'epochs': 1, 'early_stopping_patience': 0}})
  model = task.fit(params, output, train, evaluation)
  both = task.neighbour_statistics(params, output, train.concatenate(evaluation))
  train_only = task.neighbour_statistics(params, output, train)
  np.testing.assert_allclose(model.similarity.tables['co_raters'].numpy(), both['co_raters'])
  assert np.abs(both['co_raters'] - train_only['co_raters']).max() >= 1
