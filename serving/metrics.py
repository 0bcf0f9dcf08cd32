"""Prometheus metrics: traffic, latency, batching, model versions, and predictions.

The prediction histograms are for drift monitoring: a shift in the
distribution of predicted ratings (or of recommended scores) between two
windows is visible without logging a single request.
"""
import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

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
    self.predictions = Histogram('serving_predictions', 'Predicted ratings (recommend: returned scores), '
                                 'for drift monitoring', ['model', 'signature'], buckets=PREDICTION_BUCKETS,
                                 registry=self.registry)
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

  def on_batch(self, signature: str, stats) -> None:
    self.batch_rows.labels(signature).observe(stats.rows)
    self.batch_requests.labels(signature).observe(stats.requests)

  def observe_predictions(self, model: str, signature: str, values) -> None:
    histogram = self.predictions.labels(model, signature)
    for value in values:
      if math.isfinite(value):
        histogram.observe(float(value))

  def exposition(self) -> bytes:
    return generate_latest(self.registry)
