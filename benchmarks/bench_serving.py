"""make bench-serving: the local server under load on loopback, against direct SavedModel calls.

Three scenarios, each a closed loop of CONCURRENCY clients on keep-alive
connections for DURATION_S seconds after a warm-up:

* ``predict_b1``: ``:predict``, ``serving_default``, 1 instance per request;
* ``predict_b100``: the same with 100 instances;
* ``recommend_k10``: ``:predict`` with ``signature_name: recommend``, one user
  with a history of 5 to 50 ratings, k = 10 (the TF Serving route, so the
  same request works against TF Serving).

The server runs in a process of its own (``python -m serving.server``); the
load generator is asyncio on raw sockets in this process, so it costs the
two cores little. The floor (``direct_*``) is the same calls, with the same
inputs, made on the SavedModel loaded in this process, from CONCURRENCY
threads for the same time, with the server stopped: what TensorFlow alone
does with this machine and this concurrency, without HTTP, JSON or batching.

Requests are built from the model's own assets (the catalog, the user
vocabularies), seeded, so every run sends the same requests.

Writes docs/results/serving.json and docs/results/serving.md.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from typing import Dict, List  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from contract import names  # noqa: E402

NAME = 'serving'
MODEL_NAME = 'movielens_ranking'
CONCURRENCY = 50
DURATION_S = 10.0
WARMUP_S = 2.0
SEED = 0
POOL = 200  # distinct request bodies per scenario, sent round-robin
TIMESTAMP = 893286638  # 1998-04-23, the last day of ML-100K
# The done-when of the serving issue.
TARGET_RECOMMEND_P99_MS = 20.0
TARGET_RATIO_TO_DIRECT = 2.0


def _latest_version(base: str) -> str:
  versions = sorted((int(v) for v in os.listdir(base) if v.isdigit()), reverse=True) if os.path.isdir(base) else []
  if not versions:
    raise SystemExit(f'No pushed model under {base}. Run `make run` first, or pass --model-base-path.')
  return os.path.join(base, str(versions[0]))


def _lines(path: str) -> List[str]:
  with open(path, encoding='utf-8', errors='replace') as fh:
    return [line.rstrip('\n') for line in fh if line.strip()]


class Requests:
  """Seeded raw inputs for any of the model's signatures, from the model's assets."""

  def __init__(self, model_dir: str, signature_defs: Dict[str, dict]):
    from transforms import features as f
    self.f = f
    assets = os.path.join(model_dir, 'assets')
    self.catalog = [line.split(f.CATALOG_SEPARATOR) for line in _lines(os.path.join(assets, f.CATALOG_VOCAB))]
    vocab = lambda name: _lines(os.path.join(assets, name)) or ['']  # noqa: E731
    self.users, self.genders = vocab(f.USER_VOCAB), vocab(f.GENDER_VOCAB)
    self.occupations = vocab(f.OCCUPATION_VOCAB)
    self.defs = signature_defs
    self.rng = random.Random(SEED)

  def _user(self) -> dict:
    f, rng = self.f, self.rng
    length = rng.randint(5, 50)
    history = rng.sample(self.catalog, length)
    return {f.USER_ID: rng.choice(self.users), f.USER_AGE: rng.randint(15, 70), f.USER_GENDER: rng.choice(self.genders),
            f.USER_OCCUPATION: rng.choice(self.occupations), f.USER_ZIP: '55414', f.TIMESTAMP: TIMESTAMP,
            f.HISTORY_MOVIE_IDS: [m[0] for m in history], f.HISTORY_RATINGS: [rng.randint(1, 5) for _ in history]}

  def _movie(self) -> dict:
    f = self.f
    movie_id, title, genres, year = self.rng.choice(self.catalog)
    # Live movie statistics, for models that read them: seeded, plausible.
    count = self.rng.randint(0, 500)
    return {f.MOVIE_ID: movie_id, f.MOVIE_TITLE: title, f.GENRES: genres.split('|') if genres else [],
            f.RELEASE_YEAR: int(year) if year else 0, f.MOVIE_RATING_COUNT: count,
            f.MOVIE_RATING_MEAN: round(self.rng.uniform(2.0, 4.5), 2) if count else 0.0}

  def instances(self, signature: str, n: int, k: int = 10) -> List[dict]:
    """``n`` instances of ``signature``, lists padded to one length as TF Serving wants."""
    inputs = self.defs[signature]['inputs']
    rows = [{**self._user(), **self._movie(), 'k': k} for _ in range(n)]
    for name, spec in inputs.items():
      if len(spec['tensor_shape'].get('dim', [])) == 2:
        pad = '' if spec['dtype'] == 'DT_STRING' else 0
        width = max(len(r[name]) for r in rows) + 1
        for r in rows:
          r[name] = r[name] + [pad] * (width - len(r[name]))
    return [{name: r[name] for name in inputs} for r in rows]


SCENARIOS = (('predict_b1', names.SERVING_DEFAULT, 1), ('predict_b100', names.SERVING_DEFAULT, 100),
             ('recommend_k10', 'recommend', 1))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _get(url: str) -> dict:
  with urllib.request.urlopen(url, timeout=5) as response:
    return json.loads(response.read())


class ServerProcess:
  """``python -m serving.server`` in a process of its own, waited for until ready."""

  def __init__(self, base: str, extra_args: List[str]):
    self.port = _free_port()
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'serving.server', '--model-base-path', base, '--port', str(self.port), *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while True:
      try:
        _get(f'http://127.0.0.1:{self.port}/readyz')
        return
      except OSError:
        if self.process.poll() is not None or time.time() > deadline:
          raise SystemExit(f'The server did not become ready (exit code {self.process.poll()}).')
        time.sleep(0.5)

  def metrics(self) -> str:
    with urllib.request.urlopen(f'http://127.0.0.1:{self.port}/metrics', timeout=5) as response:
      return response.read().decode()

  def stop(self):
    self.process.terminate()
    self.process.wait(timeout=60)


def _http_request(port: int, path: str, body: bytes) -> bytes:
  return (f'POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n'
          f'Content-Length: {len(body)}\r\n\r\n').encode() + body


async def _client(port: int, requests: List[bytes], offset: int, until: float, warm_until: float,
                  latencies: List[float], errors: List[str]):
  reader, writer = await asyncio.open_connection('127.0.0.1', port)
  i = offset
  try:
    while time.perf_counter() < until:
      start = time.perf_counter()
      writer.write(requests[i % len(requests)])
      i += 1
      try:
        head = await reader.readuntil(b'\r\n\r\n')
        length = next(int(line.split(b':')[1]) for line in head.split(b'\r\n')
                      if line.lower().startswith(b'content-length:'))
        body = await reader.readexactly(length)
      except (asyncio.IncompleteReadError, ConnectionError, StopIteration) as error:
        errors.append(repr(error))
        writer.close()
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        continue
      elapsed = time.perf_counter() - start
      if start >= warm_until:
        if not head.startswith(b'HTTP/1.1 200'):
          errors.append(head.split(b'\r\n')[0].decode() + ' ' + body[:200].decode('utf-8', 'replace'))
        latencies.append(elapsed)
  finally:
    writer.close()


def load(port: int, path: str, bodies: List[bytes], concurrency: int, duration_s: float) -> dict:
  """A closed loop of ``concurrency`` keep-alive clients; latency of each answered request."""
  requests = [_http_request(port, path, b) for b in bodies]
  latencies, errors = [], []

  async def run():
    now = time.perf_counter()
    await asyncio.gather(*(_client(port, requests, i * 7, now + WARMUP_S + duration_s, now + WARMUP_S,
                                   latencies, errors) for i in range(concurrency)))

  asyncio.run(run())
  return _summary(latencies, duration_s, errors)


def _summary(latencies: List[float], duration_s: float, errors: List[str]) -> dict:
  ms = np.array(latencies) * 1000
  return {'requests': len(latencies), 'rps': round(len(latencies) / duration_s, 1),
          'p50_ms': round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
          'p99_ms': round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
          'errors': len(errors), 'error_samples': sorted(set(errors))[:3]}


def direct(model_dir: str, signature: str, instances_pool: List[List[dict]], concurrency: int,
           duration_s: float) -> dict:
  """The same calls on the SavedModel in this process, from ``concurrency`` threads."""
  import tensorflow as tf
  fn = tf.saved_model.load(model_dir).signatures[signature]
  specs = fn.structured_input_signature[1]
  calls = [{n: tf.constant([x[n] for x in instances], s.dtype) for n, s in specs.items()}
           for instances in instances_pool]
  for call in calls[:3]:
    fn(**call)
  latencies, errors = [], []
  start = time.perf_counter()
  warm_until, until = start + WARMUP_S, start + WARMUP_S + duration_s

  def worker(offset):
    i = offset
    while time.perf_counter() < until:
      t = time.perf_counter()
      try:
        fn(**calls[i % len(calls)])
      except tf.errors.OpError as error:
        errors.append(repr(error)[:200])
      i += 1
      if t >= warm_until:
        latencies.append(time.perf_counter() - t)

  threads = [threading.Thread(target=worker, args=(i * 7,)) for i in range(concurrency)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  return _summary(latencies, duration_s, errors)


def _merged(metrics_text: str, signature: str) -> float:
  """Mean requests per SavedModel call for ``signature``, from the server's histogram."""
  values = {}
  for line in metrics_text.splitlines():
    for stat in ('sum', 'count'):
      if line.startswith(f'serving_batch_requests_{stat}{{signature="{signature}"}}'):
        values[stat] = float(line.split()[-1])
  return round(values['sum'] / values['count'], 2) if values.get('count') else None


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model-base-path', default=os.path.join('outputs', 'serving', MODEL_NAME))
  parser.add_argument('--concurrency', type=int, default=CONCURRENCY)
  parser.add_argument('--duration-s', type=float, default=DURATION_S)
  parser.add_argument('--server-args', default='', help='extra flags for serving.server, e.g. "--workers 2"')
  args = parser.parse_args(argv)

  model_dir = _latest_version(args.model_base_path)
  server = ServerProcess(args.model_base_path, args.server_args.split())
  metadata = _get(f'http://127.0.0.1:{server.port}/v1/models/{MODEL_NAME}/metadata')
  version = metadata['model_spec']['version']
  defs = metadata['metadata']['signature_def']['signature_def']
  requests = Requests(model_dir, defs)
  pools = {name: [requests.instances(signature, n) for _ in range(POOL)] for name, signature, n in SCENARIOS}
  scenarios = {}
  try:
    for name, signature, _ in SCENARIOS:
      bodies = [json.dumps({'signature_name': signature, 'instances': instances}).encode()
                for instances in pools[name]]
      scenarios[name] = load(server.port, f'/v1/models/{MODEL_NAME}:predict', bodies, args.concurrency,
                             args.duration_s)
      scenarios[name]['mean_requests_per_call'] = _merged(server.metrics(), signature)
  finally:
    server.stop()
  for name, signature, _ in SCENARIOS:
    floor = direct(model_dir, signature, pools[name], args.concurrency, args.duration_s)
    scenarios[name].update({f'direct_{k}': v for k, v in floor.items() if k != 'error_samples'})
    floor_one = direct(model_dir, signature, pools[name], 1, min(args.duration_s, 5.0))
    scenarios[name]['direct_1_client_p50_ms'] = floor_one['p50_ms']
  hparams_path = os.path.join(model_dir, 'assets.extra', names.HPARAMS_FILE)
  model = json.load(open(hparams_path)).get('model') if os.path.exists(hparams_path) else None
  recommend = scenarios['recommend_k10']
  result = {
      'model': model, 'model_version': version, 'concurrency': args.concurrency, 'duration_s': args.duration_s,
      'server_args': args.server_args, 'scenarios': scenarios,
      'targets': {'recommend_p99_ms': TARGET_RECOMMEND_P99_MS, 'ratio_to_direct_p99': TARGET_RATIO_TO_DIRECT,
                  'recommend_p99_met': recommend['p99_ms'] <= TARGET_RECOMMEND_P99_MS,
                  'recommend_ratio_to_direct_p99': round(recommend['p99_ms'] / recommend['direct_p99_ms'], 2),
                  'zero_errors': all(s['errors'] == 0 for s in scenarios.values())}}
  rows = ['| scenario | p50 ms | p99 ms | req/s | errors | requests per call | direct p50 ms | direct p99 ms '
          '| direct req/s | direct, 1 client, p50 ms |', '|' + ' --- |' * 10]
  for name, s in scenarios.items():
    rows.append(f'| {name} | {s["p50_ms"]} | {s["p99_ms"]} | {s["rps"]} | {s["errors"]} | '
                f'{s["mean_requests_per_call"]} | {s["direct_p50_ms"]} | {s["direct_p99_ms"]} | {s["direct_rps"]} | '
                f'{s["direct_1_client_p50_ms"]} |')
  table = (f'Model `{model}` version {version}; {args.concurrency} concurrent clients, closed loop, '
           f'{args.duration_s:.0f} s per scenario after {WARMUP_S:.0f} s of warm-up; server flags '
           f'`{args.server_args or "(defaults)"}`. `direct` is the same calls on the SavedModel in one process '
           f'from {args.concurrency} threads. See docs/serving.md.\n\n' + '\n'.join(rows))
  common.write_result(NAME, result, table)


if __name__ == '__main__':
  main()
