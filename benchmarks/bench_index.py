"""make bench-index: brute-force versus ScaNN top-100 retrieval, timed.

Two catalogues of 32-d candidate embeddings: 1,682 (the ML-100K catalogue
size) and 1,000,000, both random normal vectors rather than trained ones, so
the numbers do not depend on a training run and the ANN index gets no help
from cluster structure (trained embeddings cluster, which favours ScaNN). The
queries are 1,000 random normal vectors too.

For each catalogue and index (``trainer.retrieval.build_brute_force``,
``build_scann`` with its defaults, and at 1M also ScaNN searching 30% of the
leaves), one fresh process builds the index,
then times a ``tf.function`` query, as a server would run it, on batches of 1
and of 100 queries. Recall@100 is the share of brute force's top 100 that ScaNN
returns, averaged over the queries. The peak RSS is the worker process's, so the
indexes do not share a high-water mark; the RSS before the build (TensorFlow,
the embeddings, the queries) is reported next to it.

Writes docs/results/index.json and docs/results/index.md.
"""
import os

# Before TensorFlow loads, in this process and the workers: TFRS needs Keras 2.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

NAME = 'index'
DIM = 32
K = 100
N_QUERIES = 1000
SEED = 0
# (label, candidates, {index name: build_scann overrides}); brute force runs on each too.
# At 1M a second ScaNN point searches 30% of the leaves: random vectors have no
# clusters, so the default 10% leaves many true neighbours unsearched.
CATALOGUES = (
    ('ML-100K size', 1682, {'scann': {}}),
    ('synthetic 1M', 1_000_000, {'scann': {}, 'scann, 30% of leaves': {
        'num_leaves_to_search': 300, 'num_reordering_candidates': 3000}}),
)
BRUTE_FORCE = 'brute force'
BATCH_SIZES = (1, 100)
# Per batch size: stop timing after this many calls or seconds, whichever is first.
MAX_CALLS = 300
MAX_SECONDS = 8.0


def _rss_mib() -> float:
  with open('/proc/self/statm') as fh:
    return int(fh.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _time_calls(search, queries: np.ndarray, batch_size: int) -> dict:
  """Latency of ``search`` on successive query batches, after a warm-up."""
  import tensorflow as tf
  batches = [tf.constant(queries[i:i + batch_size]) for i in range(0, len(queries), batch_size)]
  for batch in batches[:3]:
    search(batch)[1].numpy()
  times = []
  start = time.perf_counter()
  while len(times) < MAX_CALLS and time.perf_counter() - start < MAX_SECONDS:
    batch = batches[len(times) % len(batches)]
    t0 = time.perf_counter()
    search(batch)[1].numpy()
    times.append(time.perf_counter() - t0)
  ms = np.array(times) * 1000
  return {'calls': len(ms), 'mean_ms': round(float(ms.mean()), 3),
          'p95_ms': round(float(np.percentile(ms, 95)), 3)}


def _worker(method: str, n: int, scann_overrides: dict, ids_path: str) -> dict:
  """Builds one index over ``n`` random candidates, times it, saves its top-K ids."""
  import tensorflow as tf
  from trainer import retrieval

  candidates = np.random.default_rng(SEED).standard_normal((n, DIM), dtype=np.float32)
  queries = np.random.default_rng(SEED + 1).standard_normal((N_QUERIES, DIM), dtype=np.float32)
  candidates_tensor = tf.constant(candidates)
  rss_before = _rss_mib()

  start = time.perf_counter()
  if method == BRUTE_FORCE:
    index = retrieval.build_brute_force(candidates_tensor, k=K)
    params = {}
  else:
    index = retrieval.build_scann(candidates_tensor, k=K, **scann_overrides)
    params = {**retrieval.default_scann_params(n, K), **scann_overrides}
  build_s = time.perf_counter() - start

  search = tf.function(lambda q: index(q, k=K), input_signature=[tf.TensorSpec([None, DIM], tf.float32)])
  latency = {str(b): _time_calls(search, queries, b) for b in BATCH_SIZES}
  ids = np.concatenate([search(tf.constant(queries[i:i + 100]))[1].numpy() for i in range(0, N_QUERIES, 100)])
  np.save(ids_path, ids)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {'method': method, 'candidates': n, 'params': params, 'build_s': round(build_s, 3),
          'latency': latency, 'rss_before_build_mib': round(rss_before), 'peak_rss_mib': round(peak)}


def _run_worker(method: str, n: int, scann_overrides: dict, work_dir: str) -> dict:
  handle, ids_path = tempfile.mkstemp(suffix='.npy', dir=work_dir)
  os.close(handle)
  out = subprocess.run([sys.executable, '-m', 'benchmarks.bench_index', '--worker', method, str(n),
                        json.dumps(scann_overrides), ids_path],
                       check=True, stdout=subprocess.PIPE, text=True).stdout
  run = json.loads(out.strip().splitlines()[-1])
  run['ids'] = np.load(ids_path)
  return run


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
  hits = [len(np.intersect1d(a, e, assume_unique=True)) for a, e in zip(approx, exact)]
  return float(np.mean(hits)) / exact.shape[1]


def _versus(ratio: float) -> str:
  """Brute force's mean latency over this index's, in words."""
  if 0.9 <= ratio <= 1.1:
    return 'as fast as brute force (within 10%)'
  return f'{ratio:.1f}x faster than brute force' if ratio > 1 else f'{1 / ratio:.1f}x slower than brute force'


def _table(runs: list, speedups: dict) -> str:
  lines = ['| Catalogue | Index | Build (s) | Batch 1: mean / p95 (ms) | Batch 100: mean / p95 (ms) '
           '| Recall@100 vs brute force | RSS before build / peak (MiB) |',
           '|---|---|--:|--:|--:|--:|--:|']
  for run in runs:
    one, hundred = run['latency']['1'], run['latency']['100']
    lines.append(
        f"| {run['catalogue']} ({run['candidates']:,}) | {run['method']} | {run['build_s']:.2f} "
        f"| {one['mean_ms']:.2f} / {one['p95_ms']:.2f} | {hundred['mean_ms']:.2f} / {hundred['p95_ms']:.2f} "
        f"| {run['recall_at_100']:.3f} | {run['rss_before_build_mib']:,} / {run['peak_rss_mib']:,} |")
  lines.append('')
  for catalogue, by_index in speedups.items():
    for method, s in by_index.items():
      lines.append(f'- {catalogue}, {method}: on a batch of 1 {_versus(s["batch_1"])}, on a batch of 100 '
                   f'{_versus(s["batch_100"])} (mean latency), at recall@100 {s["recall_at_100"]:.3f}.')
  lines.append(f'\nRandom normal embeddings (not trained ones), dim {DIM}, k={K}, {N_QUERIES:,} random '
               'normal queries. `scann` is `trainer.retrieval.build_scann` with its defaults; every '
               'run\'s ScaNN parameters are in `index.json`. Latency is one `tf.function` call on a warm '
               'index, including the copy of the result to numpy. RSS is the worker process\'s, TensorFlow '
               'included.')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--worker', nargs=4, metavar=('METHOD', 'N', 'SCANN_JSON', 'IDS_PATH'),
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    method, n, overrides, ids_path = args.worker
    print(json.dumps(_worker(method, int(n), json.loads(overrides), ids_path)))
    return

  # Other work on the machine skews latencies; the 1-minute load says how busy it was.
  load_at_start = round(os.getloadavg()[0], 2)
  runs, speedups = [], {}
  with tempfile.TemporaryDirectory(prefix='bench-index-') as work_dir:
    for catalogue, n, scann_runs in CATALOGUES:
      by_method = {}
      for method, overrides in {BRUTE_FORCE: {}, **scann_runs}.items():
        print(f'[bench-index] {catalogue}: {n:,} candidates, {method} ...', flush=True)
        by_method[method] = _run_worker(method, n, overrides, work_dir)
      exact = by_method[BRUTE_FORCE]['ids']
      for method, run in by_method.items():
        run['recall_at_100'] = round(_recall(run.pop('ids'), exact), 4)
        runs.append({'catalogue': catalogue, **run})
      bf = by_method[BRUTE_FORCE]['latency']
      speedups[catalogue] = {
          method: {**{f'batch_{b}': round(bf[str(b)]['mean_ms'] / run['latency'][str(b)]['mean_ms'], 2)
                      for b in BATCH_SIZES}, 'recall_at_100': run['recall_at_100']}
          for method, run in by_method.items() if method != BRUTE_FORCE}
  result = {'dim': DIM, 'k': K, 'queries': N_QUERIES, 'embeddings': 'random normal', 'runs': runs,
            'scann_speedup_over_brute_force': speedups, 'load_average_at_start': load_at_start}
  common.write_result(NAME, result, _table(runs, speedups))


if __name__ == '__main__':
  main()
