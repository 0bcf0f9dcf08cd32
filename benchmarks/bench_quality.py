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
from components.common.splits import split_files  # noqa: E402
from components.retrieval_evaluator import protocol  # noqa: E402
from contract import names  # noqa: E402
from pipeline import configs, run_summary  # noqa: E402
from trainer import hparams as hp  # noqa: E402
from trainer import registry, task  # noqa: E402
from trainer import signatures  # noqa: E402
from trainer.signatures import raw_spec_without_label  # noqa: E402
from transforms import features as f  # noqa: E402

NAME = 'quality'
RANKING_MODELS = ('ranking', 'history_ranking', 'multitask')
# Models with query and candidate towers; multitask is in both lists.
RETRIEVAL_MODELS = ('retrieval', 'multitask')
# The figures a seed's log line shows, and those with a std over seeds.
SHOWN = ('recall_at_10', 'recall_at_100', 'ndcg_at_10')
# Pseudo-counts of the bias baselines (the usual MovieLens choices).
ITEM_SHRINKAGE = 5.0
USER_SHRINKAGE = 5.0


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
  dataset = tf.data.TFRecordDataset(split_files(uri, split), compression_type='GZIP')
  if shuffle:
    dataset = dataset.shuffle(100_000, seed=params.seed)
  return dataset.batch(params.batch_size).map(lambda x: tf.io.parse_example(x, spec)).cache()


def predict(model, tf_transform_output, serialized, movie_stats=True) -> np.ndarray:
  """Raw test examples through the Transform graph and the model, as serving_tf_example does.

  With ``movie_stats=False`` every example's movie statistics are 0, as a
  client without a feature store sends them.
  """
  raw_spec = raw_spec_without_label(tf_transform_output)
  layer = tf_transform_output.transform_features_layer()
  out = []
  for start in range(0, len(serialized), 8192):
    raw = tf.io.parse_example(tf.constant(serialized[start:start + 8192]), raw_spec)
    if not movie_stats:
      for key in (f.MOVIE_RATING_COUNT, f.MOVIE_RATING_MEAN):
        raw[key] = tf.zeros_like(raw[key])
    out.append(model(layer(raw)).numpy().ravel())
  return np.concatenate(out)


def _reference_run(output_root: str, data_dir: str):
  """Transform and ExampleGen outputs of the newest run, running the pipeline if there is none."""
  metadata = names.metadata_path(output_root)
  if not os.path.exists(metadata):
    print(f'[bench-quality] running the pipeline into {output_root} for its splits and Transform ...', flush=True)
    subprocess.run([sys.executable, '-m', 'pipeline.local_runner', '--output-root', output_root, '--epochs', '1',
                    '--no-data-gate', *(['--data-dir', data_dir] if data_dir else [])],
                   check=True, stdout=subprocess.DEVNULL)
  store = run_summary.open_store(metadata)
  run_id = run_summary.latest_run_id(store, configs.PIPELINE_NAME)
  return (run_summary.output_uri(store, run_id, names.EXAMPLE_GEN, 'examples'),
          run_summary.output_uri(store, run_id, names.TRANSFORM, 'transform_graph'),
          run_summary.output_uri(store, run_id, names.TRANSFORM, 'transformed_examples'))


def _summary(per_seed, cold, warm, labels):
  rmses = [_rmse(p, labels) for p in per_seed]
  return {'rmse_mean': round(statistics.mean(rmses), 4),
          'rmse_std': round(statistics.pstdev(rmses), 4) if len(rmses) > 1 else 0.0,
          'rmse_cold': round(statistics.mean(_rmse(p, labels, cold) for p in per_seed), 4),
          'rmse_warm': round(statistics.mean(_rmse(p, labels, warm) for p in per_seed), 4),
          'rmse_by_seed': [round(r, 4) for r in rmses]}


def model_retrieval_metrics(model, tf_transform_output, cases, test, context, item_item=False):
  """The protocol's metrics of a model with towers, over every movie in the train vocabulary.

  In process, through the same ``retrieve`` signature the Trainer exports
  (ranking by the item-item stage when ``item_item``, as the registry says).
  """
  signature = signatures.make_retrieve_signature(
      model, tf_transform_output.transform_features_layer(), raw_spec_without_label(tf_transform_output),
      tf_transform_output.vocabulary_by_name(f.MOVIE_VOCAB), item_item)
  return protocol.score_lists(protocol.model_lists(protocol.retriever(signature), test, cases), cases, context)[1]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=os.environ.get('MOVIELENS_DATA_DIR', ''))
  parser.add_argument('--output-root', default=None, help='reuse this pipeline output (default: a fresh run)')
  parser.add_argument('--seeds', default='1,2,3')
  parser.add_argument('--models', default=','.join(dict.fromkeys(RANKING_MODELS + RETRIEVAL_MODELS)))
  parser.add_argument('--hparams', default='{}', help='JSON overrides for every trained model')
  args = parser.parse_args(argv)
  output_root = args.output_root or tempfile.mkdtemp(prefix='bench-quality-')
  examples_uri, transform_uri, transformed_uri = _reference_run(output_root, args.data_dir)
  tf_transform_output = tft.TFTransformOutput(transform_uri)
  train, evaluation, test = (protocol.read_split(examples_uri, s, with_history=True) for s in ('train', 'eval', 'test'))
  everything = {k: train[k] + evaluation[k] + test[k] for k in (f.USER_ID, f.MOVIE_ID, f.TIMESTAMP)}
  cases = protocol.retrieval_cases(everything, test)
  test_start = min(test[f.TIMESTAMP])
  context = protocol.list_context({'train': train, 'eval': evaluation, 'test': test}, test_start, cases)
  popularity = protocol.score_lists(protocol.popularity_lists(everything, test_start, cases), cases, context)[1]
  labels = np.array(test[f.RATING])
  train_users = set(train[f.USER_ID])
  cold = np.array([u not in train_users for u in test[f.USER_ID]])
  warm = ~cold

  models = {name: _summary([p], cold, warm, labels) for name, p in bias_baselines(train, test).items()}
  seeds = [int(s) for s in args.seeds.split(',')]
  model_names = args.models.split(',')
  for name in model_names:
    predictions, retrieved, without_stats, towers = [], [], [], []
    item_item = registry.get(name).item_item
    for seed in seeds:
      start = time.time()
      params = hp.resolve({'hparams': {**json.loads(args.hparams), 'model': name, 'seed': seed}})
      tf.keras.utils.set_random_seed(seed)
      model = task.fit(params, tf_transform_output,
                       _transformed_dataset(tf_transform_output, transformed_uri, 'train', params, shuffle=True),
                       _transformed_dataset(tf_transform_output, transformed_uri, 'eval', params, shuffle=False))
      shown = []
      if name in RANKING_MODELS:
        predictions.append(predict(model, tf_transform_output, test['serialized']))
        shown.append(f'test RMSE {_rmse(predictions[-1], labels):.4f}')
        if f.MOVIE_RATING_COUNT in f.raw_inputs(model.TRANSFORM_OUTPUTS):
          without_stats.append(_rmse(predict(model, tf_transform_output, test['serialized'], False), labels))
          shown.append(f'without movie statistics {without_stats[-1]:.4f}')
      if name in RETRIEVAL_MODELS:
        retrieved.append(model_retrieval_metrics(model, tf_transform_output, cases, test, context, item_item))
        shown += [f'{k} {retrieved[-1][k]:.4f}' for k in SHOWN]
        if item_item:
          towers.append(model_retrieval_metrics(model, tf_transform_output, cases, test, context))
          shown += [f'towers alone {k} {towers[-1][k]:.4f}' for k in SHOWN]
      print(f'[bench-quality] {name} seed {seed}: {", ".join(shown)} ({time.time() - start:.0f} s)', flush=True)
    models[name] = _summary(predictions, cold, warm, labels) if predictions else {}
    if without_stats:
      models[name]['rmse_without_movie_stats'] = round(statistics.mean(without_stats), 4)
    if retrieved:
      models[name].update({k: round(statistics.mean(c[k] for c in retrieved), 4) for k in retrieved[0]})
      for k in SHOWN:
        models[name][f'{k}_std'] = round(statistics.pstdev(c[k] for c in retrieved), 4)
    if towers:
      models[f'{name}_towers'] = {k: round(statistics.mean(c[k] for c in towers), 4) for k in towers[0]}
  models['popularity'] = popularity
  result = {'models': models, 'seeds': seeds, 'test_rows': int(len(labels)),
            'cold_share': round(float(cold.mean()), 4), 'retrieval_cases': len(cases), 'popularity': popularity}
  ranking = [n for n in model_names if n in RANKING_MODELS]
  retrievers = [n for n in model_names if n in RETRIEVAL_MODELS]
  if ranking:
    result['best_ranking'] = min(ranking, key=lambda n: models[n]['rmse_mean'])
  if retrievers:
    result['best_retrieval'] = max(retrievers, key=lambda n: models[n]['recall_at_100'])
  common.write_result(NAME, result, _table(result))


def _table(r):
  titles = {'global_mean': 'global mean', 'bias': 'item + user bias (fit on train)',
           'bias_point_in_time': 'item bias + point-in-time user bias', 'ranking': "seed's model (ranking)",
           'history_ranking': 'ours: history_ranking (features, history, DCN)',
           'multitask': 'ours: multitask, its recommend (item-item stage, towers as fallback)',
           'multitask_towers': 'multitask, towers alone',
           'retrieval': 'ours: retrieval (two towers, catalogue softmax)', 'popularity': 'popularity (baseline)'}
  rows = [f'| {titles.get(k, k)} | {v["rmse_mean"]:.4f} ± {v["rmse_std"]:.4f} | {v["rmse_cold"]:.4f} | '
          f'{v["rmse_warm"]:.4f} | {v.get("rmse_without_movie_stats", "")} |'
          for k, v in r['models'].items() if 'rmse_mean' in v]
  list_keys = ('recall_at_10', 'recall_at_100', 'ndcg_at_10', 'coverage_at_10', 'novelty_at_10', 'diversity_at_10',
               'popularity_share_at_10', 'recall_at_10_gender_spread', 'recall_at_10_age_spread',
               'recall_at_10_user_spread')
  retrieval_rows = ['| ' + ' | '.join([titles.get(k, k)] + [f'{v[c]:.4f}' for c in list_keys]) + ' |'
                    for k, v in r['models'].items() if 'recall_at_100' in v]
  return '\n'.join([
      f'Test split: {r["test_rows"]} ratings, {r["cold_share"]:.0%} from users not in train. '
      f'Trained models: mean ± std over seeds {r["seeds"]}. Best ranking model: '
      f'**{r.get("best_ranking")}**; best retrieval model: **{r.get("best_retrieval")}**.',
      '', 'The last column is the test RMSE when every request sends movie statistics 0 (a client '
      'without a feature store); only models that read them have it.',
      '', '| model | test RMSE | cold users | warm users | without movie statistics |',
      '| --- | ---: | ---: | ---: | ---: |', *rows,
      '', f'Retrieval, point-in-time protocol ({r["retrieval_cases"]} test users):', '',
      '| model | Recall@10 | Recall@100 | NDCG@10 | coverage@10 | novelty@10 (bits) | diversity@10 | '
      'popularity share@10 | R@10 spread: gender | age | new/returning |',
      '| --- |' + ' ---: |' * len(list_keys), *retrieval_rows,
      '', 'Definitions: components/retrieval_evaluator/protocol.py.'])


if __name__ == '__main__':
  main()
