"""Seeds the store from MovieLens 100K with ExampleGen's own readers, rules and feature parts.

Every line goes through what ExampleGen runs: ``sources.resolve_source``
finds the files; ``parsing.parse_rating_line``, ``parse_lookup_file``,
``check_join`` and ``split_duplicates`` validate, join and dedup; profiles
and catalogue entries are read back from ``user_example_part`` and
``movie_example_part``, the parts ExampleGen writes into every example. Each
u.data line becomes a rating with its line as the order within a second, as
ExampleGen orders them. Every row left out is counted by file and reason.
"""
import collections
import time
from typing import Any, Dict

import tensorflow as tf

from components.movielens_example_gen import parsing, sources
from serving.feature_store.store import CATALOGUE_FEATURES, PROFILE_FEATURES, FeatureStore, Held
from transforms import features as f


def _features(serialized: bytes, wanted) -> Dict[str, Any]:
  """The named features of a serialized example part, as JSON values by the table's shape."""
  example = tf.train.Example.FromString(serialized)
  out = {}
  for name in wanted:
    feature = example.features.feature.get(name)
    kind = feature.WhichOneof('kind') if feature is not None else None
    if kind is None:
      continue  # absent (release_year of a movie without a date): served as the table's unknown
    values = [v.decode('utf-8') if kind == 'bytes_list' else v for v in getattr(feature, kind).value]
    out[name] = values if f.BY_NAME[name].shape == f.MULTI else values[0]
  return out


def bootstrap(store: FeatureStore, data_dir: str = '', cache_dir: str = '') -> Dict[str, Any]:
  """Replaces the store's content with MovieLens 100K; returns what was read, loaded and skipped.

  Args:
    store: the feature store; everything in it is replaced.
    data_dir: a GroupLens ml-100k folder; '' finds the data as ExampleGen does.
    cache_dir: ExampleGen's download cache; '' for its default.

  Returns:
    {"source", "rows_read": {file: n}, "loaded": {"users", "movies",
    "ratings"}, "skipped": {file: {reason: n}}, "skipped_examples": the first
    skipped row of each reason, "seconds"}.
  """
  start = time.perf_counter()
  source = sources.resolve_source(data_dir, cache_dir)
  rows_read, bad_rows, tables = {}, [], {}
  for file_name, parse_line in ((parsing.U_ITEM, parsing.parse_movie_line), (parsing.U_USER, parsing.parse_user_line)):
    numbered = list(parsing.read_numbered_lines(source.file(file_name)))
    rows_read[file_name] = len(numbered)
    tables[file_name], bad = parsing.parse_lookup_file(file_name, numbered, parse_line)
    bad_rows.extend(bad)
  movies, users = tables[parsing.U_ITEM], tables[parsing.U_USER]
  by_pair = collections.defaultdict(list)
  rows_read[parsing.U_DATA] = 0
  for line_no, line in parsing.read_numbered_lines(source.file(parsing.U_DATA)):
    rows_read[parsing.U_DATA] += 1
    parsed = parsing.parse_rating_line(line_no, line)
    bad = parsed if isinstance(parsed, parsing.BadRow) else parsing.check_join(parsed, movies, users)
    if bad is None:
      by_pair[parsed.user_id, parsed.movie_id].append(parsed)
    else:
      bad_rows.append(bad)
  ratings = []
  for pair_ratings in by_pair.values():
    kept, bad = parsing.split_duplicates(pair_ratings)
    bad_rows.extend(bad)
    ratings.append(Held(kept.user_id, kept.movie_id, kept.rating, kept.timestamp, kept.line))
  profiles = {u: _features(parsing.user_example_part(user), PROFILE_FEATURES) for u, user in users.items()}
  catalogue = {m: _features(parsing.movie_example_part(movie), CATALOGUE_FEATURES) for m, movie in movies.items()}
  store.load(profiles, catalogue, ratings)
  skipped = collections.defaultdict(collections.Counter)
  examples = {}
  for row in sorted(bad_rows, key=lambda r: (r.file, r.line)):
    skipped[row.file][row.reason] += 1
    examples.setdefault(f'{row.file}:{row.reason}', f'line {row.line}: {row.detail}')
  return {'source': source.to_dict(), 'rows_read': rows_read,
          'loaded': {'users': len(profiles), 'movies': len(catalogue), 'ratings': len(ratings)},
          'skipped': {name: dict(reasons) for name, reasons in skipped.items()},
          'skipped_examples': examples, 'seconds': round(time.perf_counter() - start, 2)}
