"""Rating events: validated against the feature contract, applied to one user all at once.

An event is ``{"movie_id", "rating", "timestamp"}`` plus, optionally, profile
fields (``user_age``, ``user_gender``, ``user_occupation``, ``user_zip``); a
body is one event, a list of them, or ``{"events": [...]}``.

The rules:

- **Validation** comes from ``transforms/features.py``: each field's dtype,
  ``valid_range`` (through ``check_columns``) and ``domain``. Ids are decimal,
  canonicalized as ExampleGen does ("0196" is "196"); the movie must be in the
  store's catalogue; an event's timestamp must be a real second (0, the
  table's "unknown", is refused). Any bad event fails the whole batch with
  ``BadEvent``, naming the event and the reason, and nothing is written.
- **One rating per (user, movie), the earliest**, as ExampleGen keeps it
  (``parsing.split_duplicates``, ties by arrival as ExampleGen's by line). A
  later rating of a movie the user already rated is reported under
  ``kept_earlier`` and not applied; an earlier one replaces the held rating
  (``replaced``). Which ratings are held therefore does not depend on the
  order events arrive in; only ratings of the same second are served in
  arrival order, as ExampleGen serves them in u.data order.
- **Idempotency key: (user, movie, timestamp).** The same event twice is
  held once and counted under ``duplicates``. The same key with another
  rating is a conflict: ``BadEvent``.
- **Time order.** Ratings are held with their own timestamp and served oldest
  first by ExampleGen's history rule, so an event older than the user's newest
  goes in its place in time.
- **Profiles are upserted**: the fields an event sends replace the stored
  ones, later events of a batch winning; a new user without them gets the
  table's unknown values (the cold-start profile).
"""
import collections
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from components.movielens_example_gen import parsing
from serving import codec
from serving.feature_store.store import PROFILE_FEATURES, FeatureStore, Held, Update, UserState, canonical_id
from transforms import features as f

MAX_EVENTS = 1000
REQUIRED = (f.MOVIE_ID, f.RATING, f.TIMESTAMP)
EVENT_FIELDS = REQUIRED + PROFILE_FEATURES
_TYPES = {'string': (str,), 'int64': (int,), 'float32': (int, float)}
_KINDS = {'string': 'a string', 'int64': 'an integer', 'float32': 'a number'}


class BadEvent(codec.BadRequest):
  """An event (or batch) the store refuses; nothing of its batch was written. The server answers 400."""


class Event(NamedTuple):
  movie_id: str
  rating: float
  timestamp: int
  profile: Dict[str, Any]


def _id(value: Any, what: str) -> str:
  key = canonical_id(value)
  if key is not None:
    return key
  raise BadEvent(f'"{what}" must be a MovieLens id (decimal digits, e.g. "196"); got {value!r}.')


def _check(name: str, value: Any) -> Optional[str]:
  """Why ``value`` is not a valid ``name`` by the feature table, or None."""
  feature = f.BY_NAME[name]
  if isinstance(value, bool) or not isinstance(value, _TYPES[feature.dtype]):
    return f'"{name}" must be {_KINDS[feature.dtype]}; got {value!r}.'
  if feature.domain and value != feature.unknown and value not in feature.domain:
    return f'"{name}" must be one of {list(feature.domain)}, or {feature.unknown!r} for unknown; got {value!r}.'
  return f.check_columns({name: [value]})


def parse_event(raw: Any) -> Event:
  """One event, checked; raises BadEvent with the first reason."""
  if not isinstance(raw, dict):
    raise BadEvent(f'An event is a JSON object with {list(REQUIRED)}; got {raw!r:.100}.')
  unknown = sorted(set(raw) - set(EVENT_FIELDS))
  missing = [n for n in REQUIRED if n not in raw]
  if unknown or missing:
    raise BadEvent(f'An event takes {list(REQUIRED)} and optionally {list(PROFILE_FEATURES)}; '
                   + (f'unknown fields {unknown}' if unknown else f'missing {missing}') + '.')
  movie_id = _id(raw[f.MOVIE_ID], f.MOVIE_ID)
  for name in (f.RATING, f.TIMESTAMP) + tuple(n for n in PROFILE_FEATURES if n in raw):
    problem = _check(name, raw[name])
    if problem:
      raise BadEvent(problem)
  if raw[f.TIMESTAMP] == f.BY_NAME[f.TIMESTAMP].unknown:
    raise BadEvent(f'"{f.TIMESTAMP}" must be when the rating was made, in unix seconds; '
                   f'{f.BY_NAME[f.TIMESTAMP].unknown!r} means unknown.')
  return Event(movie_id, float(raw[f.RATING]), raw[f.TIMESTAMP],
               {n: raw[n] for n in PROFILE_FEATURES if n in raw})


def parse_body(body: Any, max_events: int = MAX_EVENTS) -> List[Event]:
  """The events of a body: one event, a list, or {"events": [...]}; raises BadEvent naming the bad one."""
  if isinstance(body, dict) and set(body) == {'events'}:
    body = body['events']
  raws = body if isinstance(body, list) else [body]
  if not raws:
    raise BadEvent('The batch has no events.')
  if len(raws) > max_events:
    raise BadEvent(f'The batch has {len(raws)} events; at most {max_events}. Split it.', status=413)
  events = []
  for index, raw in enumerate(raws):
    try:
      events.append(parse_event(raw))
    except BadEvent as error:
      raise BadEvent(f'Event {index}: {error} Nothing of this batch was applied.') from None
  return events


def _plan(user_id: str, events: List[Event], state: UserState) -> Tuple[Update, Dict[str, Any]]:
  """What the events change for one user, by the module's rules; raises BadEvent on a conflict."""
  profile = dict(state.profile) if state.profile else {n: f.BY_NAME[n].unknown for n in PROFILE_FEATURES}
  for event in events:
    profile.update(event.profile)
  held = {h.movie_id: h for h in state.ratings}
  # split_duplicates orders by (timestamp, line): held ratings keep their
  # sequence number, events come after every one of them, in batch order.
  after = max((h.seq for h in state.ratings), default=0) + 1
  by_movie = collections.defaultdict(list)
  for index, event in enumerate(events):
    by_movie[event.movie_id].append(parsing.Rating(user_id, event.movie_id, event.rating, event.timestamp,
                                                   after + index, ''))
  put, duplicates, kept_earlier, replaced = [], 0, [], 0
  for movie_id, ratings in by_movie.items():
    if movie_id in held:
      h = held[movie_id]
      ratings.insert(0, parsing.Rating(user_id, movie_id, h.rating, h.timestamp, h.seq, ''))
    seen = {}
    for r in ratings:
      if seen.setdefault(r.timestamp, r.rating) != r.rating:
        raise BadEvent(f'User {user_id} rated movie {movie_id} at {r.timestamp} both {seen[r.timestamp]:g} and '
                       f'{r.rating:g}; (user, movie, timestamp) names one event. Nothing of this batch was applied.')
    kept, _ = parsing.split_duplicates(ratings)
    for r in ratings:
      if r is kept:
        continue
      if r.timestamp == kept.timestamp:
        duplicates += 1
      elif r.line >= after:
        kept_earlier.append({f.MOVIE_ID: movie_id, f.TIMESTAMP: r.timestamp, 'kept_timestamp': kept.timestamp})
    if kept.line >= after:
      put.append(Held(user_id, movie_id, kept.rating, kept.timestamp, 0))
      replaced += movie_id in held
  new_profile = profile if profile != state.profile else None
  result = {f.USER_ID: user_id, 'events': len(events), 'applied': len(put), 'duplicates': duplicates,
            'replaced': replaced, 'kept_earlier': kept_earlier, 'new_user': state.profile is None,
            'ratings': len(held) + len(put) - replaced}
  return Update(new_profile, put), result


def apply_events(store: FeatureStore, user_id: Any, body: Any, max_events: int = MAX_EVENTS) -> Dict[str, Any]:
  """Applies one event or a batch for one user, all or nothing; returns the counts.

  Args:
    store: the feature store.
    user_id: the user, e.g. "196" (the URL's id).
    body: one event, a list of events, or {"events": [...]}.
    max_events: the most events in one batch.

  Returns:
    {"user_id", "events", "applied", "duplicates", "replaced", "kept_earlier"
    (the events not applied because an earlier rating of the movie is held),
    "new_user", "ratings" (the user's held ratings now)}.

  Raises:
    BadEvent: naming the first bad event and the reason; nothing was written.
  """
  user_id = _id(user_id, f.USER_ID)
  events = parse_body(body, max_events)
  _, movies = store.read([], {e.movie_id for e in events})
  unknown = sorted((m for m, state in movies.items() if state.catalogue is None), key=int)
  if unknown:
    raise BadEvent(f'Movies {unknown} are not in the feature store\'s catalogue (u.item at bootstrap). '
                   'Nothing of this batch was applied.')
  return store.update_user(user_id, lambda state: _plan(user_id, events, state))

