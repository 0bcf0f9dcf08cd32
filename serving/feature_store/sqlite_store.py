"""The embedded backend: one SQLite file, next to the served models; no service to run.

Profiles and catalogue entries are JSON text; ratings are rows keyed by
(user, movie), with an index by movie for the live statistics. WAL mode lets
a bootstrap or a consumer in another process write while the server reads.
"""
import json
import os
import sqlite3
import threading
from typing import Any, Callable, Dict, Iterable, Sequence, Tuple

from serving.feature_store.store import FeatureStore, Held, MovieState, Update, UserState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (user_id TEXT PRIMARY KEY, profile TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS movies (movie_id TEXT PRIMARY KEY, catalogue TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ratings (
  user_id TEXT NOT NULL, movie_id TEXT NOT NULL, rating REAL NOT NULL, timestamp INTEGER NOT NULL,
  seq INTEGER NOT NULL, PRIMARY KEY (user_id, movie_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ratings_by_movie ON ratings (movie_id, user_id, rating, timestamp, seq);
CREATE TABLE IF NOT EXISTS sequence (next INTEGER NOT NULL);
"""
# SQLite caps a statement's parameters at 999 in older builds.
_CHUNK = 500


class SqliteStore(FeatureStore):
  """A feature store in the SQLite file ``path`` (created with its folder when missing)."""

  def __init__(self, path: str):
    self.path = path
    if os.path.dirname(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    # One connection shared by the server's threads, behind a lock; autocommit
    # mode, so every transaction below is an explicit BEGIN.
    self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    self._lock = threading.Lock()
    with self._lock:
      self._db.execute('PRAGMA journal_mode=WAL')
      self._db.execute('PRAGMA synchronous=NORMAL')
      self._db.executescript(_SCHEMA)
      if self._db.execute('SELECT COUNT(*) FROM sequence').fetchone()[0] == 0:
        self._db.execute('INSERT INTO sequence VALUES (0)')

  def __repr__(self):
    return f'SqliteStore({self.path!r})'

  def _select(self, sql: str, keys: Sequence[str]) -> list:
    rows = []
    for start in range(0, len(keys), _CHUNK):
      chunk = keys[start:start + _CHUNK]
      rows.extend(self._db.execute(sql.format(','.join('?' * len(chunk))), chunk).fetchall())
    return rows

  def _users(self, user_ids: Sequence[str]) -> Dict[str, UserState]:
    users = {u: UserState(None, []) for u in user_ids}
    for user_id, profile in self._select('SELECT user_id, profile FROM profiles WHERE user_id IN ({})', user_ids):
      users[user_id] = UserState(json.loads(profile), users[user_id].ratings)
    for row in self._select('SELECT user_id, movie_id, rating, timestamp, seq FROM ratings WHERE user_id IN ({})',
                            user_ids):
      users[row[0]].ratings.append(Held(*row))
    return users

  def read(self, user_ids: Iterable[str], movie_ids: Iterable[str]) -> Tuple[Dict[str, UserState],
                                                                            Dict[str, MovieState]]:
    user_ids, movie_ids = list(dict.fromkeys(user_ids)), list(dict.fromkeys(movie_ids))
    with self._lock:
      self._db.execute('BEGIN')
      try:
        users = self._users(user_ids)
        movies = {m: MovieState(None, []) for m in movie_ids}
        for movie_id, catalogue in self._select('SELECT movie_id, catalogue FROM movies WHERE movie_id IN ({})',
                                                movie_ids):
          movies[movie_id] = MovieState(json.loads(catalogue), movies[movie_id].ratings)
        for row in self._select('SELECT user_id, movie_id, rating, timestamp, seq FROM ratings '
                                'WHERE movie_id IN ({})', movie_ids):
          movies[row[1]].ratings.append(Held(*row))
      finally:
        self._db.execute('COMMIT')
    return users, movies

  def update_user(self, user_id: str, plan: Callable[[UserState], Tuple[Update, Any]]) -> Any:
    with self._lock:
      # IMMEDIATE takes the write lock before reading, so no other process
      # can change this user between the plan's read and its write.
      self._db.execute('BEGIN IMMEDIATE')
      try:
        update, result = plan(self._users([user_id])[user_id])
        if update.profile is not None:
          self._db.execute('INSERT OR REPLACE INTO profiles VALUES (?, ?)',
                           (user_id, json.dumps(update.profile, sort_keys=True)))
        first = self._db.execute('SELECT next FROM sequence').fetchone()[0]
        self._db.executemany('INSERT OR REPLACE INTO ratings VALUES (?, ?, ?, ?, ?)',
                             [(user_id, h.movie_id, h.rating, h.timestamp, first + i)
                              for i, h in enumerate(update.put)])
        self._db.execute('UPDATE sequence SET next = ?', (first + len(update.put),))
      except BaseException:
        self._db.execute('ROLLBACK')
        raise
      self._db.execute('COMMIT')
    return result

  def load(self, profiles: Dict[str, Dict[str, Any]], catalogue: Dict[str, Dict[str, Any]],
           ratings: Sequence[Held]) -> None:
    with self._lock:
      self._db.execute('BEGIN IMMEDIATE')
      try:
        for table in ('profiles', 'movies', 'ratings'):
          self._db.execute(f'DELETE FROM {table}')
        self._db.executemany('INSERT INTO profiles VALUES (?, ?)',
                             [(u, json.dumps(p, sort_keys=True)) for u, p in profiles.items()])
        self._db.executemany('INSERT INTO movies VALUES (?, ?)',
                             [(m, json.dumps(c, sort_keys=True)) for m, c in catalogue.items()])
        self._db.executemany('INSERT INTO ratings VALUES (?, ?, ?, ?, ?)', ratings)
        self._db.execute('UPDATE sequence SET next = ?', (max((h.seq for h in ratings), default=0) + 1,))
      except BaseException:
        self._db.execute('ROLLBACK')
        raise
      self._db.execute('COMMIT')

  def counts(self) -> Dict[str, int]:
    with self._lock:
      return {name: self._db.execute(f'SELECT COUNT(*) FROM {table}').fetchone()[0]
              for name, table in (('users', 'profiles'), ('movies', 'movies'), ('ratings', 'ratings'))}

  def close(self) -> None:
    with self._lock:
      self._db.close()
