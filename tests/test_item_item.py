"""The item-item retrieval stage: EASE's closed form, the sequential table, history weights, the blend, the fallback,
a save round trip."""
import numpy as np
import pytest
import tensorflow as tf

from trainer import item_item
from transforms import features as f

pytestmark = pytest.mark.unit

PAD = f.HISTORY_PAD_ID


def _ratings(seed=0, n_users=30, n_movies=6):
  rng = np.random.default_rng(seed)
  rated = rng.random((n_users, n_movies)) < 0.4
  users, movies = np.nonzero(rated)
  return users, movies, rated.astype(float)


def test_ease_table_solves_each_columns_ridge_regression_without_its_own_movie():
  users, movies, x = _ratings()
  l2 = 3.0
  table = item_item.ease_table(users * 7 + 100, movies, num_movies=x.shape[1], l2=l2)
  gram = x.T @ x
  for j in range(x.shape[1]):
    others = [i for i in range(x.shape[1]) if i != j]
    expected = np.linalg.solve(gram[np.ix_(others, others)] + l2 * np.eye(len(others)), gram[others, j])
    np.testing.assert_allclose(table[others, j], expected, rtol=1e-4, atol=1e-6)
    assert table[j, j] == 0.0


def test_ease_table_leaves_out_oov_movies_and_counts_a_repeated_rating_once():
  users, movies, x = _ratings(seed=1)
  base = item_item.ease_table(users, movies, num_movies=x.shape[1], l2=2.0)
  noisy = item_item.ease_table(np.r_[users, users[:5], [0, 1]], np.r_[movies, movies[:5], [x.shape[1], 99]],
                               num_movies=x.shape[1], l2=2.0)
  np.testing.assert_allclose(base, noisy, rtol=1e-6)


def test_ease_table_refuses_a_catalogue_past_its_limit():
  with pytest.raises(ValueError, match='at most 4 movies'):
    item_item.ease_table(np.zeros(3), np.arange(3), num_movies=5, l2=1.0, max_movies=4)


def test_sequence_table_counts_the_recent_history_of_each_rating_divided_by_the_movies_ratings():
  # Three ratings of movies 2, 1, 2; their histories oldest first, padded at the end; 9 is an OOV id.
  histories = np.array([[0, 1, 9, PAD], [0, PAD, PAD, PAD], [3, 0, 1, 1]])
  movies = np.array([2, 1, 2])
  table = item_item.sequence_table(histories, movies, num_movies=4, window=2)
  counts = np.zeros((4, 4))
  counts[1, 2] += 1  # row 0: its last two entries are 1 and the OOV 9
  counts[0, 1] += 1  # row 1
  counts[1, 2] += 2  # row 2: its last two entries, 1 twice (3 and 0 are older than the window)
  rated = np.maximum(np.bincount(movies, minlength=4), 1)
  np.testing.assert_allclose(table, counts / np.sqrt(rated[:, None] * rated[None, :]), rtol=1e-6)
  # A rating of an OOV movie adds nothing, and nothing is on the diagonal.
  again = item_item.sequence_table(np.r_[histories, [[2, 2, PAD, PAD]]], np.r_[movies, [7]], 4, window=2)
  np.testing.assert_allclose(again, table, rtol=1e-6)
  assert not np.diag(item_item.sequence_table(np.array([[1, PAD]]), np.array([1]), 4, window=2)).any()


def _scorer(table, sequence=None, **overrides):
  config = dict(half_life=2.0, sequence_half_life=1.0, sequence_weight=0.0, model_weight=0.0, rating_weight=0.5,
                rating_center=3.0)
  return item_item.ItemItemScorer(table, np.zeros_like(table) if sequence is None else sequence,
                                  **{**config, **overrides})


def _z(x):
  return (x - x.mean()) / x.std()


def test_scorer_weights_recent_and_liked_ratings_and_ignores_padding_and_oov():
  table = np.arange(16, dtype=np.float32).reshape(4, 4) ** 2
  scorer = _scorer(table)
  ids = tf.constant([[0, 7, 2, PAD], [1, PAD, PAD, PAD]], tf.int64)  # 7 is an OOV id
  ratings = tf.constant([[5.0, 4.0, 2.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
  scores = scorer(ids, ratings).numpy()
  # Row 0: three entries, so ages 2, 1, 0; the OOV one weighs nothing.
  w0 = 0.5 ** (2 / 2.0) * (1 + 0.5 * 2)
  w2 = 0.5 ** 0 * (1 + 0.5 * -1)
  np.testing.assert_allclose(scores[0], _z(w0 * table[0] + w2 * table[2]), rtol=1e-5)
  np.testing.assert_allclose(scores[1], _z(table[1]), rtol=1e-5)


def test_scorer_adds_the_sequential_scores_with_their_own_half_life_and_weight():
  rng = np.random.default_rng(0)
  table, sequence = rng.random((4, 4)).astype(np.float32), rng.random((4, 4)).astype(np.float32)
  scorer = _scorer(table, sequence, half_life=4.0, sequence_half_life=1.0, sequence_weight=0.5)
  ids, ratings = tf.constant([[3, 1, 0]], tf.int64), tf.constant([[4.0, 5.0, 3.0]])
  liking = np.array([1.5, 2.0, 1.0])
  ease = (0.5 ** (np.array([2, 1, 0]) / 4.0) * liking) @ table[[3, 1, 0]]
  sequential = (0.5 ** np.array([2, 1, 0]) * liking) @ sequence[[3, 1, 0]]
  np.testing.assert_allclose(scorer(ids, ratings).numpy()[0], _z(ease) + 0.5 * _z(sequential), rtol=1e-5)


def test_scorer_refuses_tables_of_another_size():
  with pytest.raises(ValueError, match='sequence table is'):
    item_item.ItemItemScorer(np.zeros((3, 3), np.float32), np.zeros((4, 4), np.float32), half_life=1.0,
                             sequence_half_life=1.0, sequence_weight=1.0, model_weight=0.0, rating_weight=0.0)


def test_a_history_without_train_movies_falls_back_to_the_models_scores():
  scorer = _scorer(np.diag([1.0, 2.0, 3.0]).astype(np.float32), sequence_weight=1.0)
  features = {f.transformed_name(f.HISTORY_MOVIE_IDS): tf.constant([[5, PAD], [PAD, PAD], [1, PAD]], tf.int64),
              f.transformed_name(f.HISTORY_RATINGS): tf.constant([[4.0, 0.0], [0.0, 0.0], [1.0, 0.0]])}
  fallback = tf.constant([[7.0, 8.0, 9.0]] * 3)
  out = item_item.scores_or_fallback(scorer, features, fallback, columns=np.array([2, 0, 1])).numpy()
  # Row 0 has only an OOV movie, row 1 nothing, row 2 a 1-star rating, which weighs max(0, 1 - 1) = 0.
  np.testing.assert_array_equal(out, fallback.numpy())
  features[f.transformed_name(f.HISTORY_RATINGS)] = tf.constant([[4.0, 0.0], [0.0, 0.0], [4.0, 0.0]])
  out = item_item.scores_or_fallback(scorer, features, fallback, columns=np.array([2, 0, 1])).numpy()
  # Row 2 scores movie 1 alone (row 1 of the table), in column order 2, 0, 1; the empty sequential scores add 0.
  np.testing.assert_allclose(out[2], _z(np.array([0.0, 2.0, 0.0]))[[2, 0, 1]], rtol=1e-5)
  np.testing.assert_array_equal(out[:2], fallback.numpy()[:2])


def test_scorer_survives_get_config_and_a_saved_model_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  table, sequence = rng.normal(size=(5, 5)).astype(np.float32), rng.normal(size=(5, 5)).astype(np.float32)
  scorer = _scorer(table, sequence, half_life=4.0, rating_weight=0.25, sequence_weight=0.7, name='item_item')
  rebuilt = item_item.ItemItemScorer.from_config(scorer.get_config())
  assert rebuilt.get_config() == scorer.get_config() and rebuilt.num_movies == 5
  ids, ratings = tf.constant([[3, 1, PAD]], tf.int64), tf.constant([[5.0, 2.0, 0.0]])
  loaded = saved_and_loaded(scorer, tmp_path)
  np.testing.assert_allclose(loaded.score(ids, ratings).numpy(), scorer(ids, ratings).numpy(),
                             rtol=1e-6)


def saved_and_loaded(scorer: item_item.ItemItemScorer, tmp_path, with_users: bool = False):
  """A SavedModel of ``scorer`` written under ``tmp_path`` and loaded back: its ``score`` is the scorer's call.

  ``score`` takes history ids and ratings, and with ``with_users`` also gender and age bucket.
  """
  module = tf.Module()
  module.scorer = scorer
  specs = [tf.TensorSpec([None, None], tf.int64), tf.TensorSpec([None, None])]
  specs += [tf.TensorSpec([None], tf.int64)] * 2 if with_users else []
  module.score = tf.function(lambda *inputs: scorer(*inputs), input_signature=specs)
  tf.saved_model.save(module, str(tmp_path / 'm'))
  return tf.saved_model.load(str(tmp_path / 'm'))
