"""The ``:explain``, ``/catalog`` and ``/app/`` routes' logic, apart from any HTTP framework.

A route handler does three things: ``explain_instance`` (the body to one
``explain`` row), the model call, and ``format_explanation`` (the outputs to
JSON); ``catalog`` answers ``GET /v1/models/{name}/catalog`` and ``app_file``
``GET /app/{file}``. The ``explain`` signature itself is trainer/explain.py;
docs/app.md explains the method.

The body is recommend's plus a ``movie_id``: ``{"user_id": "196",
"movie_id": "50"}`` with a feature store, or the user's features and history
in full. Fields the caller sends win; then the feature store fills the user's
profile and history and the movie's features and live statistics (the rules
of serving/feature_store/resolve.py); then the model's own catalog fills the
movie's title, genres and release year; anything still missing takes the
feature table's unknown value.
"""
import functools
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from contract import names
from serving import codec, feature_store
from serving.feature_store.store import canonical_id
from transforms import features as f

# History entries listed in an explanation, most raising first.
TOP_HISTORY = 5
# The model app's static files (no build step), served at /app/.
APP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'app')
_CONTENT_TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
                  '.css': 'text/css; charset=utf-8', '.png': 'image/png'}


class Catalog:
  """The movies a SavedModel scores (Transform's CATALOG_VOCAB, in its assets), most rated first."""

  def __init__(self, lines):
    self.movies = [{'movie_id': m.decode(), 'title': t.decode('utf-8', 'replace'),
                    'genres': [g.decode() for g in genres], 'release_year': year}
                   for m, t, genres, year in f.parse_catalog(lines)]
    self.by_id = {m['movie_id']: m for m in self.movies}

  def features(self, movie_id: str) -> Dict[str, Any]:
    """The raw movie features of ``movie_id`` (empty for a movie outside the catalog)."""
    movie = self.by_id.get(movie_id)
    if movie is None:
      return {}
    year = movie['release_year']
    return {f.MOVIE_TITLE: movie['title'], f.GENRES: movie['genres'],
            f.RELEASE_YEAR: f.BY_NAME[f.RELEASE_YEAR].unknown if year is None else year}


@functools.lru_cache(maxsize=4)
def load_catalog(model_path: str) -> Catalog:
  """The catalog of the SavedModel at ``model_path`` (a version folder); read once per version."""
  with open(os.path.join(model_path, 'assets', f.CATALOG_VOCAB), 'rb') as fh:
    return Catalog(fh.read().splitlines())


def catalog(model_path: str, version: int) -> Dict[str, Any]:
  """``GET /v1/models/{name}/catalog``: every movie the model recommends from, and the diversity range it takes."""
  return {'model_version': str(version), 'movies': load_catalog(model_path).movies,
          'diversity_range': list(names.DIVERSITY_RANGE)}


def app_file(name: str) -> Tuple[bytes, str]:
  """``GET /app/{name}``: one of the app's files and its content type; a 404 for anything else."""
  if name not in os.listdir(APP_DIR) or os.path.splitext(name)[1] not in _CONTENT_TYPES:
    raise codec.BadRequest(f'No file "{name}" in the model app; open /app/.', status=404)
  with open(os.path.join(APP_DIR, name), 'rb') as fh:
    return fh.read(), _CONTENT_TYPES[os.path.splitext(name)[1]]


def explain_instance(body: Any, inputs: Mapping[str, codec.InputSpec], store: Optional[feature_store.FeatureStore],
                     movies: Catalog) -> Dict[str, Any]:
  """The ``:explain`` body as one row of the ``explain`` signature (module docstring for the rules).

  Raises:
    codec.BadRequest: no ``movie_id``, or fields the signature does not take.
  """
  if not isinstance(body, dict):
    raise codec.BadRequest('The body must be a JSON object: {"user_id": ..., "movie_id": ...} or the features.')
  movie_id = canonical_id(body.get(f.MOVIE_ID))
  if movie_id is None:
    raise codec.BadRequest(f'"movie_id" is required: the movie to explain, e.g. "50"; got '
                           f'{body.get(f.MOVIE_ID)!r}.')
  unknown = sorted(set(body) - set(inputs) - {f.USER_ID, f.MOVIE_ID})
  if unknown:
    raise codec.BadRequest(f'Unknown fields {unknown}; this model\'s explain takes {sorted(inputs)}, '
                           f'each optional but "{f.MOVIE_ID}".')
  instance = dict(body, **{f.MOVIE_ID: movie_id})
  if store is not None:
    instance = feature_store.resolve_instances(store, [instance], None)[0]
  for name, value in movies.features(movie_id).items():
    instance.setdefault(name, value)
  row = {}
  for name, spec in inputs.items():
    value = instance.get(name, f.BY_NAME[name].unknown)
    # Lists get one padding column, so an empty history still has a shape.
    row[name] = list(value) + ['' if spec.dtype == 'string' else 0] if spec.rank == 2 else value
  ids, ratings = row.get(f.HISTORY_MOVIE_IDS), row.get(f.HISTORY_RATINGS)
  if ids is not None and (ratings is None or len(ids) != len(ratings)):
    raise codec.BadRequest('"history_movie_ids" and "history_ratings" must be lists of the same length, '
                           'one rating per movie, oldest first.')
  return row


def format_explanation(outputs: Mapping[str, np.ndarray], row: Mapping[str, Any], movies: Catalog,
                       version: int) -> Dict[str, Any]:
  """The ``explain`` outputs of one row as the route's JSON.

  ``groups`` holds every feature group's Shapley value, largest effect first;
  ``history`` the ratings that most raised the score, each with its
  leave-one-out ``contribution`` and its ``share`` of all the raising ones;
  ``completeness_error`` is |sum of the groups - (score - baseline)|, which
  stays below ``tolerance``.
  """
  score, baseline = float(outputs[names.PREDICTION_KEY][0]), float(outputs[names.BASELINE_SCORE][0])
  attributions = outputs[names.GROUP_ATTRIBUTIONS][0]
  groups = sorted(({'group': g.decode(), 'attribution': float(a)}
                   for g, a in zip(outputs[names.GROUP_NAMES][0], attributions)),
                  key=lambda x: -abs(x['attribution']))
  history: List[Dict[str, Any]] = []
  if names.HISTORY_CONTRIBUTIONS in outputs:
    contributions = outputs[names.HISTORY_CONTRIBUTIONS][0]
    raised = float(np.clip(contributions, 0, None).sum())
    for movie_id, rating, c in zip(row[f.HISTORY_MOVIE_IDS], row[f.HISTORY_RATINGS], contributions):
      if movie_id and c > 0:
        title = movies.by_id.get(str(movie_id), {}).get('title', str(movie_id))
        history.append({'movie_id': str(movie_id), 'title': title, 'rating': float(rating),
                        'contribution': float(c), 'share': float(c) / raised})
    history = sorted(history, key=lambda x: -x['contribution'])[:TOP_HISTORY]
  movie_id = str(row[f.MOVIE_ID]) if f.MOVIE_ID in row else None
  return {
      'model_version': str(version), 'movie_id': movie_id,
      'title': movies.by_id.get(movie_id, {}).get('title', ''),
      'score': score, 'baseline_score': baseline, 'groups': groups, 'history': history,
      'because': [f"Because you rated {h['title']} {h['rating']:g}" for h in history],
      'completeness_error': abs(float(np.sum(attributions, dtype=np.float64)) - (score - baseline)),
      'tolerance': names.EXPLAIN_TOLERANCE,
  }
