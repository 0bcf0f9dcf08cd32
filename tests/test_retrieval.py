"""Two-tower retrieval model, its layers, and its brute-force and ScaNN indices.

The synthetic world: every user and movie belongs to one of ``N_CLUSTERS``
tastes (user id mod 4, movie id mod 4). A user rates movies of their taste, and
their history holds earlier such movies; gender, occupation and zip are noise.
So a cold (OOV) user's taste is only knowable from their history.
"""
import numpy as np
import pytest
import tensorflow as tf

from trainer import retrieval as r
from transforms import features as f

pytestmark = pytest.mark.unit

N_USERS, N_MOVIES, N_CLUSTERS, HISTORY = 32, 40, 4, 6
SIZES = dict(user_vocab_size=N_USERS + f.OOV_BUCKETS, movie_vocab_size=N_MOVIES + f.OOV_BUCKETS,
             gender_vocab_size=3, occupation_vocab_size=5, zip_vocab_size=7)
OOV_USER = N_USERS
K = 10
BATCH = 256


def _movies_of(cluster, rng, size):
  return N_CLUSTERS * rng.integers(0, N_MOVIES // N_CLUSTERS, size) + cluster


def _catalogue():
  """Candidate features for every movie, as numpy arrays."""
  ids = np.arange(N_MOVIES, dtype=np.int64)
  genres = np.zeros((N_MOVIES, len(f.GENRE_NAMES)), np.float32)
  genres[ids, 1 + ids % N_CLUSTERS] = 1.0
  return {r.MOVIE_ID_KEY: ids, r.GENRES_KEY: genres,
          r.RELEASE_YEAR_KEY: ((ids % 7) - 3.0).astype(np.float32) / 2.0}


def _queries(user_ids, clusters, rng, history_len=HISTORY):
  """Query features; each row's history holds ``history_len`` movies of its cluster."""
  n = len(user_ids)
  history_ids = np.full((n, HISTORY), f.HISTORY_PAD_ID, np.int64)
  history_ratings = np.zeros((n, HISTORY), np.float32)
  for row, cluster in enumerate(clusters):
    history_ids[row, :history_len] = _movies_of(cluster, rng, history_len)
    history_ratings[row, :history_len] = rng.integers(3, 6, history_len)
  return {
      r.USER_ID_KEY: np.asarray(user_ids, np.int64),
      r.USER_GENDER_KEY: rng.integers(0, 3, n), r.USER_OCCUPATION_KEY: rng.integers(0, 5, n),
      r.USER_ZIP_KEY: rng.integers(0, 7, n), r.AGE_BUCKET_KEY: rng.integers(0, r.NUM_AGE_BUCKETS, n),
      r.HOUR_KEY: rng.integers(0, 24, n), r.WEEKDAY_KEY: rng.integers(0, 7, n),
      r.HISTORY_IDS_KEY: history_ids, r.HISTORY_RATINGS_KEY: history_ratings,
  }


def _ratings(n, seed=0):
  """Training rows: query features plus the rated movie's candidate features."""
  rng = np.random.default_rng(seed)
  users = rng.integers(0, N_USERS, n)
  clusters = users % N_CLUSTERS
  rows = _queries(users, clusters, rng, history_len=0)
  # Histories of random length, some empty, so the pooling sees padding.
  lengths = rng.integers(0, HISTORY + 1, n)
  for row in range(n):
    rows[r.HISTORY_IDS_KEY][row, :lengths[row]] = _movies_of(clusters[row], rng, lengths[row])
    rows[r.HISTORY_RATINGS_KEY][row, :lengths[row]] = rng.integers(1, 6, lengths[row])
  movies = _movies_of(clusters, rng, n)
  catalogue = _catalogue()
  rows.update({key: values[movies] for key, values in catalogue.items()})
  return rows


def _catalogue_ds():
  return tf.data.Dataset.from_tensor_slices(_catalogue()).batch(16)


def _model(**overrides):
  params = dict(SIZES, embedding_dim=8, layer_sizes=(16, 8), user_id_dropout=0.3,
                candidates=_catalogue_ds(), metric_ks=(1, 5, K))
  params.update(overrides)
  return r.RetrievalModel(**params)


@pytest.fixture(scope='module')
def trained():
  """(model, initial OOV user row, Keras fit history) after a short fit."""
  tf.keras.utils.set_random_seed(0)
  model = _model()
  model.compile(optimizer=tf.keras.optimizers.Adam(0.02))
  model.query_embeddings(_queries([0], [0], np.random.default_rng(0)))
  oov_row_before = model.query_model.embeddings[r.USER_ID_KEY].embeddings[OOV_USER].numpy()
  history = model.fit(tf.data.Dataset.from_tensor_slices(_ratings(4096)).batch(BATCH), epochs=8, verbose=0)
  return model, oov_row_before, history.history


def test_towers_return_unit_vectors_of_the_last_layer_width():
  model = _model(layer_sizes=(12, 6))
  rng = np.random.default_rng(1)
  query = model.query_embeddings(_queries([0, 3, OOV_USER], [0, 1, 2], rng))
  candidate = model.candidate_embeddings({k: v[:5] for k, v in _catalogue().items()})
  assert query.shape == (3, 6) and candidate.shape == (5, 6)
  np.testing.assert_allclose(tf.norm(query, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(tf.norm(candidate, axis=1), 1.0, rtol=1e-5)


def test_history_and_candidates_share_one_movie_table():
  model = _model()
  assert model.query_model.movie_embedding is model.candidate_model.movie_embedding


def test_towers_rebuilt_from_config_compute_the_same_embeddings():
  model = _model(layer_sizes=(12, 6), weight_history_by_rating=False)
  queries = _queries([0, OOV_USER], [0, 1], np.random.default_rng(6))
  catalogue = _catalogue()
  for tower, features in ((model.query_model, queries), (model.candidate_model, catalogue)):
    expected = tower(features)
    config = tower.get_config()
    assert config['layer_sizes'] == [12, 6]
    clone = type(tower).from_config(config)
    clone(features)
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(features), expected, rtol=1e-6)
  assert not r.QueryTower.from_config(model.query_model.get_config()).history_pooling.weight_by_rating


def test_history_pooling_is_a_masked_rating_weighted_mean():
  embeddings = tf.constant([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[5.0, 5.0], [7.0, 7.0], [9.0, 9.0]]])
  ids = tf.constant([[3, 4, f.HISTORY_PAD_ID], [f.HISTORY_PAD_ID] * 3], tf.int64)
  ratings = tf.constant([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
  layer = r.HistoryPooling()
  out = layer((embeddings, ids, ratings)).numpy()
  np.testing.assert_allclose(out[0], [0.25, 0.75, np.log1p(2.0)], rtol=1e-6)
  np.testing.assert_allclose(out[1], [0.0, 0.0, 0.0])  # empty history: zeros, length 0
  unweighted = r.HistoryPooling.from_config({**layer.get_config(), 'weight_by_rating': False})
  np.testing.assert_allclose(unweighted((embeddings, ids, ratings)).numpy()[0], [0.5, 0.5, np.log1p(2.0)],
                             rtol=1e-6)


def test_id_dropout_sends_about_rate_of_rows_to_oov_only_while_training():
  layer = r.IdDropout.from_config(r.IdDropout(0.25, oov_id=99).get_config())
  ids = tf.range(10_000, dtype=tf.int64) % 50
  dropped = layer(ids, training=True).numpy()
  assert 0.22 < np.mean(dropped == 99) < 0.28
  np.testing.assert_array_equal(dropped[dropped != 99], ids.numpy()[dropped != 99])
  np.testing.assert_array_equal(layer(ids, training=False), ids)


def test_training_lowers_the_loss_and_skips_top_k_until_evaluation(trained):
  model, _, history = trained
  # Summed in-batch softmax loss: a model that knows nothing scores BATCH * ln(BATCH). A perfect
  # one still cannot tell apart the ~BATCH / N_CLUSTERS same-taste movies: about 0.75 of that.
  chance = BATCH * np.log(BATCH)
  assert history['loss'][-1] < min(history['loss'][0], 0.8 * chance)
  # compute_metrics=not training: the catalogue-wide metric is never updated in fit.
  assert all(v == 0.0 for v in history[f'factorized_top_k/top_{K}_categorical_accuracy'])
  evaluated = model.evaluate(tf.data.Dataset.from_tensor_slices(_ratings(512, seed=1)).batch(128),
                             return_dict=True, verbose=0)
  # A user's movies are 10 of 40, so top-10 by chance finds the one rated 25% of the time.
  assert evaluated[f'factorized_top_k/top_{K}_categorical_accuracy'] > 0.5


def test_user_id_dropout_trains_the_oov_row(trained):
  model, oov_row_before, _ = trained
  oov_row_after = model.query_model.embeddings[r.USER_ID_KEY].embeddings[OOV_USER].numpy()
  assert np.abs(oov_row_after - oov_row_before).max() > 1e-3


def test_cold_user_query_follows_their_history(trained):
  model, _, _ = trained
  rng = np.random.default_rng(2)
  clusters = np.arange(N_CLUSTERS)
  queries = _queries([OOV_USER] * N_CLUSTERS, clusters, rng)
  # Same features, other history: only the history differs between the two.
  other = dict(queries, **{key: queries[key][::-1] for key in (r.HISTORY_IDS_KEY, r.HISTORY_RATINGS_KEY)})
  assert np.abs(model.query_embeddings(queries) - model.query_embeddings(other)).max() > 0.1
  _, top = r.brute_force_index(model, _catalogue_ds(), k=K)(queries)
  in_cluster = np.mean(top.numpy() % N_CLUSTERS == clusters[:, None], axis=1)
  assert (in_cluster >= 0.8).all(), in_cluster


def test_scann_with_exhaustive_settings_matches_brute_force_on_model_index(trained):
  pytest.importorskip('scann')
  model, _, _ = trained
  queries = _queries(list(range(N_CLUSTERS)) + [OOV_USER], [0, 1, 2, 3, 1], np.random.default_rng(3))
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
  model, _, _ = trained
  index = r.brute_force_index(model, _catalogue_ds(), k=K)
  queries = _queries([1, OOV_USER], [1, 3], np.random.default_rng(5))
  scores, ids = index(queries)
  r.save_index(index, str(tmp_path), history_length=HISTORY)
  serve = tf.saved_model.load(str(tmp_path)).signatures['serving_default']
  out = serve(**{key: tf.constant(value) for key, value in queries.items()})
  np.testing.assert_array_equal(out['ids'], ids)
  np.testing.assert_allclose(out['scores'], scores, rtol=1e-5)
