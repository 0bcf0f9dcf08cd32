"""The optional event consumer: rating events from a Redis stream into the store.

A producer adds one entry per ``POST /v1/users/{id}/ratings`` body:
``XADD fs:events * user_id 196 body '<the JSON body>'`` (``publish``). A
consumer group reads them with XREADGROUP and, per entry:

- applies it with ``apply_events`` (all of the entry or nothing), then
  acknowledges it. Delivery is at least once: an entry applied whose XACK was
  lost is delivered again, and the idempotency key makes that a no-op;
- an entry ``apply_events`` refuses (``BadEvent``), or whose body is not
  JSON, goes to the dead-letter stream ``<stream>:dead`` with the reason,
  in the same transaction as its XACK, and is counted;
- any other failure (the store is down) leaves the entry pending, unacked,
  and stops the consumer; the next start reads its pending entries first.
"""
import json
import threading
from typing import Any, Dict, Optional

import redis

from serving.feature_store.events import BadEvent, apply_events
from serving.feature_store.store import FeatureStore

STREAM = 'fs:events'
GROUP = 'feature-store'


def dead_letter_stream(stream: str) -> str:
  return f'{stream}:dead'


def publish(client: redis.Redis, user_id: str, body: Any, stream: str = STREAM) -> bytes:
  """Adds one body of events for a user to the stream; returns the entry id."""
  return client.xadd(stream, {'user_id': str(user_id), 'body': json.dumps(body)})


class Consumer:
  """One member of the consumer group; ``poll`` handles what is there, ``run`` until stopped.

  Attributes:
    entries, applied, dead_lettered: entries handled, applied and dead-lettered.
  """

  def __init__(self, store: FeatureStore, client: redis.Redis, name: str = 'consumer-1', stream: str = STREAM,
               group: str = GROUP, count: int = 500, block_ms: int = 1000):
    self.store, self.client, self.name, self.stream, self.group = store, client, name, stream, group
    self.count, self.block_ms = count, block_ms
    self.entries = self.applied = self.dead_lettered = 0
    self._pending_done = False
    try:
      client.xgroup_create(stream, group, id='0', mkstream=True)
    except redis.ResponseError as error:
      if 'BUSYGROUP' not in str(error):
        raise

  def stats(self) -> Dict[str, int]:
    return {'entries': self.entries, 'applied': self.applied, 'dead_lettered': self.dead_lettered}

  def poll(self, block_ms: Optional[int] = None) -> int:
    """Reads and handles up to ``count`` entries (this consumer's pending ones first); returns how many."""
    messages = [] if self._pending_done else self._read('0', None)
    self._pending_done = self._pending_done or not messages
    if self._pending_done:
      messages = self._read('>', self.block_ms if block_ms is None else block_ms)
    for entry_id, fields in messages:
      self._handle(entry_id, fields)
    return len(messages)

  def _read(self, start: str, block_ms: Optional[int]) -> list:
    replies = self.client.xreadgroup(self.group, self.name, {self.stream: start}, count=self.count, block=block_ms)
    return replies[0][1] if replies else []

  def _handle(self, entry_id: bytes, fields: Dict[bytes, bytes]) -> None:
    user_id = fields.get(b'user_id', b'').decode('utf-8', 'replace')
    body = fields.get(b'body', b'')
    try:
      apply_events(self.store, user_id, json.loads(body))
    except (BadEvent, json.JSONDecodeError, UnicodeDecodeError) as error:
      pipe = self.client.pipeline()
      pipe.xadd(dead_letter_stream(self.stream), {'entry_id': entry_id, 'user_id': user_id, 'body': body,
                                                  'reason': str(error) or type(error).__name__})
      pipe.xack(self.stream, self.group, entry_id)
      pipe.execute()
      self.dead_lettered += 1
    else:
      self.client.xack(self.stream, self.group, entry_id)
      self.applied += 1
    self.entries += 1

  def run(self, stop: threading.Event) -> None:
    while not stop.is_set():
      self.poll()
