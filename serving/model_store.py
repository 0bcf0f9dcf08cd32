"""Finds, loads and hot-swaps the newest version under a model's base path.

The layout is TF Serving's: ``<base_path>/<version>/saved_model.pb``, the
version an integer, as the Pusher writes it. The newest version that loads
and answers a warm-up call is served; a version folder is loaded only once
its files have stopped changing between two polls, because the Pusher
copies files into place one by one. A request holds the version it started
with until it finishes, so swapping versions never fails a request in
flight; the old version's batchers are closed when its last request ends.
"""
import gc
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from absl import logging
from google.protobuf import json_format
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from serving import batcher as batcher_lib
from serving.codec import BadRequest, InputSpec
from contract import names

_DTYPES = {'DT_STRING': 'string', 'DT_INT64': 'int64', 'DT_INT32': 'int32', 'DT_FLOAT': 'float32'}
# Served over REST; transform_features is for the Evaluator and returns
# tensors TF Serving's JSON has no use for.
SERVED_SIGNATURES = (names.SERVING_DEFAULT, names.SERVING_TF_EXAMPLE, names.RECOMMEND, names.RECOMMEND_DIVERSE,
                     names.EXPLAIN)
# Signatures whose one row scores many (the catalog; 2^groups coalitions): smaller merged batches.
_HEAVY = (names.RECOMMEND, names.RECOMMEND_DIVERSE, names.EXPLAIN)
# Their outputs are k wide: a row merged with larger k's is cut back to its own.
_TOP_K = (names.RECOMMEND, names.RECOMMEND_DIVERSE)


class Options:
  """How a version is served.

  Args:
    max_batch_rows: largest merged batch per signature; recommend's rows
      each score the whole catalog, so it gets its own, smaller bound.
      Both are the knee of the SavedModel's cost by batch size
      (docs/serving.md, "Batch sizes"): serving_default 500 rows take about
      3x 100 rows and give 1.6x the rows a second, 1,000 rows only 10% more;
      recommend 64 users take 2x 16 for 2x the users a second.
    max_recommend_rows: the same for recommend, recommend_diverse and explain
      (not measured for explain, whose one row scores 2^groups + history
      rows, nor for recommend_diverse, whose rows with a diversity run MMR).
    workers: batcher threads per signature.
    batch_wait_s: how long a free batcher waits for more requests before it
      runs a batch smaller than its limit; 0 runs at once. The default is
      the best of 0, 1 and 2 ms side by side (docs/serving.md, "Stop 22").
  """

  def __init__(self, max_batch_rows: int = 512, max_recommend_rows: int = 64, workers: int = 1,
               batch_wait_s: float = 0.002):
    self.max_batch_rows, self.max_recommend_rows, self.workers = max_batch_rows, max_recommend_rows, workers
    self.batch_wait_s = batch_wait_s


class Signature:
  """One served signature: its inputs and the batcher that calls it."""

  def __init__(self, name: str, fn, definition: dict, options: Options, on_batch, make_check=None):
    self.name, self.fn, self.definition = name, fn, definition
    self.inputs = {n: InputSpec(n, _DTYPES[t['dtype']], len(t['tensor_shape'].get('dim', [])))
                   for n, t in definition['inputs'].items()}
    self.outputs = sorted(definition['outputs'])
    self.batcher = batcher_lib.Batcher(
        fn, max_rows=options.max_recommend_rows if name in _HEAVY else options.max_batch_rows,
        workers=options.workers, trim=_trim_to_k if name in _TOP_K else None,
        check=make_check(self.inputs) if make_check else None,
        on_batch=(lambda stats, outputs: on_batch(name, stats, outputs)) if on_batch else None,
        wait_s=options.batch_wait_s)

  def example(self) -> Dict[str, np.ndarray]:
    """One row of the defaults every raw input accepts ("" and 0; k = 1)."""
    out = {}
    for name, spec in self.inputs.items():
      shape = (1,) if spec.rank == 1 else (1, 1)
      out[name] = (np.full(shape, b'', dtype=object) if spec.dtype == 'string'
                   else np.ones(shape, spec.dtype) if name == names.K else np.zeros(shape, spec.dtype))
    return out


def _trim_to_k(inputs: Dict[str, np.ndarray], outputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """A recommend request merged with others gets the width it would get alone."""
  # Builtins on one int: np.clip's dispatch showed in the profile (it runs once per request).
  width = min(max(int(inputs[names.K].max()), 0), names.MAX_K)
  return {name: value[:, :width] for name, value in outputs.items()}


def _signature_defs(path: str) -> Dict[str, dict]:
  """The SavedModel's signature defs as TF Serving's metadata API writes them."""
  proto = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(os.path.join(path, 'saved_model.pb'), 'rb') as fh:
    proto.ParseFromString(fh.read())
  defs = proto.meta_graphs[0].signature_def
  return {name: json_format.MessageToDict(defs[name], preserving_proto_field_name=True)
          for name in defs if not name.startswith('__')}


class Servable:
  """One loaded version, with a count of the requests using it."""

  def __init__(self, name: str, version: int, path: str, options: Options, on_batch=None, make_check=None):
    self.name, self.version, self.path = name, version, path
    self.signature_defs = _signature_defs(path)
    self._model = tf.saved_model.load(path)
    self.signatures: Dict[str, Signature] = {}
    for sname in SERVED_SIGNATURES:
      if sname in self.signature_defs and sname in self._model.signatures:
        self.signatures[sname] = Signature(sname, self._model.signatures[sname], self.signature_defs[sname],
                                           options, on_batch, make_check)
    self._lock = threading.Lock()
    self._in_flight = 0
    self._retired = False
    self._closed = threading.Event()

  def warm_up(self):
    """Calls each raw signature once, so the first request does not pay for graph setup.

    Raises whatever TensorFlow raises: a version that cannot answer the
    defaults is not served.
    """
    for name in (names.SERVING_DEFAULT, names.RECOMMEND, names.RECOMMEND_DIVERSE, names.EXPLAIN):
      if name in self.signatures:
        self.signatures[name].batcher.call(self.signatures[name].example())

  def acquire(self) -> 'Servable':
    with self._lock:
      self._in_flight += 1
    return self

  def release(self):
    with self._lock:
      self._in_flight -= 1
      close = self._retired and self._in_flight == 0
    if close:
      self._close()

  def retire(self):
    """No new requests come; closes once the last one in flight is done."""
    with self._lock:
      self._retired = True
      close = self._in_flight == 0
    if close:
      self._close()

  def _close(self):
    for signature in self.signatures.values():
      signature.batcher.close()
    self._closed.set()

  def wait_closed(self, timeout: float) -> bool:
    return self._closed.wait(timeout)


def _versions(base_path: str) -> List[Tuple[int, str]]:
  """(version, path) of the version folders that hold a SavedModel, newest first."""
  if not tf.io.gfile.isdir(base_path):
    return []
  found = []
  for entry in tf.io.gfile.listdir(base_path):
    entry = entry.rstrip('/')
    path = os.path.join(base_path, entry)
    if entry.isdigit() and tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
      found.append((int(entry), path))
  return sorted(found, reverse=True)


def _fingerprint(path: str) -> Tuple:
  """What changes while a version is still being copied in: each file's name, size and mtime."""
  files = []
  for root, _, file_names in tf.io.gfile.walk(path):
    for name in file_names:
      stat = tf.io.gfile.stat(os.path.join(root, name))
      files.append((os.path.relpath(os.path.join(root, name), path), stat.length, stat.mtime_nsec))
  return tuple(sorted(files))


class ModelStore:
  """Serves the newest loadable version of one model and watches for newer ones.

  Args:
    name: the model name in URLs (``/v1/models/<name>``).
    base_path: the folder holding the version folders (the Pusher's).
    options: batching options for each loaded version.
    poll_s: seconds between looks at base_path.
    on_batch: metrics callback ``(signature_name, BatchStats, outputs)``, on a batcher thread.
    on_load: callback ``(version, ok, seconds)`` after each load attempt.
    make_check: optional ``signature inputs -> (arrays -> Exception or None)``,
      the checks each signature's batcher runs before calling the model.
  """

  def __init__(self, name: str, base_path: str, options: Optional[Options] = None, poll_s: float = 1.0,
               on_batch=None, on_load: Optional[Callable[[int, bool, float], None]] = None, make_check=None):
    self.name, self.base_path, self.poll_s = name, base_path, poll_s
    self._options = options or Options()
    self._on_batch, self._on_load, self._make_check = on_batch, on_load, make_check
    self._current: Optional[Servable] = None
    self._lock = threading.Lock()
    self._seen: Dict[int, Tuple] = {}
    self._failed: Dict[int, Tuple] = {}
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def current(self) -> Optional[Servable]:
    return self._current

  def acquire(self, version: Optional[int] = None) -> Servable:
    """The served version (or ``version``, if it is the one served), held for one request.

    Raises:
      BadRequest: 404 when nothing or another version is served.
    """
    with self._lock:
      servable = self._current
      if servable is None:
        raise BadRequest(f'Servable not found for request: Latest({self.name}); no version under '
                         f'{self.base_path} has loaded yet.', status=404)
      if version is not None and version != servable.version:
        raise BadRequest(f'Servable not found for request: Specific({self.name}, {version}); '
                         f'this server serves version {servable.version} only.', status=404)
      return servable.acquire()

  def poll_once(self) -> Optional[int]:
    """Loads the newest settled version if it is newer than the served one; returns it."""
    served = self._current.version if self._current else -1
    for version, path in _versions(self.base_path):
      if version <= served:
        return None
      fingerprint = _fingerprint(path)
      settled = self._seen.get(version) == fingerprint
      self._seen[version] = fingerprint
      if not settled or self._failed.get(version) == fingerprint:
        continue  # still being copied, or already failed as it is: try an older one
      if self._load(version, path, fingerprint):
        return version
    return None

  def _load(self, version: int, path: str, fingerprint: Tuple) -> bool:
    start = time.monotonic()
    try:
      servable = Servable(self.name, version, path, self._options, self._on_batch, self._make_check)
      servable.warm_up()
    except (OSError, ValueError, tf.errors.OpError) as error:
      logging.error('Version %d at %s did not load; still serving %s: %s', version, path,
                    self._current.version if self._current else 'nothing', error)
      self._failed[version] = fingerprint
      if self._on_load:
        self._on_load(version, False, time.monotonic() - start)
      return False
    # The loaded graph is hundreds of thousands of long-lived objects; left to
    # the collector, each full collection walks them all while requests wait
    # (tens of ms on the p99). Frozen, they are never walked; refcounting
    # still frees them when the version is retired. Done before the version
    # is served, so a process that waits for its first version (--processes)
    # takes connections only after this second of GIL-holding work.
    gc.collect()
    gc.freeze()
    with self._lock:
      old, self._current = self._current, servable
    if old:
      old.retire()
    logging.info('Serving %s version %d from %s', self.name, version, path)
    if self._on_load:
      self._on_load(version, True, time.monotonic() - start)
    return True

  def start(self, wait_s: float = 0.0):
    """Starts watching; with ``wait_s``, returns once a version is served or the time is up."""
    self._thread = threading.Thread(target=self._watch, daemon=True, name='model-store')
    self._thread.start()
    deadline = time.monotonic() + wait_s
    while self._current is None and time.monotonic() < deadline:
      self._stop.wait(0.05)

  def _watch(self):
    while not self._stop.is_set():
      try:
        self.poll_once()
      except (OSError, tf.errors.OpError) as error:
        # A folder removed or rewritten while we looked; the next poll sees it settled.
        logging.warning('Could not read %s: %s', self.base_path, error)
      self._stop.wait(self.poll_s)

  def stop(self):
    self._stop.set()
    if self._thread:
      self._thread.join()
    if self._current:
      self._current.retire()
