"""The item-item stage's sequence model: what it learns and from what, what it ignores, its place in a blend, saving."""
import numpy as np
import pytest
import tensorflow as tf

from trainer import item_item, sequential
from transforms import features as f

from test_item_item import saved_and_loaded

pytestmark = pytest.mark.unit

PAD = f.HISTORY_PAD_ID
MOVIES = 12


def _chains(rows=600, length=6, seed=0):
  """Users who rate movies in a fixed cycle: the movie after k is always k + 1 (mod MOVIES)."""
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, MOVIES, rows)
  lengths = rng.integers(1, length + 1, rows)
  ids = np.full((rows, f.HISTORY_LENGTH), PAD, np.int64)
  for r, (start, n) in enumerate(zip(starts, lengths)):
    ids[r, :n] = (start + np.arange(n)) % MOVIES
  ratings = np.where(ids != PAD, rng.integers(1, 6, ids.shape), 0).astype(np.float32)
  movies = (starts + lengths) % MOVIES
  return ids, ratings, movies


def test_the_model_learns_which_movie_comes_next():
  tf.keras.utils.set_random_seed(0)
  ids, ratings, movies = _chains(rows=2000)
  model = sequential.fit(ids, ratings, movies, MOVIES, dim=16, epochs=20, seed=0)
  test_ids, test_ratings, test_movies = _chains(rows=50, seed=1)
  best = np.argmax(model(test_ids, test_ratings).numpy(), axis=1)
  assert np.mean(best == test_movies) > 0.8  # chance: 1 in 12


def test_padding_and_unknown_movies_change_nothing_and_training_skips_rows_without_a_known_history():
  tf.keras.utils.set_random_seed(0)
  model = sequential.SequenceModel(MOVIES, dim=8)
  short = model(tf.constant([[3, 4]], tf.int64), tf.constant([[4.0, 2.0]])).numpy()
  padded = model(tf.constant([[3, 4, PAD, PAD]], tf.int64), tf.constant([[4.0, 2.0, 0.0, 0.0]])).numpy()
  np.testing.assert_allclose(short, padded, rtol=1e-5, atol=1e-6)
  assert short.shape == (1, MOVIES)
  ids = np.array([[3, PAD], [40, PAD], [3, 4]])  # 40: an OOV id
  rows = sequential.training_rows(ids, np.ones(ids.shape), np.array([4, 5, 99]), MOVIES)
  np.testing.assert_array_equal(rows[0], ids[:1])  # the OOV-only history and the OOV target are left out
  with pytest.raises(ValueError, match='No rating'):
    sequential.fit(ids[1:2], np.ones((1, 2)), np.array([5]), MOVIES, dim=8, epochs=1, seed=0)


def test_the_scorer_adds_the_models_standardized_scores_and_survives_a_saved_model_round_trip(tmp_path):
  tf.keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  table, sequence = rng.random((MOVIES, MOVIES)).astype(np.float32), rng.random((MOVIES, MOVIES)).astype(np.float32)
  model = sequential.SequenceModel(MOVIES, dim=8)
  config = dict(half_life=4.0, sequence_half_life=1.0, sequence_weight=0.5, rating_weight=0.5)
  blended = item_item.ItemItemScorer(table, sequence, model, model_weight=2.0, **config)
  tables_only = item_item.ItemItemScorer(table, sequence, model_weight=0.0, **config)
  ids, ratings = tf.constant([[3, 1, 0, PAD]], tf.int64), tf.constant([[4.0, 5.0, 3.0, 0.0]])
  logits = model(ids, ratings).numpy()[0]
  np.testing.assert_allclose(blended(ids, ratings).numpy()[0],
                             tables_only(ids, ratings).numpy()[0] + 2.0 * (logits - logits.mean()) / logits.std(),
                             rtol=1e-4, atol=1e-5)
  loaded = saved_and_loaded(blended, tmp_path)
  np.testing.assert_allclose(loaded.score(ids, ratings).numpy(), blended(ids, ratings).numpy(),
                             rtol=1e-5)


def test_the_saved_weights_are_the_mean_of_the_last_epochs(monkeypatch):
  ids, ratings, movies = _chains(rows=300)

  def weights(epochs, averaged):
    monkeypatch.setattr(sequential, 'AVERAGED_EPOCHS', averaged)
    tf.keras.utils.set_random_seed(0)
    model = sequential.fit(ids, ratings, movies, MOVIES, dim=8, epochs=epochs, seed=0)
    return [v.numpy() for v in model.trainable_variables]

  first, second = weights(1, 1), weights(2, 1)
  assert not np.allclose(first[0], second[0])
  for got, a, b in zip(weights(2, 2), first, second):
    np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-4, atol=1e-6)


def test_with_side_information_the_model_learns_from_demographics_and_genres_and_saves_them(tmp_path):
  """The history says nothing here: the next movie is a function of the user's gender and age bucket."""
  rng = np.random.default_rng(0)
  rows = 3000
  ids = np.full((rows, f.HISTORY_LENGTH), PAD, np.int64)
  ids[:, 0] = rng.integers(0, MOVIES, rows)  # one random movie each
  ratings = np.where(ids != PAD, 3.0, 0.0).astype(np.float32)
  gender, age_bucket = rng.integers(1, 3, rows), rng.integers(0, sequential.AGE_BUCKETS, rows)
  # One movie per (gender, age bucket): 14 pairs, the last three share movie MOVIES - 1.
  movies = np.minimum((gender - 1) * sequential.AGE_BUCKETS + age_bucket, MOVIES - 1)
  genres = np.eye(MOVIES, 3, dtype=np.float32)[::-1]  # the last three movies have a genre each
  side = sequential.Side(genres, gender_vocab_size=3)
  tf.keras.utils.set_random_seed(0)
  model = sequential.fit(ids, ratings, movies, MOVIES, dim=16, epochs=40, seed=0, side=side, gender=gender,
                         age_bucket=age_bucket)
  best = np.argmax(model(ids, ratings, gender, age_bucket).numpy(), axis=1)
  assert np.mean(best == movies) > 0.9  # the history alone: at most 1 in 12
  # A movie's vector is its embedding plus its genres' projection.
  vectors = model.movie_vectors().numpy()
  np.testing.assert_allclose(vectors[1:], model.movie.embeddings.numpy()[1:] + genres @ model.genre_projection.kernel
                             .numpy(), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='gender and age bucket'):
    model(ids[:1], ratings[:1])
  with pytest.raises(ValueError, match='gender and age bucket'):
    sequential.fit(ids, ratings, movies, MOVIES, dim=8, epochs=1, seed=0, side=side)
  with pytest.raises(ValueError, match='genre table'):
    sequential.SequenceModel(MOVIES, dim=8, side=sequential.Side(genres[:5], 3))
  # Through the scorer and a SavedModel, with the user's features.
  zeros = np.zeros((MOVIES, MOVIES), np.float32)
  scorer = item_item.ItemItemScorer(zeros, zeros, model, half_life=4.0, sequence_half_life=1.0, sequence_weight=0.0,
                                    model_weight=1.0, rating_weight=0.5)
  loaded = saved_and_loaded(scorer, tmp_path, with_users=True)
  args = (ids[:20], ratings[:20], gender[:20], age_bucket[:20])
  np.testing.assert_allclose(loaded.score(*args).numpy(), scorer(*args).numpy(), rtol=1e-5, atol=1e-5)
  assert np.mean(np.argmax(loaded.score(*args).numpy(), axis=1) == movies[:20]) > 0.8


def test_movie_genres_come_from_the_ratings_rows():
  ratings = item_item.Ratings(users=np.array([0, 1, 1]), movies=np.array([2, 0, 7]), history_ids=np.zeros((3, 1)),
                              history_ratings=np.zeros((3, 1)), gender=np.zeros(3), age_bucket=np.zeros(3),
                              genres=np.array([[1, 0], [0, 1], [1, 1]], np.float32))
  np.testing.assert_array_equal(item_item.movie_genres(ratings, 3), [[0, 1], [0, 0], [1, 0]])  # 7: OOV, left out
