"""Model shapes, hyperparameter resolution and the SavedModel round trip."""
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from trainer import distribution, item_item, task
from trainer import hparams as hp
from contract import names
from trainer.models import RankingModel
from trainer.signatures import make_serving_signatures, save_model
from trainer.task import _LoggedRandomSearch, build_model
from transforms import features as f

from conftest import raw_feature_spec, serialize_row

pytestmark = pytest.mark.unit
xf = f.transformed_name


def test_hparams_default_model_is_ours_and_ranking_is_the_seeds():
  assert hp.resolve(None).model == hp.DEFAULT_MODEL == 'multitask'
  params = hp.resolve({'hparams': {'model': 'ranking'}})
  assert (params.embedding_dim, params.layer_sizes, params.optimizer) == (32, (256, 64), 'adagrad')
  assert (params.learning_rate, params.l2, params.epochs, params.batch_size) == (0.1, 0.01, 50, 8192)


def test_hparams_tuner_overrides_custom_config_overrides_defaults():
  params = hp.resolve({'hparams': {'epochs': 3, 'learning_rate': 0.5}}, tuned={'learning_rate': 0.2})
  assert params.epochs == 3 and params.learning_rate == 0.2 and params.embedding_dim == 32


def test_hparams_unknown_key_names_the_known_ones():
  with pytest.raises(ValueError, match='Unknown hyperparameters.*embedding_dim'):
    hp.resolve({'hparams': {'embeding_dim': 8}})


def test_ranking_model_predicts_one_rating_per_example_and_learns():
  tf.keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  n = 512
  users, movies = rng.integers(0, 20, n), rng.integers(0, 30, n)
  ratings = (1 + (users % 5)).astype('float32')  # depends on the user only
  data = {xf(f.USER_ID): users, xf(f.MOVIE_ID): movies, f.LABEL_KEY: ratings}
  model = RankingModel(21, 31, embedding_dim=8, layer_sizes=(16,))
  model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
  assert model(data).shape == (n, 1)
  history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(64), epochs=30, verbose=0)
  assert history.history['rmse'][-1] < 0.5 * history.history['rmse'][0]


def test_build_model_sizes_embeddings_from_transform_vocabularies(tiny_transform):
  out_dir, rows, _ = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  model = build_model(hp.DEFAULTS.replace(embedding_dim=4, layer_sizes=(8,)), output)
  model({xf(f.USER_ID): tf.constant([0]), xf(f.MOVIE_ID): tf.constant([0])})
  n_users = len({r[f.USER_ID][0] for r in rows})
  assert model.user_embedding.input_dim == n_users + f.OOV_BUCKETS


def test_build_model_rejects_unknown_names(tiny_transform):
  output = tft.TFTransformOutput(tiny_transform[0])
  with pytest.raises(ValueError, match='Unknown model'):
    build_model(hp.DEFAULTS.replace(model='nope'), output)
  with pytest.raises(ValueError, match='Unknown optimizer'):
    build_model(hp.DEFAULTS.replace(optimizer='nope'), output)


def test_saved_model_round_trip_serves_raw_values_and_tf_examples(tiny_transform, tmp_path):
  out_dir, rows, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  model = build_model(hp.DEFAULTS.replace(embedding_dim=4, layer_sizes=(8,)), output)
  batch = {k: tf.constant([t[k] for t in transformed]) for k in (xf(f.USER_ID), xf(f.MOVIE_ID))}
  expected = model(batch).numpy()
  export_dir = str(tmp_path / 'model')
  save_model(model, export_dir, make_serving_signatures(model, output))

  loaded = tf.saved_model.load(export_dir)
  assert {'serving_default', 'serving_tf_example', 'transform_features'} <= set(loaded.signatures)
  raw = loaded.signatures['serving_default'](
      user_id=tf.constant([r[f.USER_ID][0] for r in rows]),
      movie_id=tf.constant([r[f.MOVIE_ID][0] for r in rows]))[names.PREDICTION_KEY].numpy()
  np.testing.assert_allclose(raw, expected, rtol=1e-5)
  examples = tf.constant([serialize_row(r) for r in rows])
  from_examples = loaded.signatures['serving_tf_example'](examples=examples)[names.PREDICTION_KEY].numpy()
  np.testing.assert_allclose(from_examples, expected, rtol=1e-5)
  # Unknown users and movies get a prediction, not an error.
  unknown = loaded.signatures['serving_default'](user_id=tf.constant([b'no-such-user']),
                                                 movie_id=tf.constant([b'no-such-movie']))
  assert np.isfinite(unknown[names.PREDICTION_KEY].numpy()).all()


def _history_model(output):
  params = hp.resolve({'hparams': {'model': 'history_ranking', 'embedding_dim': 8, 'layer_sizes': '16'}})
  return build_model(params, output)


def _request(rows, history_ratings):
  """Raw serving inputs for ``rows``, each with the same padded history."""
  columns = {}
  for name in ('movie_id', 'movie_title', 'user_gender', 'user_occupation'):
    columns[name] = tf.constant([r[name][0] for r in rows])
  columns['user_age'] = tf.constant([r['user_age'][0] for r in rows], tf.int64)
  columns['timestamp'] = tf.constant([r['timestamp'][0] for r in rows], tf.int64)
  columns['release_year'] = tf.constant([(r['release_year'] or [0])[0] for r in rows], tf.int64)
  # No live movie statistics: the model uses its learned movie bias.
  columns['movie_rating_count'] = tf.zeros([len(rows)], tf.int64)
  columns['movie_rating_mean'] = tf.zeros([len(rows)], tf.float32)
  columns['genres'] = tf.constant([(r['genres'] + [b'', b''])[:2] for r in rows])
  ids = [b'1', b'2', b'3'][:len(history_ratings)] + [b'']  # padded at the end, as the ratings are
  columns['history_movie_ids'] = tf.constant([ids] * len(rows))
  columns['history_ratings'] = tf.constant([list(history_ratings) + [0.0]] * len(rows), tf.float32)
  return columns


def _request_transformed(output, rows):
  spec = {k: v for k, v in raw_feature_spec().items() if k != f.LABEL_KEY}
  raw = tf.io.parse_example(tf.constant([serialize_row(r) for r in rows]), spec)
  return output.transform_features_layer()(raw)


def test_history_model_gives_new_users_a_bias_from_their_history(tiny_transform, tmp_path):
  out_dir, rows, _ = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  model = _history_model(output)
  model(_request_transformed(output, rows[:1]))  # builds the layers
  # With the MLP's output layer at zero the prediction is global + movie bias +
  # the history's user bias: the part that must work for a brand-new user.
  last = model.mlp.layers[-1]
  last.set_weights([np.zeros_like(w) for w in last.get_weights()])
  export_dir = str(tmp_path / 'history_model')
  save_model(model, export_dir, make_serving_signatures(model, output))
  serve = tf.saved_model.load(export_dir).signatures['serving_default']
  fan = serve(**_request(rows[:5], [5.0, 5.0, 5.0]))[names.PREDICTION_KEY].numpy()
  critic = serve(**_request(rows[:5], [1.0, 1.0, 1.0]))[names.PREDICTION_KEY].numpy()
  newcomer = serve(**_request(rows[:5], []))[names.PREDICTION_KEY].numpy()
  assert (fan > newcomer).all() and (newcomer > critic).all()
  assert ((fan >= 1.0) & (fan <= 5.0)).all()  # clipped to the rating range at inference


def test_history_model_raw_and_tf_example_signatures_agree(tiny_transform, tmp_path):
  out_dir, rows, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  tf.keras.utils.set_random_seed(0)
  model = _history_model(output)
  data = {k: np.stack([t[k] for t in transformed]) for k in transformed[0]}
  history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(32), epochs=8, verbose=0)
  assert history.history['rmse'][-1] < history.history['rmse'][0]
  export_dir = str(tmp_path / 'history_model')
  save_model(model, export_dir, make_serving_signatures(model, output))
  loaded = tf.saved_model.load(export_dir)
  examples = tf.constant([serialize_row(r) for r in rows])
  from_examples = loaded.signatures['serving_tf_example'](examples=examples)[names.PREDICTION_KEY].numpy()
  direct = model(data).numpy()
  np.testing.assert_allclose(from_examples, direct, rtol=1e-4, atol=1e-4)


def test_build_model_makes_the_retrieval_model_from_transform_vocabularies(tiny_transform):
  output = tft.TFTransformOutput(tiny_transform[0])
  model = build_model(hp.resolve({'hparams': {'model': 'retrieval', 'embedding_dim': 8, 'layer_sizes': '8'}}),
                      output)
  assert model.movie_embedding.input_dim == output.vocabulary_size_by_name(f.MOVIE_VOCAB) + f.OOV_BUCKETS


def test_multitask_model_shares_the_movie_table_trains_both_tasks_and_serves_ratings(tiny_transform, tmp_path):
  out_dir, rows, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  tf.keras.utils.set_random_seed(0)
  params = hp.resolve({'hparams': {'model': 'multitask', 'embedding_dim': 8, 'layer_sizes': '16',
                                   'retrieval_layer_sizes': '16', 'retrieval_weight': 0.5}})
  model = build_model(params, output)
  assert model.retrieval.movie_embedding is model.ranking.movie_embedding
  data = {k: np.stack([t[k] for t in transformed]) for k in transformed[0]}
  dataset = tf.data.Dataset.from_tensor_slices(data).batch(32)
  history = model.fit(dataset, validation_data=dataset, epochs=4, verbose=0).history
  assert history['loss'][-1] < history['loss'][0]
  assert history['val_rmse'][-1] < history['val_rmse'][0]
  assert history['val_factorized_top_k/top_10_categorical_accuracy'][-1] > 0.0
  # The retrieval loss counts: dropping its weight changes the total.
  rating_only = model.ranking.task(labels=data[f.LABEL_KEY], predictions=model(data)).numpy()
  assert model.compute_loss(data).numpy() > rating_only
  export_dir = str(tmp_path / 'multitask')
  save_model(model, export_dir, make_serving_signatures(model, output))
  loaded = tf.saved_model.load(export_dir)
  from_examples = loaded.signatures['serving_tf_example'](
      examples=tf.constant([serialize_row(r) for r in rows]))[names.PREDICTION_KEY].numpy()
  np.testing.assert_allclose(from_examples, model(data).numpy(), rtol=1e-4, atol=1e-4)


def test_tuner_search_repeats_trial_for_trial(tiny_transform, tmp_path):
  """The same search twice scores every trial the same: each trial's weights start from the seed."""
  out_dir, _, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  params = hp.resolve({'hparams': {'model': 'ranking', 'embedding_dim': 4, 'layer_sizes': '8'}})
  data = tf.data.Dataset.from_tensor_slices({k: np.stack([t[k] for t in transformed]) for k in transformed[0]})
  scores = []
  for run in ('first', 'second'):
    tf.random.uniform([7])  # a different global random state before each search
    tuner = _LoggedRandomSearch(
        hypermodel=lambda hps: build_model(params.replace(learning_rate=hps.Choice('learning_rate', [0.05, 0.1])),
                                           output),
        objective=keras_tuner.Objective('val_rmse', 'min'), max_trials=2, seed=params.seed,
        directory=str(tmp_path / run), project_name='p')
    tuner.search(data.batch(64), validation_data=data.batch(64), epochs=1, verbose=0)
    scores.append(sorted((t.hyperparameters.values['learning_rate'], t.score)
                         for t in tuner.oracle.trials.values()))
  assert len(scores[0]) == 2 and scores[0] == scores[1]


def test_the_item_item_stage_builds_under_a_mirrored_strategy(tiny_transform):
  """Its tables are mirrored with the model's weights; the sequence model trains outside the strategy."""
  out_dir, _, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  data = {k: np.stack([t[k] for t in transformed]) for k in transformed[0]}
  params = hp.resolve({'hparams': {'model': 'multitask', 'item_item_model_dim': 8, 'item_item_model_epochs': 1}})
  scorer = task.item_item_scorer(params, output, tf.data.Dataset.from_tensor_slices(data).batch(32),
                                 distribution.get_strategy('mirrored'))
  assert scorer.table.__class__.__name__ == 'MirroredVariable'
  assert scorer.model_weight == params.item_item_model_weight > 0
  scores = scorer(*(tf.constant(value) for value in item_item.scorer_inputs(data))).numpy()
  assert scores.shape == (len(transformed), scorer.num_movies) and np.isfinite(scores).all()
