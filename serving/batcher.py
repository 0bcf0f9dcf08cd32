"""Coalesces concurrent calls of one signature into one SavedModel call.

A call on one row costs nearly what a call on a few dozen rows costs (the
work per call is graph dispatch and the Transform graph's fixed part), so
under load the server runs fewer, larger calls. When a worker is free it
waits ``wait_s`` (a couple of milliseconds; 0 runs at once) for more
requests, then takes everything queued up to the signature's row limit; a
batch that reaches the limit runs without waiting. It waits only while
requests arrive fast enough that ``_COMPANY`` more are expected within the
wait (a smoothed gap between arrivals): under light load a wait would only
add to every request's latency. While the workers are
busy a queue forms anyway, and a worker that finishes takes it at once
(TF Serving's batcher waits the same way, with ``batch_timeout_micros``).

Requests are queued on the event loop; each batch crosses to a worker
thread once and its answers come back in one ``call_soon_threadsafe``, so
the cost of a thread hop is paid per batch, not per request. Merging,
the TensorFlow call and splitting run on the worker; TensorFlow never runs
on the event loop.
"""
import asyncio
import concurrent.futures
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional

import numpy as np
import tensorflow as tf

Arrays = Dict[str, np.ndarray]

# A free worker waits for company only when the smoothed gap between
# arrivals says at least this many more requests will come within the wait;
# chosen side by side against always waiting and against 2 (docs/serving.md,
# "Stop 23": the open loop's latency for some of the closed loop's calls).
_COMPANY = 4
# Weight of the newest gap in the smoothed one; gaps count up to wait_s, so
# a quiet spell is forgotten within a few arrivals.
_SMOOTHING = 0.2


class _Job(NamedTuple):
  inputs: Arrays
  rows: int
  future: asyncio.Future


class BatchStats(NamedTuple):
  rows: int
  requests: int
  seconds: float


def _pad(arrays: List[np.ndarray]) -> np.ndarray:
  """Stacks row blocks, padding list inputs at the end to the widest ("" or 0).

  The raw signatures read "" and 0 as padding, so a padded row means what
  the unpadded one did. List inputs are copied into one array filled with
  the padding, rather than each block padded and then joined.
  """
  if arrays[0].ndim != 2:
    return np.concatenate(arrays, axis=0)
  first = arrays[0]
  out = np.full((sum(len(a) for a in arrays), max(a.shape[1] for a in arrays)),
                b'' if first.dtype == object else 0, dtype=first.dtype)
  offset = 0
  for a in arrays:
    out[offset:offset + len(a), :a.shape[1]] = a
    offset += len(a)
  return out


def _merge(jobs: List[_Job]) -> Arrays:
  if len(jobs) == 1:
    return jobs[0].inputs
  return {name: _pad([j.inputs[name] for j in jobs]) for name in jobs[0].inputs}


class Batcher:
  """Runs ``fn`` on merged batches of queued requests, on worker threads.

  ``submit`` and ``close`` are called on the event loop that serves the
  requests; everything else on the workers.

  Args:
    fn: a signature's concrete function; takes tensors by input name and
      returns a dict of tensors whose first dimension is the batch.
    max_rows: the largest merged batch (a single larger request still runs,
      alone).
    workers: threads calling ``fn``; TensorFlow releases the GIL inside, so
      a second one overlaps one batch's Python with another's TensorFlow.
    trim: optional ``(inputs, outputs) -> outputs`` applied to each
      request's slice, for outputs whose width depends on the batch
      (recommend's k).
    check: optional ``inputs -> Exception or None``, the request checks that
      need whole arrays (the feature table's ranges). It runs once on the
      merged batch; only when that finds a problem does each request get
      checked alone, so a bad request is answered with its own error and the
      others in its batch run without it.
    on_batch: optional callback ``(BatchStats, outputs)`` after each batch,
      on the worker, with the outputs each request got (metrics: observing
      them here keeps that work off the event loop).
  """

  def __init__(self, fn: Callable[..., Mapping[str, tf.Tensor]], max_rows: int = 256, workers: int = 1,
               trim: Optional[Callable[[Arrays, Arrays], Arrays]] = None,
               check: Optional[Callable[[Arrays], Optional[Exception]]] = None,
               on_batch: Optional[Callable[[BatchStats], None]] = None, wait_s: float = 0.0):
    self._fn, self._max_rows, self._workers, self._trim, self._on_batch = fn, max_rows, workers, trim, on_batch
    self._check = check
    self._wait_s = wait_s
    self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='batcher')
    self._pending: List[_Job] = []
    self._pending_rows = 0
    self._busy = 0
    self._timer: Optional[asyncio.TimerHandle] = None
    # Until arrivals say otherwise, no company is expected.
    self._gap_s, self._last_arrival = wait_s, None

  def call(self, inputs: Arrays) -> Arrays:
    """One call of ``fn`` on numpy inputs, in the caller's thread (the warm-up's)."""
    outputs = self._fn(**{name: tf.constant(value) for name, value in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}

  def submit(self, inputs: Arrays, rows: int) -> asyncio.Future:
    """Queues one request; the future gets its outputs (numpy) or the error TF raised."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    self._pending.append(_Job(inputs, rows, future))
    self._pending_rows += rows
    now = loop.time()
    if self._last_arrival is not None:
      self._gap_s += _SMOOTHING * (min(now - self._last_arrival, self._wait_s) - self._gap_s)
    self._last_arrival = now
    if self._busy < self._workers:
      if self._wait_s <= 0 or self._pending_rows >= self._max_rows or self._gap_s * _COMPANY > self._wait_s:
        self._dispatch(loop)
      elif self._timer is None:
        # Company is coming: a free worker waits wait_s rather than run one row.
        self._timer = loop.call_later(self._wait_s, self._dispatch, loop)
    return future

  def close(self):
    """Stops the workers once what they run now is done (nothing is queued by then)."""
    self._pool.shutdown(wait=False)

  def _take(self) -> List[_Job]:
    rows, n = self._pending[0].rows, 1
    while n < len(self._pending) and rows + self._pending[n].rows <= self._max_rows:
      rows += self._pending[n].rows
      n += 1
    jobs, self._pending = self._pending[:n], self._pending[n:]
    self._pending_rows -= rows
    return jobs

  def _dispatch(self, loop: asyncio.AbstractEventLoop):
    if self._timer is not None:
      self._timer.cancel()
      self._timer = None
    while self._pending and self._busy < self._workers:
      jobs = [j for j in self._take() if not j.future.done()]  # a waiter that timed out is not run
      if jobs:
        self._busy += 1
        self._pool.submit(self._work, loop, jobs)

  def _work(self, loop: asyncio.AbstractEventLoop, jobs: List[_Job]):
    start = time.perf_counter()
    try:
      results = self._run(jobs)
    except Exception as error:  # noqa: BLE001 -- a bug here must fail these requests, not the worker
      results = [error] * len(jobs)
    stats = BatchStats(sum(j.rows for j in jobs), len(jobs), time.perf_counter() - start)
    loop.call_soon_threadsafe(self._finish, loop, jobs, results)
    if self._on_batch:
      self._on_batch(stats, [r for r in results if not isinstance(r, Exception)])

  def _run(self, jobs: List[_Job]) -> list:
    merged = _merge(jobs)
    if self._check and self._check(merged) is not None:
      errors = [self._check(j.inputs) for j in jobs]
      good = [j for j, e in zip(jobs, errors) if e is None]
      answers = iter(self._call_split(good, _merge(good)) if good else [])
      return [e if e is not None else next(answers) for e in errors]
    return self._call_split(jobs, merged)

  def _call_split(self, jobs: List[_Job], merged: Arrays) -> list:
    try:
      outputs = self.call(merged)
    except Exception as error:  # noqa: BLE001 -- handed to each waiting request, never swallowed
      if len(jobs) == 1:
        return [error]
      # One request the model rejects must not fail the others it was merged with.
      return [self._call_split([job], job.inputs)[0] for job in jobs]
    results, offset = [], 0
    for job in jobs:
      part = {name: value[offset:offset + job.rows] for name, value in outputs.items()}
      offset += job.rows
      results.append(self._trim(job.inputs, part) if self._trim else part)
    return results

  def _finish(self, loop: asyncio.AbstractEventLoop, jobs: List[_Job], results: list):
    self._busy -= 1
    self._dispatch(loop)  # start the next batch before answering this one
    for job, result in zip(jobs, results):
      if job.future.done():
        continue  # its waiter gave up (timed out)
      if isinstance(result, Exception):
        job.future.set_exception(result)
      else:
        job.future.set_result(result)
