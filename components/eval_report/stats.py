"""95% intervals for the evaluation report: a percentile bootstrap over users.

Pure numpy, so the calibration tests run in seconds. The report has every
test example's label, the candidate's and the baseline's prediction, its
user and its slices; every metric it shows (RMSE, MAE, means, the paired
RMSE difference, a fairness spread) is a function of a few sums over the
examples of a slice. The bootstrap resamples users, not ratings: one user's
ratings share the user's bias, so resampling ratings one by one would treat
them as independent and give intervals too narrow (the calibration test shows
it). Each replicate gives every user a Poisson(1) weight (the Poisson
bootstrap: the same weights serve every slice, and a replicate is one matrix
product), and each interval is the 2.5th to the 97.5th percentile of the
metric over the replicates. Candidate and baseline get the same weights, so
their difference is paired.
"""
import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np

LEVEL = 0.95
REPLICATES = 1000
SEED = 17
METHOD = 'percentile bootstrap over users (Poisson weights)'

# Columns of a slice's per-user sums.
COUNT, SSE, SAE, LABEL, PREDICTION, BASE_SSE, BASE_SAE, BASE_PREDICTION = range(8)
COLUMNS = 8


@dataclasses.dataclass(frozen=True)
class Interval:
  """A two-sided interval at ``LEVEL``."""
  low: float
  high: float

  def contains(self, value: float) -> bool:
    return self.low <= value <= self.high

  @property
  def above_zero(self) -> bool:
    return self.low > 0.0

  @property
  def below_zero(self) -> bool:
    return self.high < 0.0


def interval(replicates: np.ndarray, level: float = LEVEL) -> Optional[Interval]:
  """The percentile interval of a metric's replicates (NaNs, from replicates with no example, left out)."""
  finite = replicates[np.isfinite(replicates)]
  if finite.size < 2:
    return None
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(finite, [tail, 100.0 - tail])
  return Interval(float(low), float(high))


def poisson_weights(n_users: int, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
  """(replicates, n_users) bootstrap weights, fixed by ``seed`` so a report is reproducible."""
  return np.random.default_rng(seed).poisson(1.0, size=(replicates, n_users)).astype(np.float64)


def user_index(user_ids: Sequence) -> np.ndarray:
  """Each example's user as 0..n_users-1."""
  return np.unique(np.asarray(user_ids), return_inverse=True)[1].reshape(-1)


def user_sums(users: np.ndarray, n_users: int, labels: np.ndarray, predictions: np.ndarray,
              baseline: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None) -> np.ndarray:
  """(n_users, COLUMNS) sums over one slice's examples: count, squared and absolute errors, labels, predictions.

  Args:
    users: each example's index from ``user_index``.
    n_users: the number of users.
    labels: each example's rating.
    predictions: the candidate's prediction of each example.
    baseline: the baseline's prediction of each example, or None.
    mask: which examples are in the slice; None for all.
  """
  mask = np.ones(labels.shape, bool) if mask is None else mask
  u, y, p = users[mask], labels[mask].astype(np.float64), predictions[mask].astype(np.float64)
  columns = [np.ones_like(y), (p - y) ** 2, np.abs(p - y), y, p]
  if baseline is not None:
    b = baseline[mask].astype(np.float64)
    columns += [(b - y) ** 2, np.abs(b - y), b]
  else:
    columns += [np.full_like(y, np.nan)] * 3
  return np.stack([np.bincount(u, weights=c, minlength=n_users) for c in columns], axis=1)


def metrics(totals: np.ndarray) -> Dict[str, np.ndarray]:
  """Metrics (TFMA's names) from sums with COLUMNS last: one row of sums, or one per replicate."""
  with np.errstate(divide='ignore', invalid='ignore'):
    n = totals[..., COUNT]
    rmse, base_rmse = np.sqrt(totals[..., SSE] / n), np.sqrt(totals[..., BASE_SSE] / n)
    return {
        'root_mean_squared_error': rmse,
        'mean_absolute_error': totals[..., SAE] / n,
        'mean_squared_error': totals[..., SSE] / n,
        'mean_label': totals[..., LABEL] / n,
        'mean_prediction': totals[..., PREDICTION] / n,
        'calibration': totals[..., PREDICTION] / totals[..., LABEL],
        'baseline_root_mean_squared_error': base_rmse,
        'root_mean_squared_error_diff': rmse - base_rmse,
        'mean_absolute_error_diff': (totals[..., SAE] - totals[..., BASE_SAE]) / n,
    }


def replicate(weights: np.ndarray, sums: np.ndarray) -> Dict[str, np.ndarray]:
  """Each metric over the replicates: (replicates,) arrays."""
  return metrics(weights @ sums)


def intervals(weights: np.ndarray, sums: np.ndarray, level: float = LEVEL) -> Dict[str, Interval]:
  """Every metric's interval for one slice's per-user sums."""
  out = {}
  for name, values in replicate(weights, sums).items():
    found = interval(values, level)
    if found is not None:
      out[name] = found
  return out


def spread_interval(rmse_replicates: Sequence[np.ndarray], level: float = LEVEL) -> Optional[Interval]:
  """The interval of max minus min RMSE across slices, from each slice's RMSE replicates."""
  if len(rmse_replicates) < 2:
    return None
  stacked = np.stack(rmse_replicates, axis=1)
  with np.errstate(invalid='ignore'):
    return interval(np.max(stacked, axis=1) - np.min(stacked, axis=1), level)


def mean_intervals(weights: np.ndarray, users: np.ndarray, values: Dict[str, np.ndarray],
                   level: float = LEVEL) -> Dict[str, Interval]:
  """Intervals of per-user averages (list metrics: one value per user), over the same user weights.

  Args:
    weights: from ``poisson_weights``.
    users: each value's user index into the weights' columns.
    values: metric name to one value per entry of ``users``.
  """
  n_users = weights.shape[1]
  count = weights @ np.bincount(users, minlength=n_users).astype(np.float64)
  out = {}
  with np.errstate(divide='ignore', invalid='ignore'):
    for name, v in values.items():
      found = interval(weights @ np.bincount(users, weights=np.asarray(v, np.float64), minlength=n_users) / count,
                       level)
      if found is not None:
        out[name] = found
  return out
