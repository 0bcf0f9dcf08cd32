"""The feature store's interface, and the point-in-time rules every backend shares.

A backend stores three things and knows no feature rule:

- per user, a profile (the USER scalar features of transforms/features.py but
  the id) and the held ratings, one per movie, as ``Held`` entries;
- per movie, its catalogue features from u.item (title, genres, release year)
  and every user's held rating of it, which give the live statistics;
- a sequence number that orders ratings of the same second the way ExampleGen
  orders them by u.data line: bootstrap uses the line, events the arrival.

What is served at a time is computed here, by ExampleGen's own functions in
components/movielens_example_gen/history.py: the history is
``history_for_request`` over the user's ratings, and the movie statistics are
``movie_priors`` over the movie's ratings. ``at=None`` means live: every held
rating counts.
"""
import abc
import re
import sys
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from components.movielens_example_gen import history, parsing
from transforms import features as f

# The profile: the user's scalar features other than the id (age, gender,
# occupation, zip), from the table.
PROFILE_FEATURES: Tuple[str, ...] = tuple(n for n in f.names(role=f.USER, shape=f.SCALAR) if n != f.USER_ID)
# The live movie statistics, computed here; the rest of the movie features
# but the id are catalogue features that bootstrap copies from u.item.
STATISTICS: Tuple[str, ...] = (f.MOVIE_RATING_COUNT, f.MOVIE_RATING_MEAN)
CATALOGUE_FEATURES: Tuple[str, ...] = tuple(n for n in f.names(role=f.MOVIE) if n not in STATISTICS + (f.MOVIE_ID,))
# ExampleGen's ids: decimal digits; "0196" is user "196".
_DIGITS = re.compile(r'[0-9]+')
# Later than any valid timestamp: a lookup at it sees every held rating.
LIVE = f.TIMESTAMP_RANGE[1] + 1


class Held(NamedTuple):
  """One held rating: which user and movie, the rating, its second, and its order within that second."""
  user_id: str
  movie_id: str
  rating: float
  timestamp: int
  seq: int


class UserState(NamedTuple):
  """What the store holds for one user; ``profile`` is None for a user it has never seen."""
  profile: Optional[Dict[str, Any]]
  ratings: List[Held]


class MovieState(NamedTuple):
  """What the store holds for one movie; ``catalogue`` is None for a movie not in u.item."""
  catalogue: Optional[Dict[str, Any]]
  ratings: List[Held]


class Update(NamedTuple):
  """What one batch of events changes for one user, written all at once.

  Attributes:
    profile: the new profile, or None to keep the stored one.
    put: ratings to hold, each in place of the user's held rating of that
      movie if any; their ``seq`` is ignored: the backend numbers them in
      order, after every number it gave before.
  """
  profile: Optional[Dict[str, Any]]
  put: List[Held]


class FeatureStore(abc.ABC):
  """The storage under the feature store: SQLite (one file) or Redis (several replicas)."""

  @abc.abstractmethod
  def read(self, user_ids: Iterable[str], movie_ids: Iterable[str]) -> Tuple[Dict[str, UserState],
                                                                            Dict[str, MovieState]]:
    """The state of these users and movies, in one round trip where the backend can."""

  @abc.abstractmethod
  def update_user(self, user_id: str, plan: Callable[[UserState], Tuple[Update, Any]]) -> Any:
    """Applies ``plan`` to one user atomically and returns what ``plan`` returned second.

    ``plan`` gets the user's state as it is now and returns the ``Update`` and
    a result. If ``plan`` raises, nothing is written. Concurrent updates of the
    same user (another thread, replica or consumer) are serialized: the plan
    is rerun on the newer state when another writer got there first.
    """

  @abc.abstractmethod
  def load(self, profiles: Dict[str, Dict[str, Any]], catalogue: Dict[str, Dict[str, Any]],
           ratings: Sequence[Held]) -> None:
    """Replaces everything with these profiles, movies and ratings (``seq`` given)."""

  @abc.abstractmethod
  def counts(self) -> Dict[str, int]:
    """How many users, movies and ratings the store holds."""

  @abc.abstractmethod
  def close(self) -> None:
    """Releases the connection."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def canonical_id(value: Any) -> Optional[str]:
  """A user or movie id as ExampleGen writes it (no padding, no leading zeros), or None if it is not one."""
  if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
    return str(value)
  if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
    return str(int(value.strip()))
  return None


def history_at(ratings: Sequence[Held], at: Optional[int]) -> Tuple[List[str], List[float]]:
  """The user's history features at second ``at`` (None: live), by ExampleGen's rule, ids as str."""
  ordered = sorted(ratings, key=lambda h: (h.timestamp, h.seq))
  ids, values = history.history_for_request([(h.movie_id, h.rating, h.timestamp) for h in ordered],
                                            LIVE if at is None else at)
  return [i.decode('utf-8') for i in ids], values


def statistics_at(movie_id: str, ratings: Sequence[Held], at: Optional[int]) -> Tuple[int, float]:
  """(movie_rating_count, movie_rating_mean) at second ``at`` (None: live), by ExampleGen's movie_priors.

  movie_priors gives each of a movie's ratings the statistics of the ratings
  strictly before it; a probe rating at ``at``, ordered after every real one of
  that second, gets exactly the statistics a request at ``at`` should see.
  """
  probe = parsing.Rating('', movie_id, 0.0, LIVE if at is None else at, sys.maxsize, '')
  rated = [(parsing.Rating(h.user_id, movie_id, h.rating, h.timestamp, h.seq, ''),) for h in ratings]
  for (rating,), count, mean in history.movie_priors(rated + [(probe,)]):
    if rating is probe:
      return count, mean
  raise AssertionError('movie_priors dropped the probe')
