"""Unit tests of make bench-scale's measuring and bookkeeping (not the benchmark itself)."""
import sys

import pytest

from benchmarks import bench_scale

pytestmark = pytest.mark.unit

# A child that holds 300 MB for a moment, started by a parent that holds little:
# the peak must be the grandchild's, which only wait4 or the tree poll can see.
_GRANDCHILD = ('import subprocess, sys; subprocess.run([sys.executable, "-c", '
               '"import time; b = bytearray(300 * 2**20); b[::4096] = b\'x\' * len(b[::4096]); time.sleep(1)"], '
               'check=True)')


def test_measure_sees_the_peak_of_a_grandchild(tmp_path):
  figures = bench_scale.measure([sys.executable, '-c', _GRANDCHILD], str(tmp_path / 'log'))
  assert figures['peak_rss_mb'] >= 300
  assert figures['largest_process_mb'] >= 300
  assert figures['wall_s'] >= 1.0


def test_measure_raises_with_the_log_tail_on_failure(tmp_path):
  with pytest.raises(RuntimeError, match='boom'):
    bench_scale.measure([sys.executable, '-c', 'import sys; print("boom"); sys.exit(3)'], str(tmp_path / 'log'))


def _measured(size, wall_s, cpu_s=10.0, peak=1000):
  return {'stages': {stage: {'wall_s': wall_s, 'cpu_s': cpu_s, 'peak_rss_mb': peak} for stage in bench_scale.STAGES}}


def test_projection_runs_small_sizes_and_skips_what_would_take_too_long():
  measured = {100_000: _measured(100_000, 200.0)}
  # 1M always runs, whatever 100K projects.
  assert bench_scale.projected_skip(1_000_000, measured, 25 * 60, 1_000_000) is None
  measured[1_000_000] = _measured(1_000_000, 400.0)
  reason = bench_scale.projected_skip(10_000_000, measured, 25 * 60, 1_000_000)
  assert reason.startswith('not run') and '~67 min' in reason and 'Transform' in reason
  measured[1_000_000] = _measured(1_000_000, 100.0)
  assert bench_scale.projected_skip(10_000_000, measured, 25 * 60, 1_000_000) is None


def test_growth_exponent_is_one_for_linear_time():
  measured = {100_000: _measured(100_000, 10.0, peak=500), 1_000_000: _measured(1_000_000, 100.0, 40.0, 1000)}
  growth = bench_scale.growth(measured)['100000->1000000']['Transform']
  assert growth == {'time_ratio': 10.0, 'time_exponent': 1.0, 'cpu_ratio': 4.0, 'memory_ratio': 2.0}
