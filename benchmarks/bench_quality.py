"""make bench-quality: rating and retrieval quality on the seed's time split.

Runs the pipeline once (or reuses --output-root) for ExampleGen's splits and
Transform's graph, then trains each model with several seeds exactly as the
Trainer does (trainer.task.fit on the transformed train split, early stopping
on eval) and scores the raw test split through the Transform graph.
Baselines come from the raw splits. Writes docs/results/quality.json and
docs/results/quality.md.

Rating: test RMSE overall, and for cold users (not in train) and warm ones.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Dict  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from benchmarks import common  # noqa: E402
from pipeline import configs, run_summary  # noqa: E402
from trainer import hparams as hp  # noqa: E402
from trainer import task  # noqa: E402
from transforms import features as f  # noqa: E402

NAME = 'quality'
RANKING_MODELS = ('ranking', 'history_ranking')
# Pseudo-counts of the bias baselines (the usual MovieLens choices).
ITEM_SHRINKAGE = 5.0
USER_SHRINKAGE = 5.0


def _files(uri: str, split: str):
  return sorted(tf.io.gfile.glob(os.path.join(uri, f'Split-{split}', '*')))


def read_split(uri: str, split: str) -> Dict[str, list]:
  """Serialized examples and the raw fields the baselines need."""
  spec = {f.USER_ID: tf.io.FixedLenFeature([], tf.string), f.MOVIE_ID: tf.io.FixedLenFeature([], tf.string),
          f.RATING: tf.io.FixedLenFeature([], tf.float32),
          f.HISTORY_MOVIE_IDS: tf.io.VarLenFeature(tf.string), f.HISTORY_RATINGS: tf.io.VarLenFeature(tf.float32)}
  out = collections.defaultdict(list)
  for batch in tf.data.TFRecordDataset(_files(uri, split), compression_type='GZIP').batch(8192):
    parsed = tf.io.parse_example(batch, spec)
    out['serialized'] += list(batch.numpy())
    for key in (f.USER_ID, f.MOVIE_ID, f.RATING):
      out[key] += parsed[key].numpy().tolist()
    for key in (f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS):
      out[key] += tf.RaggedTensor.from_sparse(parsed[key]).to_list()
  return out


def _rmse(predictions, labels, mask=None) -> float:
  error = (np.asarray(predictions) - np.asarray(labels)) ** 2
  return float(np.sqrt(error[mask].mean() if mask is not None else error.mean()))


def bias_baselines(train, test) -> Dict[str, np.ndarray]:
  """Global mean; item+user biases fitted on train; item bias plus point-in-time user bias."""
  mean = float(np.mean(train[f.RATING]))
  item_bias, user_bias = collections.defaultdict(float), collections.defaultdict(float)
  for _ in range(10):  # alternating ridge updates
    sums, counts = collections.defaultdict(float), collections.Counter()
    for u, m, r in zip(train[f.USER_ID], train[f.MOVIE_ID], train[f.RATING]):
      sums[m] += r - mean - user_bias[u]
      counts[m] += 1
    item_bias = collections.defaultdict(float, {m: s / (counts[m] + ITEM_SHRINKAGE) for m, s in sums.items()})
    sums, counts = collections.defaultdict(float), collections.Counter()
    for u, m, r in zip(train[f.USER_ID], train[f.MOVIE_ID], train[f.RATING]):
      sums[u] += r - mean - item_bias[m]
      counts[u] += 1
    user_bias = collections.defaultdict(float, {u: s / (counts[u] + USER_SHRINKAGE) for u, s in sums.items()})
  fixed = np.array([mean + item_bias.get(m, 0.0) + user_bias.get(u, 0.0)
                    for u, m in zip(test[f.USER_ID], test[f.MOVIE_ID])])
  point_in_time = []
  for m, ids, ratings in zip(test[f.MOVIE_ID], test[f.HISTORY_MOVIE_IDS], test[f.HISTORY_RATINGS]):
    residuals = [r - mean - item_bias.get(i, 0.0) for i, r in zip(ids, ratings)]
    point_in_time.append(mean + item_bias.get(m, 0.0) + sum(residuals) / (len(residuals) + USER_SHRINKAGE))
  return {'global_mean': np.full(len(test[f.RATING]), mean), 'bias': np.clip(fixed, 1, 5),
          'bias_point_in_time': np.clip(point_in_time, 1, 5)}


def _transformed_dataset(tf_transform_output, uri, split, params, shuffle):
  spec = tf_transform_output.transformed_feature_spec()
  dataset = tf.data.TFRecordDataset(_files(uri, split), compression_type='GZIP')
  if shuffle:
    dataset = dataset.shuffle(100_000, seed=params.seed)
  return dataset.batch(params.batch_size).map(lambda x: tf.io.parse_example(x, spec)).cache()


def predict(model, tf_transform_output, serialized) -> np.ndarray:
  """Raw test examples through the Transform graph and the model, as serving_tf_example does."""
  raw_spec = tf_transform_output.raw_feature_spec()
  raw_spec.pop(f.LABEL_KEY)
  layer = tf_transform_output.transform_features_layer()
  out = []
  for start in range(0, len(serialized), 8192):
    raw = tf.io.parse_example(tf.constant(serialized[start:start + 8192]), raw_spec)
    out.append(model(layer(raw)).numpy().ravel())
  return np.concatenate(out)


def _reference_run(output_root: str, data_dir: str):
  """Transform and ExampleGen outputs of the newest run, running the pipeline if there is none."""
  metadata = os.path.join(output_root, 'metadata', configs.PIPELINE_NAME, 'metadata.db')
  if not os.path.exists(metadata):
    print(f'[bench-quality] running the pipeline into {output_root} for its splits and Transform ...', flush=True)
    subprocess.run([sys.executable, '-m', 'pipeline.local_runner', '--output-root', output_root, '--epochs', '1',
                    '--no-data-gate', *(['--data-dir', data_dir] if data_dir else [])],
                   check=True, stdout=subprocess.DEVNULL)
  store = run_summary.open_store(metadata)
  run_id = run_summary.latest_run_id(store, configs.PIPELINE_NAME)
  return (run_summary.output_uri(store, run_id, 'MovieLensExampleGen', 'examples'),
          run_summary.output_uri(store, run_id, 'Transform', 'transform_graph'),
          run_summary.output_uri(store, run_id, 'Transform', 'transformed_examples'))


def _summary(per_seed, cold, warm, labels):
  rmses = [_rmse(p, labels) for p in per_seed]
  return {'rmse_mean': round(statistics.mean(rmses), 4),
          'rmse_std': round(statistics.pstdev(rmses), 4) if len(rmses) > 1 else 0.0,
          'rmse_cold': round(statistics.mean(_rmse(p, labels, cold) for p in per_seed), 4),
          'rmse_warm': round(statistics.mean(_rmse(p, labels, warm) for p in per_seed), 4),
          'rmse_by_seed': [round(r, 4) for r in rmses]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=os.environ.get('MOVIELENS_DATA_DIR', ''))
  parser.add_argument('--output-root', default=None, help='reuse this pipeline output (default: a fresh run)')
  parser.add_argument('--seeds', default='1,2,3')
  parser.add_argument('--models', default=','.join(RANKING_MODELS))
  parser.add_argument('--hparams', default='{}', help='JSON overrides for every trained model')
  args = parser.parse_args(argv)
  output_root = args.output_root or tempfile.mkdtemp(prefix='bench-quality-')
  examples_uri, transform_uri, transformed_uri = _reference_run(output_root, args.data_dir)
  tf_transform_output = tft.TFTransformOutput(transform_uri)
  train, test = read_split(examples_uri, 'train'), read_split(examples_uri, 'test')
  labels = np.array(test[f.RATING])
  train_users = set(train[f.USER_ID])
  cold = np.array([u not in train_users for u in test[f.USER_ID]])
  warm = ~cold

  models = {name: _summary([p], cold, warm, labels) for name, p in bias_baselines(train, test).items()}
  seeds = [int(s) for s in args.seeds.split(',')]
  for name in args.models.split(','):
    per_seed = []
    for seed in seeds:
      start = time.time()
      params = hp.resolve({'hparams': {**json.loads(args.hparams), 'model': name, 'seed': seed}})
      tf.keras.utils.set_random_seed(seed)
      model = task.fit(params, tf_transform_output,
                       _transformed_dataset(tf_transform_output, transformed_uri, 'train', params, shuffle=True),
                       _transformed_dataset(tf_transform_output, transformed_uri, 'eval', params, shuffle=False))
      per_seed.append(predict(model, tf_transform_output, test['serialized']))
      print(f'[bench-quality] {name} seed {seed}: test RMSE {_rmse(per_seed[-1], labels):.4f} '
            f'({time.time() - start:.0f} s)', flush=True)
    models[name] = _summary(per_seed, cold, warm, labels)
  ranking = [n for n in args.models.split(',')]
  best = min(ranking, key=lambda n: models[n]['rmse_mean'])
  result = {'models': models, 'best_ranking': best, 'seeds': seeds, 'test_rows': int(len(labels)),
            'cold_share': round(float(cold.mean()), 4)}
  common.write_result(NAME, result, _table(result))


def _table(r):
  names = {'global_mean': 'global mean', 'bias': 'item + user bias (fit on train)',
           'bias_point_in_time': 'item bias + point-in-time user bias', 'ranking': "seed's model (ranking)",
           'history_ranking': 'ours: history_ranking (features, history, DCN)'}
  rows = [f'| {names.get(k, k)} | {v["rmse_mean"]:.4f} ± {v["rmse_std"]:.4f} | {v["rmse_cold"]:.4f} | '
          f'{v["rmse_warm"]:.4f} |' for k, v in r['models'].items()]
  return '\n'.join([
      f'Test split: {r["test_rows"]} ratings, {r["cold_share"]:.0%} from users not in train. '
      f'Trained models: mean ± std over seeds {r["seeds"]}. Best ranking model: **{r["best_ranking"]}**.',
      '', '| model | test RMSE | cold users | warm users |', '| --- | ---: | ---: | ---: |', *rows])


if __name__ == '__main__':
  main()
