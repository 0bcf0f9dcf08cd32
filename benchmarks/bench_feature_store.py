"""make bench-feature-store: the feature store's ingest rate and by-id lookup latency, SQLite and Redis.

For each backend, seeded from ML-100K:

- lookup latency: ``resolve_recommend`` (profile + history of a user) and a
  one-instance ``resolve_predict`` (plus a movie's catalogue features and live
  statistics), p50 and p99 over random users and movies, one caller;
- ``apply_events``, one event a call, called directly;
- the Redis-stream consumer: how fast one consumer drains a stream of
  one-event entries (its capacity), then a producer paced at half that rate
  for ``--paced-s`` seconds: the backlog it leaves, sampled every 50 ms, shows
  whether it keeps up.

Then over HTTP, against ``python -m serving.server`` on the newest pushed
model (``--model-base-path``), under ``wrk -t1 -c50`` on loopback:

- ``:recommend`` with full features: the profile and history of POOL users,
  as the store serves them, in the body, to a server without a store;
- ``:recommend`` by id, ``{"user_id": ..., "k": 10}`` for the same users, to a
  server over each store: the difference is the lookup;
- ``POST /v1/users/{id}/ratings``, one new event a request: the ingest rate
  through the route, per store.

Writes docs/results/feature_store.{json,md}. Events are new ratings of
movies each user has not rated, after the data's last second, so each is
applied.
"""
import argparse
import json
import os
import random
import subprocess
import tempfile
import threading
import time
from typing import Any, Dict, List, Tuple

import numpy as np
import redis

from benchmarks import common
from benchmarks.bench_serving import ServerProcess, _get, _latest_version, _loadavg, wrk_available, wrk_load
from contract import names
from serving.feature_store import apply_events, open_store, resolve_predict, resolve_recommend, stream
from serving.feature_store.bootstrap import bootstrap
from serving.feature_store.redis_store import local_server
from transforms import features as f


# Users whose requests cycle under wrk, and connections.
POOL = 200
CONCURRENCY = 50
RECOMMEND_PATH = f'/v1/models/{names.MODEL_NAME}:recommend'
# wrk: one body and path a request, in order, no request twice; percentiles as one JSON line.
_RATINGS_LUA = """
local paths = {%s}
local bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", paths[i], {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d}\\n', summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _percentiles(seconds: List[float]) -> Dict[str, float]:
  ms = np.asarray(seconds) * 1e3
  return {'p50_ms': round(float(np.percentile(ms, 50)), 3), 'p99_ms': round(float(np.percentile(ms, 99)), 3),
          'n': len(seconds)}


def _events(store, n: int, rng: random.Random, start_ts: int) -> List[Tuple[str, Dict[str, Any]]]:
  """n new ratings: a random user, a movie that user has not rated, one second apart."""
  users, _ = store.read([str(u) for u in range(1, 944)], [])
  rated = {u: {h.movie_id for h in state.ratings} for u, state in users.items()}
  out = []
  for i in range(n):
    user = str(rng.randrange(1, 944))
    movie = str(rng.randrange(1, 1683))
    while movie in rated[user]:
      movie = str(rng.randrange(1, 1683))
    rated[user].add(movie)
    out.append((user, {f.MOVIE_ID: movie, f.RATING: rng.randrange(1, 6), f.TIMESTAMP: start_ts + i}))
  return out


def _lookups(store, n: int, rng: random.Random) -> Dict[str, Any]:
  recommend, predict = [], []
  for _ in range(n):
    user, movie = str(rng.randrange(1, 944)), str(rng.randrange(1, 1683))
    start = time.perf_counter()
    resolve_recommend(store, {f.USER_ID: user, 'k': 10})
    recommend.append(time.perf_counter() - start)
    start = time.perf_counter()
    resolve_predict(store, {'instances': [{f.USER_ID: user, f.MOVIE_ID: movie}]})
    predict.append(time.perf_counter() - start)
  return {'recommend_by_id': _percentiles(recommend), 'predict_by_id': _percentiles(predict)}


def _backlog(client: redis.Redis, name: str) -> int:
  groups = client.xinfo_groups(name)
  return int(groups[0]['lag'] or 0) + int(groups[0]['pending'] or 0) if groups else 0


def _consume(store, client, events, name: str, paced_rate: float = 0.0) -> Dict[str, Any]:
  """Drains (paced_rate 0: events published first) or follows a paced producer; the consumer in a thread."""
  client.delete(name)
  consumer = stream.Consumer(store, client, stream=name, count=500, block_ms=20)
  if not paced_rate:
    pipe = client.pipeline(transaction=False)
    for user, event in events:
      pipe.xadd(name, {'user_id': user, 'body': json.dumps(event)})
    pipe.execute()
  stop = threading.Event()
  start = time.perf_counter()
  worker = threading.Thread(target=consumer.run, args=(stop,))
  worker.start()
  backlog = []
  if paced_rate:
    for i, (user, event) in enumerate(events):
      delay = start + i / paced_rate - time.perf_counter()
      if delay > 0:
        time.sleep(delay)
      stream.publish(client, user, event, name)
      if i % max(1, int(paced_rate / 20)) == 0:
        backlog.append(_backlog(client, name))
    at_end = _backlog(client, name)
  while consumer.entries < len(events):
    time.sleep(0.005)
  seconds = time.perf_counter() - start
  stop.set()
  worker.join()
  assert consumer.stats() == {'entries': len(events), 'applied': len(events), 'dead_lettered': 0}, consumer.stats()
  out = {'events': len(events), 'seconds': round(seconds, 2), 'events_per_s': round(len(events) / seconds)}
  if paced_rate:
    out.update(offered_per_s=round(paced_rate), max_backlog=max(backlog), backlog_when_producer_stopped=at_end)
  return out


def _ratings_load(port: int, events: List[Tuple[str, Dict[str, Any]]], duration_s: float) -> Dict[str, Any]:
  """wrk -t1 -c50 posting one distinct event a request, for ``duration_s`` (the server is already warm)."""
  paths = ','.join(f'"/v1/users/{user}/ratings"' for user, _ in events)
  bodies = ','.join('[==[' + json.dumps(event) + ']==]' for _, event in events)
  with tempfile.NamedTemporaryFile('w', suffix='.lua', delete=False) as fh:
    fh.write(_RATINGS_LUA % (paths, bodies))
  try:
    out = subprocess.run(['wrk', '-t1', f'-c{CONCURRENCY}', f'-d{duration_s:g}s', '--timeout', '10s', '-s', fh.name,
                          f'http://127.0.0.1:{port}'], capture_output=True, text=True, check=True).stdout
  finally:
    os.unlink(fh.name)
  r = json.loads(next(line[4:] for line in out.splitlines() if line.startswith('WRK ')))
  if r['requests'] > len(events):
    raise SystemExit(f'wrk sent {r["requests"]} ratings but only {len(events)} distinct events were made; '
                     'raise the pool in _http.')
  return {'load_generator': f'wrk -t1 -c{CONCURRENCY}', 'requests': r['requests'],
          'events_per_s': round(r['requests'] / (r['duration_us'] / 1e6), 1), 'p50_ms': round(r['p50_us'] / 1e3, 2),
          'p99_ms': round(r['p99_us'] / 1e3, 2), 'errors': r['errors']}


def _http(model_base_path: str, stores: Dict[str, Any], urls: Dict[str, str], duration_s: float,
          rng: random.Random) -> Dict[str, Any]:
  """recommend with full features against recommend by id per store, then the ratings route's ingest rate."""
  load_before = _loadavg()
  users = [str(rng.randrange(1, 944)) for _ in range(POOL)]
  by_id = [json.dumps({f.USER_ID: u, names.K: names.DEFAULT_K}).encode() for u in users]
  out: Dict[str, Any] = {'concurrency': CONCURRENCY, 'duration_s': duration_s, 'users': POOL,
                         'recommend_by_id': {}, 'ratings_route': {}}
  server = ServerProcess(model_base_path, [])
  try:
    metadata = _get(f'http://127.0.0.1:{server.port}/v1/models/{names.MODEL_NAME}/metadata')
    inputs = metadata['metadata']['signature_def']['signature_def'][names.RECOMMEND]['inputs']
    full = [json.dumps(resolve_recommend(stores['sqlite'], {f.USER_ID: u, names.K: names.DEFAULT_K}, inputs)).encode()
            for u in users]
    out['model_version'] = metadata['model_spec']['version']
    out['mean_history'] = round(float(np.mean([len(json.loads(b)[f.HISTORY_MOVIE_IDS]) for b in full])), 1)
    out['recommend_full_features'] = wrk_load(server.port, RECOMMEND_PATH, full, CONCURRENCY, duration_s)
  finally:
    server.stop()
  for backend, url in urls.items():
    server = ServerProcess(model_base_path, ['--feature-store', url])
    try:
      out['recommend_by_id'][backend] = wrk_load(server.port, RECOMMEND_PATH, by_id, CONCURRENCY, duration_s)
      events = _events(stores[backend], 30_000, rng, f.TIMESTAMP_RANGE[0] + 2 * 10**8)
      out['ratings_route'][backend] = _ratings_load(server.port, events, duration_s)
    finally:
      server.stop()
  out['load_average_before'], out['load_average_after'] = load_before, _loadavg()
  return out


def run(data_dir: str, lookups: int, direct: int, drained: int, paced_s: float, model_base_path: str = '',
        duration_s: float = 8.0) -> Dict[str, Any]:
  rng = random.Random(0)
  results = {}
  with tempfile.TemporaryDirectory() as folder, local_server(folder) as redis_url:
    client = redis.Redis.from_url(redis_url)
    urls = {'sqlite': os.path.join(folder, 'feature_store.sqlite'), 'redis': redis_url}
    stores = {}
    for backend, url in urls.items():
      store = stores[backend] = open_store(url)
      report = bootstrap(store, data_dir)
      row = {'bootstrap_s': report['seconds'], 'loaded': report['loaded']}
      row.update(_lookups(store, lookups, rng))
      events = _events(store, direct + drained + 10_000, rng, f.TIMESTAMP_RANGE[0] + 10**8)
      start = time.perf_counter()
      for user, event in events[:direct]:
        apply_events(store, user, event)
      row['apply_events_direct'] = {'events': direct, 'events_per_s': round(direct / (time.perf_counter() - start))}
      row['consumer_drain'] = _consume(store, client, events[direct:direct + drained], f'bench:{backend}:drain')
      rate = row['consumer_drain']['events_per_s'] / 2
      paced = events[direct + drained:direct + drained + int(rate * paced_s)]
      row['consumer_paced'] = _consume(store, client, paced, f'bench:{backend}:paced', rate)
      results[backend] = row
    if model_base_path:
      results['http'] = _http(model_base_path, stores, urls, duration_s, rng)
    for store in stores.values():
      store.close()
  return results


def _table(results: Dict[str, Any]) -> str:
  lines = ['| backend | bootstrap s | recommend by id p50 / p99 ms | predict by id p50 / p99 ms | apply_events ev/s | '
           'consumer drain ev/s | paced: offered ev/s; backlog max / when the producer stopped |',
           '|---|---|---|---|---|---|---|']
  for backend, r in results.items():
    if backend in ('args', 'http'):
      continue
    paced = r['consumer_paced']
    lines.append(f"| {backend} | {r['bootstrap_s']} | "
                 f"{r['recommend_by_id']['p50_ms']} / {r['recommend_by_id']['p99_ms']} | "
                 f"{r['predict_by_id']['p50_ms']} / {r['predict_by_id']['p99_ms']} | "
                 f"{r['apply_events_direct']['events_per_s']} | {r['consumer_drain']['events_per_s']} | "
                 f"{paced['offered_per_s']}, {paced['max_backlog']} / {paced['backlog_when_producer_stopped']} |")
  text = ('\n'.join(lines) + '\n\nOne caller, one consumer, loopback Redis; one event a call or stream entry. '
          'The paced run offers half the drain rate for `--paced-s` s; a backlog that stays '
          'near the batch size (500) and does not grow means the consumer keeps up with that rate.')
  http = results.get('http')
  if http:
    rows = ['| request | store | req/s | p50 ms | p99 ms | errors |', '|---|---|---:|---:|---:|---:|']
    for label, store, r in ([(f'`:recommend` with full features ({http["mean_history"]} past ratings on average)',
                              'none', http['recommend_full_features'])]
                            + [('`:recommend` `{"user_id", "k": 10}`', b, r)
                               for b, r in http['recommend_by_id'].items()]
                            + [('`POST /v1/users/{id}/ratings`, one event', b, dict(r, rps=r['events_per_s']))
                               for b, r in http['ratings_route'].items()]):
      rows.append(f"| {label} | {store} | {r['rps']:,} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")
    text += (f'\n\n## Over HTTP, {http["concurrency"]} connections\n\n`python -m serving.server` on the pushed model '
             f'(version {http["model_version"]}), `wrk -t1 -c{http["concurrency"]}` on loopback, '
             f'{http["duration_s"]:g} s '
             f'a run ({http["users"]} users\' requests in turn; recommend runs after a 2 s warm-up); load average '
             f'{http["load_average_before"]} before, {http["load_average_after"]} after.\n\n' + '\n'.join(rows))
  return text


def main() -> None:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.bench_feature_store', description=__doc__)
  parser.add_argument('--data-dir', default='', help='a GroupLens ml-100k folder; else found as ExampleGen does')
  parser.add_argument('--lookups', type=int, default=2000)
  parser.add_argument('--direct', type=int, default=2000, help='events applied by direct calls')
  parser.add_argument('--drained', type=int, default=5000, help='events in the drained stream')
  parser.add_argument('--paced-s', type=float, default=10.0)
  parser.add_argument('--model-base-path', default=os.path.join('outputs', 'serving', names.MODEL_NAME),
                      help="the Pusher's folder the HTTP runs serve (make run writes it)")
  parser.add_argument('--duration-s', type=float, default=8.0, help='seconds of each wrk run')
  parser.add_argument('--no-http', action='store_true', help='the store alone: no server, no wrk')
  args = parser.parse_args()
  if not args.no_http:
    _latest_version(args.model_base_path)  # exits, saying to run `make run` or pass --model-base-path
    if not wrk_available():
      raise SystemExit('wrk is not installed: `make wrk` (or apt-get install -y wrk), or pass --no-http.')
  results = run(args.data_dir, args.lookups, args.direct, args.drained, args.paced_s,
                '' if args.no_http else args.model_base_path, args.duration_s)
  results['args'] = {'lookups': args.lookups, 'direct': args.direct, 'drained': args.drained, 'paced_s': args.paced_s,
                     'model_base_path': None if args.no_http else args.model_base_path, 'duration_s': args.duration_s}
  common.write_result('feature_store', results, _table(results))


if __name__ == '__main__':
  main()
