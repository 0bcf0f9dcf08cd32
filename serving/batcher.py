"""Coalesces concurrent calls of one signature into one SavedModel call.

A call on one row costs nearly what a call on a few dozen rows costs (the
work per call is graph dispatch and the Transform graph's fixed part), so
under load the server runs fewer, larger calls. There is no batching
timeout: a worker takes everything queued when it becomes free, so a lone
request runs at once and a queue forms only while the workers are busy
(TF Serving calls this "natural" batching; its batcher waits instead).
TensorFlow runs on the worker threads, never on the event loop's.
"""
import concurrent.futures
import queue
import threading
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional

import numpy as np
import tensorflow as tf

Arrays = Dict[str, np.ndarray]


class _Job(NamedTuple):
  inputs: Arrays
  rows: int
  future: concurrent.futures.Future


class BatchStats(NamedTuple):
  rows: int
  requests: int
  seconds: float


def _pad(arrays: List[np.ndarray]) -> np.ndarray:
  """Stacks row blocks, padding list inputs at the end to the widest ("" or 0).

  The raw signatures read "" and 0 as padding, so a padded row means what
  the unpadded one did.
  """
  if arrays[0].ndim == 2:
    width = max(a.shape[1] for a in arrays)
    fill = b'' if arrays[0].dtype == object else 0
    arrays = [a if a.shape[1] == width else
              np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), fill, dtype=a.dtype)], axis=1)
              for a in arrays]
  return np.concatenate(arrays, axis=0)


class Batcher:
  """Runs ``fn`` on merged batches of queued requests, on worker threads.

  Args:
    fn: a signature's concrete function; takes tensors by input name and
      returns a dict of tensors whose first dimension is the batch.
    max_rows: the largest merged batch (a single larger request still runs,
      alone).
    workers: threads calling ``fn``; TensorFlow releases the GIL inside.
    trim: optional ``(inputs, outputs) -> outputs`` applied to each
      request's slice, for outputs whose width depends on the batch
      (recommend's k).
    on_batch: optional callback with each batch's BatchStats (metrics).
  """

  def __init__(self, fn: Callable[..., Mapping[str, tf.Tensor]], max_rows: int = 256, workers: int = 1,
               trim: Optional[Callable[[Arrays, Arrays], Arrays]] = None,
               on_batch: Optional[Callable[[BatchStats], None]] = None):
    self._fn, self._max_rows, self._trim, self._on_batch = fn, max_rows, trim, on_batch
    self._queue: 'queue.Queue[Optional[_Job]]' = queue.Queue()
    self._threads = [threading.Thread(target=self._work, daemon=True, name=f'batcher-{i}') for i in range(workers)]
    for thread in self._threads:
      thread.start()

  def submit(self, inputs: Arrays, rows: int) -> concurrent.futures.Future:
    """Queues one request; the future gets its outputs (numpy) or the error TF raised."""
    future = concurrent.futures.Future()
    self._queue.put(_Job(inputs, rows, future))
    return future

  def close(self):
    """Finishes what is queued, then stops the workers."""
    for _ in self._threads:
      self._queue.put(None)
    for thread in self._threads:
      thread.join()

  def _take(self) -> List[Optional[_Job]]:
    jobs = [self._queue.get()]
    rows = jobs[0].rows if jobs[0] else 0
    while jobs[-1] is not None and rows < self._max_rows:
      try:
        job = self._queue.get_nowait()
      except queue.Empty:
        break
      if job is not None and rows + job.rows > self._max_rows:
        self._queue.put(job)  # next batch; order within the queue does not matter
        break
      jobs.append(job)
      rows += job.rows if job else 0
    return jobs

  def _work(self):
    while True:
      jobs = self._take()
      stop = jobs[-1] is None
      jobs = [j for j in jobs if j is not None]
      if jobs:
        try:
          self._run(jobs)
        except Exception as error:  # noqa: BLE001 -- a bug here must fail these requests, not the thread
          for job in jobs:
            _settle(job.future, error=error)
      if stop:
        return

  def _call(self, inputs: Arrays) -> Arrays:
    outputs = self._fn(**{name: tf.constant(value) for name, value in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}

  def _run(self, jobs: List[_Job]):
    start = time.perf_counter()
    if len(jobs) == 1:
      merged = jobs[0].inputs
    else:
      merged = {name: _pad([j.inputs[name] for j in jobs]) for name in jobs[0].inputs}
    try:
      outputs = self._call(merged)
    except Exception as error:  # noqa: BLE001 -- handed to each waiting request, never swallowed
      if len(jobs) == 1:
        _settle(jobs[0].future, error=error)
        return
      # One bad request must not fail the others it was merged with.
      for job in jobs:
        self._run([job])
      return
    offset = 0
    for job in jobs:
      part = {name: value[offset:offset + job.rows] for name, value in outputs.items()}
      offset += job.rows
      _settle(job.future, result=self._trim(job.inputs, part) if self._trim else part)
    if self._on_batch:
      self._on_batch(BatchStats(offset, len(jobs), time.perf_counter() - start))


def _settle(future: concurrent.futures.Future, result=None, error=None):
  """Sets a future's outcome unless its waiter gave up (cancelled it) already."""
  try:
    if error is not None:
      future.set_exception(error)
    else:
      future.set_result(result)
  except concurrent.futures.InvalidStateError:
    pass  # cancelled: nobody is waiting for this answer
