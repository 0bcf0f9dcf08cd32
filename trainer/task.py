"""Trainer module file: builds, fits and exports a TFRS model.

TFX packages this folder (``trainer/``) into the Trainer's cache key, so edits
here re-run Trainer but never Transform.
"""
import os

# Before TensorFlow loads: TFRS 0.7 and TFX 1.16 need Keras 2.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from typing import List  # noqa: E402

from absl import logging  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from trainer import hparams as hp  # noqa: E402
from trainer.models import RankingModel  # noqa: E402
from trainer.signatures import make_serving_signatures  # noqa: E402
from transforms import features as f  # noqa: E402

HPARAMS_FILE = 'hparams.json'


def _dataset(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
             tf_transform_output: tft.TFTransformOutput, params: hp.HParams,
             shuffle: bool) -> tf.data.Dataset:
  """One pass over transformed examples, cached in memory, seeded shuffle."""
  return data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(
          batch_size=params.batch_size, num_epochs=1, shuffle=shuffle,
          shuffle_seed=params.seed, shuffle_buffer_size=100_000),
      tf_transform_output.transformed_metadata.schema).cache()


def _vocab_size(tf_transform_output: tft.TFTransformOutput, name: str) -> int:
  return int(tf_transform_output.vocabulary_size_by_name(name)) + f.OOV_BUCKETS


def build_model(params: hp.HParams, tf_transform_output: tft.TFTransformOutput) -> tf.keras.Model:
  """Builds and compiles the model ``params.model`` names, sized from Transform."""
  if params.model != 'ranking':
    raise ValueError(f'Unknown model {params.model!r}; available: ranking.')
  model = RankingModel(
      user_vocab_size=_vocab_size(tf_transform_output, f.USER_VOCAB),
      movie_vocab_size=_vocab_size(tf_transform_output, f.MOVIE_VOCAB),
      embedding_dim=params.embedding_dim, layer_sizes=params.layer_sizes, l2=params.l2)
  optimizers = {'adagrad': tf.keras.optimizers.Adagrad, 'adam': tf.keras.optimizers.Adam}
  if params.optimizer not in optimizers:
    raise ValueError(f'Unknown optimizer {params.optimizer!r}; available: {sorted(optimizers)}.')
  model.compile(optimizer=optimizers[params.optimizer](learning_rate=params.learning_rate))
  return model


class _EpochLogger(tf.keras.callbacks.Callback):
  """One log line per epoch, so a long fit shows progress in the run log."""

  def __init__(self, epochs: int):
    super().__init__()
    self._epochs = epochs

  def on_epoch_end(self, epoch, logs=None):
    shown = ', '.join(f'{k}={v:.4f}' for k, v in sorted((logs or {}).items()))
    logging.info('Trainer epoch %d/%d: %s', epoch + 1, self._epochs, shown)


# TFX Trainer calls this.
def run_fn(fn_args: tfx.components.FnArgs):
  """Trains the model and saves it with its serving signatures."""
  tuned = fn_args.hyperparameters.get('values') if fn_args.hyperparameters else None
  params = hp.resolve(fn_args.custom_config, tuned)
  logging.info('Trainer hyperparameters: %s', params.to_json())
  tf.keras.utils.set_random_seed(params.seed)

  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  train = _dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output, params, shuffle=True)
  evaluation = _dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, params, shuffle=False)

  model = build_model(params, tf_transform_output)
  model.fit(train, validation_data=evaluation, epochs=params.epochs, verbose=0,
            callbacks=[_EpochLogger(params.epochs),
                       tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)])

  signatures = make_serving_signatures(model, tf_transform_output, model.RAW_FEATURES)
  tf.saved_model.save(model, fn_args.serving_model_dir, signatures=signatures)
  # Next to the SavedModel so a reader of the pushed model knows how it was made.
  extra_dir = os.path.join(fn_args.serving_model_dir, 'assets.extra')
  tf.io.gfile.makedirs(extra_dir)
  with tf.io.gfile.GFile(os.path.join(extra_dir, HPARAMS_FILE), 'w') as fh:
    fh.write(params.to_json())
  logging.info('Saved model to %s', fn_args.serving_model_dir)
