"""make bench-pipeline: what a newcomer's `make run` costs, and what reruns cost.

Each run is a fresh process (`python -m pipeline.local_runner`), timed from
outside, so interpreter and TensorFlow start-up count as a user sees them,
on an output root that does not exist yet:

1. the whole shape, Tuner included (`wall_s`);
2. the same command again: the first rerun after a blessing
   (`rerun_after_blessing_s`), then again, repeated (`cached_rerun_s`);
3. the same command with a changed Trainer module, a copy of trainer/task.py
   with one comment line more (`trainer_change_rerun_s`);
4. a second fresh root without the Tuner (`wall_no_tuner_s`), whose Trainer
   is then rerun with other seeds for the spread of the test RMSE.

Writes docs/results/pipeline.json (figures under ``result``, with the load
average around each run) and rewrites docs/results/pipeline.md from it.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import common
from pipeline import configs
from trainer import hparams

NAME = 'pipeline'


def timed_run(args, summary_path):
  """Runs the local runner once; returns (wall seconds, peak RSS MB, summary, load averages)."""
  load_before = os.getloadavg()
  start = time.time()
  process = subprocess.Popen([sys.executable, '-m', 'pipeline.local_runner', *args, '--summary-json', summary_path],
                             stdout=subprocess.DEVNULL)
  _, status, usage = os.wait4(process.pid, 0)
  wall = time.time() - start
  if os.waitstatus_to_exitcode(status) != 0:
    raise SystemExit(f'The run {args} failed with {os.waitstatus_to_exitcode(status)}; rerun it by hand to see why.')
  with open(summary_path) as fh:
    summary = json.load(fh)
  load = {'before': [round(x, 2) for x in load_before], 'after': [round(x, 2) for x in os.getloadavg()]}
  return wall, usage.ru_maxrss / 1024, summary, load


def _spread(values):
  return {'min': round(min(values), 1), 'median': round(statistics.median(values), 1), 'max': round(max(values), 1),
          'n': len(values)}


def changed_trainer_module(root):
  """A copy of trainer/task.py with one comment line more: what an edit does to the cache key."""
  folder = os.path.join(root, 'trainer-edit', 'trainer')
  shutil.copytree(os.path.dirname(configs.TRAINER_MODULE_FILE), folder,
                  ignore=shutil.ignore_patterns('__pycache__'))
  path = os.path.join(folder, os.path.basename(configs.TRAINER_MODULE_FILE))
  with open(path, 'a') as fh:
    fh.write('# make bench-pipeline: an edit that changes nothing but the code\n')
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=os.environ.get('MOVIELENS_DATA_DIR', ''))
  parser.add_argument('--cached-repeats', type=int, default=3, help='Fully cached reruns to time.')
  parser.add_argument('--extra-seeds', default='1,2',
                      help='Retrain the Tuner-less shape with these seeds too (Trainer onward; the rest is '
                           'cached) to put an error bar on the test RMSE.')
  parser.add_argument('--keep', action='store_true', help='Keep the output roots (printed) instead of removing them.')
  args = parser.parse_args(argv)

  parent = tempfile.mkdtemp(prefix='pipe-bench-')
  runs = {}
  try:
    data = ['--data-dir', args.data_dir] if args.data_dir else []
    tuned_root = os.path.join(parent, 'tuned')  # does not exist yet: the run creates it
    tuned = ['--output-root', tuned_root, *data]

    def run(name, run_args):
      print(f'[bench-pipeline] {name} ...', flush=True)
      wall, rss, summary, load = timed_run(run_args, os.path.join(parent, f'{name}.json'))
      runs[name] = {'wall_s': round(wall, 1), 'peak_rss_mb': round(rss), 'load_avg': load,
                    'states': {k: v['state'] for k, v in summary['components'].items()},
                    'components': {k: v['seconds'] for k, v in summary['components'].items()},
                    'test_metrics': summary.get('test_metrics'), 'blessed': summary.get('blessed')}
      print(f'[bench-pipeline] {name}: {wall:.1f} s, peak RSS {rss:.0f} MB, load {load["before"][0]:.2f} before',
            flush=True)
      return runs[name]

    first = run('whole_shape', tuned)
    after_blessing = run('rerun_after_blessing', tuned)
    cached = [run(f'cached_rerun_{i + 1}', tuned) for i in range(args.cached_repeats)]
    trainer_change = run('trainer_change', tuned + ['--trainer-module-file', changed_trainer_module(parent)])
    plain_root = os.path.join(parent, 'no-tuner')
    plain = ['--output-root', plain_root, '--tune-trials', '0', *data]
    no_tuner = run('no_tuner', plain)
    rmse = lambda r: r['test_metrics']['root_mean_squared_error']  # noqa: E731
    rmse_by_seed = {str(hparams.DEFAULTS.seed): rmse(no_tuner)}
    for seed in [int(s) for s in args.extra_seeds.split(',') if s]:
      rmse_by_seed[str(seed)] = rmse(run(f'no_tuner_seed{seed}', plain + ['--hparams', json.dumps({'seed': seed})]))
  finally:
    if args.keep:
      print(f'[bench-pipeline] output roots kept under {parent}')
    else:
      shutil.rmtree(parent, ignore_errors=True)

  cached_walls = [r['wall_s'] for r in cached]
  result = {
      'wall_s': first['wall_s'],
      'wall_no_tuner_s': no_tuner['wall_s'],
      'cached_rerun_s': round(statistics.median(cached_walls), 1),
      'cached_rerun_spread_s': _spread(cached_walls),
      'rerun_after_blessing_s': after_blessing['wall_s'],
      'trainer_change_rerun_s': trainer_change['wall_s'],
      'components': first['components'],
      'components_no_tuner': no_tuner['components'],
      'components_trainer_change': trainer_change['components'],
      'states': {name: r['states'] for name, r in runs.items()
                 if name in ('rerun_after_blessing', 'cached_rerun_1', 'trainer_change')},
      'peak_rss_mb': max(r['peak_rss_mb'] for r in runs.values()),
      'test_rmse': round(rmse(first), 4),
      'test_mae': round(first['test_metrics']['mean_absolute_error'], 4),
      'test_rmse_no_tuner': round(rmse(no_tuner), 4),
      'test_rmse_no_tuner_by_seed': {k: round(v, 4) for k, v in rmse_by_seed.items()},
      'test_rmse_no_tuner_mean': round(statistics.mean(rmse_by_seed.values()), 4),
      'test_rmse_no_tuner_std': round(statistics.pstdev(rmse_by_seed.values()), 4),
      'blessed': first['blessed'],
      'model': hparams.DEFAULT_MODEL,
      'tuner': {'trials': configs.DEFAULT_TUNER_TRIALS, 'epochs': configs.DEFAULT_TUNER_EPOCHS},
      'runs': {name: {k: r[k] for k in ('wall_s', 'peak_rss_mb', 'load_avg')} for name, r in runs.items()},
  }
  common.write_result(NAME, result, _table(result))


def _table(r):
  rows = [f'| {name} | {seconds:.1f} | {r["components_no_tuner"].get(name, 0.0):.1f} | '
          f'{r["components_trainer_change"].get(name, 0.0):.1f} |'
          for name, seconds in sorted(r['components'].items(), key=lambda kv: -kv[1])]
  runs = [f'| {name} | {v["wall_s"]} | {v["peak_rss_mb"]} | {" / ".join(str(x) for x in v["load_avg"]["before"])} |'
          for name, v in r['runs'].items()]
  s = r['cached_rerun_spread_s']
  return '\n'.join([
      f'Whole shape with a {r["tuner"]["trials"]}-trial Tuner ({r["tuner"]["epochs"]} epochs a trial): '
      f'**{r["wall_s"]} s**; without the Tuner **{r["wall_no_tuner_s"]} s**. First rerun after a blessing '
      f'**{r["rerun_after_blessing_s"]} s**, fully cached rerun **{r["cached_rerun_s"]} s** (median of {s["n"]}, '
      f'{s["min"]}-{s["max"]}), rerun after a Trainer module change **{r["trainer_change_rerun_s"]} s**. '
      f'Peak RSS {r["peak_rss_mb"]} MB. Model {r["model"]}: test RMSE **{r["test_rmse"]}** tuned '
      f'(MAE {r["test_mae"]}); untuned over seeds {", ".join(r["test_rmse_no_tuner_by_seed"])}: '
      f'**{r["test_rmse_no_tuner_mean"]} ± {r["test_rmse_no_tuner_std"]}**.',
      '',
      '| component | seconds, whole shape | seconds, no Tuner | seconds, Trainer module change |',
      '| --- | ---: | ---: | ---: |',
      *rows,
      '',
      '| run | wall s | peak RSS MB | load average before (1/5/15 min) |',
      '| --- | ---: | ---: | --- |',
      *runs,
  ])


if __name__ == '__main__':
  main()
