"""tf.distribute strategies for the Trainer, chosen by name.

``run_fn`` builds and compiles the model inside ``get_strategy(name).scope()``
and fits it as before; Keras splits each batch across the replicas, so
``HParams.batch_size`` is the global batch. The names:

* ``default``: no distribution; one device, what the Trainer has always done.
* ``mirrored``: ``MirroredStrategy``, synchronous data parallelism over the
  GPUs of one machine (one CPU replica where there are none).
* ``multi_worker_mirrored``: ``MultiWorkerMirroredStrategy``, the same over
  several machines. Each worker runs the same ``run_fn``; the cluster comes
  from ``TF_CONFIG``, which whatever starts the workers sets (Vertex AI
  Training's worker pools, the Kubeflow Training Operator's TFJob). Without
  ``TF_CONFIG`` it is one worker. docs/kubeflow.md has how to run it.

Two things a TFRS model needs under a strategy, because TFRS's
``train_step`` computes the loss itself instead of through ``compile``:

* its task's loss must average over the *global* batch: Keras refuses a
  mean-reduced loss under a strategy. ``MeanSquaredError`` here does that,
  and equals Keras's without one.
* layer regularization is added once per replica and the replicas' gradients
  are summed, so divide L2 penalties by ``num_replicas_in_sync``.

With several workers every worker must save the model (saving is a
collective operation) but only the chief's copy counts: ``model_dir`` gives
the others a scratch folder. Input is sharded by example
(``shard_by_data``): the transformed splits have fewer files than a cluster
may have workers, and file sharding would leave some workers without data.
"""
import json
import os
from typing import Optional, Tuple

import tensorflow as tf

DEFAULT = 'default'
MIRRORED = 'mirrored'
MULTI_WORKER_MIRRORED = 'multi_worker_mirrored'
STRATEGIES = (DEFAULT, MIRRORED, MULTI_WORKER_MIRRORED)
_TF_CONFIG = 'TF_CONFIG'


def get_strategy(name: str) -> tf.distribute.Strategy:
  """The strategy ``name`` stands for.

  Args:
    name: one of ``STRATEGIES``.

  Returns:
    A strategy; build and compile the model inside its ``scope()``.

  Raises:
    ValueError: for an unknown name.
  """
  if name == DEFAULT:
    return tf.distribute.get_strategy()
  if name == MIRRORED:
    return tf.distribute.MirroredStrategy()
  if name == MULTI_WORKER_MIRRORED:
    # AUTO: NCCL between GPUs, ring all-reduce between CPUs.
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO))
  raise ValueError(f'Unknown distribution strategy {name!r}; available: {STRATEGIES}.')


class MeanSquaredError(tf.keras.losses.Loss):
  """Mean squared error averaged over the global batch, for any strategy.

  Each replica returns its examples' summed error divided by the global
  batch size (``tf.nn.compute_average_loss``), so the summed gradients of
  all replicas are the gradient of the global mean. Without a strategy that
  is the plain mean, as ``tf.keras.losses.MeanSquaredError`` gives.
  """

  def __init__(self, name: str = 'mean_squared_error'):
    # NONE: Keras's own mean reduction raises under a strategy.
    super().__init__(reduction=tf.keras.losses.Reduction.NONE, name=name)

  def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    # Labels come as [B] and predictions as [B, 1]: without this they would
    # broadcast to [B, B] (Keras's own class squeezes them the same way).
    y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), tf.shape(y_pred))
    return tf.keras.losses.mean_squared_error(y_true, y_pred)

  def __call__(self, y_true, y_pred, sample_weight=None) -> tf.Tensor:
    return tf.nn.compute_average_loss(super().__call__(y_true, y_pred, sample_weight))


def _tf_config(tf_config: Optional[str]) -> dict:
  text = os.environ.get(_TF_CONFIG, '') if tf_config is None else tf_config
  return json.loads(text) if text else {}


def task_of(tf_config: Optional[str] = None) -> Tuple[str, int]:
  """(task type, task index) of this process from ``TF_CONFIG``; ('chief', 0) without one."""
  task = _tf_config(tf_config).get('task', {})
  return task.get('type', 'chief'), int(task.get('index', 0))


def is_chief(tf_config: Optional[str] = None) -> bool:
  """Whether this worker's saved model is the one that counts.

  The 'chief' task if the cluster has one, else worker 0, as
  MultiWorkerMirroredStrategy has it; a process without ``TF_CONFIG`` is
  alone, and so the chief.
  """
  config = _tf_config(tf_config)
  task_type, task_index = task_of(tf_config)
  if task_type == 'chief':
    return True
  return task_type == 'worker' and task_index == 0 and 'chief' not in config.get('cluster', {})


def model_dir(serving_model_dir: str, tf_config: Optional[str] = None) -> str:
  """Where this worker saves: the real folder on the chief, a scratch one elsewhere."""
  if is_chief(tf_config):
    return serving_model_dir
  task_type, task_index = task_of(tf_config)
  return os.path.join(os.path.dirname(serving_model_dir.rstrip('/')), 'workers', f'{task_type}-{task_index}')


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Makes a multi-worker strategy shard ``dataset`` by example, not by file."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return dataset.with_options(options)
