"""Data checks, as pure functions over TFDV statistics and example files.

Three kinds of findings, each naming the split, the feature and the figure:
- ``schema``: anomalies of the statistics against the curated schema (types,
  presence, ranges, domains), in the TRAINING or SERVING environment;
- ``drift`` / ``skew``: distances to the training statistics above the
  thresholds kept in the schema (L-infinity for categorical features,
  approximate Jensen-Shannon divergence for numeric ones);
- ``oov``: the share of examples whose id was never seen in training, above
  a threshold per id feature.
"""
import dataclasses
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from transforms import features as f

SCHEMA, DRIFT, SKEW, OOV = 'schema', 'drift', 'skew', 'oov'
ID_FEATURES = (f.USER_ID, f.MOVIE_ID)
# Unseen movies beyond 10% of a batch mean the catalogue moved on without a
# retrain (ML-100K's test period: 2.4%). Unseen users are this data set's
# normal case (90% of the test period), so user_id is measured, not gated.
DEFAULT_OOV_THRESHOLDS = {f.MOVIE_ID: 0.10}
_MEASUREMENT_NAMES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: 'L-infinity distance',
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: 'Jensen-Shannon divergence',
    anomalies_pb2.DriftSkewInfo.Measurement.NORMALIZED_ABSOLUTE_DIFFERENCE: 'normalized absolute difference',
}


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One compared figure, passing or not: what the report plots."""
  split: str
  feature: str
  kind: str            # DRIFT, SKEW or OOV
  metric: str          # e.g. 'L-infinity distance', 'OOV rate'
  value: float
  threshold: Optional[float]

  @property
  def failed(self) -> bool:
    return self.threshold is not None and self.value > self.threshold


@dataclasses.dataclass(frozen=True)
class Finding:
  """One anomaly: what failed, where, and by how much."""
  split: str
  feature: str
  kind: str
  description: str

  def __str__(self) -> str:
    return f'{self.split}: {self.feature}: {self.description}'


def validate(statistics: statistics_pb2.DatasetFeatureStatisticsList, schema: schema_pb2.Schema, split: str,
             environment: str = 'TRAINING',
             previous: Optional[statistics_pb2.DatasetFeatureStatisticsList] = None,
             serving: Optional[statistics_pb2.DatasetFeatureStatisticsList] = None,
             ) -> Tuple[anomalies_pb2.Anomalies, List[Finding], List[Measurement]]:
  """Schema, drift (against ``previous``) and skew (``statistics`` is training, ``serving`` the batch).

  Pass at most one of ``previous`` and ``serving``.

  Returns:
    The TFDV anomalies proto, the findings in it, and every drift or skew
    figure TFDV measured, passing or not.
  """
  if previous is not None and serving is not None:
    raise ValueError('Compare with previous (drift) or serving (skew) statistics, not both at once.')
  comparison = SKEW if serving is not None else DRIFT
  anomalies = tfdv.validate_statistics(statistics, schema, environment=environment,
                                       previous_statistics=previous, serving_statistics=serving)
  findings = []
  for name, info in sorted(anomalies.anomaly_info.items()):
    for reason in info.reason:
      is_comparison = anomalies_pb2.AnomalyInfo.Type.Name(reason.type).startswith('COMPARATOR_')
      findings.append(Finding(split, name, comparison if is_comparison else SCHEMA,
                              reason.description or reason.short_description))
  if anomalies.HasField('dataset_anomaly_info'):
    info = anomalies.dataset_anomaly_info
    findings.append(Finding(split, '(dataset)', SCHEMA, info.description or info.short_description))
  measurements = []
  for info in anomalies.drift_skew_info:
    for kind, items in ((DRIFT, info.drift_measurements), (SKEW, info.skew_measurements)):
      for m in items:
        measurements.append(Measurement(split, '.'.join(info.path.step), kind,
                                        _MEASUREMENT_NAMES.get(m.type, 'distance'), m.value, m.threshold))
  return anomalies, findings, measurements


IdBatch = Dict[str, np.ndarray]
_STATS_FILE = 'FeatureStats.pb'


def split_statistics(artifact_uri: str, split: str) -> statistics_pb2.DatasetFeatureStatisticsList:
  """The statistics of one split of an ExampleStatistics artifact."""
  return tfdv.load_stats_binary(os.path.join(artifact_uri, f'Split-{split}', _STATS_FILE))


def read_ids(files: Sequence[str], names: Sequence[str] = ID_FEATURES, batch_size: int = 8192) -> Iterable[IdBatch]:
  """Streams the id features of TFRecord files of tf.Examples, a batch at a time.

  Files named *.gz are read as gzipped. A missing id reads as b''.
  """
  if not files:
    return
  spec = {n: tf.io.FixedLenFeature([], tf.string, default_value='') for n in names}
  dataset = tf.data.TFRecordDataset(list(files), compression_type='GZIP' if files[0].endswith('.gz') else '')
  yield from dataset.batch(batch_size).map(lambda x: tf.io.parse_example(x, spec)).as_numpy_iterator()


def known_ids(batches: Iterable[IdBatch], names: Sequence[str] = ID_FEATURES) -> Dict[str, Set[bytes]]:
  """The set of values of each id feature: the training vocabulary."""
  seen: Dict[str, Set[bytes]] = {n: set() for n in names}
  for batch in batches:
    for n in names:
      seen[n].update(batch[n].tolist())
  return seen


def oov_measurements(batches: Iterable[IdBatch], known: Mapping[str, Set[bytes]], split: str,
                     thresholds: Mapping[str, float]) -> List[Measurement]:
  """Share of rows whose id is not in ``known``, per id feature."""
  vocab = {n: np.array(sorted(ids), dtype=object) for n, ids in known.items()}
  unseen = {n: 0 for n in known}
  total = 0
  for batch in batches:
    total += len(next(iter(batch.values())))
    for n in known:
      unseen[n] += int((~np.isin(batch[n].astype(object), vocab[n])).sum())
  return [Measurement(split, n, OOV, 'OOV rate', unseen[n] / total if total else 0.0, thresholds.get(n))
          for n in sorted(known)]


def measurement_findings(measurements: Iterable[Measurement]) -> List[Finding]:
  """Findings for the OOV figures over their thresholds (TFDV reports drift and skew itself)."""
  return [Finding(m.split, m.feature, m.kind,
                  f'{m.metric} {m.value:.3f} is above the threshold {m.threshold:.3f}')
          for m in measurements if m.kind == OOV and m.failed]
