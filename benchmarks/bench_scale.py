"""make bench-scale: the data stages and one training epoch at 100K, 1M and 10M ratings.

    python -m benchmarks.bench_scale                       # 100K, 1M, 10M (10M only if it projects in time)
    python -m benchmarks.bench_scale --sizes 100000,1000000 --data-dir /big/disk/synthetic

For each size it writes a synthetic MovieLens-shaped data set
(components/movielens_example_gen/synthetic.py; reused when already there),
then runs stages of the one ``create_pipeline`` as LocalDagRunner partial
runs, each in a fresh process, sharing one MLMD store:

* ``ExampleGen``: MovieLensExampleGen (and ImportSchemaGen, which copies a file);
* ``StatisticsGen``;
* ``ExampleValidator``: the DataValidator's checks, reporting only: drift
  thresholds tuned on ML-100K say nothing about synthetic data (and Transform
  runs after it, so a partial run of Transform needs its execution);
* ``Transform``;
* ``Train``: the Trainer with ``epochs=1``, so one epoch plus the export.

For each stage it records the wall time of the process (start-up included),
the component's own time from MLMD, ratings per second, and peak memory: the
largest process's peak RSS (``wait4``) and the largest sum over the process
tree sampled every 0.2 s (the multi-processing runner has several workers);
``peak_rss_mb`` is the larger of the two. Results go to
docs/results/scale.json and docs/results/scale.md.

A size above ``--always-run-up-to`` (1M) is skipped, and recorded as
skipped, when the largest measured size's times scaled linearly project any
of its stages over ``--max-stage-minutes`` (25).
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

from contract import names  # noqa: E402

NAME = 'scale'
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
# Stage name to (first, last) node ids of the partial run; the subgraph
# between them is what runs.
STAGES: Dict[str, Dict[str, List[str]]] = {
    'ExampleGen': {'from': ['MovieLensExampleGen', 'ImportSchemaGen'],
                   'to': ['MovieLensExampleGen', 'ImportSchemaGen']},
    'StatisticsGen': {'from': ['StatisticsGen'], 'to': ['StatisticsGen']},
    'ExampleValidator': {'from': ['ExampleValidator'], 'to': ['ExampleValidator']},
    'Transform': {'from': ['Transform'], 'to': ['Transform']},
    'Train': {'from': ['Trainer'], 'to': ['Trainer']},
}
# The component whose MLMD time is the stage's component_s.
_MAIN_NODE = {'ExampleGen': 'MovieLensExampleGen', 'StatisticsGen': 'StatisticsGen',
              'ExampleValidator': 'ExampleValidator',
              'Transform': 'Transform', 'Train': 'Trainer'}
_SYNTHETIC_SEED = 0
_POLL_S = 0.2


def _pipeline(root: str, data_dir: str, runner: str, model: str):
  """The project's create_pipeline, rooted at ``root``, one training epoch."""
  from tfx import v1 as tfx
  from pipeline import configs
  from pipeline.pipeline import create_pipeline
  config = configs.PipelineConfig(
      pipeline_root=os.path.join(root, 'pipeline'),
      serving_model_dir=os.path.join(root, 'serving'),
      data_dir=data_dir,
      data_fingerprint=f'synthetic:{data_dir}',
      # Synthetic data is drawn without ML-100K's defects; any bad row is a bug.
      max_bad_fraction=0.0,
      fail_on_anomalies=False,
      hparams={'model': model, 'epochs': 1})
  return create_pipeline(
      config, beam_pipeline_args=configs.BEAM_PIPELINE_ARGS[runner],
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          os.path.join(root, 'metadata.db')),
      enable_cache=False)


def run_stage(stage: str, root: str, data_dir: str, runner: str, model: str) -> None:
  """Runs one stage as a partial run; the process's cost is the stage's cost."""
  from tfx import v1 as tfx
  from tfx.orchestration import pipeline as pipeline_lib
  nodes = STAGES[stage]
  tfx.orchestration.LocalDagRunner().run(
      _pipeline(root, data_dir, runner, model),
      run_options=pipeline_lib.RunOptions(from_nodes=nodes['from'], to_nodes=nodes['to']))


def _tree_rss(process) -> int:
  """Bytes resident in ``process`` and all its descendants now."""
  import psutil
  total = 0
  for p in [process, *process.children(recursive=True)]:
    try:
      total += p.memory_info().rss
    except psutil.Error:
      pass
  return total


def measure(command: List[str], log_path: str) -> dict:
  """Runs ``command``; returns wall seconds and peak memory in MB.

  ``largest_process_mb`` is wait4's ru_maxrss, which covers the child and
  every descendant it waited for, however short-lived; ``tree_mb`` is the
  largest sampled sum over the live tree, which sees concurrent workers.
  """
  import psutil
  start = time.time()
  with open(log_path, 'w') as log:
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
  tree_peak = [0]
  done = threading.Event()

  def poll():
    process = psutil.Process(child.pid)
    while not done.is_set():
      try:
        tree_peak[0] = max(tree_peak[0], _tree_rss(process))
      except psutil.Error:
        return
      done.wait(_POLL_S)

  poller = threading.Thread(target=poll, daemon=True)
  poller.start()
  # wait4, not Popen.wait: it returns this child's own rusage.
  _, status, usage = os.wait4(child.pid, 0)
  wall = time.time() - start
  done.set()
  poller.join()
  child.returncode = os.waitstatus_to_exitcode(status)
  if child.returncode:
    with open(log_path) as fh:
      tail = fh.read()[-4000:]
    raise RuntimeError(f'{" ".join(command)} exited {child.returncode}; log {log_path}:\n{tail}')
  largest_mb = usage.ru_maxrss / 1024  # Linux reports KiB.
  tree_mb = tree_peak[0] / 2**20
  return {'wall_s': round(wall, 1), 'peak_rss_mb': round(max(largest_mb, tree_mb)),
          'largest_process_mb': round(largest_mb), 'tree_mb': round(tree_mb),
          'cpu_s': round(usage.ru_utime + usage.ru_stime, 1)}


def _component_seconds(root: str) -> Dict[str, float]:
  """MLMD's start-to-end seconds of every component that ran under ``root``."""
  from ml_metadata import metadata_store
  from ml_metadata.proto import metadata_store_pb2
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = os.path.join(root, 'metadata.db')
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  store = metadata_store.MetadataStore(config)
  node_type = store.get_context_type('node')
  seconds = {}
  for node in store.get_contexts_by_type(node_type.name):
    component_id = node.name.split('.', 1)[-1]
    for execution in store.get_executions_by_context(node.id):
      if execution.last_known_state == metadata_store_pb2.Execution.COMPLETE:
        seconds[component_id] = round(
            (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0, 1)
  return seconds


def _split_counts(root: str) -> Dict[str, int]:
  """Examples per split, from ExampleGen's quarantine summary."""
  pattern_root = os.path.join(root, 'pipeline', 'MovieLensExampleGen', 'quarantine')
  [run_dir] = os.listdir(pattern_root)
  with open(os.path.join(pattern_root, run_dir, names.QUARANTINE_SUMMARY_FILE)) as fh:
    summary = json.load(fh)
  if summary['rows_quarantined']:
    raise RuntimeError(f'ExampleGen quarantined {summary["rows_quarantined"]} synthetic rows: '
                       f'{summary["counts_by_reason"]}')
  return summary['counts_per_split']


def ensure_data(data_root: str, size: int) -> dict:
  """The synthetic set of ``size`` ratings under ``data_root``, generated if missing."""
  from components.movielens_example_gen import synthetic
  data_dir = os.path.join(data_root, f'synthetic-{size}-seed{_SYNTHETIC_SEED}')
  done = os.path.join(data_dir, 'DONE.json')
  if os.path.exists(done):
    with open(done) as fh:
      return json.load(fh)
  start = time.time()
  counts = synthetic.generate(data_dir, synthetic.SyntheticConfig(num_ratings=size, seed=_SYNTHETIC_SEED))
  info = {**counts, 'data_dir': data_dir, 'generate_s': round(time.time() - start, 1),
          'u_data_mb': round(os.path.getsize(os.path.join(data_dir, 'u.data')) / 2**20, 1)}
  # Written last: a half-written set is regenerated, never reused.
  with open(done, 'w') as fh:
    json.dump(info, fh)
  return info


def bench_size(size: int, data: dict, work_root: str, runner: str, model: str) -> dict:
  """Every stage at one size, in order; returns the figures per stage."""
  root = os.path.join(work_root, f'size-{size}')
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root)
  stages = {}
  for stage in STAGES:
    print(f'[bench-scale] {size:,} ratings: {stage} ...', flush=True)
    command = [sys.executable, '-m', 'benchmarks.bench_scale', '--stage', stage, '--root', root,
               '--stage-data-dir', data['data_dir'], '--runner', runner, '--model', model]
    figures = measure(command, os.path.join(root, f'{stage}.log'))
    stages[stage] = figures
    print(f'[bench-scale] {size:,} ratings: {stage} {figures["wall_s"]} s, '
          f'peak {figures["peak_rss_mb"]} MB', flush=True)
  component_s = _component_seconds(root)
  splits = _split_counts(root)
  for stage, figures in stages.items():
    figures['component_s'] = component_s.get(_MAIN_NODE[stage])
    # Ratings of the data set per second of the stage's process; Train's
    # work is the train split, so it also gets examples per second.
    figures['ratings_per_s'] = round(size / figures['wall_s'])
  stages['Train']['train_examples'] = splits['train']
  stages['Train']['train_examples_per_s'] = round(splits['train'] / stages['Train']['wall_s'])
  return {'ratings': size, 'users': data['users'], 'movies': data['movies'], 'u_data_mb': data['u_data_mb'],
          'generate_s': data['generate_s'], 'splits': splits, 'stages': stages}


def projected_skip(size: int, measured: Dict[int, dict], limit_s: float, always_up_to: int) -> Optional[str]:
  """Why ``size`` is not worth running, from the largest measured size, or None.

  Sizes up to ``always_up_to`` always run. Above it, each stage's wall time
  is projected linearly from the largest size measured so far; linear is
  what the 100K to 1M figures support (docs/scale.md).
  """
  smaller = [s for s in measured if s < size]
  if size <= always_up_to or not smaller:
    return None
  base = max(smaller)
  projected = {stage: f['wall_s'] * size / base for stage, f in measured[base]['stages'].items()}
  over = {stage: round(s / 60) for stage, s in projected.items() if s > limit_s}
  if not over:
    return None
  return (f'not run: {base:,}-rating wall times scaled linearly project '
          f'{", ".join(f"{k} ~{v} min" for k, v in over.items())}, over the {limit_s / 60:.0f}-minute '
          'limit per stage (--max-stage-minutes)')


def growth(measured: Dict[int, dict]) -> Dict[str, Dict[str, dict]]:
  """For each pair of consecutive sizes and stage: time ratio and exponent.

  An exponent of 1 is linear growth; below 1, fixed costs (start-up, model
  export) are still a large part of the time. CPU seconds are less
  disturbed than wall time by other jobs on the machine.
  """
  sizes = sorted(measured)
  result = {}
  for small, big in zip(sizes, sizes[1:]):
    pair = {}
    for stage in STAGES:
      t0, t1 = measured[small]['stages'][stage]['wall_s'], measured[big]['stages'][stage]['wall_s']
      c0, c1 = measured[small]['stages'][stage]['cpu_s'], measured[big]['stages'][stage]['cpu_s']
      m0, m1 = measured[small]['stages'][stage]['peak_rss_mb'], measured[big]['stages'][stage]['peak_rss_mb']
      pair[stage] = {'time_ratio': round(t1 / t0, 2),
                     'time_exponent': round(math.log(t1 / t0) / math.log(big / small), 2),
                     'cpu_ratio': round(c1 / c0, 2),
                     'memory_ratio': round(m1 / m0, 2)}
    result[f'{small}->{big}'] = pair
  return result


def _table(result: dict) -> str:
  sizes = sorted(result['sizes'], key=int)
  head = '| stage | ' + ' | '.join(f'{int(s):,} ratings' for s in sizes) + ' |'
  lines = [
      f'Beam runner `{result["runner"]}`, model `{result["model"]}`, one epoch. Each cell: wall s '
      '(process, start-up included) / CPU s / component s (MLMD) / peak RSS MB / thousand ratings per s '
      f'(wall). Load average at the start: {result["load_average_at_start"][0]}, at the end: '
      f'{result["load_average_at_end"][0]} on {os.cpu_count()} cores.',
      '', head, '| --- |' + ' ---: |' * len(sizes)]
  for stage in STAGES:
    cells = []
    for s in sizes:
      f = result['sizes'][s]['stages'][stage]
      cells.append(f'{f["wall_s"]} / {f["cpu_s"]} / {f["component_s"]} / {f["peak_rss_mb"]:,} / '
                   f'{f["ratings_per_s"] / 1000:.1f}')
    lines.append(f'| {stage} | ' + ' | '.join(cells) + ' |')
  for pair, stages in result['growth'].items():
    small, big = (int(x) for x in pair.split('->'))
    lines += ['', f'Growth {small:,} → {big:,} ratings ({big // small}x the data): wall time ratio, its '
              'exponent (1 = linear), CPU time ratio, peak memory ratio.', '',
              '| stage | wall x | exponent | CPU x | memory x |', '| --- | ---: | ---: | ---: | ---: |']
    lines += [f'| {stage} | {g["time_ratio"]} | {g["time_exponent"]} | {g["cpu_ratio"]} | {g["memory_ratio"]} |'
              for stage, g in stages.items()]
  for size, reason in result['skipped'].items():
    lines += ['', f'{int(size):,} ratings: {reason}.']
  return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.bench_scale', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--sizes', default=','.join(str(s) for s in DEFAULT_SIZES),
                      help='Comma-separated rating counts (default: %(default)s).')
  parser.add_argument('--data-dir', default=os.path.join('outputs', 'synthetic'),
                      help='Where the synthetic data sets go, one folder per size, reused when present '
                           '(default: %(default)s; 10M ratings take about 0.2 GB).')
  parser.add_argument('--work-dir', default=None,
                      help='Pipeline outputs and logs (default: a temporary folder, removed afterwards).')
  parser.add_argument('--runner', default='in_memory', help='configs.BEAM_PIPELINE_ARGS key (default: in_memory).')
  parser.add_argument('--model', default='ranking', help='Model the Train stage fits (default: ranking).')
  parser.add_argument('--max-stage-minutes', type=float, default=25.0,
                      help='Skip a size whose linearly projected stage time exceeds this (default: 25).')
  parser.add_argument('--always-run-up-to', type=int, default=1_000_000,
                      help='Sizes up to this run whatever the projection (default: %(default)s).')
  parser.add_argument('--no-write', action='store_true', help='Print the result; leave docs/results alone.')
  # One stage in this process: what the benchmark starts for each measurement.
  parser.add_argument('--stage', choices=sorted(STAGES), help=argparse.SUPPRESS)
  parser.add_argument('--root', help=argparse.SUPPRESS)
  parser.add_argument('--stage-data-dir', help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.stage:
    run_stage(args.stage, args.root, args.stage_data_dir, args.runner, args.model)
    return 0
  if os.path.exists(os.path.join(args.data_dir, 'u.data')):
    raise SystemExit(f'--data-dir {args.data_dir} holds a data set; it is where synthetic sets are written. '
                     'Pass an empty or new folder.')
  sizes = sorted(int(s) for s in args.sizes.split(',') if s.strip())
  work_root = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix='bench-scale-'))
  data_root = os.path.abspath(args.data_dir)
  measured, skipped = {}, {}
  load_before = os.getloadavg()
  try:
    for size in sizes:
      reason = projected_skip(size, measured, args.max_stage_minutes * 60, args.always_run_up_to)
      if reason:
        print(f'[bench-scale] {size:,} ratings: {reason}', flush=True)
        skipped[str(size)] = reason
      else:
        print(f'[bench-scale] {size:,} ratings: data under {data_root} ...', flush=True)
        data = ensure_data(data_root, size)
        measured[size] = bench_size(size, data, work_root, args.runner, args.model)
      # After every size, so a long run stopped half-way keeps what it measured.
      _report(args, measured, skipped, load_before)
  finally:
    if not args.work_dir:
      shutil.rmtree(work_root, ignore_errors=True)
  return 0


def _report(args: argparse.Namespace, measured: Dict[int, dict], skipped: Dict[str, str], load_before) -> None:
  result = {'runner': args.runner, 'model': args.model, 'epochs': 1,
            'load_average_at_start': [round(x, 2) for x in load_before],
            'load_average_at_end': [round(x, 2) for x in os.getloadavg()],
            'sizes': {str(s): r for s, r in measured.items()}, 'growth': growth(measured), 'skipped': skipped}
  if args.no_write:
    print(json.dumps(result, indent=2, sort_keys=True))
  else:
    from benchmarks import common
    common.write_result(NAME, result, _table(result))

if __name__ == '__main__':
  sys.exit(main())
