"""Request resolution: a request that names a user (and a movie) becomes the full instance.

The rules, for each instance with a ``user_id``:

- **Fields the caller sends win**; the store fills only the missing inputs
  the signature takes (``accepted``), and drops the ``user_id`` or
  ``movie_id`` it looked up when the signature takes none. The two history lists go together: a
  caller who sends either gets neither from the store.
- **At what time.** An instance with a ``timestamp`` (not the table's unknown
  0) is served as of that second: the history and movie statistics count only
  ratings strictly before it, ExampleGen's training rule. Without one it is
  served live: every held rating counts, the one just posted included, and
  ``timestamp`` is filled with the table's unknown 0 (the model's "now").
- **Cold start.** A user the store has never seen gets the table's unknown
  values (``transforms/features.py``: '' for strings, 0 for age, an empty
  history), which the model turns into its cold-start inputs; the user id is
  kept and lands in the out-of-vocabulary bucket. Not an error.
- **Movies** (``:predict`` instances with a ``movie_id``) get the catalogue
  features from u.item and the live ``movie_rating_count`` and
  ``movie_rating_mean``; a movie the store does not know gets the unknown
  values for the catalogue features and 0 ratings.
"""
from typing import Any, Collection, Dict, List, Optional

from serving.feature_store.store import (CATALOGUE_FEATURES, PROFILE_FEATURES, FeatureStore, MovieState,
                                         UserState, canonical_id, history_at, statistics_at)
from transforms import features as f

_HISTORY = (f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS)


def _at(instance: Dict[str, Any]) -> Optional[int]:
  """The instance's second, or None (live) when it sends none, 0, or something codec will refuse."""
  value = instance.get(f.TIMESTAMP)
  if isinstance(value, int) and not isinstance(value, bool) and f.BY_NAME[f.TIMESTAMP].check([value]) is None \
      and value != f.BY_NAME[f.TIMESTAMP].unknown:
    return value
  return None


def _fill(instance: Dict[str, Any], accepted: Optional[Collection[str]], user: Optional[UserState],
          movie_id: Optional[str], movie: Optional[MovieState]) -> Dict[str, Any]:
  wants = lambda name: name not in instance and (accepted is None or name in accepted)  # noqa: E731
  at = _at(instance)
  out = dict(instance)
  if wants(f.TIMESTAMP):
    out[f.TIMESTAMP] = f.BY_NAME[f.TIMESTAMP].unknown  # the model reads it as the time it is called
  if user is not None:
    profile = user.profile or {}
    for name in PROFILE_FEATURES:
      if wants(name):
        out[name] = profile.get(name, f.BY_NAME[name].unknown)
    if all(wants(name) for name in _HISTORY):
      out[f.HISTORY_MOVIE_IDS], out[f.HISTORY_RATINGS] = history_at(user.ratings, at)
  if movie is not None:
    catalogue = movie.catalogue or {}
    for name in CATALOGUE_FEATURES:
      if wants(name):
        out[name] = catalogue.get(name, f.BY_NAME[name].unknown)
    count, mean = statistics_at(movie_id, movie.ratings, at)
    for name, value in ((f.MOVIE_RATING_COUNT, count), (f.MOVIE_RATING_MEAN, mean)):
      if wants(name):
        out[name] = value
  # The ids the store looked up go when the signature takes no such input
  # (the history model's recommend has no user_id); anything else the caller
  # sent stays, for the signature's checks to name.
  for name, used in ((f.USER_ID, user), (f.MOVIE_ID, movie)):
    if used is not None and accepted is not None and name not in accepted:
      out.pop(name, None)
  return out


def resolve_instances(store: FeatureStore, instances: List[Any],
                      accepted: Optional[Collection[str]] = None) -> List[Any]:
  """Fills each instance that names a user (and a movie) from the store, in one read.

  Args:
    store: the feature store.
    instances: rows of a request; those that are not JSON objects with an id
      pass unchanged (the signature's checks answer them).
    accepted: the signature's input names; None fills every feature.

  Returns:
    New instances; the given ones are not changed.
  """
  user_keys = [canonical_id(x.get(f.USER_ID)) if isinstance(x, dict) else None for x in instances]
  movie_keys = [canonical_id(x.get(f.MOVIE_ID)) if isinstance(x, dict) else None for x in instances]
  if not any(user_keys) and not any(movie_keys):
    return list(instances)
  users, movies = store.read([u for u in user_keys if u], [m for m in movie_keys if m])
  return [_fill(x, accepted, users.get(u), m, movies.get(m)) if (u or m) else x
          for x, u, m in zip(instances, user_keys, movie_keys)]


def resolve_recommend(store: FeatureStore, body: Dict[str, Any],
                      accepted: Optional[Collection[str]] = None) -> Dict[str, Any]:
  """The ``:recommend`` body with the user's features filled in; other fields (``k``) pass through."""
  if not isinstance(body, dict):
    return body
  return resolve_instances(store, [body], accepted)[0]


def resolve_predict(store: FeatureStore, body: Dict[str, Any],
                    accepted: Optional[Collection[str]] = None) -> Dict[str, Any]:
  """A ``:predict`` body in the row format with each instance's user and movie features filled in.

  A body in the columnar format (``inputs``) passes unchanged, as does one
  whose instances carry every feature: TF Serving's ``:predict`` keeps working.
  """
  if not isinstance(body, dict) or not isinstance(body.get('instances'), list):
    return body
  return {**body, 'instances': resolve_instances(store, body['instances'], accepted)}

