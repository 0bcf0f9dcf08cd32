"""Prometheus metrics: traffic, latency, batching, model versions, and predictions.

The prediction histograms are for drift monitoring: a shift in the
distribution of predicted ratings (or of recommended scores) between two
windows is visible without logging a single request.

With several server processes (``--processes``), each keeps its own
registry and publishes it to a folder they share (``Shared``): every
``PUBLISH_S`` seconds, and whenever it answers a scrape. Whichever process
a scrape reaches answers for all of them: counters and histograms summed,
gauges the smallest among live processes (``serving_model_version`` is then
the version every process serves, so a half-done swap shows as the old
one). A process that died leaves its counts behind, so totals never go
back.
"""
import json
import os
import tempfile
import threading
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

from contract.names import MOVIE_IDS, PREDICTION_KEY, SCORES

LATENCY_BUCKETS = (.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .2, .5, 1., 2.5)
# Ratings live in 1..5: quarter-star buckets.
PREDICTION_BUCKETS = tuple(1.0 + 0.25 * i for i in range(17))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

CONTENT_TYPE = CONTENT_TYPE_LATEST
PUBLISH_S = 1.0  # how stale another process's part of a scrape may be


class Metrics:
  """The server's metrics, in a registry of their own (tests start several servers)."""

  def __init__(self, shared_dir: Optional[str] = None):
    self.registry = CollectorRegistry()
    self.requests = Counter('serving_requests', 'HTTP requests by route and status code',
                            ['model', 'route', 'code'], registry=self.registry)
    self.latency = Histogram('serving_request_latency_seconds', 'Time from request to response, by route',
                             ['model', 'route'], buckets=LATENCY_BUCKETS, registry=self.registry)
    self.predictions = _ArrayHistogram('serving_predictions', 'Predicted ratings (recommend: returned scores), '
                                       'for drift monitoring', ('model', 'signature'), PREDICTION_BUCKETS)
    self.registry.register(self.predictions)
    self.batch_rows = Histogram('serving_batch_rows', 'Rows in each SavedModel call after merging requests',
                                ['signature'], buckets=BATCH_BUCKETS, registry=self.registry)
    self.batch_requests = Histogram('serving_batch_requests', 'Requests merged into each SavedModel call',
                                    ['signature'], buckets=BATCH_BUCKETS, registry=self.registry)
    self.model_version = Gauge('serving_model_version', 'The version being served', ['model'],
                               registry=self.registry)
    self.model_loads = Counter('serving_model_loads', 'Attempts to load a version, by result',
                               ['model', 'result'], registry=self.registry)
    self.request_log_dropped = Counter('serving_request_log_dropped', 'Request log rows dropped because the '
                                       'writer fell behind', registry=self.registry)

    self._children: Dict[Tuple, tuple] = {}
    self.shared = Shared(shared_dir, self.registry) if shared_dir else None

  def observe_request(self, model: str, route: str, code: int, seconds: float) -> None:
    """One answered request; the labelled children are looked up once per label set."""
    key = (model, route, code)
    children = self._children.get(key)
    if children is None:
      children = self._children[key] = (self.requests.labels(model, route, str(code)),
                                        self.latency.labels(model, route))
    children[0].inc()
    children[1].observe(seconds)

  def on_batch(self, model: str, signature: str, stats, outputs: List[Dict[str, np.ndarray]]) -> None:
    """One SavedModel call: its size, and the predictions (or recommend scores) each request got."""
    self.batch_rows.labels(signature).observe(stats.rows)
    self.batch_requests.labels(signature).observe(stats.requests)
    if not outputs:
      return
    if SCORES in outputs[0]:
      scores = np.concatenate([o[SCORES].ravel() for o in outputs])
      values = scores[np.concatenate([o[MOVIE_IDS].ravel() for o in outputs]) != b'']  # padding is no recommendation
    elif PREDICTION_KEY in outputs[0]:
      values = np.concatenate([o[PREDICTION_KEY].ravel() for o in outputs])
    else:
      return
    self.predictions.observe(values.astype(np.float64), (model, signature))

  def exposition(self) -> bytes:
    return self.shared.exposition() if self.shared else generate_latest(self.registry)

  def close(self):
    if self.shared:
      self.shared.close()


_SUMMED = ('counter', 'histogram', 'summary', 'untyped')


class Shared:
  """One process's part of the metrics of several: published to ``directory``, merged at a scrape.

  Args:
    directory: a folder every process of one server writes (``<pid>.json``);
      the parent creates it empty and removes it.
    registry: this process's metrics.
    publish_s: seconds between publications.
  """

  def __init__(self, directory: str, registry: CollectorRegistry, publish_s: float = PUBLISH_S):
    self.directory, self.registry = directory, registry
    self._path = os.path.join(directory, f'{os.getpid()}.json')
    self._stop = threading.Event()
    self.publish()
    self._thread = threading.Thread(target=self._every, args=(publish_s,), daemon=True, name='metrics-publish')
    self._thread.start()

  def publish(self):
    """Writes this process's samples, atomically (a reader never sees half a file)."""
    families = [{'name': m.name, 'documentation': m.documentation, 'type': m.type,
                 'samples': [[s.name, s.labels, s.value] for s in m.samples]} for m in self.registry.collect()]
    fd, tmp = tempfile.mkstemp(dir=self.directory, suffix='.tmp')
    with os.fdopen(fd, 'w') as fh:
      json.dump(families, fh)
    os.replace(tmp, self._path)

  def _every(self, seconds: float):
    while not self._stop.wait(seconds):
      self.publish()

  def exposition(self) -> bytes:
    self.publish()
    return generate_latest(_Merged(merge(self._snapshots())))

  def _snapshots(self) -> Iterable[Tuple[bool, list]]:
    for name in sorted(os.listdir(self.directory)):
      if not name.endswith('.json'):
        continue
      try:
        with open(os.path.join(self.directory, name)) as fh:
          yield _alive(int(name[:-len('.json')])), json.load(fh)
      except (OSError, ValueError):
        continue  # removed or replaced while listed: the next scrape has it

  def close(self):
    self._stop.set()
    self._thread.join()
    self.publish()  # the last counts stay for the processes still running


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def merge(snapshots: Iterable[Tuple[bool, list]]) -> List[Metric]:
  """Several processes' families as one: counts summed, gauges (and ``_created``) the smallest of the live ones."""
  families: Dict[str, Metric] = {}
  values: Dict[str, Dict[Tuple, float]] = {}
  for alive, snapshot in snapshots:
    for family in snapshot:
      name, kind = family['name'], family['type']
      if name not in families:
        families[name], values[name] = Metric(name, family['documentation'], kind), {}
      merged = values[name]
      for sample, labels, value in family['samples']:
        key = (sample, tuple(sorted(labels.items())))
        if kind in _SUMMED and not sample.endswith('_created'):
          merged[key] = merged.get(key, 0.0) + value
        elif alive:
          merged[key] = min(merged.get(key, value), value)
  for name, family in families.items():
    for (sample, labels), value in values[name].items():
      family.add_sample(sample, dict(labels), value)
  return list(families.values())


class _Merged:
  """A collector of already merged families, for ``generate_latest``."""

  def __init__(self, families: List[Metric]):
    self._families = families

  def collect(self):
    return self._families


class _ArrayHistogram:
  """A Prometheus histogram observed a whole array at a time (a recommend answer is 10 scores).

  prometheus_client's Histogram takes one value per call, with a lock each;
  this bins an array with one ``searchsorted`` and ``bincount``. Non-finite
  values are left out. Observed on batcher threads, collected on the loop.
  """

  def __init__(self, name: str, documentation: str, labels: Tuple[str, ...], buckets: Tuple[float, ...]):
    self._name, self._doc, self._labels = name, documentation, list(labels)
    self._edges = np.array(buckets, np.float64)
    self._series: Dict[Tuple[str, ...], list] = {}  # labels: [counts per bucket and +Inf, sum]
    self._lock = threading.Lock()

  def observe(self, values: np.ndarray, labels: Tuple[str, ...]) -> None:
    values = values[np.isfinite(values)]
    # side='left': a value equal to an edge falls in that edge's bucket (le is inclusive).
    counts = np.bincount(np.searchsorted(self._edges, values, side='left'), minlength=len(self._edges) + 1)
    with self._lock:
      series = self._series.get(labels)
      if series is None:
        series = self._series[labels] = [np.zeros(len(self._edges) + 1, np.int64), 0.0]
      series[0] += counts
      series[1] += float(values.sum())

  def collect(self):
    family = HistogramMetricFamily(self._name, self._doc, labels=self._labels)
    with self._lock:
      series = [(labels, counts.copy(), total) for labels, (counts, total) in self._series.items()]
    for labels, counts, total in series:
      cumulative = np.cumsum(counts)
      buckets = [(_le(edge), int(c)) for edge, c in zip(self._edges, cumulative[:-1])]
      family.add_metric(list(labels), buckets + [('+Inf', int(cumulative[-1]))], total)
    yield family


def _le(edge: float) -> str:
  return repr(float(edge))
