"""Two-tower retrieval model, its layers, and its brute-force and ScaNN indices.

The synthetic world: every movie belongs to one of ``N_CLUSTERS`` tastes
(movie id mod 4), and so does every user. A user rates movies of their taste,
and their history holds earlier such movies; gender, occupation and age are
noise. So a user's taste is only knowable from their history, as for the cold
users that make up most of ML-100K's test split.
"""
import numpy as np
import pytest
import tensorflow as tf

from trainer import retrieval as r
from transforms import features as f

pytestmark = pytest.mark.unit

N_MOVIES, N_CLUSTERS, HISTORY = 40, 4, 6
SIZES = dict(movie_vocab_size=N_MOVIES + f.OOV_BUCKETS, gender_vocab_size=3, occupation_vocab_size=5)
K = 10
BATCH = 256


def _movies_of(cluster, rng, size):
  return N_CLUSTERS * rng.integers(0, N_MOVIES // N_CLUSTERS, size) + cluster


def _queries(clusters, rng, history_len=HISTORY):
  """Query features; each row's history holds ``history_len`` movies of its cluster."""
  n = len(clusters)
  history_ids = np.full((n, HISTORY), f.HISTORY_PAD_ID, np.int64)
  history_ratings = np.zeros((n, HISTORY), np.float32)
  for row, cluster in enumerate(clusters):
    history_ids[row, :history_len] = _movies_of(cluster, rng, history_len)
    history_ratings[row, :history_len] = rng.integers(3, 6, history_len)
  return {
      r.USER_GENDER_KEY: rng.integers(0, 3, n), r.USER_OCCUPATION_KEY: rng.integers(0, 5, n),
      r.AGE_BUCKET_KEY: rng.integers(0, r.NUM_AGE_BUCKETS, n),
      r.HISTORY_IDS_KEY: history_ids, r.HISTORY_RATINGS_KEY: history_ratings,
  }


def _ratings(n, seed=0):
  """Training rows: query features plus the rated movie."""
  rng = np.random.default_rng(seed)
  clusters = rng.integers(0, N_CLUSTERS, n)
  rows = _queries(clusters, rng, history_len=0)
  # Histories of random length, some empty, so the encoder sees padding.
  lengths = rng.integers(0, HISTORY + 1, n)
  for row in range(n):
    rows[r.HISTORY_IDS_KEY][row, :lengths[row]] = _movies_of(clusters[row], rng, lengths[row])
    rows[r.HISTORY_RATINGS_KEY][row, :lengths[row]] = rng.integers(1, 6, lengths[row])
  rows[r.MOVIE_ID_KEY] = _movies_of(clusters, rng, n)
  return rows


def _catalogue_ds():
  return tf.data.Dataset.from_tensor_slices({r.MOVIE_ID_KEY: np.arange(N_MOVIES, dtype=np.int64)}).batch(16)


@pytest.fixture(scope='module')
def trained():
  """(model, Keras fit history) after a short fit."""
  tf.keras.utils.set_random_seed(0)
  model = r.RetrievalModel(**SIZES, embedding_dim=8, layer_sizes=(16,), dropout=0.0, metric_ks=(1, 5, K))
  model.compile(optimizer=tf.keras.optimizers.Adam(0.02))
  history = model.fit(tf.data.Dataset.from_tensor_slices(_ratings(4096)).batch(BATCH), epochs=8, verbose=0)
  return model, history.history


def test_towers_end_in_the_bias_column():
  model = r.RetrievalModel(**SIZES, embedding_dim=8, layer_sizes=(16,))
  query = model.query_embeddings(_queries([0, 1, 2], np.random.default_rng(0)))
  candidate = model.candidate_embeddings({r.MOVIE_ID_KEY: tf.constant([0, 5, N_MOVIES])})
  assert query.shape == (3, 9) and candidate.shape == (3, 9)
  np.testing.assert_array_equal(query[:, -1], 1.0)  # so q . c picks up the candidate's bias
  np.testing.assert_array_equal(candidate[:, -1], 0.0)  # biases start at zero
  assert model(_queries([0], np.random.default_rng(0))).shape == (1, N_MOVIES + f.OOV_BUCKETS)


def test_history_encoder_is_masked_mean_liked_and_recent():
  embeddings = tf.constant([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [9.0, 9.0]]])
  ids = tf.constant([[3, 4, 5, f.HISTORY_PAD_ID]])
  ratings = tf.constant([[5.0, 1.0, 3.5, 0.0]])
  out = r.HistoryEncoder(recent=2, rating_center=3.5)((embeddings, ids, ratings)).numpy()[0]
  np.testing.assert_allclose(out[0:2], [1.0, 1.0])  # mean of the three real rows
  np.testing.assert_allclose(out[2:4], [1.5 / 3, -2.5 / 3])  # weighted by rating - 3.5
  np.testing.assert_allclose(out[4:6], [1.0, 1.5])  # the last two real rows
  np.testing.assert_allclose(out[6], np.log1p(3.0))
  empty = r.HistoryEncoder()((embeddings, tf.fill([1, 4], f.HISTORY_PAD_ID), tf.zeros([1, 4]))).numpy()[0]
  np.testing.assert_array_equal(empty, 0.0)


def test_training_lowers_the_loss_and_skips_top_k_until_evaluation(trained):
  model, history = trained
  # A model that knows nothing scores ln(N_MOVIES + 1) = 3.7; a perfect one
  # cannot tell apart the N_MOVIES / N_CLUSTERS movies of a taste: ln(10) = 2.3.
  assert history['loss'][-1] < min(history['loss'][0] - 0.3, 1.15 * np.log(N_MOVIES / N_CLUSTERS))
  # compute_metrics only outside training: the catalogue-wide metric stays 0 in fit.
  assert all(v == 0.0 for v in history[f'factorized_top_k/top_{K}_categorical_accuracy'])
  evaluated = model.evaluate(tf.data.Dataset.from_tensor_slices(_ratings(512, seed=1)).batch(128),
                             return_dict=True, verbose=0)
  # A user's movies are 10 of 40, so top-10 by chance finds the one rated 25% of the time.
  assert evaluated[f'factorized_top_k/top_{K}_categorical_accuracy'] > 0.8


def test_new_user_query_follows_their_history(trained):
  model, _ = trained
  rng = np.random.default_rng(2)
  clusters = np.arange(N_CLUSTERS)
  queries = _queries(clusters, rng)
  # Same features, other history: only the history differs between the two.
  other = dict(queries, **{key: queries[key][::-1] for key in (r.HISTORY_IDS_KEY, r.HISTORY_RATINGS_KEY)})
  assert np.abs(model.query_embeddings(queries) - model.query_embeddings(other)).max() > 0.1
  _, top = r.brute_force_index(model, _catalogue_ds(), k=K)(queries)
  in_cluster = np.mean(top.numpy() % N_CLUSTERS == clusters[:, None], axis=1)
  assert (in_cluster >= 0.8).all(), in_cluster


def test_scann_with_exhaustive_settings_matches_brute_force_on_model_index(trained):
  pytest.importorskip('scann')
  model, _ = trained
  queries = _queries([0, 1, 2, 3, 1], np.random.default_rng(3))
  exact_scores, exact_ids = r.brute_force_index(model, _catalogue_ds(), k=K)(queries)
  scann = r.scann_index(model, _catalogue_ds(), k=K, num_leaves=2, num_leaves_to_search=2,
                        num_reordering_candidates=N_MOVIES)
  scann_scores, scann_ids = scann(queries)
  np.testing.assert_array_equal(scann_ids, exact_ids)
  np.testing.assert_allclose(scann_scores, exact_scores, rtol=1e-4, atol=1e-5)


def test_scann_and_brute_force_agree_on_random_vectors_with_identifiers():
  pytest.importorskip('scann')
  rng = np.random.default_rng(4)
  candidates = tf.constant(rng.standard_normal((300, 16)), tf.float32)
  queries = tf.constant(rng.standard_normal((7, 16)), tf.float32)
  identifiers = tf.constant([f'movie{i}'.encode() for i in range(300)])
  _, exact = r.build_brute_force(candidates, identifiers, k=20)(queries)
  _, approx = r.build_scann(candidates, identifiers, k=20, num_leaves=4, num_leaves_to_search=4,
                            num_reordering_candidates=300)(queries)
  np.testing.assert_array_equal(approx, exact)
  assert exact.dtype == tf.string


def test_scann_defaults_scale_with_the_catalogue():
  assert r.default_scann_params(1_000_000, 100) == {
      'num_leaves': 1000, 'num_leaves_to_search': 100, 'num_reordering_candidates': 1000}
  small = r.default_scann_params(1682, 100)
  assert small['num_leaves'] == 41
  assert small['num_leaves_to_search'] * 1682 / 41 >= 10 * 100  # enough points to fill k
  assert r.default_scann_params(50, 100) == {
      'num_leaves': 7, 'num_leaves_to_search': 7, 'num_reordering_candidates': 50}


def test_brute_force_index_round_trips_through_saved_model(trained, tmp_path):
  model, _ = trained
  index = r.brute_force_index(model, _catalogue_ds(), k=K)
  queries = _queries([1, 3], np.random.default_rng(5))
  scores, ids = index(queries)
  r.save_index(index, str(tmp_path), history_length=HISTORY)
  serve = tf.saved_model.load(str(tmp_path)).signatures['serving_default']
  out = serve(**{key: tf.constant(value) for key, value in queries.items()})
  np.testing.assert_array_equal(out['ids'], ids)
  np.testing.assert_allclose(out['scores'], scores, rtol=1e-5)
