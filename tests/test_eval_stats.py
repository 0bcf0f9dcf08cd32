"""The report's bootstrap: coverage over repeated synthetic draws and the paired test. Pure numpy, seconds.

Synthetic test sets look like ML-100K's: users with a random number of
ratings each, and an error that is a per-user bias plus per-rating noise, so
one user's ratings are correlated, as real ones are.
"""
import numpy as np
import pytest

from components.eval_report import stats

pytestmark = pytest.mark.unit

USERS = 200
BIAS_SD, NOISE_SD = 0.5, 0.9
TRUE_RMSE = float(np.sqrt(BIAS_SD ** 2 + NOISE_SD ** 2))
DRAWS = 300
# Coverage over DRAWS draws has a binomial standard deviation of 0.013 at
# 95%; the tolerance is about three of them.
COVERAGE_TOLERANCE = 0.04


def _draw(rng, users=USERS):
  """(user index, label, errors' shared part) of one synthetic test set."""
  counts = 1 + rng.poisson(15, users)
  user = np.repeat(np.arange(users), counts)
  error = rng.normal(0, BIAS_SD, users)[user] + rng.normal(0, NOISE_SD, user.size)
  labels = rng.integers(1, 6, user.size).astype(np.float64)
  return user, labels, error


def _rmse_interval(user, labels, predictions, baseline=None, weights=None, seed=0):
  weights = stats.poisson_weights(user.max() + 1, seed=seed) if weights is None else weights
  sums = stats.user_sums(user, user.max() + 1, labels, predictions, baseline)
  return stats.intervals(weights, sums)


def test_rmse_intervals_cover_the_true_rmse_at_the_stated_rate():
  rng = np.random.default_rng(0)
  covered = 0
  for draw in range(DRAWS):
    user, labels, error = _draw(rng)
    found = _rmse_interval(user, labels, labels + error, seed=draw)['root_mean_squared_error']
    covered += found.contains(TRUE_RMSE)
  assert abs(covered / DRAWS - stats.LEVEL) <= COVERAGE_TOLERANCE, covered / DRAWS


def test_resampling_ratings_instead_of_users_would_be_too_narrow():
  # The same draws with one "user" per rating: the intervals ignore the
  # per-user bias and cover the truth far less often than 95%.
  # (Fewer draws and replicates: a weight per rating is a big matrix.)
  rng = np.random.default_rng(0)
  covered, draws = 0, DRAWS // 6
  for draw in range(draws):
    user, labels, error = _draw(rng)
    weights = stats.poisson_weights(user.size, replicates=300, seed=draw)
    found = _rmse_interval(np.arange(user.size), labels, labels + error, weights=weights)
    covered += found['root_mean_squared_error'].contains(TRUE_RMSE)
  assert covered / draws < stats.LEVEL - 2 * COVERAGE_TOLERANCE


def test_paired_difference_covers_the_true_difference_at_the_stated_rate():
  # The candidate's errors are the baseline's plus 10%: the true RMSE difference is 0.1 * TRUE_RMSE.
  rng = np.random.default_rng(1)
  covered = 0
  for draw in range(DRAWS):
    user, labels, error = _draw(rng)
    found = _rmse_interval(user, labels, labels + 1.1 * error, labels + error, seed=draw)
    covered += found['root_mean_squared_error_diff'].contains(0.1 * TRUE_RMSE)
  assert abs(covered / DRAWS - stats.LEVEL) <= COVERAGE_TOLERANCE, covered / DRAWS


def test_a_truly_worse_candidate_is_significantly_worse():
  # 3% larger errors on the same examples: about 0.03 RMSE, under the +0.01
  # tolerance's radar for nothing, and the paired interval says so.
  rng = np.random.default_rng(2)
  user, labels, error = _draw(rng, users=400)
  found = _rmse_interval(user, labels, labels + 1.03 * error, labels + error)
  diff = found['root_mean_squared_error_diff']
  assert diff.above_zero and not diff.below_zero, diff
  # Unpaired intervals of the two RMSEs overlap: only pairing can tell.
  cand, base = found['root_mean_squared_error'], found['baseline_root_mean_squared_error']
  assert cand.low < base.high


def test_two_runs_of_the_same_model_are_not_significantly_different():
  # Two "seeds": a shared error plus each run's own small noise of the same
  # size, so neither is truly better. The paired test calls a difference
  # about 5% of the time, no more.
  rng = np.random.default_rng(3)
  called = 0
  for draw in range(DRAWS // 3):
    user, labels, error = _draw(rng)
    first = labels + error + rng.normal(0, 0.2, user.size)
    second = labels + error + rng.normal(0, 0.2, user.size)
    diff = _rmse_interval(user, labels, first, second, seed=draw)['root_mean_squared_error_diff']
    called += diff.above_zero or diff.below_zero
  assert called / (DRAWS // 3) <= 1 - stats.LEVEL + 2 * COVERAGE_TOLERANCE, called
  user, labels, error = _draw(np.random.default_rng(4))
  same = _rmse_interval(user, labels, labels + error, labels + error)['root_mean_squared_error_diff']
  assert same == stats.Interval(0.0, 0.0)


def test_the_point_of_every_metric_is_the_plain_formula():
  rng = np.random.default_rng(5)
  user, labels, error = _draw(rng, users=30)
  predictions = labels + error
  sums = stats.user_sums(user, 30, labels, predictions, labels)
  point = stats.metrics(sums.sum(0))
  assert point['root_mean_squared_error'] == pytest.approx(np.sqrt(np.mean(error ** 2)))
  assert point['mean_absolute_error'] == pytest.approx(np.mean(np.abs(error)))
  assert point['calibration'] == pytest.approx(predictions.sum() / labels.sum())
  assert point['root_mean_squared_error_diff'] == pytest.approx(np.sqrt(np.mean(error ** 2)))


def test_spread_and_list_metric_intervals_cover_their_truth():
  # Two groups with true RMSE 1.0 and 1.3: the spread's interval covers 0.3;
  # a per-user list metric with mean 0.4 is covered by its interval.
  rng = np.random.default_rng(6)
  spread_covered = mean_covered = 0
  for draw in range(DRAWS // 3):
    user = np.repeat(np.arange(USERS), 1 + rng.poisson(15, USERS))
    group = (user % 2).astype(bool)
    error = rng.normal(0, np.where(group, 1.3, 1.0))
    labels = np.zeros(user.size)
    weights = stats.poisson_weights(USERS, seed=draw)
    rmse = [stats.replicate(weights, stats.user_sums(user, USERS, labels, error, mask=m))['root_mean_squared_error']
            for m in (group, ~group)]
    spread_covered += stats.spread_interval(rmse).contains(0.3)
    recall = rng.binomial(10, 0.4, USERS) / 10
    mean_covered += stats.mean_intervals(weights, np.arange(USERS), {'recall': recall})['recall'].contains(0.4)
  assert spread_covered / (DRAWS // 3) >= stats.LEVEL - 2 * COVERAGE_TOLERANCE
  assert mean_covered / (DRAWS // 3) >= stats.LEVEL - 2 * COVERAGE_TOLERANCE
