"""What a person sees while the local pipeline runs: one line per component.

TFX logs a few hundred INFO lines a run. ``Progress`` is a logging filter on
the ``absl`` logger that turns them into

    Transform                    COMPLETE    41.2 s
    Trainer                      epoch  5/30  2.1 s an epoch, about 53 s left

and lets warnings through, except the few known not to matter (``_NOISE``).
With ``verbose`` every record passes as well.
"""
import logging
import re
import sys
import time
from typing import Callable, Dict, Optional, TextIO

_RUNNING = re.compile(r'^Component (\S+) is running\.$')
_FINISHED = re.compile(r'^Component (\S+) is finished\.$')
_CACHED = re.compile(r'^A cached execution \d+ is used\.$')
_SKIPPED = re.compile(r'^Skipping execution for ')
_EPOCH = re.compile(r'^Trainer epoch (\d+)/(\d+): (.*)$')
_TRIAL = re.compile(r'^Tuner trial (\d+)/(\d+)(.*)$')
# INFO lines worth a person's attention, shown as they are.
_NOTES = re.compile(r'^(MovieLensExampleGen (reads|read )|Downloading|This model is already served'
                    r'|Model written to serving path|Data validation|Evaluation report)')
# Warnings TFX, TF and Beam log on every run that need no action here:
# - TFX's resolver on SQLite MLMD, which has no property predicates;
# - TFT's vocabulary lookups inside the Transform graph (one per table);
# - Beam's pure-Python CRC without python-snappy (TFRecords of 100K rows);
# - TFX deprecating the custom_executor_spec our idempotent Pusher uses;
# - TFT's analyzer cache keys, which it says are safe when analyzers run in
#   a fixed order (preprocessing_fn's do);
# - TensorFlow deprecating APIs that TFX and tfx_bsl call ('From <file>: ...');
# - TF-Keras on saving the TFRS models, which have no get_config: they are
#   served and evaluated through their signatures, never rebuilt by Keras
#   (tests/test_signatures.py loads them back);
# - TFX's data accessor on Transform's transformed examples, which TFX's
#   Transform writes without a payload_format: they are tf.Examples, the
#   format it falls back to.
_NOISE = re.compile(r'^(ArtifactQuery\.property_predicate is not supported|Tables initialized inside a tf\.function'
                    r"|Couldn't find python-snappy|`custom_executor_spec` is deprecated"
                    r"|Analyzer \(.*\) node's cache key varies on repeated tracing"
                    r'|From \S+: .* is deprecated and will be removed'
                    r"|Model's `__init__\(\)` arguments contain non-serializable objects"
                    r'|Skipping full serialization of TF-Keras layer .*, because it is not built'
                    r'|Examples artifact does not have payload_format custom property\. Falling back to '
                    r'FORMAT_TF_EXAMPLE)', re.DOTALL)
# Non-TTY output gets an epoch or trial line at most this often.
_THROTTLE_S = 10.0


def step_seconds(done: int, elapsed_s: float, first_s: float) -> Optional[float]:
  """Seconds a step, from the steps after the first once there is one.

  The first epoch or trial carries the tracing and the dataset cache, so it
  is left out of the rate once there is another one. None before any step.
  """
  if done <= 0:
    return None
  return elapsed_s if done == 1 else (elapsed_s - first_s) / (done - 1)


def estimate(done: int, total: int, elapsed_s: float, first_s: float) -> Optional[float]:
  """Seconds left for ``total - done`` steps at ``step_seconds``' rate."""
  per_step = step_seconds(done, elapsed_s, first_s)
  return None if per_step is None else max(total - done, 0) * per_step


class Progress(logging.Filter):
  """Prints one line per finished component and an estimate for long stages.

  Args:
    out: where the lines go.
    verbose: let every log record through too.
    clock: seconds, for tests.
  """

  def __init__(self, out: TextIO = sys.stdout, verbose: bool = False,
               clock: Callable[[], float] = time.monotonic):
    super().__init__()
    self._out = out
    self._verbose = verbose
    self._clock = clock
    self._tty = hasattr(out, 'isatty') and out.isatty()
    self._current: Optional[str] = None
    self._start: Dict[str, float] = {}
    self.states: Dict[str, str] = {}
    self.seconds: Dict[str, float] = {}
    self._steps: Dict[str, tuple] = {}  # stage -> (first step's end, last line printed)
    self._pending_status = False

  def _print(self, line: str, status: bool = False) -> None:
    """Writes a line; on a terminal a status line is rewritten by the next one."""
    if self._pending_status:
      self._out.write('\r\033[K')
    self._out.write(line + ('' if status and self._tty else '\n'))
    self._pending_status = status and self._tty
    self._out.flush()

  def _step(self, stage: str, done: int, total: int, detail: str) -> None:
    now = self._clock()
    start = self._start.get(self._current or stage, now)
    first_end, last_line = self._steps.get(stage, (None, None))
    if done == 1 or first_end is None:
      first_end = now
    self._steps[stage] = (first_end, last_line)
    if not self._tty and last_line is not None and now - last_line < _THROTTLE_S and done < total:
      return
    self._steps[stage] = (first_end, now)
    per_step = step_seconds(done, now - start, first_end - start)
    left = estimate(done, total, now - start, first_end - start)
    eta = f', about {left:.0f} s left' if done < total else ''
    self._print(f'  {stage} {done:>2}/{total}  {per_step:.1f} s each{eta}  {detail}'.rstrip(),
                status=done < total)

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if record.levelno > logging.INFO:
      return self._verbose or not _NOISE.match(message)
    match = _RUNNING.match(message)
    if match:
      self._current = match.group(1)
      self._start[self._current] = self._clock()
      self.states[self._current] = 'COMPLETE'
    elif _CACHED.match(message) and self._current:
      self.states[self._current] = 'CACHED'
    elif _SKIPPED.match(message) and self._current:
      self.states[self._current] = 'SKIPPED'
    elif _FINISHED.match(message):
      node = _FINISHED.match(message).group(1)
      self.seconds[node] = self._clock() - self._start.get(node, self._clock())
      self._print(f'{node:<28} {self.states.get(node, "COMPLETE"):<9} {self.seconds[node]:6.1f} s')
      self._current = None
    elif _EPOCH.match(message):
      done, total, detail = _EPOCH.match(message).groups()
      self._step('Trainer epoch', int(done), int(total), _short(detail))
    elif _TRIAL.match(message):
      done, total, detail = _TRIAL.match(message).groups()
      self._step('Tuner trial', int(done), int(total), detail.lstrip(': '))
    elif _NOTES.match(message):
      self._print(message)
    return self._verbose


def _short(metrics: str) -> str:
  """The epoch's validation RMSE, the figure early stopping watches."""
  match = re.search(r'val_rmse=([0-9.]+)', metrics)
  return f'val_rmse {match.group(1)}' if match else ''
