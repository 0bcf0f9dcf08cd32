"""make bench-pipeline: the full local pipeline on ML-100K, timed.

Writes docs/results/pipeline.json with the end-to-end wall time, seconds per
component (from MLMD), a cached rerun, the peak memory and the test RMSE, and
rewrites the table in docs/results/pipeline.md from it.

Each run is a fresh process (`python -m pipeline.local_runner`), timed from
outside, so interpreter and TensorFlow start-up are counted as a user sees them.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import common
from trainer import hparams

NAME = 'pipeline'


def _timed_run(args, summary_path):
  start = time.time()
  subprocess.run([sys.executable, '-m', 'pipeline.local_runner', *args, '--summary-json', summary_path],
                 check=True, stdout=subprocess.DEVNULL)
  wall = time.time() - start
  with open(summary_path) as fh:
    return wall, json.load(fh)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=os.environ.get('MOVIELENS_DATA_DIR', ''))
  parser.add_argument('--epochs', type=int, default=None, help='default: the model\'s (trainer/hparams.py)')
  parser.add_argument('--extra-seeds', default='1,2',
                      help='Retrain with these seeds too (Trainer and Evaluator only; the rest is cached) '
                           'to put an error bar on the test RMSE.')
  args = parser.parse_args(argv)

  root = tempfile.mkdtemp(prefix='bench-pipeline-')
  try:
    run_args = ['--output-root', root] + (['--data-dir', args.data_dir] if args.data_dir else [])
    run_args += ['--epochs', str(args.epochs)] if args.epochs else []
    print(f'[bench-pipeline] full run into {root} ...', flush=True)
    wall, first = _timed_run(run_args, os.path.join(root, 'first.json'))
    print(f'[bench-pipeline] full run {wall:.1f}s; rerunning with unchanged inputs ...', flush=True)
    rerun_wall, rerun = _timed_run(run_args, os.path.join(root, 'rerun.json'))
    cached_wall, cached = _timed_run(run_args, os.path.join(root, 'cached.json'))
    rmse_by_seed = {hparams.DEFAULTS.seed: first['test_metrics']['root_mean_squared_error']}
    for seed in [int(s) for s in args.extra_seeds.split(',') if s]:
      print(f'[bench-pipeline] retraining with seed {seed} ...', flush=True)
      _, seeded = _timed_run(run_args + ['--hparams', json.dumps({'seed': seed})],
                             os.path.join(root, f'seed{seed}.json'))
      rmse_by_seed[seed] = seeded['test_metrics']['root_mean_squared_error']
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  finally:
    shutil.rmtree(root, ignore_errors=True)

  result = {
      'wall_s': round(wall, 1),
      'components': {k: v['seconds'] for k, v in first['components'].items()},
      'cached_rerun_s': round(cached_wall, 1),
      'cached_rerun_states': {k: v['state'] for k, v in cached['components'].items()},
      'first_rerun_s': round(rerun_wall, 1),
      'first_rerun_states': {k: v['state'] for k, v in rerun['components'].items()},
      'peak_rss_mb': round(peak_mb),
      'test_rmse': round(first['test_metrics']['root_mean_squared_error'], 4),
      'test_mae': round(first['test_metrics']['mean_absolute_error'], 4),
      'test_rmse_by_seed': {str(k): round(v, 4) for k, v in rmse_by_seed.items()},
      'test_rmse_mean': round(statistics.mean(rmse_by_seed.values()), 4),
      'test_rmse_std': round(statistics.pstdev(rmse_by_seed.values()), 4),
      'blessed': first.get('blessed'),
      'model': hparams.DEFAULT_MODEL,
      'epochs': args.epochs or hparams.resolve(None).epochs,
  }
  common.write_result(NAME, result, _table(result))


def _table(r):
  rows = [f'| {name} | {seconds:.1f} |' for name, seconds in sorted(r['components'].items(), key=lambda kv: -kv[1])]
  return '\n'.join([
      f'End to end: **{r["wall_s"]} s**, fully cached rerun **{r["cached_rerun_s"]} s** '
      f'(first rerun after a new blessing: {r["first_rerun_s"]} s), peak RSS {r["peak_rss_mb"]} MB, '
      f'model {r.get("model", "ranking")}: test RMSE **{r["test_rmse"]}** (MAE {r["test_mae"]}), '
      f'at most {r["epochs"]} epochs; over seeds '
      f'{", ".join(r["test_rmse_by_seed"])}: **{r["test_rmse_mean"]} ± {r["test_rmse_std"]}**.',
      '',
      '| component | seconds |',
      '| --- | ---: |',
      *rows,
  ])


if __name__ == '__main__':
  main()
