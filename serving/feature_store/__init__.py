"""The online feature store: what the server knows about users and movies, fed by rating events.

One interface (``store.FeatureStore``), two backends: SQLite, a file next to
the served models (the default; no service), and Redis, shared by several
replicas. ``open_store`` picks one from a URL. The functions the server calls:

- ``apply_events(store, user_id, body)``: ``POST /v1/users/{id}/ratings``;
- ``resolve_recommend`` and ``resolve_predict``: by-id requests, on the
  server's event loop (docs/feature_store.md says why not on a thread);
- ``bootstrap.bootstrap``: seeds it from MovieLens 100K
  (``python -m serving.feature_store bootstrap``, ``make feature-store``).

The rules (ordering, idempotency, cold start) are stated in events.py and
resolve.py; history and movie statistics are ExampleGen's own functions.
"""
from serving.feature_store.events import BadEvent, apply_events
from serving.feature_store.resolve import resolve_instances, resolve_predict, resolve_recommend
from serving.feature_store.store import FeatureStore

__all__ = ['BadEvent', 'FeatureStore', 'apply_events', 'open_store', 'resolve_instances', 'resolve_predict',
           'resolve_recommend']


def open_store(url: str) -> FeatureStore:
  """A store from a URL: ``redis://host:port/db`` for Redis; a path or ``sqlite:///path`` for SQLite."""
  if url.startswith(('redis://', 'rediss://', 'unix://')):
    from serving.feature_store.redis_store import RedisStore
    return RedisStore(url)
  from serving.feature_store.sqlite_store import SqliteStore
  if url.startswith('sqlite://'):
    url = url[len('sqlite://'):]
  if not url or '://' in url:
    raise ValueError(f'Feature store {url!r}: use redis://host:port/db or a SQLite file path.')
  return SqliteStore(url)
