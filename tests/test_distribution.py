"""Tests of trainer/distribution.py: strategies by name, the chief, sharding."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from conftest import REPO_ROOT
from trainer import distribution, models
from transforms import features as f

pytestmark = pytest.mark.unit


def _tiny_dataset(n=64, users=5, movies=7):
  rng = np.random.default_rng(0)
  return tf.data.Dataset.from_tensor_slices({
      f.transformed_name(f.USER_ID): rng.integers(0, users, n),
      f.transformed_name(f.MOVIE_ID): rng.integers(0, movies, n),
      f.LABEL_KEY: rng.integers(1, 6, n).astype(np.float32),
  }).batch(16)


def _fit_ranking_model(strategy):
  """The project's ranking model, whose task uses the strategy-safe loss."""
  with strategy.scope():
    model = models.RankingModel(user_vocab_size=5, movie_vocab_size=7, embedding_dim=4, layer_sizes=(8,))
    assert isinstance(model.task._loss, distribution.MeanSquaredError)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
  history = model.fit(distribution.shard_by_data(_tiny_dataset()), epochs=2, verbose=0)
  return model, history.history['loss']


def test_default_is_no_distribution():
  strategy = distribution.get_strategy('default')
  assert strategy is tf.distribute.get_strategy()
  assert strategy.num_replicas_in_sync == 1


def test_mirrored_trains_the_ranking_model_with_mirrored_variables():
  strategy = distribution.get_strategy('mirrored')
  assert isinstance(strategy, tf.distribute.MirroredStrategy)
  model, losses = _fit_ranking_model(strategy)
  assert all(np.isfinite(losses))
  assert model.user_embedding.embeddings.__class__.__name__ == 'MirroredVariable'


def test_multi_worker_mirrored_trains_as_one_worker_without_tf_config():
  # Its collective ops must be set up before TensorFlow runs anything, so it
  # gets a fresh process.
  script = (
      'import json\n'
      'import tensorflow as tf\n'
      'from trainer import distribution\n'
      'from test_distribution import _fit_ranking_model\n'
      'strategy = distribution.get_strategy("multi_worker_mirrored")\n'
      'model, losses = _fit_ranking_model(strategy)\n'
      'multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)\n'
      'print(json.dumps({"multi_worker": multi_worker, "replicas": strategy.num_replicas_in_sync,\n'
      '                  "losses": [float(x) for x in losses]}))\n')
  env = {k: v for k, v in os.environ.items() if k != 'TF_CONFIG'}
  env.update(TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=f'{REPO_ROOT}:{REPO_ROOT / "tests"}')
  out = subprocess.run([sys.executable, '-c', script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['multi_worker'] and result['replicas'] == 1
  assert all(np.isfinite(result['losses'])) and result['losses'][1] < result['losses'][0]


def test_keras_mean_squared_error_refuses_a_strategy_ours_does_not():
  """Why the TFRS models need distribution.MeanSquaredError under a strategy."""
  strategy = distribution.get_strategy('mirrored')
  with strategy.scope():
    model = models.RankingModel(user_vocab_size=5, movie_vocab_size=7, embedding_dim=4, layer_sizes=(8,))
    model.task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError())
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
  with pytest.raises(ValueError, match='loss reduction'):
    model.fit(_tiny_dataset(), epochs=1, verbose=0)


def test_mean_squared_error_is_the_plain_mean_without_a_strategy():
  y_true = tf.constant([[1.0], [4.0], [5.0]])
  y_pred = tf.constant([[1.5], [3.0], [2.0]])
  ours = distribution.MeanSquaredError()(y_true, y_pred)
  keras = tf.keras.losses.MeanSquaredError()(y_true, y_pred)
  assert float(ours) == pytest.approx(float(keras)) == pytest.approx((0.25 + 1 + 9) / 3)
  weights = tf.constant([1.0, 0.0, 2.0])
  assert float(distribution.MeanSquaredError()(y_true, y_pred, weights)) == pytest.approx((0.25 + 18) / 3)
  # TFRS's Ranking task passes labels as [B] and predictions as [B, 1].
  assert float(distribution.MeanSquaredError()(tf.reshape(y_true, [-1]), y_pred)) == pytest.approx(float(keras))


def test_unknown_strategy_is_refused():
  with pytest.raises(ValueError, match='multi_worker_mirrored'):
    distribution.get_strategy('parameter_server')


@pytest.mark.parametrize('tf_config, task, chief', [
    ('', ('chief', 0), True),
    (json.dumps({'cluster': {'chief': ['a:1'], 'worker': ['b:1']}, 'task': {'type': 'chief', 'index': 0}}),
     ('chief', 0), True),
    (json.dumps({'cluster': {'chief': ['a:1'], 'worker': ['b:1']}, 'task': {'type': 'worker', 'index': 0}}),
     ('worker', 0), False),
    (json.dumps({'cluster': {'worker': ['a:1', 'b:1']}, 'task': {'type': 'worker', 'index': 0}}),
     ('worker', 0), True),
    (json.dumps({'cluster': {'worker': ['a:1', 'b:1']}, 'task': {'type': 'worker', 'index': 1}}),
     ('worker', 1), False),
])
def test_only_the_chief_writes_the_model(tf_config, task, chief):
  assert distribution.task_of(tf_config) == task
  assert distribution.is_chief(tf_config) is chief
  target = distribution.model_dir('gs://b/run/Format-Serving', tf_config)
  assert (target == 'gs://b/run/Format-Serving') is chief
  if not chief:
    assert target == f'gs://b/run/workers/{task[0]}-{task[1]}'


def test_shard_by_data_sets_the_policy():
  dataset = distribution.shard_by_data(_tiny_dataset())
  assert dataset.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
