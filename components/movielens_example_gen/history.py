"""Point-in-time user history: what a user had rated before each rating.

The rule, for a rating by user u at second t: u's ratings with a timestamp
strictly before t (one at the same second is not before), oldest first, the
most recent features.HISTORY_LENGTH of them. Movie ids go out as bytes
(b'242'), ratings as floats, in two aligned lists; a first rating gets two
empty lists.

ExampleGen applies it to every valid rating with `histories`; serving code
builds the same features for a request with `history_for_request`. Both go
through `_Timeline.before`, so the rule is written once.

Pure functions with no Beam in them: the executor runs `histories` inside
Beam, and serving code and tests call both directly.
"""

import bisect
from typing import (TYPE_CHECKING, Iterable, Iterator, List, Sequence, Tuple,
                    Union)

from transforms import features

if TYPE_CHECKING:
  from components.movielens_example_gen import parsing

# (history_movie_ids, history_ratings).
History = Tuple[List[bytes], List[float]]


class _Timeline:
  """One user's ratings, oldest first; ties keep the order they came in."""

  def __init__(self, entries: Iterable[Tuple[bytes, float, int]]):
    """Sorts (movie_id, rating, timestamp) entries by timestamp, stably."""
    ordered = sorted(entries, key=lambda entry: entry[2])
    self._movie_ids = [entry[0] for entry in ordered]
    self._ratings = [entry[1] for entry in ordered]
    self._timestamps = [entry[2] for entry in ordered]

  def before(self, at_timestamp: int, length: int) -> History:
    """The last `length` entries with timestamp < at_timestamp, oldest first."""
    end = bisect.bisect_left(self._timestamps, at_timestamp)
    start = max(0, end - length)
    return self._movie_ids[start:end], self._ratings[start:end]


def histories(
    ratings: Iterable['parsing.Rating'],
    length: int = features.HISTORY_LENGTH,
) -> Iterator[Tuple['parsing.Rating', List[bytes], List[float]]]:
  """Yields every rating of one user with its history.

  Ratings at the same second are ordered by their line in u.data, so the
  order of a history (and which ratings a truncation keeps) does not depend
  on the order Beam delivers them in.

  Args:
    ratings: one user's valid ratings (quarantined ones and duplicates already
      removed), in any order.
    length: the most history entries to keep; features.HISTORY_LENGTH.

  Yields:
    (rating, history_movie_ids, history_ratings), oldest rating first.

  Raises:
    ValueError: if the ratings are not all of one user.
  """
  ordered = sorted(ratings, key=lambda r: (r.timestamp, r.line))
  users = {r.user_id for r in ordered}
  if len(users) > 1:
    raise ValueError(f'histories() takes one user\'s ratings, got users '
                     f'{sorted(users)}')
  timeline = _Timeline(
      (r.movie_id.encode('utf-8'), r.rating, r.timestamp) for r in ordered)
  for rating in ordered:
    movie_ids, values = timeline.before(rating.timestamp, length)
    yield rating, movie_ids, values


def movie_priors(
    rated: Iterable[Tuple['parsing.Rating', ...]],
) -> Iterator[Tuple[Tuple['parsing.Rating', ...], int, float]]:
  """Yields every rating of one movie with the movie's point-in-time statistics.

  The rule is the user history's: ratings of this movie, by anyone, with a
  timestamp strictly before this one's.

  Args:
    rated: tuples whose first item is a rating, all of one movie, in any order.

  Yields:
    (the tuple, movie_rating_count, movie_rating_mean); the mean is 0.0 when
    the count is 0.

  Raises:
    ValueError: if the ratings are not all of one movie.
  """
  ordered = sorted(rated, key=lambda item: (item[0].timestamp, item[0].line))
  movies = {item[0].movie_id for item in ordered}
  if len(movies) > 1:
    raise ValueError(f'movie_priors() takes one movie\'s ratings, got movies {sorted(movies)}')
  timestamps = [item[0].timestamp for item in ordered]
  sums = [0.0]
  for item in ordered:
    sums.append(sums[-1] + item[0].rating)
  for item in ordered:
    count = bisect.bisect_left(timestamps, item[0].timestamp)
    yield item, count, (sums[count] / count if count else 0.0)


def history_for_request(
    prior: Sequence[Tuple[Union[str, bytes], float, int]],
    at_timestamp: int,
    length: int = features.HISTORY_LENGTH,
) -> History:
  """Builds a request's history features by the rule ExampleGen trains on.

  Args:
    prior: the user's ratings as (movie_id, rating, timestamp); movie ids are
      the canonical decimal ids of the movie_id feature, as str or bytes.
      Entries at or after at_timestamp may be included: the rule drops them.
      Ratings at the same second keep their order here, which should be the
      order they were made in (ExampleGen uses the u.data line). One rating per
      movie, as after ExampleGen's dedup; duplicates are not removed here.
    at_timestamp: the request's time, in unix seconds.
    length: the most history entries to keep; features.HISTORY_LENGTH.

  Returns:
    (history_movie_ids, history_ratings): bytes and floats, oldest first.
  """
  timeline = _Timeline(
      (movie_id if isinstance(movie_id, bytes) else movie_id.encode('utf-8'),
       float(rating), int(timestamp)) for movie_id, rating, timestamp in prior)
  return timeline.before(at_timestamp, length)
