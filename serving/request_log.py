"""An optional log of served examples, in the CSV the validate command reads.

One row per example predicted (``serving_default`` and ``serving_tf_example``),
with a header of raw feature names and lists joined with '|', which is what
``python -m pipeline.validate log.csv --kind serving`` reads to check the
requests for training/serving skew. The extra columns (``logged_at``,
``model_version``, ``signature``, ``prediction``) are ignored by validate and
are there for drift analysis. Recommend requests are not logged: they carry
no movie, and validate checks examples.

Rows are written by a thread of their own, so a slow disk never slows a
request; when the writer falls behind, rows are dropped and counted. The
file is opened for appending (``O_APPEND``) and each batch of whole rows
goes out in one ``write``, which Linux applies whole, so the processes of
one server (``--processes``) can share a log without interleaving rows.
"""
import csv
import io
import os
import queue
import random
import threading
import time
from typing import Dict, List, Optional

from google.protobuf.message import DecodeError
import numpy as np
import tensorflow as tf

from transforms import features as f

EXTRA_COLUMNS = ('logged_at', 'model_version', 'signature', 'prediction')
# Every feature a request may carry, in the feature table's order.
FEATURE_COLUMNS = f.SERVING_FEATURES
COLUMNS = EXTRA_COLUMNS + FEATURE_COLUMNS
_LIST_SEPARATOR = '|'


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode('utf-8', 'replace')
  if isinstance(value, (float, np.floating)):
    return repr(float(value))
  return str(value)


def _raw_row(inputs: Dict[str, np.ndarray], i: int) -> Dict[str, str]:
  """Instance ``i`` of a raw-signature request, padding dropped."""
  row = {}
  for name in FEATURE_COLUMNS:
    if name not in inputs:
      continue
    value = inputs[name][i]
    if f.BY_NAME[name].shape == f.OPTIONAL:
      row[name] = '' if value == f.BY_NAME[name].unknown else _text(value)  # the signature's "unknown": absent
    elif np.ndim(value) == 0:
      row[name] = _text(value)
    elif name in f.ALIGNED_WITH and f.ALIGNED_WITH[name] in inputs:
      n = sum(1 for x in inputs[f.ALIGNED_WITH[name]][i] if x != b'')
      row[name] = _LIST_SEPARATOR.join(_text(x) for x in value[:n])
    else:
      row[name] = _LIST_SEPARATOR.join(_text(x) for x in value if x != b'')
  return row


def _example_row(serialized: bytes) -> Dict[str, str]:
  try:
    example = tf.train.Example.FromString(serialized)
  except DecodeError:
    return {}  # the model parsed it, so this does not happen; an empty row shows it if it does
  row = {}
  for name in FEATURE_COLUMNS:
    if name in example.features.feature:
      feature = example.features.feature[name]
      values = list(getattr(feature, feature.WhichOneof('kind')).value) if feature.WhichOneof('kind') else []
      row[name] = _LIST_SEPARATOR.join(_text(v) for v in values)
  return row


class RequestLog:
  """Appends sampled examples to a CSV file.

  Args:
    path: the CSV file; created with a header, appended to when it exists.
    sample: the fraction of requests logged (every example of a sampled
      request is logged).
    max_queue: requests waiting for the writer before new ones are dropped.
    on_drop: called once per dropped request.
  """

  def __init__(self, path: str, sample: float = 1.0, max_queue: int = 10_000, on_drop=None):
    self.path, self.sample, self._on_drop = path, sample, on_drop
    create(path)
    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    self._queue: 'queue.Queue[Optional[tuple]]' = queue.Queue(max_queue)
    self._thread = threading.Thread(target=self._work, daemon=True, name='request-log')
    self._thread.start()

  def log(self, version: int, signature: str, inputs: Dict[str, np.ndarray], predictions: np.ndarray):
    """Queues one request's examples; cheap, and never blocks."""
    if self.sample < 1.0 and random.random() >= self.sample:
      return
    try:
      self._queue.put_nowait((time.time(), version, signature, inputs, predictions))
    except queue.Full:
      if self._on_drop:
        self._on_drop()

  def _rows(self, item) -> List[Dict[str, str]]:
    logged_at, version, signature, inputs, predictions = item
    rows = []
    for i in range(len(predictions)):
      row = _example_row(inputs['examples'][i]) if 'examples' in inputs else _raw_row(inputs, i)
      row.update(logged_at=f'{logged_at:.3f}', model_version=str(version), signature=signature,
                 prediction=f'{float(np.ravel(predictions[i])[0]):.4f}')
      rows.append(row)
    return rows

  def _work(self):
    while True:
      item = self._queue.get()
      batch = [item]
      while item is not None:
        try:
          item = self._queue.get_nowait()
        except queue.Empty:
          break
        batch.append(item)
      text = io.StringIO(newline='')
      writer = csv.DictWriter(text, fieldnames=COLUMNS)
      for entry in batch:
        if entry is not None:
          writer.writerows(self._rows(entry))
      data = text.getvalue().encode('utf-8')
      while data:
        data = data[os.write(self._fd, data):]
      if batch[-1] is None:
        return

  def close(self):
    """Writes what is queued and closes the file."""
    self._queue.put(None)
    self._thread.join()
    os.close(self._fd)


def create(path: str):
  """The log with its header, unless it exists: before a server's processes start, so only one writes it."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
  except FileExistsError:
    if os.path.getsize(path):
      return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)  # an empty file: the header is still missing
  text = io.StringIO(newline='')
  csv.DictWriter(text, fieldnames=COLUMNS).writeheader()
  with os.fdopen(fd, 'w', newline='', encoding='utf-8') as fh:
    fh.write(text.getvalue())
