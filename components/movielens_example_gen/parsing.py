"""Parsing, validation and the join of the MovieLens 100K files.

Every line of u.data, u.item and u.user either parses into a record or becomes
a `BadRow` that names the file, the 1-based line, a reason and the raw line.
Nothing is dropped without a BadRow: the executor writes them all to the
quarantine artifact and counts them by reason.

These are pure functions over strings; the executor runs them inside Beam and
tests call them directly.
"""

import json
import math
import re
from typing import (Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import tensorflow as tf

from transforms import features

U_DATA = 'u.data'
U_ITEM = 'u.item'
U_USER = 'u.user'
REQUIRED_FILES = (U_DATA, U_ITEM, U_USER)

# GroupLens wrote the files in latin-1 (u.item has accented titles); u.data
# and u.user are ASCII, which latin-1 decodes the same way.
ENCODING = 'latin-1'

# Why a row was quarantined.
WRONG_FIELD_COUNT = 'wrong_field_count'
BAD_ID = 'bad_id'
BAD_TIMESTAMP = 'bad_timestamp'
BAD_RATING = 'bad_rating'
UNKNOWN_MOVIE = 'unknown_movie'
UNKNOWN_USER = 'unknown_user'
DUPLICATE = 'duplicate'
BAD_RELEASE_DATE = 'bad_release_date'
BAD_GENRE_FLAGS = 'bad_genre_flags'
BAD_AGE = 'bad_age'
BAD_GENDER = 'bad_gender'
DUPLICATE_ID = 'duplicate_id'
BAD_ENCODING = 'bad_encoding'

RATING_MIN, RATING_MAX = features.RATING_RANGE

_RATING_FIELDS = 4
_USER_FIELDS = 5
# id|title|release date|video release date|url|19 genre flags.
_ITEM_FIELDS = 5 + len(features.GENRE_NAMES)
_GENDERS = features.GENDERS

# str.isdigit() also accepts '²' and friends, which int() rejects.
_DIGITS = re.compile(r'[0-9]+')
# Text that is not clean latin-1: C0/C1 control characters (a latin-1 file
# never holds them; cp1252 or binary junk does), the replacement character,
# or UTF-8 read as latin-1 ('CafÃ©').
_BAD_TEXT = re.compile('[\x00-\x08\x0a-\x1f\x7f-\x9f\ufffd]|[\xc2\xc3][\x80-\xbf]')
_RELEASE_DATE = re.compile(
    r'[0-9]{1,2}-(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-'
    r'([0-9]{4})')


class BadRow(NamedTuple):
  """One quarantined line.

  Attributes:
    file: the file name, e.g. 'u.data'.
    line: the 1-based line number in that file.
    reason: one of the reason constants of this module.
    raw: the line as read, without its line ending.
    detail: what exactly was wrong, for a person reading the quarantine.
  """
  file: str
  line: int
  reason: str
  raw: str
  detail: str

  def to_json(self) -> str:
    """Returns the row as one line of quarantine.jsonl."""
    return json.dumps(self._asdict(), ensure_ascii=False, sort_keys=True)


class Rating(NamedTuple):
  """One parsed line of u.data; ids are canonical decimal strings."""
  user_id: str
  movie_id: str
  rating: float
  timestamp: int
  line: int
  raw: str


class Movie(NamedTuple):
  """One parsed line of u.item; release_year is None when u.item has none."""
  title: str
  genres: Tuple[str, ...]
  release_year: Optional[int]


class User(NamedTuple):
  """One parsed line of u.user."""
  age: int
  gender: str
  occupation: str
  zip_code: str


def read_numbered_lines(path: str) -> Iterator[Tuple[int, str]]:
  """Yields (1-based line number, line without its ending) of a GroupLens file."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    for line_no, line in enumerate(f, start=1):
      yield line_no, line.decode(ENCODING).rstrip('\r\n')


def _canonical_id(text: str) -> Optional[str]:
  """Returns the id without padding or leading zeros, or None if not an id."""
  text = text.strip()
  if not _DIGITS.fullmatch(text):
    return None
  return str(int(text))


def _bad_text(file_name: str, line_no: int, line: str, what: str,
              text: str) -> Optional[BadRow]:
  """A bad_encoding BadRow if ``text`` is not clean latin-1 text, else None."""
  match = _BAD_TEXT.search(text)
  if match is None:
    return None
  return BadRow(file_name, line_no, BAD_ENCODING, line,
                f'{what} {text!r} holds {match.group()!r} at {match.start()}: '
                'control characters or UTF-8 read as latin-1; re-export the '
                'file as latin-1')


def _fields(file_name: str, line_no: int, line: str, separator: str,
            expected: int) -> Union[List[str], BadRow]:
  """Splits a line, or returns a BadRow if it has the wrong field count."""
  fields = line.split(separator)
  if len(fields) != expected:
    return BadRow(
        file_name, line_no, WRONG_FIELD_COUNT, line,
        f'expected {expected} {separator!r}-separated fields, '
        f'got {len(fields)}')
  return fields


def parse_rating_line(line_no: int, line: str) -> Union[Rating, BadRow]:
  """Parses one line of u.data: user_id, movie_id, rating, timestamp.

  Args:
    line_no: the 1-based line number, kept for the quarantine.
    line: the line, tab-separated, without its line ending.

  Returns:
    The Rating, or a BadRow with reason wrong_field_count, bad_id,
    bad_rating (not a finite number in 1..5) or bad_timestamp (not a
    non-negative integer).
  """
  fields = _fields(U_DATA, line_no, line, '\t', _RATING_FIELDS)
  if isinstance(fields, BadRow):
    return fields
  user_id = _canonical_id(fields[0])
  movie_id = _canonical_id(fields[1])
  if user_id is None or movie_id is None:
    return BadRow(U_DATA, line_no, BAD_ID, line,
                  f'user id {fields[0]!r} or movie id {fields[1]!r} is not '
                  'a non-negative integer')
  try:
    rating = float(fields[2])
  except ValueError:
    rating = math.nan
  if not (math.isfinite(rating) and RATING_MIN <= rating <= RATING_MAX):
    return BadRow(U_DATA, line_no, BAD_RATING, line,
                  f'rating {fields[2]!r} is not a number in '
                  f'{RATING_MIN:g}..{RATING_MAX:g}')
  timestamp = fields[3].strip()
  low, high = features.TIMESTAMP_RANGE
  if not (_DIGITS.fullmatch(timestamp) and low <= int(timestamp) <= high):
    return BadRow(U_DATA, line_no, BAD_TIMESTAMP, line,
                  f'timestamp {fields[3]!r} is not an integer in {low}..{high} '
                  '(1995-01-01..2100-01-01 in unix seconds)')
  return Rating(user_id, movie_id, rating, int(timestamp), line_no, line)


def parse_movie_line(line_no: int,
                     line: str) -> Union[Tuple[str, Movie], BadRow]:
  """Parses one line of u.item.

  Args:
    line_no: the 1-based line number, kept for the quarantine.
    line: the line, '|'-separated, decoded from latin-1.

  Returns:
    (movie_id, Movie), or a BadRow with reason wrong_field_count, bad_id,
    bad_release_date (present but not like '01-Jan-1995') or bad_genre_flags
    (a flag that is not '0' or '1'). An empty release date is not an error:
    the movie then has no release_year.
  """
  fields = _fields(U_ITEM, line_no, line, '|', _ITEM_FIELDS)
  if isinstance(fields, BadRow):
    return fields
  movie_id = _canonical_id(fields[0])
  if movie_id is None:
    return BadRow(U_ITEM, line_no, BAD_ID, line,
                  f'movie id {fields[0]!r} is not a non-negative integer')
  release_date = fields[2].strip()
  release_year = None
  if release_date:
    match = _RELEASE_DATE.fullmatch(release_date)
    if not match:
      return BadRow(U_ITEM, line_no, BAD_RELEASE_DATE, line,
                    f'release date {fields[2]!r} is not like 01-Jan-1995')
    release_year = int(match.group(1))
    low, high = features.RELEASE_YEAR_RANGE
    if not low <= release_year <= high:
      return BadRow(U_ITEM, line_no, BAD_RELEASE_DATE, line,
                    f'release year {release_year} is not in {low}..{high}')
  flags = [flag.strip() for flag in fields[5:]]
  if any(flag not in ('0', '1') for flag in flags):
    return BadRow(U_ITEM, line_no, BAD_GENRE_FLAGS, line,
                  f'genre flags {flags} are not all 0 or 1')
  encoding_problem = _bad_text(U_ITEM, line_no, line, 'title', fields[1])
  if encoding_problem:
    return encoding_problem
  genres = tuple(
      name for name, flag in zip(features.GENRE_NAMES, flags) if flag == '1')
  # Three GroupLens titles end in a space; the recbole copy has none, and a
  # trailing space would make two vocabulary entries of one title.
  return movie_id, Movie(fields[1].strip(), genres, release_year)


def parse_user_line(line_no: int,
                    line: str) -> Union[Tuple[str, User], BadRow]:
  """Parses one line of u.user: id|age|gender|occupation|zip.

  Args:
    line_no: the 1-based line number, kept for the quarantine.
    line: the line, '|'-separated.

  Returns:
    (user_id, User), or a BadRow with reason wrong_field_count, bad_id,
    bad_age (not a non-negative integer) or bad_gender (not 'M' or 'F').
    Zip codes stay strings: some are Canadian, like 'T8H1N'.
  """
  fields = _fields(U_USER, line_no, line, '|', _USER_FIELDS)
  if isinstance(fields, BadRow):
    return fields
  user_id = _canonical_id(fields[0])
  if user_id is None:
    return BadRow(U_USER, line_no, BAD_ID, line,
                  f'user id {fields[0]!r} is not a non-negative integer')
  age = fields[1].strip()
  low, high = features.AGE_RANGE
  if not (_DIGITS.fullmatch(age) and low <= int(age) <= high):
    return BadRow(U_USER, line_no, BAD_AGE, line,
                  f'age {fields[1]!r} is not an integer in {low}..{high}')
  gender = fields[2].strip()
  if gender not in _GENDERS:
    return BadRow(U_USER, line_no, BAD_GENDER, line,
                  f'gender {fields[2]!r} is not one of {_GENDERS}')
  for name, text in (('occupation', fields[3]), ('zip code', fields[4])):
    encoding_problem = _bad_text(U_USER, line_no, line, name, text)
    if encoding_problem:
      return encoding_problem
  return user_id, User(int(age), gender, fields[3].strip(), fields[4].strip())


def parse_lookup_file(file_name: str, numbered_lines: Iterable[Tuple[int, str]],
                      parse_line) -> Tuple[Dict[str, tuple], List[BadRow]]:
  """Parses all of u.item or u.user into a dict keyed by id.

  The first line with an id wins; later lines with the same id are
  quarantined as duplicate_id, since two different rows for one id cannot both
  be joined to a rating.

  Args:
    file_name: U_ITEM or U_USER, for the BadRows of duplicate ids.
    numbered_lines: (1-based line number, line) pairs.
    parse_line: parse_movie_line or parse_user_line.

  Returns:
    (table, bad_rows): table maps id to Movie or User.
  """
  table = {}
  first_line = {}
  bad_rows = []
  for line_no, line in numbered_lines:
    parsed = parse_line(line_no, line)
    if isinstance(parsed, BadRow):
      bad_rows.append(parsed)
      continue
    key, record = parsed
    if key in table:
      bad_rows.append(
          BadRow(file_name, line_no, DUPLICATE_ID, line,
                 f'id {key} is already defined at {file_name}:'
                 f'{first_line[key]}, which is kept'))
      continue
    table[key] = record
    first_line[key] = line_no
  return table, bad_rows


def check_join(rating: Rating, movies: Dict[str, Movie],
               users: Dict[str, User]) -> Optional[BadRow]:
  """Returns a BadRow if the rating's movie or user is not known, else None.

  Args:
    rating: a parsed rating.
    movies: u.item as parsed by parse_lookup_file.
    users: u.user as parsed by parse_lookup_file.

  Returns:
    None, or a BadRow with reason unknown_movie or unknown_user. A movie or
    user is unknown also when its own line in u.item or u.user was
    quarantined.
  """
  if rating.movie_id not in movies:
    return BadRow(U_DATA, rating.line, UNKNOWN_MOVIE, rating.raw,
                  f'movie id {rating.movie_id} is not in {U_ITEM}')
  if rating.user_id not in users:
    return BadRow(U_DATA, rating.line, UNKNOWN_USER, rating.raw,
                  f'user id {rating.user_id} is not in {U_USER}')
  return None


def split_duplicates(
    ratings: Sequence[Rating]) -> Tuple[Rating, List[BadRow]]:
  """Keeps one of several ratings of the same (user, movie) pair.

  The earliest rating is kept, ties broken by the smaller line number, so the
  choice does not depend on the order Beam delivers them in.

  Args:
    ratings: one or more ratings of one (user, movie) pair.

  Returns:
    (kept, bad_rows): the rest are BadRows with reason duplicate.
  """
  kept = min(ratings, key=lambda r: (r.timestamp, r.line))
  bad_rows = [
      BadRow(U_DATA, r.line, DUPLICATE, r.raw,
             f'user {r.user_id} rated movie {r.movie_id} again; '
             f'{U_DATA}:{kept.line} is kept')
      for r in sorted(ratings, key=lambda r: r.line)
      if r is not kept
  ]
  return kept, bad_rows


def _bytes_feature(values: Iterable[str]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[value.encode('utf-8') for value in values]))


def _int_feature(values: Iterable[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _serialized_example(feature: Dict[str, tf.train.Feature]) -> bytes:
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def movie_example_part(movie: Movie) -> bytes:
  """Returns a serialized tf.train.Example of just a movie's features.

  See serialize_example for why parts.

  Args:
    movie: a movie from u.item.

  Returns:
    The movie_title, genres and, when known, release_year features.
  """
  feature = {
      features.MOVIE_TITLE: _bytes_feature([movie.title]),
      features.GENRES: _bytes_feature(movie.genres),
  }
  if movie.release_year is not None:
    feature[features.RELEASE_YEAR] = _int_feature([movie.release_year])
  return _serialized_example(feature)


def user_example_part(user: User) -> bytes:
  """Returns a serialized tf.train.Example of just a user's features.

  See serialize_example for why parts.

  Args:
    user: a user from u.user.

  Returns:
    The user_age, user_gender, user_occupation and user_zip features.
  """
  return _serialized_example({
      features.USER_AGE: _int_feature([user.age]),
      features.USER_GENDER: _bytes_feature([user.gender]),
      features.USER_OCCUPATION: _bytes_feature([user.occupation]),
      features.USER_ZIP: _bytes_feature([user.zip_code]),
  })


def serialize_example(rating: Rating,
                      movie_part: bytes,
                      user_part: bytes,
                      history_movie_ids: Optional[Sequence[bytes]] = None,
                      history_ratings: Optional[Sequence[float]] = None,
                      movie_prior: Optional[Tuple[int, float]] = None
                     ) -> bytes:
  """Returns the serialized tf.train.Example of one joined rating.

  Building the movie and user features in Python for every rating took a third
  the executor's time on ML-100K, so they are serialized once per movie and
  user. Protobuf parses concatenated messages as one merged message, and the
  two parts have disjoint feature keys.

  Args:
    rating: the rating.
    movie_part: movie_example_part() of its movie.
    user_part: user_example_part() of its user.
    history_movie_ids: the user's earlier movies (see history.py), or None to
      leave both history features out.
    history_ratings: their ratings, aligned with history_movie_ids.
    movie_prior: (movie_rating_count, movie_rating_mean) from
      history.movie_priors, or None to leave both out.

  Returns:
    A serialized tf.train.Example with the raw features of
    transforms/features.py. With a history, both history features are present,
    as empty lists for a first rating.

  Raises:
    ValueError: if only one of the history lists is given, or their lengths
      differ.
  """
  if (history_movie_ids is None) != (history_ratings is None):
    raise ValueError('history_movie_ids and history_ratings go together')
  example = tf.train.Example.FromString(movie_part + user_part)
  feature = example.features.feature
  feature[features.USER_ID].bytes_list.value.append(
      rating.user_id.encode('utf-8'))
  feature[features.MOVIE_ID].bytes_list.value.append(
      rating.movie_id.encode('utf-8'))
  feature[features.TIMESTAMP].int64_list.value.append(rating.timestamp)
  feature[features.RATING].float_list.value.append(rating.rating)
  if history_movie_ids is not None:
    if len(history_movie_ids) != len(history_ratings):
      raise ValueError(
          f'{len(history_movie_ids)} history movie ids but '
          f'{len(history_ratings)} history ratings')
    # SetInParent: an empty history must still be a present, empty feature.
    movie_ids = feature[features.HISTORY_MOVIE_IDS].bytes_list
    movie_ids.SetInParent()
    movie_ids.value.extend(history_movie_ids)
    ratings = feature[features.HISTORY_RATINGS].float_list
    ratings.SetInParent()
    ratings.value.extend(history_ratings)
  if movie_prior is not None:
    feature[features.MOVIE_RATING_COUNT].int64_list.value.append(movie_prior[0])
    feature[features.MOVIE_RATING_MEAN].float_list.value.append(movie_prior[1])
  return example.SerializeToString()


def to_tf_example(rating: Rating,
                  movie: Movie,
                  user: User,
                  history_movie_ids: Optional[Sequence[bytes]] = None,
                  history_ratings: Optional[Sequence[float]] = None,
                  movie_prior: Optional[Tuple[int, float]] = None
                 ) -> tf.train.Example:
  """Builds the tf.train.Example of one rating joined to its movie and user.

  Args:
    rating: the rating.
    movie: its movie from u.item.
    user: its user from u.user.
    history_movie_ids: as in serialize_example; None leaves the history out.
    history_ratings: as in serialize_example.
    movie_prior: as in serialize_example.

  Returns:
    A tf.train.Example with the raw features of transforms/features.py;
    release_year is left out when the movie has none.
  """
  return tf.train.Example.FromString(
      serialize_example(rating, movie_example_part(movie),
                        user_example_part(user), history_movie_ids,
                        history_ratings, movie_prior))
