"""Trainer and Tuner module file: builds, fits and exports a TFRS model.

TFX packages this folder (``trainer/``) into the Trainer's cache key, so edits
here re-run Trainer but never Transform.
"""
import contextlib
import io
import os

# Before TensorFlow loads: TFRS 0.7 and TFX 1.16 need Keras 2.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from typing import Dict, List, Optional  # noqa: E402

from absl import logging  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from contract import names  # noqa: E402

from trainer import hparams as hp  # noqa: E402
from trainer import distribution, explain, item_item, registry, sequential, similarity  # noqa: E402
from trainer.signatures import make_serving_signatures, save_model  # noqa: E402
from transforms import features as f  # noqa: E402

HPARAMS_FILE = names.HPARAMS_FILE


# Below this much (gzipped) input, keep the parsed split in memory after the
# first epoch; above it, stream from the TFRecords every epoch.
_CACHE_MAX_BYTES = 256 * 2**20


def _input_bytes(file_pattern: List[str]) -> int:
  return sum(tf.io.gfile.stat(path).length for pattern in file_pattern for path in tf.io.gfile.glob(pattern))


def _dataset(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
             tf_transform_output: tft.TFTransformOutput, params: hp.HParams,
             shuffle: bool) -> tf.data.Dataset:
  """One pass over transformed examples, seeded shuffle; cached in memory when small."""
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(
          batch_size=params.batch_size, num_epochs=1, shuffle=shuffle,
          shuffle_seed=params.seed, shuffle_buffer_size=100_000),
      tf_transform_output.transformed_metadata.schema)
  return dataset.cache() if _input_bytes(file_pattern) <= _CACHE_MAX_BYTES else dataset


def _vocab_size(tf_transform_output: tft.TFTransformOutput, name: str) -> int:
  return int(tf_transform_output.vocabulary_size_by_name(name)) + f.OOV_BUCKETS


def build_model(params: hp.HParams, tf_transform_output: tft.TFTransformOutput,
                neighbours: Optional[Dict[str, np.ndarray]] = None) -> tf.keras.Model:
  """Builds and compiles the model ``params.model`` names, sized from Transform.

  ``neighbours`` (``neighbour_statistics`` of the train split) make the
  history models' kNN term; None leaves the term out.
  """
  model = registry.get(params.model).build(params, lambda name: _vocab_size(tf_transform_output, name), neighbours)
  optimizers = {'adagrad': tf.keras.optimizers.Adagrad, 'adam': tf.keras.optimizers.Adam}
  if params.optimizer not in optimizers:
    raise ValueError(f'Unknown optimizer {params.optimizer!r}; available: {sorted(optimizers)}.')
  model.compile(optimizer=optimizers[params.optimizer](learning_rate=params.learning_rate))
  return model


def neighbour_statistics(params: hp.HParams, tf_transform_output: tft.TFTransformOutput,
                         ratings: tf.data.Dataset) -> Optional[Dict[str, np.ndarray]]:
  """The kNN tables of ``ratings`` (the train split, or train and eval), for models that use them (else None)."""
  if not registry.get(params.model).neighbours or not params.neighbour_shrinkage:
    return None
  statistics = similarity.from_dataset(ratings, _vocab_size(tf_transform_output, f.USER_VOCAB),
                                       _vocab_size(tf_transform_output, f.MOVIE_VOCAB))
  logging.info('Item similarities: %d x %d movies.', *statistics['dot'].shape)
  return statistics


def _callbacks(params: hp.HParams) -> List[tf.keras.callbacks.Callback]:
  if not params.early_stopping_patience:
    return []
  # Rating models stop on eval RMSE, retrieval on its eval softmax loss.
  monitor = 'val_rmse' if registry.get(params.model).rates else 'val_loss'
  return [tf.keras.callbacks.EarlyStopping(monitor, mode='min', patience=params.early_stopping_patience,
                                           restore_best_weights=True)]


def _search_space(hps: keras_tuner.HyperParameters, params: hp.HParams) -> hp.HParams:
  """The Tuner's search space, around ``params`` (the model's defaults)."""
  return params.replace(
      learning_rate=hps.Choice('learning_rate', [3e-4, 1e-3, 3e-3]),
      optimizer=hps.Choice('optimizer', ['adam', 'adagrad']),
      embedding_dim=hps.Choice('embedding_dim', [16, 32, 64]),
      layer_sizes=hps.Choice('layer_sizes', ['64', '128,64', '256,128']),
      cross_layers=hps.Int('cross_layers', 0, 2),
      dropout=hps.Choice('dropout', [0.0, 0.2, 0.4]),
      l2=hps.Choice('l2', [0.0, 1e-5, 1e-4]))


# TFX Tuner calls this.
def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
  """A seeded random search over the model's hyperparameters, with early stopping.

  custom_config['tuner'] sets the budget: max_trials (default 10) and epochs
  per trial (default: the model's epochs).
  """
  params = hp.resolve(fn_args.custom_config)
  budget = (fn_args.custom_config or {}).get('tuner', {})
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
  train = _dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output, params, shuffle=True)
  evaluation = _dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, params, shuffle=False)
  neighbours = neighbour_statistics(params, tf_transform_output, train)
  tuner = _LoggedRandomSearch(
      hypermodel=lambda hps: build_model(_search_space(hps, params), tf_transform_output, neighbours),
      objective=keras_tuner.Objective('val_rmse', 'min'),
      max_trials=int(budget.get('max_trials', 10)),
      seed=params.seed, directory=fn_args.working_dir, project_name='movielens')
  return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={
      'x': train, 'validation_data': evaluation, 'epochs': int(budget.get('epochs', params.epochs)),
      'verbose': 0, 'callbacks': [tf.keras.callbacks.EarlyStopping('val_rmse', mode='min', patience=3)]})


class _LoggedRandomSearch(keras_tuner.RandomSearch):
  """RandomSearch with one log line per trial, so a long search shows progress in the run log.

  Its summaries, which KerasTuner prints, go to the log too (INFO).
  """

  def search_space_summary(self, extended=False):
    with contextlib.redirect_stdout(io.StringIO()) as text:
      super().search_space_summary(extended)
    logging.info('Tuner search space:\n%s', text.getvalue())

  def results_summary(self, num_trials=10):
    with contextlib.redirect_stdout(io.StringIO()) as text:
      super().results_summary(num_trials)
    logging.info('Tuner results:\n%s', text.getvalue())

  def _build_and_fit_model(self, trial, *args, **kwargs):
    # Each trial's weights start from the seed, as the Trainer's do: unseeded,
    # the same values scored differently from run to run, enough to change
    # which trial wins and so the tuned model.
    tf.keras.utils.set_random_seed(self.oracle.seed)
    return super()._build_and_fit_model(trial, *args, **kwargs)

  def on_trial_end(self, trial):
    super().on_trial_end(trial)
    score = 'n/a' if trial.score is None else f'{trial.score:.4f}'
    logging.info('Tuner trial %d/%d: val_rmse %s', len(self.oracle.trials), self.oracle.max_trials, score)


class _EpochLogger(tf.keras.callbacks.Callback):
  """One log line per epoch, so a long fit shows progress in the run log."""

  def __init__(self, epochs: int):
    super().__init__()
    self._epochs = epochs

  def on_epoch_end(self, epoch, logs=None):
    shown = ', '.join(f'{k}={v:.4f}' for k, v in sorted((logs or {}).items()))
    logging.info('Trainer epoch %d/%d: %s', epoch + 1, self._epochs, shown)


def fit(params: hp.HParams, tf_transform_output: tft.TFTransformOutput, train: tf.data.Dataset,
        evaluation: tf.data.Dataset, callbacks=()) -> tf.keras.Model:
  """Seeds, builds and fits the model: what the Trainer does, callable from benchmarks."""
  tf.keras.utils.set_random_seed(params.seed)
  strategy = distribution.get_strategy(params.distribution_strategy)
  # TFRS adds layer regularization once per replica and the replicas'
  # gradients are summed: divide L2 so the penalty stays what params says.
  neighbours = neighbour_statistics(params, tf_transform_output, train)
  with strategy.scope():
    model = build_model(params.replace(l2=params.l2 / strategy.num_replicas_in_sync), tf_transform_output,
                        neighbours)
  if strategy.num_replicas_in_sync > 1 or params.distribution_strategy == distribution.MULTI_WORKER_MIRRORED:
    train, evaluation = distribution.shard_by_data(train), distribution.shard_by_data(evaluation)
  model.fit(train, validation_data=evaluation, epochs=params.epochs, verbose=0,
            callbacks=[_EpochLogger(params.epochs), *_callbacks(params), *callbacks])
  if neighbours is not None:
    # Trained (and early-stopped on eval) with the train split's tables; the
    # model serves rows from after both splits, so its tables then hold every
    # rating before the test period (test RMSE -0.0024, docs/models.md).
    model.similarity.refresh(neighbour_statistics(params, tf_transform_output, train.concatenate(evaluation)))
  if registry.get(params.model).item_item:
    model.item_item = item_item_scorer(params, tf_transform_output, train.concatenate(evaluation), strategy)
  return model


def item_item_scorer(params: hp.HParams, tf_transform_output: tft.TFTransformOutput,
                     ratings: tf.data.Dataset,
                     strategy: Optional[tf.distribute.Strategy] = None) -> item_item.ItemItemScorer:
  """The item-item stage of ``recommend`` and ``retrieve`` (trainer/item_item.py).

  From every rating before the test period (``fit`` passes train and eval):
  the tables are computed after training and rate nothing, so the eval
  split's ratings reach neither the rating loss nor its early stopping. The
  sequence model trains on one device, outside ``strategy`` (it is small,
  and its custom loop does not run per replica); the scorer is built in it.
  """
  rows = item_item.ratings_of(ratings)
  movies = int(tf_transform_output.vocabulary_size_by_name(f.MOVIE_VOCAB))
  table = item_item.ease_table(rows.users, rows.movies, movies, params.item_item_l2)
  sequence = item_item.sequence_table(rows.history_ids, rows.movies, movies, params.item_item_sequence_window)
  logging.info('Item-item tables (EASE and sequential): %d x %d movies.', *table.shape)
  model = None
  if params.item_item_model_weight:
    side = sequential.Side(item_item.movie_genres(rows, movies), _vocab_size(tf_transform_output, f.GENDER_VOCAB))
    model = sequential.fit(rows.history_ids, rows.history_ratings, rows.movies, movies, params.item_item_model_dim,
                           params.item_item_model_epochs, params.seed, side, rows.gender, rows.age_bucket)
  with strategy.scope() if strategy else contextlib.nullcontext():
    return item_item.ItemItemScorer(table, sequence, model, **item_item_weights(params), name='item_item')


def item_item_weights(params: hp.HParams) -> Dict[str, float]:
  """``ItemItemScorer``'s half-lives and weights, from ``HParams.item_item_*``."""
  return dict(half_life=params.item_item_half_life, sequence_half_life=params.item_item_sequence_half_life,
              sequence_weight=params.item_item_sequence_weight, model_weight=params.item_item_model_weight,
              rating_weight=params.item_item_rating_weight)


def serving_signatures(params: hp.HParams, model: tf.keras.Model,
                       tf_transform_output: tft.TFTransformOutput) -> Dict[str, tf.types.experimental.ConcreteFunction]:
  """The signatures the Trainer saves ``model`` with (``trainer/signatures.py``), ``explain`` for rating models."""
  entry = registry.get(params.model)
  signatures = make_serving_signatures(model, tf_transform_output, retrieves=entry.retrieves,
                                       item_item=entry.item_item)
  if entry.rates:
    signatures[names.EXPLAIN] = explain.make_explain_signature(explain.model_scorer(model),
                                                              f.raw_inputs(model.TRANSFORM_OUTPUTS))
  return signatures


# TFX Trainer calls this.
def run_fn(fn_args: tfx.components.FnArgs):
  """Trains the model and saves it with its serving signatures."""
  tuned = fn_args.hyperparameters.get('values') if fn_args.hyperparameters else None
  params = hp.resolve(fn_args.custom_config, tuned)
  if not registry.get(params.model).rates:
    raise ValueError(f'The pipeline trains rating models {hp.RATING_MODELS}; {params.model!r} has no rating '
                     'output for its Evaluator and serving signatures. `make bench-quality` trains and scores it.')
  logging.info('Trainer hyperparameters: %s', params.to_json())
  # Before the datasets: their shuffle reads the global seed too.
  tf.keras.utils.set_random_seed(params.seed)

  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  train = _dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output, params, shuffle=True)
  evaluation = _dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, params, shuffle=False)

  model = fit(params, tf_transform_output, train, evaluation,
              [tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)])

  signatures = serving_signatures(params, model, tf_transform_output)
  # Every worker saves (a collective op); only the chief's copy is the model.
  model_dir = distribution.model_dir(fn_args.serving_model_dir)
  save_model(model, model_dir, signatures)
  # Next to the SavedModel so a reader of the pushed model knows how it was made.
  extra_dir = os.path.join(model_dir, 'assets.extra')
  tf.io.gfile.makedirs(extra_dir)
  with tf.io.gfile.GFile(os.path.join(extra_dir, HPARAMS_FILE), 'w') as fh:
    fh.write(params.to_json())
  logging.info('Saved model to %s', fn_args.serving_model_dir)
