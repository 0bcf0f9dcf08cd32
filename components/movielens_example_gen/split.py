"""How ratings are split into train, eval and test.

Pure functions: the executor calls them inside Beam, and tests call them
directly. A split is decided per rating, from nothing but the rating itself
and, for a time split, the timestamp range of all valid ratings.
"""

import dataclasses
import hashlib
import json
from typing import Optional, Tuple

TRAIN = 'train'
EVAL = 'eval'
TEST = 'test'
SPLIT_NAMES = (TRAIN, EVAL, TEST)

TIME = 'time'
RANDOM = 'random'
KINDS = (TIME, RANDOM)


@dataclasses.dataclass(frozen=True)
class SplitConfig:
  """How MovieLensExampleGen splits ratings; passed to it as JSON.

  A time split (the default) mimics serving: the model is trained on the past
  and evaluated on what came after. With min and max the smallest and largest
  timestamp over the valid ratings and span = max - min, a rating goes to

    train  if ts <= min + train_end * span
    eval   if ts <= min + eval_end * span
    test   otherwise.

  A random split hashes (user_id, movie_id, seed), so it is the same on every
  run and every runner, and puts a rating in train with probability
  train_fraction, in eval with probability eval_fraction and in test otherwise.

  Attributes:
    kind: 'time' or 'random'.
    train_end: time split: end of train as a fraction of the time span.
    eval_end: time split: end of eval as a fraction of the time span.
    train_fraction: random split: share of ratings in train.
    eval_fraction: random split: share of ratings in eval.
    seed: random split: changes which ratings land where.
  """
  kind: str = TIME
  train_end: float = 0.6
  eval_end: float = 0.8
  train_fraction: float = 0.8
  eval_fraction: float = 0.1
  seed: int = 0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(
          f'SplitConfig.kind must be one of {KINDS}, got {self.kind!r}.')
    if not 0.0 <= self.train_end <= self.eval_end <= 1.0:
      raise ValueError(
          'SplitConfig needs 0 <= train_end <= eval_end <= 1, got '
          f'train_end={self.train_end}, eval_end={self.eval_end}.')
    if (self.train_fraction < 0.0 or self.eval_fraction < 0.0 or
        self.train_fraction + self.eval_fraction > 1.0):
      raise ValueError(
          'SplitConfig needs non-negative train_fraction and eval_fraction '
          f'that sum to at most 1, got train_fraction={self.train_fraction}, '
          f'eval_fraction={self.eval_fraction}.')
    if isinstance(self.seed, bool) or not isinstance(self.seed, int):
      raise ValueError(f'SplitConfig.seed must be an int, got {self.seed!r}.')

  def to_json(self) -> str:
    """Returns the config as the JSON string MovieLensExampleGen takes."""
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'SplitConfig':
    """Parses a string made by `to_json`; missing keys take their defaults.

    Args:
      text: a JSON object with a subset of the SplitConfig fields.

    Returns:
      The SplitConfig.

    Raises:
      ValueError: if the text is not a JSON object, names an unknown field, or
        the values are out of range.
    """
    value = json.loads(text)
    if not isinstance(value, dict):
      raise ValueError(f'split_config must be a JSON object, got {text!r}.')
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
      raise ValueError(
          f'split_config has unknown fields {unknown}; known fields are '
          f'{sorted(known)}.')
    return cls(**value)


def time_boundaries(config: SplitConfig, ts_min: int,
                    ts_max: int) -> Tuple[float, float]:
  """Returns the last train and last eval timestamp of a time split.

  Args:
    config: the split config; only train_end and eval_end are used.
    ts_min: smallest timestamp over the valid ratings.
    ts_max: largest timestamp over the valid ratings.

  Returns:
    (train_cut, eval_cut): a rating with ts <= train_cut is train, else with
    ts <= eval_cut is eval, else test.
  """
  span = ts_max - ts_min
  return ts_min + config.train_end * span, ts_min + config.eval_end * span


def random_unit(user_id: str, movie_id: str, seed: int) -> float:
  """Maps (user_id, movie_id, seed) to a number in [0, 1), stably.

  Python's hash() is salted per process, so a cryptographic hash is used to
  get the same answer on every worker and every run.

  Args:
    user_id: the rating's user id.
    movie_id: the rating's movie id.
    seed: the split seed.

  Returns:
    A float in [0, 1).
  """
  key = f'{user_id}\x00{movie_id}\x00{seed}'.encode('utf-8')
  digest = hashlib.sha256(key).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def assign_split(config: SplitConfig, user_id: str, movie_id: str,
                 timestamp: int,
                 ts_range: Optional[Tuple[int, int]] = None) -> str:
  """Returns the split name ('train', 'eval' or 'test') of one rating.

  Args:
    config: the split config.
    user_id: the rating's user id.
    movie_id: the rating's movie id.
    timestamp: the rating's unix timestamp.
    ts_range: (min, max) timestamp over the valid ratings; needed for a time
      split, ignored for a random split.

  Returns:
    One of SPLIT_NAMES.

  Raises:
    ValueError: for a time split without ts_range.
  """
  if config.kind == RANDOM:
    unit = random_unit(user_id, movie_id, config.seed)
    if unit < config.train_fraction:
      return TRAIN
    if unit < config.train_fraction + config.eval_fraction:
      return EVAL
    return TEST
  if ts_range is None:
    raise ValueError('A time split needs the (min, max) timestamp range.')
  train_cut, eval_cut = time_boundaries(config, *ts_range)
  if timestamp <= train_cut:
    return TRAIN
  if timestamp <= eval_cut:
    return EVAL
  return TEST
