"""Tests of MovieLensExampleGen: parsing, splits, sources and the executor.

Unit tests run on a tiny MovieLens-shaped directory written to tmp_path that
has one line of every kind of bad row; the e2e test runs the executor on the
real MovieLens 100K.
"""

import bisect
import collections
import dataclasses
import glob
import hashlib
import io
import json
import os
import random
import zipfile

import pytest
import tensorflow as tf
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components.movielens_example_gen import MovieLensExampleGen
from components.movielens_example_gen import SplitConfig
from components.movielens_example_gen import executor
from components.movielens_example_gen import history
from components.movielens_example_gen import parsing
from components.movielens_example_gen import sources
from components.movielens_example_gen import spec
from components.movielens_example_gen import split
from components.movielens_example_gen import summary as summary_lib
from transforms import features


def _item(movie_id, title, release_date, genres, flags=None):
  """Returns a u.item line; flags, when given, replaces the genre flags."""
  if flags is None:
    flags = ['1' if name in genres else '0' for name in features.GENRE_NAMES]
  return '|'.join([str(movie_id), title, release_date, '', 'http://x'] +
                  list(flags))


# (line, reason it is quarantined for, or None if it becomes an example).
ITEMS = [
    (_item(1, 'Toy Story (1995)', '01-Jan-1995',
           ['Animation', "Children's", 'Comedy']), None),
    (_item(2, 'GoldenEye (1995)', '01-Jan-1995',
           ['Action', 'Adventure', 'Thriller']), None),
    # latin-1 title; the release date's year differs from the title's.
    (_item(3, 'Café Society (1995)', '15-Mar-1996', ['Drama']), None),
    # Like movie 267 of ML-100K.
    (_item(4, 'unknown', '', ['unknown']), None),
    (_item(5, 'Bad Date (1990)', '1990-01-01', []), parsing.BAD_RELEASE_DATE),
    (_item(6, 'Bad Flags (1990)', '01-Jan-1990', [],
           flags=['2'] + ['0'] * 18), parsing.BAD_GENRE_FLAGS),
    (_item(1, 'Toy Story again', '', []), parsing.DUPLICATE_ID),
    (_item('x', 'Bad Id', '', []), parsing.BAD_ID),
    ('9|too few', parsing.WRONG_FIELD_COUNT),
    (_item(10, 'CafÃ© Society (1995)', '01-Jan-1995', []), parsing.BAD_ENCODING),
    (_item(11, 'Old (1800)', '01-Jan-1800', []), parsing.BAD_RELEASE_DATE),
]
USERS = [
    ('1|24|M|technician|85711', None),
    ('2|53|F|other|94043', None),
    ('3|23|M|writer|T8H1N', None),
    ('4|x|M|writer|00000', parsing.BAD_AGE),
    ('5|30|X|writer|00000', parsing.BAD_GENDER),
    ('abc|30|M|writer|1', parsing.BAD_ID),
    ('2|99|F|other|1', parsing.DUPLICATE_ID),
    ('1|2|3', parsing.WRONG_FIELD_COUNT),
    ('6|0|M|writer|00000', parsing.BAD_AGE),     # a sentinel age
    ('7|999|F|writer|00000', parsing.BAD_AGE),
    ('8|30|F|wri\x07ter|00000', parsing.BAD_ENCODING),
]
# Valid timestamps run from 1000 to 2000: train is ts <= 1600, eval
# ts <= 1800, test the rest.
RATINGS = [
    ('1\t1\t5\t1000', None),                     # train
    ('1\t2\t3\t1100', parsing.DUPLICATE),        # line 24 is earlier
    ('2\t1\t4\t1500', None),                     # train, wins a tie
    ('2\t3\t2\t1700', None),                     # eval
    ('3\t4\t1\t2000', None),                     # test, no release year
    ('3\t1\t5\t1600', None),                     # train, on the boundary
    ('3\t2\t4.5\t1800', None),                   # eval, on the boundary
    ('2\t2\t3\t1900', None),                     # test
    ('1\t3\t3', parsing.WRONG_FIELD_COUNT),
    ('', parsing.WRONG_FIELD_COUNT),
    ('x\t1\t3\t1200', parsing.BAD_ID),
    ('1\t3\t6\t1200', parsing.BAD_RATING),
    ('1\t3\tnan\t1200', parsing.BAD_RATING),
    ('1\t3\tinf\t1200', parsing.BAD_RATING),
    ('1\t3\tfour\t1200', parsing.BAD_RATING),
    ('1\t3\t0\t1200', parsing.BAD_RATING),
    ('1\t3\t4\t12.5', parsing.BAD_TIMESTAMP),
    ('1\t3\t4\t-5', parsing.BAD_TIMESTAMP),
    ('1\t99\t4\t1200', parsing.UNKNOWN_MOVIE),
    ('1\t5\t4\t1200', parsing.UNKNOWN_MOVIE),    # its u.item line is bad
    ('99\t1\t4\t1', parsing.UNKNOWN_USER),       # must not move the min
    ('1\t1\t2\t5000', parsing.DUPLICATE),        # must not move the max
    ('2\t1\t3\t1500', parsing.DUPLICATE),        # ties line 3, comes later
    ('1\t2\t1\t1090', None),                     # train, beats line 2
    # The seed's sentinels: 0 and 9999.9.
    ('1\t4\t9999.9\t1200', parsing.BAD_RATING),
    ('1\t4\t4\t0', parsing.BAD_TIMESTAMP),
]
# Real timestamps start in 1995 (features.TIMESTAMP_RANGE); the small numbers
# above read easier, so every valid-looking one is moved by T0.
T0 = 880_000_000


def _shifted(line):
  fields = line.split('\t')
  if len(fields) == 4 and fields[3].isdigit() and fields[3] != '0':
    fields[3] = str(T0 + int(fields[3]))
  return '\t'.join(fields)


RATINGS = [(_shifted(line), reason) for line, reason in RATINGS]
EXPECTED_SPLITS = {'train': 4, 'eval': 2, 'test': 2}


def _expected_reasons(rows):
  return dict(collections.Counter(r for _, r in rows if r is not None))


def _write_lines(path, lines, encoding=parsing.ENCODING):
  with open(path, 'wb') as f:
    f.write(''.join(line + '\n' for line in lines).encode(encoding))


def _write_ml100k(directory, ratings=RATINGS, items=ITEMS, users=USERS):
  os.makedirs(directory, exist_ok=True)
  _write_lines(os.path.join(directory, 'u.data'), [r for r, _ in ratings])
  _write_lines(os.path.join(directory, 'u.item'), [r for r, _ in items])
  _write_lines(os.path.join(directory, 'u.user'), [r for r, _ in users])
  return str(directory)


@pytest.fixture
def tiny_dir(tmp_path):
  return _write_ml100k(tmp_path / 'ml-100k')


def _run_executor(data_dir, output_dir, **exec_properties):
  examples = standard_artifacts.Examples()
  examples.uri = os.path.join(output_dir, 'examples')
  quarantine = spec.QuarantinedRows()
  quarantine.uri = os.path.join(output_dir, 'quarantine')
  properties = {
      spec.DATA_DIR_KEY: data_dir,
      spec.SPLIT_CONFIG_KEY: SplitConfig().to_json(),
      spec.MAX_BAD_FRACTION_KEY: 1.0,
      spec.DATA_FINGERPRINT_KEY: 'fingerprint-1',
  }
  properties.update(exec_properties)
  error = None
  try:
    executor.Executor().Do({}, {
        spec.EXAMPLES_KEY: [examples],
        spec.QUARANTINE_KEY: [quarantine]
    }, properties)
  except summary_lib.TooManyBadRowsError as e:
    error = e
  return examples, quarantine, error


def _read_split(examples, split_name):
  pattern = os.path.join(
      artifact_utils.get_split_uri([examples], split_name), '*.gz')
  files = glob.glob(pattern)
  assert files, f'no files match {pattern}'
  # Batched: one eager step per record made reading ML-100K take 15 s.
  batches = tf.data.TFRecordDataset(files, compression_type='GZIP').batch(4096)
  return [tf.train.Example.FromString(record)
          for batch in batches.as_numpy_iterator() for record in batch]


def _values(example, key):
  feature = example.features.feature[key]
  kind = feature.WhichOneof('kind')
  if kind is None:
    return []
  values = list(getattr(feature, kind).value)
  if kind == 'bytes_list':
    return [v.decode('utf-8') for v in values]
  return values


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  base = tmp_path_factory.mktemp('tiny_run')
  data_dir = _write_ml100k(base / 'ml-100k')
  examples, quarantine, error = _run_executor(data_dir, str(base / 'out'))
  assert error is None
  return examples, quarantine


def _ties_ratings():
  """u.data rows for history: ties, a history past 50, bad rows in between."""
  rows = []
  # User 1 rates movies 1..66, three to a second, newest line first, so line
  # order and time order disagree and the 50-cut falls inside a tie.
  for i in reversed(range(66)):
    rows.append((f'1\t{i + 1}\t{1 + i % 5}\t{1000 + (i // 3) * 10}', None))
  rows += [
      ('1\t5\t1\t1500', parsing.DUPLICATE),    # movie 5 is kept at 1010
      ('1\t70\t6\t1100', parsing.BAD_RATING),
      ('1\t99\t4\t1100', parsing.UNKNOWN_MOVIE),
      # User 2: two first ratings at one second, at user 1's first second.
      ('2\t2\t3\t1000', None),
      ('2\t1\t4\t1000', None),
      ('2\t3\t5\t1010', None),
      ('3\t1\t2\t1300', None),
  ]
  return [(_shifted(line), reason) for line, reason in rows]


TIES_RATINGS = _ties_ratings()
TIES_ITEMS = [(_item(m, f'Movie {m} (1995)', '01-Jan-1995', ['Drama']), None)
              for m in range(1, 71)]


@pytest.fixture(scope='module')
def ties_run(tmp_path_factory):
  base = tmp_path_factory.mktemp('ties_run')
  data_dir = _write_ml100k(base / 'ml-100k', ratings=TIES_RATINGS,
                           items=TIES_ITEMS, users=USERS[:3])
  examples, _, error = _run_executor(data_dir, str(base / 'out'))
  assert error is None
  return [e for name in split.SPLIT_NAMES for e in _read_split(examples, name)]


def _history_of(example):
  """(history_movie_ids as bytes, history_ratings), checking both exist."""
  feature = example.features.feature
  assert feature[features.HISTORY_MOVIE_IDS].WhichOneof('kind') == 'bytes_list'
  assert feature[features.HISTORY_RATINGS].WhichOneof('kind') == 'float_list'
  return (list(feature[features.HISTORY_MOVIE_IDS].bytes_list.value),
          list(feature[features.HISTORY_RATINGS].float_list.value))


# Parsing.


@pytest.mark.unit
@pytest.mark.parametrize('line_no', range(len(RATINGS)))
def test_parse_rating_line_quarantines_each_bad_kind(line_no):
  line, reason = RATINGS[line_no]
  parsed = parsing.parse_rating_line(line_no + 1, line)
  if reason in (None, parsing.DUPLICATE, parsing.UNKNOWN_MOVIE,
                parsing.UNKNOWN_USER):
    # Decided later, by the join and the dedup.
    assert isinstance(parsed, parsing.Rating)
  else:
    assert isinstance(parsed, parsing.BadRow)
    assert parsed[:4] == (parsing.U_DATA, line_no + 1, reason, line)
    assert parsed.detail


@pytest.mark.unit
def test_parse_rating_line_canonicalizes_ids():
  rating = parsing.parse_rating_line(7, ' 007\t042\t4.5\t881250949')
  assert rating == parsing.Rating('7', '42', 4.5, 881250949, 7,
                                  ' 007\t042\t4.5\t881250949')


@pytest.mark.unit
@pytest.mark.parametrize('line_no', range(len(ITEMS)))
def test_parse_movie_line_reasons(line_no):
  line, reason = ITEMS[line_no]
  parsed = parsing.parse_movie_line(line_no + 1, line)
  if reason in (None, parsing.DUPLICATE_ID):
    assert isinstance(parsed, tuple) and not isinstance(parsed,
                                                        parsing.BadRow)
  else:
    assert isinstance(parsed, parsing.BadRow)
    assert (parsed.file, parsed.line, parsed.reason,
            parsed.raw) == (parsing.U_ITEM, line_no + 1, reason, line)


@pytest.mark.unit
def test_parse_movie_line_fields():
  assert parsing.parse_movie_line(3, ITEMS[2][0]) == (
      '3', parsing.Movie('Café Society (1995)', ('Drama',), 1996))
  assert parsing.parse_movie_line(4, ITEMS[3][0]) == (
      '4', parsing.Movie('unknown', ('unknown',), None))
  # GroupLens has titles with a trailing space.
  assert parsing.parse_movie_line(
      1, _item(1, 'Two Friends (1986) ', '', []))[1].title == (
          'Two Friends (1986)')


@pytest.mark.unit
@pytest.mark.parametrize('line_no', range(len(USERS)))
def test_parse_user_line_reasons(line_no):
  line, reason = USERS[line_no]
  parsed = parsing.parse_user_line(line_no + 1, line)
  if reason in (None, parsing.DUPLICATE_ID):
    assert not isinstance(parsed, parsing.BadRow)
  else:
    assert isinstance(parsed, parsing.BadRow)
    assert (parsed.file, parsed.reason) == (parsing.U_USER, reason)


@pytest.mark.unit
def test_parse_lookup_file_keeps_first_of_duplicate_ids():
  table, bad_rows = parsing.parse_lookup_file(
      parsing.U_USER, enumerate((line for line, _ in USERS), start=1),
      parsing.parse_user_line)
  assert table == {
      '1': parsing.User(24, 'M', 'technician', '85711'),
      '2': parsing.User(53, 'F', 'other', '94043'),
      '3': parsing.User(23, 'M', 'writer', 'T8H1N'),
  }
  assert [(r.line, r.reason) for r in bad_rows] == [
      (i, reason) for i, (_, reason) in enumerate(USERS, start=1) if reason
  ]
  assert 'u.user:2' in bad_rows[3].detail


@pytest.mark.unit
def test_check_join_names_unknown_movie_and_user():
  movies = {'1': parsing.Movie('Toy Story (1995)', (), 1995)}
  users = {'1': parsing.User(24, 'M', 'technician', '85711')}
  ok = parsing.Rating('1', '1', 5.0, 1000, 1, '1\t1\t5\t1000')
  assert parsing.check_join(ok, movies, users) is None
  bad_movie = ok._replace(movie_id='2', line=2)
  bad_user = ok._replace(user_id='2', line=3)
  assert parsing.check_join(bad_movie, movies, users).reason == (
      parsing.UNKNOWN_MOVIE)
  assert parsing.check_join(bad_user, movies, users)[:3] == (
      parsing.U_DATA, 3, parsing.UNKNOWN_USER)


@pytest.mark.unit
def test_split_duplicates_keeps_earliest_then_first_line():
  first = parsing.Rating('1', '1', 5.0, 1500, 10, 'a')
  tie_later_line = first._replace(rating=3.0, line=20, raw='b')
  earlier = first._replace(timestamp=1400, line=30, raw='c')
  kept, bad_rows = parsing.split_duplicates([tie_later_line, earlier, first])
  assert kept is earlier
  assert [(r.line, r.reason, r.raw) for r in bad_rows] == [
      (10, parsing.DUPLICATE, 'a'), (20, parsing.DUPLICATE, 'b')]
  assert 'u.data:30' in bad_rows[0].detail
  kept, bad_rows = parsing.split_duplicates([tie_later_line, first])
  assert kept is first and [r.line for r in bad_rows] == [20]


@pytest.mark.unit
def test_to_tf_example_has_every_raw_feature():
  rating = parsing.Rating('196', '3', 4.0, 881250949, 1, '')
  movie = parsing.Movie('Café Society (1995)', ('Comedy', 'Drama'), 1996)
  user = parsing.User(49, 'M', 'writer', 'T8H1N')
  example = parsing.to_tf_example(rating, movie, user)
  assert {key: _values(example, key) for key in example.features.feature} == {
      features.USER_ID: ['196'],
      features.MOVIE_ID: ['3'],
      features.MOVIE_TITLE: ['Café Society (1995)'],
      features.GENRES: ['Comedy', 'Drama'],
      features.RELEASE_YEAR: [1996],
      features.USER_AGE: [49],
      features.USER_GENDER: ['M'],
      features.USER_OCCUPATION: ['writer'],
      features.USER_ZIP: ['T8H1N'],
      features.TIMESTAMP: [881250949],
      features.RATING: [4.0],
  }
  assert example.features.feature[features.MOVIE_TITLE].bytes_list.value == [
      'Café Society (1995)'.encode('utf-8')]
  no_year = parsing.to_tf_example(rating, movie._replace(release_year=None),
                                  user)
  assert features.RELEASE_YEAR not in no_year.features.feature


@pytest.mark.unit
def test_serialized_example_parses_with_tf_parse_example():
  rating = parsing.Rating('196', '3', 4.0, 881250949, 1, '')
  serialized = parsing.serialize_example(
      rating,
      parsing.movie_example_part(parsing.Movie('Kolya (1996)', ('Comedy',),
                                               1997)),
      parsing.user_example_part(parsing.User(49, 'M', 'writer', '55105')))
  parsed = tf.io.parse_single_example(
      serialized, {
          features.USER_ID: tf.io.FixedLenFeature([], tf.string),
          features.MOVIE_TITLE: tf.io.FixedLenFeature([], tf.string),
          features.USER_AGE: tf.io.FixedLenFeature([], tf.int64),
          features.RATING: tf.io.FixedLenFeature([], tf.float32),
      })
  assert parsed[features.USER_ID].numpy() == b'196'
  assert parsed[features.MOVIE_TITLE].numpy() == b'Kolya (1996)'
  assert parsed[features.USER_AGE].numpy() == 49
  assert parsed[features.RATING].numpy() == 4.0


@pytest.mark.unit
def test_serialize_example_writes_history_even_when_empty():
  rating = parsing.Rating('196', '3', 4.0, 881250949, 1, '')
  movie = parsing.Movie('Kolya (1996)', ('Comedy',), 1997)
  user = parsing.User(49, 'M', 'writer', '55105')
  example = parsing.to_tf_example(rating, movie, user, [b'242', b'51'],
                                  [3.0, 4.5])
  assert _values(example, features.HISTORY_MOVIE_IDS) == ['242', '51']
  assert _values(example, features.HISTORY_RATINGS) == [3.0, 4.5]
  first = parsing.to_tf_example(rating, movie, user, [], [])
  for key, kind in ((features.HISTORY_MOVIE_IDS, 'bytes_list'),
                    (features.HISTORY_RATINGS, 'float_list')):
    assert first.features.feature[key].WhichOneof('kind') == kind
    assert _values(first, key) == []
  parsed = tf.io.parse_single_example(
      first.SerializeToString(), {
          features.HISTORY_MOVIE_IDS: tf.io.VarLenFeature(tf.string),
          features.HISTORY_RATINGS: tf.io.VarLenFeature(tf.float32),
      })
  assert parsed[features.HISTORY_MOVIE_IDS].values.shape == [0]
  # Callers without a history, like pipeline/validate.py, get none.
  without = parsing.to_tf_example(rating, movie, user)
  assert features.HISTORY_MOVIE_IDS not in without.features.feature
  assert features.HISTORY_RATINGS not in without.features.feature
  with pytest.raises(ValueError, match='go together'):
    parsing.to_tf_example(rating, movie, user, [b'242'])
  with pytest.raises(ValueError, match='1 history movie ids but 2'):
    parsing.to_tf_example(rating, movie, user, [b'242'], [3.0, 4.0])


# History.


def _rating(movie_id, value, timestamp, line, user_id='7'):
  return parsing.Rating(user_id, str(movie_id), float(value), timestamp, line,
                        '')


def _slow_history(ratings, rating, length=features.HISTORY_LENGTH):
  """The history rule written the obvious way, to test history.py against."""
  earlier = sorted((r for r in ratings if r.user_id == rating.user_id and
                    r.timestamp < rating.timestamp),
                   key=lambda r: (r.timestamp, r.line))[-length:]
  return ([r.movie_id.encode() for r in earlier],
          [r.rating for r in earlier])


def _assert_no_future(ratings, rated):
  """Every history entry is a rating of the same user made strictly before."""
  by_key = {(r.user_id, r.movie_id.encode()): r for r in ratings}
  for rating, movie_ids, values in rated:
    assert len(movie_ids) == len(values)
    for movie_id, value in zip(movie_ids, values):
      earlier = by_key[(rating.user_id, movie_id)]
      assert earlier.timestamp < rating.timestamp
      assert earlier.rating == value


@pytest.mark.unit
def test_histories_order_by_time_then_line_and_skip_the_same_second():
  ratings = [
      _rating(30, 3, 200, 1),
      _rating(10, 1, 100, 5),
      _rating(20, 5, 150, 2),  # the same second as movie 21, an earlier line
      _rating(21, 2, 150, 4),
      _rating(40, 4, 300, 3),
  ]
  # Reversed, so the tie comes in as 21 then 20.
  rated = list(history.histories(reversed(ratings)))
  _assert_no_future(ratings, rated)
  assert [(r.movie_id, ids, values) for r, ids, values in rated] == [
      ('10', [], []),
      ('20', [b'10'], [1.0]),
      ('21', [b'10'], [1.0]),
      ('30', [b'10', b'20', b'21'], [1.0, 5.0, 2.0]),
      ('40', [b'10', b'20', b'21', b'30'], [1.0, 5.0, 2.0, 3.0]),
  ]
  assert list(history.histories([])) == []


@pytest.mark.unit
def test_histories_keep_the_most_recent():
  ratings = [_rating(m, 1 + m % 5, 1000 + m, 100 - m) for m in range(60)]
  rated = list(history.histories(ratings))
  last_ids, last_values = rated[-1][1:]
  assert len(last_ids) == features.HISTORY_LENGTH == 50
  assert last_ids == [str(m).encode() for m in range(9, 59)]
  assert last_values == [float(1 + m % 5) for m in range(9, 59)]
  assert [len(ids) for _, ids, _ in rated] == [min(i, 50) for i in range(60)]
  # At the cut, ties at one second are ordered by line: 'c' before 'b'.
  tied = [_rating('a', 1, 1, 1), _rating('b', 2, 2, 3),
          _rating('c', 3, 2, 2), _rating('d', 4, 3, 4)]
  assert list(history.histories(tied, length=2))[-1][1:] == (
      [b'c', b'b'], [3.0, 2.0])
  assert list(history.histories(tied, length=1))[-1][1:] == ([b'b'], [2.0])


@pytest.mark.unit
def test_histories_take_one_user():
  with pytest.raises(ValueError, match=r"one user's ratings.*\['1', '2'\]"):
    list(history.histories([_rating(1, 1, 1, 1, user_id='1'),
                            _rating(2, 1, 2, 2, user_id='2')]))


@pytest.mark.unit
def test_history_for_request_follows_the_executor_rule():
  rng = random.Random(0)
  # 200 movies over 30 seconds: many ties, and histories longer than 50.
  lines = rng.sample(range(1, 1001), 200)
  ratings = [_rating(m, rng.randint(1, 5), rng.randrange(30), lines[m])
             for m in range(200)]
  rated = list(history.histories(ratings))
  _assert_no_future(ratings, rated)
  prior = [(r.movie_id, r.rating, r.timestamp)
           for r in sorted(ratings, key=lambda r: r.line)]
  for rating, movie_ids, values in rated:
    assert (movie_ids, values) == _slow_history(ratings, rating)
    assert history.history_for_request(prior, rating.timestamp) == (
        movie_ids, values)
  assert max(len(ids) for _, ids, _ in rated) == features.HISTORY_LENGTH
  assert history.history_for_request(prior, 0) == ([], [])
  newest = history.history_for_request(prior, 30)
  assert newest == _slow_history(ratings, _rating('new', 1, 30, 0))


@pytest.mark.unit
def test_history_for_request_takes_str_or_bytes_and_drops_the_future():
  prior = [('242', 4, 10), (b'51', 3.5, 5), ('7', 2, 20), ('8', 1, 30)]
  assert history.history_for_request(prior, 20) == ([b'51', b'242'],
                                                    [3.5, 4.0])
  assert history.history_for_request(prior, 31, length=2) == ([b'7', b'8'],
                                                              [2.0, 1.0])


# Splits.


@pytest.mark.unit
def test_time_split_boundaries_are_inclusive():
  config = SplitConfig()
  assert split.time_boundaries(config, 1000, 2000) == (1600.0, 1800.0)
  got = {
      ts: split.assign_split(config, '1', '1', ts, (1000, 2000))
      for ts in (1000, 1600, 1601, 1800, 1801, 2000)
  }
  assert got == {1000: 'train', 1600: 'train', 1601: 'eval', 1800: 'eval',
                 1801: 'test', 2000: 'test'}
  custom = SplitConfig(train_end=0.5, eval_end=0.5)
  assert split.assign_split(custom, '1', '1', 1501, (1000, 2000)) == 'test'
  with pytest.raises(ValueError, match='range'):
    split.assign_split(config, '1', '1', 1000)


@pytest.mark.unit
def test_random_split_is_deterministic_and_follows_fractions():
  config = SplitConfig(kind='random', train_fraction=0.7, eval_fraction=0.2,
                       seed=7)
  pairs = [(str(u), str(m)) for u in range(100) for m in range(100)]
  first = [split.assign_split(config, u, m, 0) for u, m in pairs]
  again = [split.assign_split(SplitConfig.from_json(config.to_json()), u, m, 0)
           for u, m in pairs]
  assert first == again
  counts = collections.Counter(first)
  assert abs(counts['train'] / len(pairs) - 0.7) < 0.02
  assert abs(counts['eval'] / len(pairs) - 0.2) < 0.02
  other_seed_config = dataclasses.replace(config, seed=8)
  other_seed = [
      split.assign_split(other_seed_config, u, m, 0) for u, m in pairs
  ]
  assert other_seed != first


@pytest.mark.unit
def test_split_config_json_round_trip_and_validation():
  config = SplitConfig(kind='random', seed=3)
  assert SplitConfig.from_json(config.to_json()) == config
  assert SplitConfig.from_json('{}') == SplitConfig()
  with pytest.raises(ValueError, match='unknown fields'):
    SplitConfig.from_json('{"kind": "time", "train_frac": 0.5}')
  with pytest.raises(ValueError, match='train_end'):
    SplitConfig(train_end=0.9, eval_end=0.8)
  with pytest.raises(ValueError, match='kind'):
    SplitConfig(kind='user')
  with pytest.raises(ValueError, match='sum to at most 1'):
    SplitConfig(kind='random', train_fraction=0.9, eval_fraction=0.2)


# Sources.


def _zip_bytes(files):
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as archive:
    for name, data in files.items():
      archive.writestr(f'ml-100k/{name}', data)
  return buffer.getvalue()


def _offline(url, timeout_s):
  raise OSError(f'offline: {url} ({timeout_s}s)')


def _write_fake_recbole(directory, u_data=b'196\t242\t3\t881250949\n'):
  """Writes a tiny directory laid out like recbole's ml-100k example."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, 'ml-100k.inter'), 'wb') as f:
    f.write(b'user_id:token\titem_id:token\trating:float\ttimestamp:float\n' +
            u_data)
  _write_lines(
      os.path.join(directory, 'ml-100k.item'), [
          'item_id:token\tmovie_title:token_seq\trelease_year:token\t'
          'class:token_seq',
          "1\tToy Story\t1995\tAnimation Children's Comedy",
          '2\tCafé Society\t1995\tDrama',
          '267\tunkonwn\tunkonwn\tunknown',
      ],
      encoding='utf-8')
  _write_lines(
      os.path.join(directory, 'ml-100k.user'), [
          'user_id:token\tage:token\tgender:token\toccupation:token\t'
          'zip_code:token',
          '1\t24\tM\ttechnician\t85711',
      ],
      encoding='utf-8')
  return str(directory)


@pytest.mark.unit
def test_resolve_source_uses_data_dir_without_network(tiny_dir, tmp_path):
  source = sources.resolve_source(tiny_dir, str(tmp_path / 'cache'),
                                  download=_offline,
                                  find_recbole=lambda: None)
  assert (source.kind, source.path) == (sources.DATA_DIR, tiny_dir)
  with open(os.path.join(tiny_dir, 'u.data'), 'rb') as f:
    assert source.u_data_md5 == hashlib.md5(f.read()).hexdigest()
  assert not source.is_canonical


@pytest.mark.unit
def test_resolve_source_names_missing_files(tmp_path):
  (tmp_path / 'u.data').write_text('1\t1\t1\t1\n')
  with pytest.raises(FileNotFoundError, match=r'lacks u\.item, u\.user'):
    sources.resolve_source(str(tmp_path), '')


@pytest.mark.unit
def test_download_is_verified_cached_and_reused(tmp_path, monkeypatch):
  u_data = b'1\t1\t5\t1000\n'
  monkeypatch.setattr(sources, 'ML100K_U_DATA_MD5',
                      hashlib.md5(u_data).hexdigest())
  payload = _zip_bytes({'u.data': u_data, 'u.item': b'i', 'u.user': b'u',
                        'u.genre': b'g', 'README': b'r'})
  calls = []

  def fake_download(url, timeout_s):
    calls.append((url, timeout_s))
    return payload

  cache = str(tmp_path / 'cache')
  first = sources.resolve_source('', cache, download=fake_download)
  second = sources.resolve_source('', cache, download=_offline)
  assert calls == [(sources.GROUPLENS_URL, sources.DOWNLOAD_TIMEOUT_S)]
  assert first.kind == second.kind == sources.GROUPLENS
  assert first.path == second.path == os.path.join(cache, 'grouplens',
                                                   'ml-100k')
  with open(os.path.join(first.path, 'u.data'), 'rb') as f:
    assert f.read() == u_data


@pytest.mark.unit
def test_download_with_wrong_md5_falls_back_to_recbole(tmp_path, monkeypatch):
  u_data = b'196\t242\t3\t881250949\n'
  monkeypatch.setattr(sources, 'ML100K_U_DATA_MD5',
                      hashlib.md5(u_data).hexdigest())
  tampered = _zip_bytes({'u.data': b'1\t1\t1\t1\n', 'u.item': b'',
                         'u.user': b'', 'u.genre': b'', 'README': b''})
  recbole_dir = _write_fake_recbole(tmp_path / 'recbole', u_data)
  source = sources.resolve_source('', str(tmp_path / 'cache'),
                                  download=lambda url, timeout_s: tampered,
                                  find_recbole=lambda: recbole_dir)
  assert source.kind == sources.RECBOLE
  assert source.is_canonical


@pytest.mark.unit
def test_recbole_conversion_writes_grouplens_format(tmp_path, monkeypatch):
  u_data = b'196\t242\t3\t881250949\n186\t302\t3\t891717742\n'
  monkeypatch.setattr(sources, 'ML100K_U_DATA_MD5',
                      hashlib.md5(u_data).hexdigest())
  recbole_dir = _write_fake_recbole(tmp_path / 'recbole', u_data)
  source = sources.resolve_source('', str(tmp_path / 'cache'),
                                  download=_offline,
                                  find_recbole=lambda: recbole_dir)
  assert source.kind == sources.RECBOLE
  assert source.path == str(tmp_path / 'cache' / 'recbole-1.2.1' / 'ml-100k')
  with open(source.file('u.data'), 'rb') as f:
    assert f.read() == u_data
  with open(source.file('u.item'), 'rb') as f:
    items = f.read().decode('latin-1').splitlines()
  assert items == [
      _item(1, 'Toy Story (1995)', '01-Jan-1995',
            ['Animation', "Children's", 'Comedy']).replace('http://x', ''),
      _item(2, 'Café Society (1995)', '01-Jan-1995',
            ['Drama']).replace('http://x', ''),
      _item(267, 'unknown', '', ['unknown']).replace('http://x', ''),
  ]
  with open(source.file('u.user')) as f:
    assert f.read() == '1|24|M|technician|85711\n'
  # RecBole has no u.genre or u.occupation; GroupLens's fixed lists are written.
  with open(source.file('u.genre')) as f:
    assert f.read().startswith('unknown|0\nAction|1\n')
  with open(source.file('u.occupation')) as f:
    assert 'technician' in f.read().split()
  # The converted files parse like GroupLens's.
  table, bad_rows = parsing.parse_lookup_file(
      parsing.U_ITEM, enumerate(items, start=1), parsing.parse_movie_line)
  assert not bad_rows
  assert table['267'] == parsing.Movie('unknown', ('unknown',), None)


@pytest.mark.unit
def test_recbole_with_other_data_is_refused(tmp_path):
  recbole_dir = _write_fake_recbole(tmp_path / 'recbole')
  with pytest.raises(sources.NoDataSourceError) as raised:
    sources.resolve_source('', str(tmp_path / 'cache'), download=_offline,
                           find_recbole=lambda: recbole_dir)
  assert 'not the ML-100K u.data' in str(raised.value)


@pytest.mark.unit
def test_no_source_error_says_what_to_do(tmp_path):
  with pytest.raises(sources.NoDataSourceError) as raised:
    sources.resolve_source('', str(tmp_path / 'cache'), download=_offline,
                           find_recbole=lambda: None)
  message = str(raised.value)
  assert 'offline' in message
  assert '--data-dir' in message
  assert 'pip install --no-deps recbole==1.2.1' in message


@pytest.mark.unit
def test_find_recbole_dataset_dir_does_not_import_recbole(tmp_path,
                                                          monkeypatch):
  package = tmp_path / 'site' / 'recbole'
  package.mkdir(parents=True)
  (package / '__init__.py').write_text(
      'raise ImportError("importing recbole needs torch")\n')
  dataset_dir = _write_fake_recbole(package / 'dataset_example' / 'ml-100k')
  monkeypatch.syspath_prepend(str(tmp_path / 'site'))
  assert sources.find_recbole_dataset_dir() == dataset_dir


# The bad-fraction check.


def _summary(counts_by_reason, rows_read=1000, item_counts=None):
  bad_counts = [((parsing.U_DATA, reason), count)
                for reason, count in counts_by_reason.items()]
  bad_counts += [((parsing.U_ITEM, reason), count)
                 for reason, count in (item_counts or {}).items()]
  return summary_lib.build_summary(
      source={'kind': 'data_dir', 'path': '/data/ml-100k'},
      rows_read={parsing.U_DATA: rows_read, parsing.U_ITEM: 10},
      bad_counts=bad_counts,
      counts_per_split={'train': 1, 'eval': 0, 'test': 0},
      examples=[
          parsing.BadRow(parsing.U_DATA, 17, parsing.BAD_RATING,
                         '196\t242\t6\t1', 'rating 6 is not in 1..5'),
          parsing.BadRow(parsing.U_DATA, 3, parsing.UNKNOWN_MOVIE,
                         '1\t5\t4\t1', 'movie id 5 is not in u.item'),
      ],
      timestamp_range=(1, 2),
      split_config=json.loads(SplitConfig().to_json()),
      split_boundaries=None,
      quarantine_file='/out/quarantine/quarantine.jsonl')


@pytest.mark.unit
def test_check_bad_fraction_message_says_what_and_where():
  summary = _summary({parsing.BAD_RATING: 12, parsing.UNKNOWN_MOVIE: 3},
                     item_counts={parsing.BAD_RELEASE_DATE: 1})
  assert summary['rows_quarantined'] == 15
  with pytest.raises(summary_lib.TooManyBadRowsError) as raised:
    summary_lib.check_bad_fraction(summary, 0.01,
                                   '/out/quarantine/summary.json')
  message = str(raised.value)
  for expected in ('quarantined 15 of 1,000 ratings (1.50%)',
                   'max_bad_fraction=0.01', 'bad_rating 12', 'unknown_movie 3',
                   'u.item: 1 of 10 rows', 'u.data:3 unknown_movie',
                   'u.data:17 bad_rating', '/out/quarantine/quarantine.jsonl',
                   '/out/quarantine/summary.json', 'Fix the source data',
                   'raise max_bad_fraction'):
    assert expected in message
  # The examples are in file:line order.
  assert message.index('u.data:3 ') < message.index('u.data:17 ')


@pytest.mark.unit
def test_check_bad_fraction_passes_at_the_threshold_and_fails_on_no_rows():
  summary_lib.check_bad_fraction(_summary({parsing.BAD_RATING: 10}), 0.01, 's')
  with pytest.raises(summary_lib.TooManyBadRowsError, match='no ratings'):
    summary_lib.check_bad_fraction(_summary({}, rows_read=0), 0.01, 's')


# The component and its executor.


@pytest.mark.unit
def test_component_spec_and_validation():
  example_gen = MovieLensExampleGen(
      data_dir='/data/ml-100k', split_config=SplitConfig(kind='random'),
      max_bad_fraction=0, data_fingerprint='abc').with_id('MovieLensExampleGen')
  assert set(example_gen.outputs) == {spec.EXAMPLES_KEY, spec.QUARANTINE_KEY}
  assert example_gen.outputs[spec.EXAMPLES_KEY].type_name == 'Examples'
  assert example_gen.outputs[spec.QUARANTINE_KEY].type_name == (
      'movielens.QuarantinedRows')
  properties = example_gen.exec_properties
  assert SplitConfig.from_json(properties[spec.SPLIT_CONFIG_KEY]).kind == (
      'random')
  assert properties[spec.MAX_BAD_FRACTION_KEY] == 0.0
  assert properties[spec.DATA_FINGERPRINT_KEY] == 'abc'
  assert SplitConfig.from_json(
      MovieLensExampleGen().exec_properties[spec.SPLIT_CONFIG_KEY]) == (
          SplitConfig())
  with pytest.raises(ValueError, match='unknown fields'):
    MovieLensExampleGen(split_config='{"kinds": "time"}')
  with pytest.raises(ValueError, match='max_bad_fraction'):
    MovieLensExampleGen(max_bad_fraction=1.5)


@pytest.mark.unit
def test_executor_writes_splits(tiny_run):
  examples, _ = tiny_run
  assert artifact_utils.decode_split_names(examples.split_names) == [
      'train', 'eval', 'test']
  by_split = {name: _read_split(examples, name) for name in split.SPLIT_NAMES}
  assert {name: len(rows) for name, rows in by_split.items()} == (
      EXPECTED_SPLITS)
  keys = {
      name: sorted((_values(e, features.USER_ID)[0],
                    _values(e, features.MOVIE_ID)[0],
                    _values(e, features.TIMESTAMP)[0]) for e in rows)
      for name, rows in by_split.items()
  }
  assert keys == {
      'train': [('1', '1', T0 + 1000), ('1', '2', T0 + 1090), ('2', '1', T0 + 1500),
                ('3', '1', T0 + 1600)],
      'eval': [('2', '3', T0 + 1700), ('3', '2', T0 + 1800)],
      'test': [('2', '2', T0 + 1900), ('3', '4', T0 + 2000)],
  }
  joined = {(_values(e, features.USER_ID)[0], _values(e, features.MOVIE_ID)[0]):
            e for rows in by_split.values() for e in rows}
  cafe = joined[('2', '3')]
  assert _values(cafe, features.MOVIE_TITLE) == ['Café Society (1995)']
  assert _values(cafe, features.RELEASE_YEAR) == [1996]
  assert _values(cafe, features.GENRES) == ['Drama']
  assert _values(cafe, features.USER_OCCUPATION) == ['other']
  assert _values(cafe, features.RATING) == [2.0]
  unknown = joined[('3', '4')]
  assert features.RELEASE_YEAR not in unknown.features.feature
  assert _values(unknown, features.USER_ZIP) == ['T8H1N']
  assert _values(joined[('3', '2')], features.RATING) == [4.5]


@pytest.mark.unit
def test_executor_writes_history(tiny_run):
  examples, _ = tiny_run
  got = {(_values(e, features.USER_ID)[0], _values(e, features.MOVIE_ID)[0]):
         _history_of(e)
         for name in split.SPLIT_NAMES for e in _read_split(examples, name)}
  # Quarantined duplicates (user 1's movie 1 at 5000, movie 2 at 1100, user
  # 2's movie 1 at 1500) are in no history; test-split ratings see the user's
  # earlier eval and test ratings.
  assert got == {
      ('1', '1'): ([], []),
      ('1', '2'): ([b'1'], [5.0]),
      ('2', '1'): ([], []),
      ('2', '3'): ([b'1'], [4.0]),
      ('2', '2'): ([b'1', b'3'], [4.0, 2.0]),
      ('3', '1'): ([], []),
      ('3', '2'): ([b'1'], [5.0]),
      ('3', '4'): ([b'1', b'2'], [5.0, 4.5]),
  }


@pytest.mark.unit
def test_executor_history_has_no_future_and_matches_serving(ties_run):
  valid = [
      parsing.parse_rating_line(line_no, line)
      for line_no, (line, reason) in enumerate(TIES_RATINGS, start=1)
      if reason is None
  ]
  by_key = {(r.user_id, r.movie_id): r for r in valid}
  assert len(ties_run) == len(valid) == 70
  lengths = []
  for example in ties_run:
    rating = by_key[(_values(example, features.USER_ID)[0],
                     _values(example, features.MOVIE_ID)[0])]
    movie_ids, values = _history_of(example)
    for movie_id, value in zip(movie_ids, values, strict=True):
      earlier = by_key[(rating.user_id, movie_id.decode())]
      assert earlier.timestamp < rating.timestamp
      assert earlier.rating == value
    assert (movie_ids, values) == _slow_history(valid, rating)
    prior = [(r.movie_id, r.rating, r.timestamp)
             for r in valid if r.user_id == rating.user_id]
    assert history.history_for_request(prior, rating.timestamp) == (
        movie_ids, values)
    lengths.append(len(movie_ids))
  assert max(lengths) == features.HISTORY_LENGTH
  # User 1's three first ratings and user 2's two and user 3's one.
  assert lengths.count(0) == 6


@pytest.mark.unit
def test_executor_movie_statistics_count_only_earlier_ratings_by_anyone(ties_run):
  valid = [parsing.parse_rating_line(line_no, line)
           for line_no, (line, reason) in enumerate(TIES_RATINGS, start=1) if reason is None]
  by_key = {(r.user_id, r.movie_id): r for r in valid}
  counts = []
  for example in ties_run:
    rating = by_key[(_values(example, features.USER_ID)[0], _values(example, features.MOVIE_ID)[0])]
    earlier = [r.rating for r in valid if r.movie_id == rating.movie_id and r.timestamp < rating.timestamp]
    assert _values(example, features.MOVIE_RATING_COUNT) == [len(earlier)]
    assert _values(example, features.MOVIE_RATING_MEAN)[0] == pytest.approx(
        sum(earlier) / len(earlier) if earlier else 0.0)
    counts.append(len(earlier))
  assert min(counts) == 0 and max(counts) > 1  # first ratings of a movie, and later ones


@pytest.mark.unit
def test_movie_priors_reject_ratings_of_several_movies():
  ratings = [parsing.Rating('1', '10', 4.0, 100, 1, ''), parsing.Rating('2', '11', 3.0, 101, 2, '')]
  with pytest.raises(ValueError, match='one movie'):
    list(history.movie_priors([(r,) for r in ratings]))


@pytest.mark.unit
def test_executor_sets_examplegen_properties(tiny_run):
  examples, quarantine = tiny_run
  properties = {
      name: examples.get_custom_property(name)
      for name in examples.mlmd_artifact.custom_properties
  }
  assert properties == {
      'payload_format': 'FORMAT_TF_EXAMPLE',
      'file_format': 'tfrecords_gzip',
      'span': 0,
      'input_fingerprint': 'fingerprint-1',
      'data_source': sources.DATA_DIR,
      'data_source_path': properties['data_source_path'],
      'rows_read': len(RATINGS),
      'rows_quarantined': sum(_expected_reasons(RATINGS).values()),
      'rows_train': 4,
      'rows_eval': 2,
      'rows_test': 2,
  }
  assert properties['data_source_path'].endswith('ml-100k')
  assert quarantine.get_int_custom_property('rows_quarantined') == 18


@pytest.mark.unit
def test_executor_quarantines_every_bad_row(tiny_run):
  _, quarantine = tiny_run
  with open(os.path.join(quarantine.uri, 'quarantine.jsonl')) as f:
    records = [json.loads(line) for line in f]
  got = sorted((r['file'], r['line'], r['reason'], r['raw']) for r in records)
  expected = sorted(
      (file_name, line_no, reason, raw)
      for file_name, rows in (('u.data', RATINGS), ('u.item', ITEMS),
                              ('u.user', USERS))
      for line_no, (raw, reason) in enumerate(rows, start=1)
      if reason is not None)
  assert got == expected
  assert all(r['detail'] for r in records)


@pytest.mark.unit
def test_executor_summary(tiny_run):
  _, quarantine = tiny_run
  with open(os.path.join(quarantine.uri, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['source']['kind'] == sources.DATA_DIR
  assert summary['rows_read'] == len(RATINGS)
  assert summary['counts_by_reason'] == _expected_reasons(RATINGS)
  assert summary['rows_quarantined'] == 18
  assert summary['counts_per_split'] == EXPECTED_SPLITS
  assert summary['rows_read'] == (summary['rows_quarantined'] +
                                  sum(summary['counts_per_split'].values()))
  assert summary['lookup_files'] == {
      'u.item': {'rows_read': len(ITEMS), 'rows_quarantined': 7,
                 'counts_by_reason': _expected_reasons(ITEMS)},
      'u.user': {'rows_read': len(USERS), 'rows_quarantined': 8,
                 'counts_by_reason': _expected_reasons(USERS)},
  }
  # Quarantined rows with timestamps 1 and 5000 do not widen the range.
  assert summary['timestamp_range'] == [T0 + 1000, T0 + 2000]
  assert summary['split_boundaries'] == {'train_end_timestamp': T0 + 1600.0,
                                         'eval_end_timestamp': T0 + 1800.0}
  shown = [(r['file'], r['line']) for r in summary['examples']]
  assert shown == sorted(shown)
  assert ('u.data', 12) in shown  # the first bad_rating
  assert len([r for r in summary['examples'] if r['reason'] == 'bad_rating'
             ]) == summary_lib.EXAMPLES_PER_REASON


@pytest.mark.unit
def test_executor_fails_above_max_bad_fraction(tmp_path):
  data_dir = _write_ml100k(tmp_path / 'ml-100k')
  _, quarantine, error = _run_executor(
      data_dir, str(tmp_path / 'out'), max_bad_fraction=0.5,
      split_config=SplitConfig(kind='random', seed=1).to_json())
  assert error is not None
  message = str(error)
  assert 'quarantined 18 of 26 ratings' in message
  assert 'max_bad_fraction=0.5' in message
  assert os.path.join(quarantine.uri, 'quarantine.jsonl') in message
  # The quarantine is written before the check, for the user to look at.
  with open(os.path.join(quarantine.uri, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['split_boundaries'] is None
  assert sum(summary['counts_per_split'].values()) == 8


def _check_history_on_real_data(examples):
  """History invariants that hold whatever the tie order within a second."""
  rows = []
  for example in examples:
    feature = example.features.feature
    movie_ids, values = _history_of(example)
    rows.append((feature[features.USER_ID].bytes_list.value[0],
                 feature[features.MOVIE_ID].bytes_list.value[0],
                 feature[features.TIMESTAMP].int64_list.value[0],
                 feature[features.RATING].float_list.value[0], movie_ids,
                 values))
  rated = {(user_id, movie_id): (timestamp, rating)
           for user_id, movie_id, timestamp, rating, _, _ in rows}
  user_times = collections.defaultdict(list)
  for (user_id, _), (timestamp, _) in rated.items():
    user_times[user_id].append(timestamp)
  for times in user_times.values():
    times.sort()
  lengths = []
  for user_id, _, timestamp, _, movie_ids, values in rows:
    assert len(movie_ids) == len(values) <= features.HISTORY_LENGTH
    earlier = bisect.bisect_left(user_times[user_id], timestamp)
    assert len(movie_ids) == min(earlier, features.HISTORY_LENGTH)
    history_times = []
    for movie_id, value in zip(movie_ids, values):
      earlier_time, earlier_rating = rated[(user_id, movie_id)]
      assert earlier_time < timestamp
      assert earlier_rating == value
      history_times.append(earlier_time)
    assert history_times == sorted(history_times)
    lengths.append(len(movie_ids))
  assert sum(lengths) / len(lengths) > 0
  assert max(lengths) == features.HISTORY_LENGTH


@pytest.mark.e2e
def test_executor_on_movielens_100k(ml100k_dir, tmp_path):
  examples, quarantine, error = _run_executor(
      str(ml100k_dir), str(tmp_path), max_bad_fraction=0.01)
  assert error is None
  assert examples.get_int_custom_property('rows_read') == 100000
  assert examples.get_int_custom_property('rows_quarantined') == 0
  counts = {
      name: examples.get_int_custom_property(f'rows_{name}')
      for name in split.SPLIT_NAMES
  }
  assert counts == {'train': 65336, 'eval': 15778, 'test': 18886}
  by_split = {name: _read_split(examples, name) for name in split.SPLIT_NAMES}
  assert len(by_split['eval']) == 15778
  _check_history_on_real_data(
      [e for rows in by_split.values() for e in rows])
  with open(os.path.join(quarantine.uri, 'quarantine.jsonl')) as f:
    assert f.read() == ''
  assert examples.get_string_custom_property('data_source') == (
      sources.DATA_DIR)
