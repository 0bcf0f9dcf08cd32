"""Prometheus metrics: traffic, latency, batching, model versions, and predictions.

The prediction histograms are for drift monitoring: a shift in the
distribution of predicted ratings (or of recommended scores) between two
windows is visible without logging a single request.
"""
import threading
from typing import Dict, List, Tuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from contract.names import MOVIE_IDS, PREDICTION_KEY, SCORES

LATENCY_BUCKETS = (.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .2, .5, 1., 2.5)
# Ratings live in 1..5: quarter-star buckets.
PREDICTION_BUCKETS = tuple(1.0 + 0.25 * i for i in range(17))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
  """The server's metrics, in a registry of their own (tests start several servers)."""

  def __init__(self):
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
      values = [o[SCORES][o[MOVIE_IDS] != b''] for o in outputs]  # padding is no recommendation
    elif PREDICTION_KEY in outputs[0]:
      values = [o[PREDICTION_KEY].ravel() for o in outputs]
    else:
      return
    self.predictions.observe(np.concatenate(values).astype(np.float64), (model, signature))

  def exposition(self) -> bytes:
    return generate_latest(self.registry)


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
