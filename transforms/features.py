"""The feature contract: every raw feature and Transform output, declared once.

``FEATURES`` is the table of raw features: name, dtype, shape, role (user,
movie, context, label), valid range or domain, the value a request sends when
it does not know one, and what that value becomes. ``OUTPUTS`` names every
Transform output and the raw features it is computed from, so which outputs a
feature feeds is read off the table, never probed. Everything else derives
from these two tables:

- ExampleGen quarantines rows outside the ranges, and ``schema/schema.pbtxt``
  states the same bounds (tests/test_schema.py);
- ``preprocessing_fn`` fills unknowns (``UNKNOWN``) in one step, inside the
  Transform graph, so training, every serving signature and stock TF Serving
  treat them alike;
- the raw-JSON signature's inputs (``signature_inputs``), and ``recommend``'s
  split of them into request and catalogue (``ROLES``);
- the server's range checks (``check_values``), the request log's columns and
  the validate command's expected columns.

docs/features.md shows the table; tests/test_features.py checks it against
this module. It imports only the standard library and numpy.
"""
import dataclasses
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# Raw features written by MovieLensExampleGen, one tf.Example per rating.
USER_ID = 'user_id'              # bytes, e.g. b'196'
MOVIE_ID = 'movie_id'            # bytes, e.g. b'242'
MOVIE_TITLE = 'movie_title'      # bytes, e.g. b'Toy Story (1995)'
GENRES = 'genres'                # bytes, multi-valued, names from GENRE_NAMES
RELEASE_YEAR = 'release_year'    # int64; absent when u.item has no date
USER_AGE = 'user_age'            # int64
USER_GENDER = 'user_gender'      # bytes, 'M' or 'F'
USER_OCCUPATION = 'user_occupation'  # bytes, e.g. b'technician'
USER_ZIP = 'user_zip'            # bytes, e.g. b'85711'
TIMESTAMP = 'timestamp'          # int64, unix seconds
RATING = 'rating'                # float, 1..5: the label

LABEL_KEY = RATING

# Point-in-time user history: the user's ratings strictly before this
# rating's timestamp, oldest first, at most HISTORY_LENGTH (the most recent).
# ExampleGen computes them for training; a serving request carries the same
# lists, and Transform turns both into model inputs the same way, so training
# and serving cannot skew (docs/features.md).
HISTORY_MOVIE_IDS = 'history_movie_ids'  # bytes, multi-valued
HISTORY_RATINGS = 'history_ratings'      # float, multi-valued, aligned with the ids
HISTORY_LENGTH = 50
# Point-in-time movie statistics: how many ratings the movie had strictly
# before this rating's timestamp, by anyone, and their mean (0 when none).
# ExampleGen computes them; a serving request sends the live values from its
# feature store, or 0 and 0 when it has none, and the model then falls back to
# the movie bias it learned (docs/features.md).
MOVIE_RATING_COUNT = 'movie_rating_count'  # int64
MOVIE_RATING_MEAN = 'movie_rating_mean'    # float

# Valid ranges of raw values. MovieLensExampleGen quarantines rows outside
# them and schema/schema.pbtxt states the same bounds (tests/test_schema.py).
RATING_RANGE = (1.0, 5.0)
AGE_RANGE = (1, 120)
RELEASE_YEAR_RANGE = (1900, 2030)
# 1995-01-01 (before MovieLens existed) to 2100-01-01; 0 is a common sentinel.
TIMESTAMP_RANGE = (788918400, 4102444800)

# Ages in u.user run 7..73; these edges follow MovieLens 1M's age groups.
AGE_BOUNDARIES = (18.0, 25.0, 35.0, 45.0, 50.0, 56.0)

# The 19 genres of u.genre, in its order (the u.item flag columns follow it).
GENRE_NAMES = (
    'unknown', 'Action', 'Adventure', 'Animation', "Children's", 'Comedy',
    'Crime', 'Documentary', 'Drama', 'Fantasy', 'Film-Noir', 'Horror',
    'Musical', 'Mystery', 'Romance', 'Sci-Fi', 'Thriller', 'War', 'Western',
)

# Vocabulary file names written by Transform; the Trainer sizes embeddings
# from them with tft.experimental.get_vocabulary_size_by_name.
USER_VOCAB = 'user_id_vocab'
MOVIE_VOCAB = 'movie_id_vocab'
GENDER_VOCAB = 'gender_vocab'
OCCUPATION_VOCAB = 'occupation_vocab'

# The splits Transform's analyzers read (vocabularies, means, z-scores):
# everything before the test period, so a movie first rated in the eval
# period has its own id and is in the catalog. No analyzer reads a rating.
ANALYZED_SPLITS = ('train', 'eval')
_ANALYZED = ' and '.join(ANALYZED_SPLITS)
# Out-of-vocabulary buckets: ids Transform did not see in the analyzed splits land here.
OOV_BUCKETS = 1


TITLE_VOCAB = 'title_token_vocab'
# One line per movie of the analyzed splits, most rated first: the catalog a top-K
# recommendation scores. Fields are joined with CATALOG_SEPARATOR: movie id,
# title, genres joined with '|', release year ('' when unknown).
CATALOG_VOCAB = 'movie_catalog'
CATALOG_SEPARATOR = '\t'
# Transform pads history to HISTORY_LENGTH with this id (and rating 0).
HISTORY_PAD_ID = -1


# Slice features: Transform outputs that no model reads, for the Evaluator's
# slices (TFMA gets them from the ``transform_features`` signature).
# NEW_USER: 1 when the user is not in the vocabulary: no rating before the
# test period (cold start).
NEW_USER = 'new_user'
# MOVIE_POPULARITY: 0 head, 1 torso, 2 tail, by the movie's rank in the
# vocabulary (most rated first). Head is the top POPULARITY_EDGES[0] of its
# movies, torso up to POPULARITY_EDGES[1], tail the rest and unseen movies.
# On ML-100K's seed split the head's 10% of movies get 42% of train ratings,
# the torso's 40% get 50%, the tail 8%.
MOVIE_POPULARITY = 'movie_popularity'
POPULARITY_EDGES = (0.1, 0.5)
POPULARITY_NAMES = ('head', 'torso', 'tail')
# Transform outputs from user_age and timestamp, read by models and slices:
# the age bucket (an index into AGE_BOUNDARIES' buckets) and the day of week
# (0 = Monday, UTC).
AGE_BUCKET = 'age_bucket'
WEEKDAY = 'weekday'


def transformed_name(key: str) -> str:
  """Name of the Transform output derived from raw feature ``key``."""
  return key + '_xf'


# Title words per movie, and the size of their vocabulary (8 words cover 99%
# of ML-100K's titles; 5,000 words cover them all).
TITLE_TOKENS = 'title_tokens'
TITLE_TOKEN_COUNT = 8
TITLE_VOCAB_SIZE = 5000
RELEASE_YEAR_KNOWN = 'release_year_known'
MOVIE_AGE = 'movie_age'

# Shapes: exactly one value per example; any number; zero or one.
SCALAR, MULTI, OPTIONAL = 'scalar', 'multi', 'optional'
# Roles. recommend takes USER and CONTEXT features from the request and
# MOVIE features from its catalogue (or their unknown value, for a live
# statistic the catalogue does not hold).
USER, MOVIE, CONTEXT, LABEL = 'user', 'movie', 'context', 'label'
REQUEST_ROLES = (USER, CONTEXT)

# The gender values of u.user; ExampleGen quarantines any other.
GENDERS = ('M', 'F')


@dataclasses.dataclass(frozen=True)
class Feature:
  """One raw feature, as ExampleGen writes it and a request sends it.

  Attributes:
    name: the tf.Example key and the JSON field.
    dtype: 'string', 'int64' or 'float32'.
    shape: SCALAR, MULTI or OPTIONAL.
    role: USER, MOVIE, CONTEXT or LABEL.
    description: one line for docs/features.md.
    valid_range: inclusive (low, high) of a number; ExampleGen quarantines
      rows outside it, the schema states it, and the server answers 400.
    domain: the closed set of strings a value comes from, if any.
    unknown: what a request sends when it does not know the value (for a
      MULTI feature, an empty list). It is exempt from ``valid_range``.
    becomes: what the model reads in place of ``unknown`` (the fill step of
      ``preprocessing_fn``).
    max_values: the most values a MULTI feature carries.
    aligned_with: a MULTI feature whose values pair up with this one's.
    group: the feature group an explanation attributes to (the ``explain``
      signature switches a group's features to ``unknown`` together).
  """
  name: str
  dtype: str
  shape: str
  role: str
  description: str
  valid_range: Optional[Tuple[float, float]] = None
  domain: Optional[Tuple[str, ...]] = None
  unknown: Any = None
  becomes: str = ''
  max_values: Optional[int] = None
  aligned_with: Optional[str] = None
  group: str = ''

  def range_text(self) -> str:
    """'in 1..120, or 0 for unknown': the valid values, as messages state them."""
    low, high = self.valid_range
    unknown = f', or {self.unknown!r} for unknown' if self.shape != MULTI and self.unknown is not None else ''
    return f'in {_number(low)}..{_number(high)}{unknown}'

  def check(self, values: Iterable[Any]) -> Optional[str]:
    """A message naming the range when a value (other than ``unknown``) is outside it; else None."""
    if self.valid_range is None:
      return None
    low, high = self.valid_range
    for value in values:
      if value == self.unknown and self.shape != MULTI:
        continue
      if isinstance(value, (int, float)) and not isinstance(value, bool) and not (
          math.isfinite(value) and low <= value <= high):
        return f'"{self.name}" must be {self.range_text()}; got {value!r}.'
    return None


def _number(x: float) -> str:
  return str(int(x)) if float(x).is_integer() else f'{x:g}'


@dataclasses.dataclass(frozen=True)
class Output:
  """One Transform output and the raw features ``preprocessing_fn`` computes it from.

  Attributes:
    name: the transformed feature key.
    inputs: raw feature names.
    description: one line for docs/features.md.
    slice_only: the Evaluator slices on it; no model reads it.
  """
  name: str
  inputs: Tuple[str, ...]
  description: str
  slice_only: bool = False


_HISTORY_RULE = (f'the user\'s ratings strictly before this one, oldest first, the latest {HISTORY_LENGTH}')

FEATURES: Tuple[Feature, ...] = (
    Feature(USER_ID, 'string', SCALAR, USER, 'MovieLens user id, e.g. "196"', unknown='',
            becomes='the out-of-vocabulary bucket (a user not seen in training)', group='user'),
    Feature(USER_AGE, 'int64', SCALAR, USER, 'age in years', valid_range=AGE_RANGE, unknown=0,
            becomes=f'the mean age of the {_ANALYZED} splits (a Transform analyzer)', group='age'),
    Feature(USER_GENDER, 'string', SCALAR, USER, '"M" or "F"', domain=GENDERS, unknown='',
            becomes='the out-of-vocabulary bucket', group='gender'),
    Feature(USER_OCCUPATION, 'string', SCALAR, USER, 'one of u.occupation, e.g. "technician"', unknown='',
            becomes='the out-of-vocabulary bucket', group='occupation'),
    Feature(USER_ZIP, 'string', SCALAR, USER, 'zip code; no model reads it (it let models memorise users)',
            unknown='', group='zip'),
    Feature(HISTORY_MOVIE_IDS, 'string', MULTI, USER, 'movie ids of ' + _HISTORY_RULE, unknown=[],
            becomes='an empty history (the cold-start path)', max_values=HISTORY_LENGTH, group='history'),
    Feature(HISTORY_RATINGS, 'float32', MULTI, USER, 'their ratings, one per movie id', valid_range=RATING_RANGE,
            unknown=[], becomes='an empty history', max_values=HISTORY_LENGTH, aligned_with=HISTORY_MOVIE_IDS,
            group='history'),
    Feature(MOVIE_ID, 'string', SCALAR, MOVIE, 'MovieLens movie id, e.g. "242"', unknown='',
            becomes='the out-of-vocabulary bucket (a movie not seen in training)', group='movie'),
    Feature(MOVIE_TITLE, 'string', SCALAR, MOVIE, 'title with the year, e.g. "Toy Story (1995)"', unknown='',
            becomes='no title words', group='movie'),
    Feature(GENRES, 'string', MULTI, MOVIE, 'genre names from u.genre', domain=GENRE_NAMES, unknown=[],
            becomes='no genre', max_values=len(GENRE_NAMES), group='genres'),
    Feature(RELEASE_YEAR, 'int64', OPTIONAL, MOVIE, 'release year; absent when u.item has no date',
            valid_range=RELEASE_YEAR_RANGE, unknown=0,
            becomes=f'the mean year of the {_ANALYZED} splits, with release_year_known 0', group='movie'),
    Feature(MOVIE_RATING_COUNT, 'int64', SCALAR, MOVIE,
            'ratings the movie had strictly before this one, by anyone (a live statistic)',
            valid_range=(0, 2**31 - 1), unknown=0, becomes='the learned movie bias alone', group='movie statistics'),
    Feature(MOVIE_RATING_MEAN, 'float32', SCALAR, MOVIE, 'their mean; 0 when there were none',
            valid_range=(0.0, RATING_RANGE[1]), unknown=0.0, becomes='the learned movie bias alone',
            group='movie statistics'),
    Feature(TIMESTAMP, 'int64', SCALAR, CONTEXT, 'when the rating (or the request) happens, unix seconds',
            valid_range=TIMESTAMP_RANGE, unknown=0, becomes='the time the model is called', group='time'),
    Feature(RATING, 'float32', SCALAR, LABEL, 'the rating, the label', valid_range=RATING_RANGE),
)

_xf = transformed_name
OUTPUTS: Tuple[Output, ...] = (
    Output(_xf(USER_ID), (USER_ID,), 'user vocabulary id (frequency-ranked, OOV last)'),
    Output(_xf(NEW_USER), (USER_ID,), '1 when the user is not in the vocabulary', slice_only=True),
    Output(_xf(MOVIE_ID), (MOVIE_ID,), 'movie vocabulary id, 0 the most rated'),
    Output(_xf(MOVIE_POPULARITY), (MOVIE_ID,), '0 head, 1 torso, 2 tail by vocabulary rank', slice_only=True),
    Output(_xf(HISTORY_MOVIE_IDS), (HISTORY_MOVIE_IDS,),
           f'history movie vocabulary ids [B, {HISTORY_LENGTH}], padded with {HISTORY_PAD_ID}'),
    Output(_xf(HISTORY_RATINGS), (HISTORY_MOVIE_IDS, HISTORY_RATINGS),
           f'history ratings [B, {HISTORY_LENGTH}], 0 where padded'),
    Output(_xf(TITLE_TOKENS), (MOVIE_TITLE,), f'title word ids [B, {TITLE_TOKEN_COUNT}], padded with {HISTORY_PAD_ID}'),
    Output(_xf(USER_GENDER), (USER_GENDER,), 'gender vocabulary id'),
    Output(_xf(USER_OCCUPATION), (USER_OCCUPATION,), 'occupation vocabulary id'),
    Output(_xf(USER_AGE), (USER_AGE,), f'age, z-scored on {_ANALYZED}'),
    Output(_xf(AGE_BUCKET), (USER_AGE,), f'age bucket by {AGE_BOUNDARIES}'),
    Output(_xf(GENRES), (GENRES,), f'multi-hot genres [B, {len(GENRE_NAMES)}]'),
    Output(_xf(RELEASE_YEAR), (RELEASE_YEAR,), f'release year, z-scored on {_ANALYZED}'),
    Output(_xf(RELEASE_YEAR_KNOWN), (RELEASE_YEAR,), '1 when the release year is known'),
    Output(_xf(WEEKDAY), (TIMESTAMP,), 'day of week, 0 = Monday (UTC)', slice_only=True),
    Output(_xf(MOVIE_AGE), (TIMESTAMP, RELEASE_YEAR), f"the movie's age at rating time, z-scored on {_ANALYZED}"),
    Output(_xf(MOVIE_RATING_COUNT), (MOVIE_RATING_COUNT,), 'live rating count, unscaled'),
    Output(_xf(MOVIE_RATING_MEAN), (MOVIE_RATING_MEAN,), 'live rating mean, unscaled'),
    Output(LABEL_KEY, (RATING,), 'the label'),
)

BY_NAME: Dict[str, Feature] = {x.name: x for x in FEATURES}
# Features a serving request may carry: all but the label.
SERVING_FEATURES: Tuple[str, ...] = tuple(x.name for x in FEATURES if x.role != LABEL)


def names(role: Optional[str] = None, dtype: Optional[str] = None, shape: Optional[str] = None,
          table: Sequence[Feature] = FEATURES) -> Tuple[str, ...]:
  """Names of the table's features with the given role, dtype and shape (None matches any)."""
  return tuple(x.name for x in table
               if (role is None or x.role == role) and (dtype is None or x.dtype == dtype)
               and (shape is None or x.shape == shape))


def feeds(feature: str, outputs: Sequence[Output] = OUTPUTS) -> Tuple[str, ...]:
  """The Transform outputs computed from raw ``feature``."""
  return tuple(o.name for o in outputs if feature in o.inputs)


def raw_inputs(read: Iterable[str], table: Sequence[Feature] = FEATURES,
               outputs: Sequence[Output] = OUTPUTS) -> Tuple[str, ...]:
  """The raw features a model that reads Transform outputs ``read`` needs, in table order."""
  by_name = {o.name: o for o in outputs}
  unknown = sorted(set(read) - set(by_name))
  if unknown:
    raise ValueError(f'Transform outputs {unknown} are not in the OUTPUTS table; add them to '
                     'transforms/features.py with the raw features they read.')
  needed = {name for o in read for name in by_name[o].inputs}
  return tuple(x.name for x in table if x.name in needed)


def parse_catalog(lines: Iterable[bytes]) -> List[Tuple[bytes, bytes, List[bytes], Optional[int]]]:
  """CATALOG_VOCAB's lines (as Transform wrote them) as (movie id, title, genres, release year or None)."""
  rows = []
  for line in lines:
    movie_id, title, genres, year = line.rstrip(b'\n').split(CATALOG_SEPARATOR.encode())
    rows.append((movie_id, title, genres.split(b'|') if genres else [], int(year) if year else None))
  return rows


def groups(read: Iterable[str], table: Sequence[Feature] = FEATURES) -> Dict[str, Tuple[str, ...]]:
  """Explanation group to the raw features of ``read`` in it, groups and features in table order."""
  read = set(read)
  out: Dict[str, Tuple[str, ...]] = {}
  for x in table:
    if x.name in read and x.group:
      out[x.group] = out.get(x.group, ()) + (x.name,)
  return out


def unknown_values(table: Sequence[Feature] = FEATURES) -> Dict[str, Any]:
  """What a request sends for each feature it does not know."""
  return {x.name: x.unknown for x in table if x.role != LABEL}


def check_columns(columns: Mapping[str, Any], table: Sequence[Feature] = FEATURES) -> Optional[str]:
  """The first range violation in a request's columns, as a message naming the range; None when all are valid.

  Args:
    columns: feature name to its values, one per example: a [B] array for
      SCALAR and OPTIONAL features, a [B, T] array padded at the end for
      MULTI ones (the raw signature's layout). Names outside the table are
      not checked.
    table: the feature table.

  ``unknown`` is always valid. A MULTI feature aligned with another is
  checked only where the other has a value (not ''), so padding is free.
  """
  by_name = {x.name: x for x in table}
  for name, values in columns.items():
    feature = by_name.get(name)
    if feature is None or feature.valid_range is None:
      continue
    array = np.asarray(values)
    if array.dtype == object or array.size == 0:
      continue
    valid = np.ones(array.shape, bool)
    if feature.shape == MULTI:
      if feature.aligned_with in columns:
        valid = np.asarray(columns[feature.aligned_with]) != (b'' if np.asarray(
            columns[feature.aligned_with]).dtype == object else '')
    else:
      valid = array != feature.unknown
    low, high = feature.valid_range
    bad = valid & ~((array >= low) & (array <= high))
    if bad.any():
      return feature.check([array[bad].flat[0].item()])
  return None


def describe(table: Sequence[Feature] = FEATURES, outputs: Sequence[Output] = OUTPUTS) -> List[Dict[str, str]]:
  """The table as rows of text, for docs/features.md."""
  rows = []
  for x in table:
    valid = (f'{_number(x.valid_range[0])}..{_number(x.valid_range[1])}' if x.valid_range
             else ', '.join(x.domain) if x.domain and len(x.domain) <= 3 else
             f'{len(x.domain)} names' if x.domain else '')
    rows.append({'feature': x.name, 'dtype': x.dtype, 'shape': x.shape, 'role': x.role, 'valid': valid,
                 'unknown': '' if x.unknown is None else repr(x.unknown), 'becomes': x.becomes,
                 'group': x.group, 'feeds': ', '.join(feeds(x.name, outputs)), 'description': x.description})
  return rows


def markdown(table: Sequence[Feature] = FEATURES, outputs: Sequence[Output] = OUTPUTS) -> str:
  """The tables as docs/features.md shows them (``python -m transforms.features`` prints it)."""
  lines = ['| feature | dtype | shape | role | valid | unknown | becomes | explain group | feeds |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for row in describe(table, outputs):
    lines.append('| ' + ' | '.join([f"`{row['feature']}`"] + [row[k].replace('|', '\\|') for k in (
        'dtype', 'shape', 'role', 'valid', 'unknown', 'becomes', 'group')] + [
        ', '.join(f'`{o}`' for o in row['feeds'].split(', ') if o)]) + ' |')
  lines += ['', '| Transform output | from | what | slice only |', '| --- | --- | --- | --- |']
  for o in outputs:
    lines.append(f"| `{o.name}` | {', '.join(f'`{i}`' for i in o.inputs)} | {o.description} | "
                 f"{'yes' if o.slice_only else ''} |")
  return '\n'.join(lines) + '\n'


# Derived lists, for code that asks by kind.
MULTI_VALUED = names(shape=MULTI)
ALIGNED_WITH = {x.name: x.aligned_with for x in FEATURES if x.aligned_with}


if __name__ == '__main__':
  print(markdown(), end='')
