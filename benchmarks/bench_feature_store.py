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

Writes docs/results/feature_store.{json,md}. Events are new ratings of
movies each user has not rated, after the data's last second, so each is
applied.
"""
import argparse
import json
import os
import random
import tempfile
import threading
import time
from typing import Any, Dict, List, Tuple

import numpy as np
import redis

from benchmarks import common
from serving.feature_store import apply_events, open_store, resolve_predict, resolve_recommend, stream
from serving.feature_store.bootstrap import bootstrap
from serving.feature_store.redis_store import local_server
from transforms import features as f


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


def run(data_dir: str, lookups: int, direct: int, drained: int, paced_s: float) -> Dict[str, Any]:
  rng = random.Random(0)
  results = {}
  with tempfile.TemporaryDirectory() as folder, local_server(folder) as redis_url:
    client = redis.Redis.from_url(redis_url)
    for backend, url in (('sqlite', os.path.join(folder, 'feature_store.sqlite')), ('redis', redis_url)):
      store = open_store(url)
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
      store.close()
  return results


def _table(results: Dict[str, Any]) -> str:
  lines = ['| backend | bootstrap s | recommend by id p50 / p99 ms | predict by id p50 / p99 ms | apply_events ev/s | '
           'consumer drain ev/s | paced: offered ev/s; backlog max / when the producer stopped |',
           '|---|---|---|---|---|---|---|']
  for backend, r in results.items():
    if backend == 'args':
      continue
    paced = r['consumer_paced']
    lines.append(f"| {backend} | {r['bootstrap_s']} | "
                 f"{r['recommend_by_id']['p50_ms']} / {r['recommend_by_id']['p99_ms']} | "
                 f"{r['predict_by_id']['p50_ms']} / {r['predict_by_id']['p99_ms']} | "
                 f"{r['apply_events_direct']['events_per_s']} | {r['consumer_drain']['events_per_s']} | "
                 f"{paced['offered_per_s']}, {paced['max_backlog']} / {paced['backlog_when_producer_stopped']} |")
  return ('\n'.join(lines) + '\n\nOne caller, one consumer, loopback Redis; one event a call or stream entry. '
          'The paced run offers half the drain rate for `--paced-s` s; a backlog that stays '
          'near the batch size (500) and does not grow means the consumer keeps up with that rate.')


def main() -> None:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.bench_feature_store', description=__doc__)
  parser.add_argument('--data-dir', default='', help='a GroupLens ml-100k folder; else found as ExampleGen does')
  parser.add_argument('--lookups', type=int, default=2000)
  parser.add_argument('--direct', type=int, default=2000, help='events applied by direct calls')
  parser.add_argument('--drained', type=int, default=5000, help='events in the drained stream')
  parser.add_argument('--paced-s', type=float, default=10.0)
  args = parser.parse_args()
  results = run(args.data_dir, args.lookups, args.direct, args.drained, args.paced_s)
  results['args'] = {'lookups': args.lookups, 'direct': args.direct, 'drained': args.drained, 'paced_s': args.paced_s}
  common.write_result('feature_store', results, _table(results))


if __name__ == '__main__':
  main()
