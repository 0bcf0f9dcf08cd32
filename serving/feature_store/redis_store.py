"""The shared backend: Redis, read and written by several server replicas and consumers.

Keys, under a prefix (default ``fs:``):

- ``profile:{user}``: the profile as JSON;
- ``ratings:{user}``: a hash, movie id to ``rating timestamp seq``;
- ``movie:{movie}``: a hash, user id to ``rating timestamp seq`` (the same
  ratings, by movie, for the live statistics);
- ``catalogue``: a hash, movie id to its catalogue features as JSON;
- ``seq``: the counter that orders ratings of the same second.

A read is one pipelined round trip. A user's update watches that user's two
keys and writes in one MULTI/EXEC, rerunning the plan when another writer
changed them first, so replicas never interleave one user's batches.
"""
import contextlib
import json
import shutil
import socket
import subprocess
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Sequence, Tuple

import redis

from serving.feature_store.store import FeatureStore, Held, MovieState, Update, UserState

_PIPELINE_CHUNK = 5000
_RETRIES = 50


def _entry(h: Held) -> str:
  return f'{h.rating!r} {h.timestamp} {h.seq}'


def _held(user_id: str, movie_id: str, text: bytes) -> Held:
  rating, timestamp, seq = text.split()
  return Held(user_id, movie_id, float(rating), int(timestamp), int(seq))


class RedisStore(FeatureStore):
  """A feature store in the Redis at ``url`` (``redis://host:port/db``), keys under ``prefix``."""

  def __init__(self, url: str, prefix: str = 'fs:'):
    self.url, self.prefix = url, prefix
    self.client = redis.Redis.from_url(url)
    self.client.ping()  # fail at start, with the address, rather than at the first request

  def __repr__(self):
    return f'RedisStore({self.url!r}, prefix={self.prefix!r})'

  def _key(self, kind: str, name: str = '') -> str:
    return f'{self.prefix}{kind}:{name}' if name else f'{self.prefix}{kind}'

  def read(self, user_ids: Iterable[str], movie_ids: Iterable[str]) -> Tuple[Dict[str, UserState],
                                                                            Dict[str, MovieState]]:
    user_ids, movie_ids = list(dict.fromkeys(user_ids)), list(dict.fromkeys(movie_ids))
    pipe = self.client.pipeline(transaction=False)
    for user_id in user_ids:
      pipe.get(self._key('profile', user_id))
      pipe.hgetall(self._key('ratings', user_id))
    for movie_id in movie_ids:
      pipe.hget(self._key('catalogue'), movie_id)
      pipe.hgetall(self._key('movie', movie_id))
    replies = pipe.execute()
    users, movies = {}, {}
    for i, user_id in enumerate(user_ids):
      profile, ratings = replies[2 * i:2 * i + 2]
      users[user_id] = UserState(profile and json.loads(profile),
                                 [_held(user_id, m.decode(), v) for m, v in ratings.items()])
    offset = 2 * len(user_ids)
    for i, movie_id in enumerate(movie_ids):
      catalogue, ratings = replies[offset + 2 * i:offset + 2 * i + 2]
      movies[movie_id] = MovieState(catalogue and json.loads(catalogue),
                                    [_held(u.decode(), movie_id, v) for u, v in ratings.items()])
    return users, movies

  def update_user(self, user_id: str, plan: Callable[[UserState], Tuple[Update, Any]]) -> Any:
    profile_key, ratings_key = self._key('profile', user_id), self._key('ratings', user_id)
    with self.client.pipeline() as pipe:
      for _ in range(_RETRIES):
        try:
          pipe.watch(profile_key, ratings_key)
          profile, ratings = pipe.get(profile_key), pipe.hgetall(ratings_key)
          state = UserState(profile and json.loads(profile),
                            [_held(user_id, m.decode(), v) for m, v in ratings.items()])
          update, result = plan(state)
          # Numbers taken and not used (a retry) leave gaps, which order nothing.
          first = self.client.incrby(self._key('seq'), len(update.put)) - len(update.put) + 1 if update.put else 0
          pipe.multi()
          if update.profile is not None:
            pipe.set(profile_key, json.dumps(update.profile, sort_keys=True))
          for i, h in enumerate(update.put):
            text = _entry(h._replace(seq=first + i))
            pipe.hset(ratings_key, h.movie_id, text)
            pipe.hset(self._key('movie', h.movie_id), user_id, text)
          pipe.execute()
          return result
        except redis.WatchError:
          continue
    raise RuntimeError(f'User {user_id}: {_RETRIES} concurrent writers in a row changed the user first; '
                       'nothing was written.')

  def load(self, profiles: Dict[str, Dict[str, Any]], catalogue: Dict[str, Dict[str, Any]],
           ratings: Sequence[Held]) -> None:
    # Not atomic across chunks: a bootstrap replaces the store while nothing
    # serves from it (`make feature-store` before the server starts).
    self._clear()
    commands = [('set', self._key('profile', u), json.dumps(p, sort_keys=True)) for u, p in profiles.items()]
    commands += [('hset', self._key('catalogue'), m, json.dumps(c, sort_keys=True)) for m, c in catalogue.items()]
    for h in ratings:
      commands.append(('hset', self._key('ratings', h.user_id), h.movie_id, _entry(h)))
      commands.append(('hset', self._key('movie', h.movie_id), h.user_id, _entry(h)))
    commands.append(('set', self._key('seq'), max((h.seq for h in ratings), default=0)))
    for start in range(0, len(commands), _PIPELINE_CHUNK):
      pipe = self.client.pipeline(transaction=False)
      for name, *args in commands[start:start + _PIPELINE_CHUNK]:
        getattr(pipe, name)(*args)
      pipe.execute()

  def _clear(self) -> None:
    keys = list(self.client.scan_iter(match=f'{self.prefix}*', count=10000))
    for start in range(0, len(keys), _PIPELINE_CHUNK):
      self.client.delete(*keys[start:start + _PIPELINE_CHUNK])

  def counts(self) -> Dict[str, int]:
    users = sum(1 for _ in self.client.scan_iter(match=self._key('profile', '*'), count=10000))
    ratings = 0
    pipe = self.client.pipeline(transaction=False)
    for key in self.client.scan_iter(match=self._key('ratings', '*'), count=10000):
      pipe.hlen(key)
    ratings = sum(pipe.execute())
    return {'users': users, 'movies': self.client.hlen(self._key('catalogue')), 'ratings': ratings}

  def close(self) -> None:
    self.client.close()


@contextlib.contextmanager
def local_server(folder: str) -> Iterator[str]:
  """Runs Debian's redis-server on a free loopback port without persistence; yields its URL (tests, benchmarks)."""
  binary = shutil.which('redis-server')
  if binary is None:
    raise FileNotFoundError('redis-server is missing: `make redis-server` (or apt-get install -y redis-server).')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]  # another process may take it first: rare, and the ping below then names it
  process = subprocess.Popen([binary, '--port', str(port), '--bind', '127.0.0.1', '--dir', folder, '--save', '',
                              '--appendonly', 'no'], stdout=subprocess.DEVNULL)
  url = f'redis://127.0.0.1:{port}/0'
  try:
    client = redis.Redis.from_url(url)
    for _ in range(200):
      try:
        client.ping()
        break
      except redis.ConnectionError:
        if process.poll() is not None:
          raise RuntimeError(f'redis-server exited with {process.returncode} on port {port}.') from None
        time.sleep(0.05)
    else:
      raise RuntimeError(f'redis-server did not answer on port {port} within 10 s.')
    yield url
  finally:
    process.terminate()
    process.wait(10)
