"""Where MovieLensExampleGen gets MovieLens 100K from.

`resolve_source` tries, in order:

1. `data_dir`, when given: any tf.io.gfile path holding u.data, u.item and
   u.user in GroupLens format. Used as is; its u.data md5 is only logged.
2. The GroupLens zip, downloaded once into `<cache_dir>/grouplens/ml-100k`
   and reused while its u.data still has the published md5.
3. The copy of ML-100K inside the `recbole==1.2.1` wheel, for machines
   without internet but with PyPI. Its files are in RecBole's atomic format;
   they are converted back to GroupLens format in
   `<cache_dir>/recbole-1.2.1/ml-100k`. u.data comes out byte for byte (the
   md5 is checked); u.item cannot fully: RecBole keeps only the year from the
   title, so titles are rebuilt as "Title (YEAR)", the release date becomes
   01-Jan-YEAR of the title year (GroupLens's release date is a different year
   for 192 of 1682 movies), and the video date and IMDb URL are empty.

Each step that fails is logged and named in the final error, which says what
to do.
"""

import dataclasses
import hashlib
import importlib.util
import io
import os
import urllib.request
import zipfile
from typing import Callable, Dict, List, Optional

from absl import logging
import tensorflow as tf

from components.movielens_example_gen import parsing, synthetic
from transforms import features

GROUPLENS_URL = (
    'https://files.grouplens.org/datasets/movielens/ml-100k.zip')
# md5 of the published u.data; the recbole copy has the same bytes.
ML100K_U_DATA_MD5 = '6e47046882bad158b0efbb84cd5cb987'
DOWNLOAD_TIMEOUT_S = 10
DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'movielens_tfx')
RECBOLE_REQUIREMENT = 'recbole==1.2.1'

# DataSource.kind values.
DATA_DIR = 'data_dir'
GROUPLENS = 'grouplens'
RECBOLE = 'recbole'

# Files copied out of the GroupLens zip; README carries the licence terms.
_GROUPLENS_FILES = parsing.REQUIRED_FILES + ('u.genre', 'README')
_RECBOLE_FILES = {
    parsing.U_DATA: 'ml-100k.inter',
    parsing.U_ITEM: 'ml-100k.item',
    parsing.U_USER: 'ml-100k.user',
}
_RECBOLE_ITEM_COLUMNS = ('item_id', 'movie_title', 'release_year', 'class')
_RECBOLE_USER_COLUMNS = ('user_id', 'age', 'gender', 'occupation', 'zip_code')
# RecBole misspells movie 267's title and year; GroupLens has 'unknown' and
# no date.
_RECBOLE_UNKNOWN = 'unkonwn'


class SourceError(ValueError):
  """A source was found but its content is not MovieLens 100K as expected."""


class NoDataSourceError(RuntimeError):
  """No source of MovieLens 100K could be used; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class DataSource:
  """A directory with u.data, u.item and u.user in GroupLens format.

  Attributes:
    kind: DATA_DIR, GROUPLENS or RECBOLE.
    path: the directory, any tf.io.gfile path.
    u_data_md5: md5 of its u.data.
    detail: where the files came from, in words.
  """
  kind: str
  path: str
  u_data_md5: str
  detail: str

  def file(self, name: str) -> str:
    """Returns the path of one file, e.g. source.file('u.data')."""
    return os.path.join(self.path, name)

  @property
  def is_canonical(self) -> bool:
    """Whether u.data is the published MovieLens 100K u.data."""
    return self.u_data_md5 == ML100K_U_DATA_MD5

  def to_dict(self) -> Dict[str, str]:
    """Returns the fields as a JSON-ready dict, for summary.json."""
    return dataclasses.asdict(self)


def default_cache_dir() -> str:
  """Returns ~/.cache/movielens_tfx, expanded for the current user."""
  return os.path.expanduser(DEFAULT_CACHE_DIR)


def file_md5(path: str) -> str:
  """Returns the hex md5 of a file read through tf.io.gfile."""
  digest = hashlib.md5()
  with tf.io.gfile.GFile(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _write_file(path: str, data: bytes) -> None:
  """Writes a file so that readers never see it half written."""
  tmp_path = f'{path}.tmp-{os.getpid()}'
  with tf.io.gfile.GFile(tmp_path, 'wb') as f:
    f.write(data)
  tf.io.gfile.rename(tmp_path, path, overwrite=True)


def _has_files(directory: str, names) -> bool:
  return all(tf.io.gfile.exists(os.path.join(directory, n)) for n in names)


def download_url(url: str, timeout_s: float) -> bytes:
  """Returns the body of an HTTP(S) GET; tests replace this function.

  Args:
    url: what to fetch.
    timeout_s: seconds to wait for the connection and for each read.

  Returns:
    The response body.

  Raises:
    OSError: on any network failure (urllib.error.URLError is one).
  """
  with urllib.request.urlopen(url, timeout=timeout_s) as response:
    return response.read()


def local_data_dir(data_dir: str) -> DataSource:
  """Checks that data_dir holds the GroupLens files and describes it.

  Args:
    data_dir: a directory, any tf.io.gfile path.

  Returns:
    A DataSource of kind DATA_DIR.

  Raises:
    FileNotFoundError: naming the files that are missing.
  """
  missing = [
      name for name in parsing.REQUIRED_FILES
      if not tf.io.gfile.exists(os.path.join(data_dir, name))
  ]
  if missing:
    raise FileNotFoundError(
        f'data_dir {data_dir!r} lacks {", ".join(missing)}. It must be a '
        'GroupLens ml-100k directory holding '
        f'{", ".join(parsing.REQUIRED_FILES)}, e.g. unzipped from '
        f'{GROUPLENS_URL}.')
  return DataSource(DATA_DIR, data_dir,
                    file_md5(os.path.join(data_dir, parsing.U_DATA)),
                    'data_dir passed to the component')


def fetch_grouplens(
    cache_dir: str,
    download: Callable[[str, float], bytes] = download_url) -> DataSource:
  """Returns the GroupLens ML-100K in cache_dir, downloading it if needed.

  Args:
    cache_dir: where the files go, under grouplens/ml-100k.
    download: fetches a URL; takes (url, timeout_s) and returns the bytes.

  Returns:
    A DataSource of kind GROUPLENS.

  Raises:
    OSError: if the download fails.
    SourceError: if the zip is not ML-100K or its u.data md5 is wrong.
  """
  target = os.path.join(cache_dir, 'grouplens', 'ml-100k')
  if _has_files(target, _GROUPLENS_FILES):
    md5 = file_md5(os.path.join(target, parsing.U_DATA))
    if md5 == ML100K_U_DATA_MD5:
      return DataSource(GROUPLENS, target, md5,
                        f'{GROUPLENS_URL}, downloaded earlier')
    logging.warning('Cached %s has md5 %s, not %s; downloading again.',
                    target, md5, ML100K_U_DATA_MD5)
  logging.info('Downloading %s (timeout %ds).', GROUPLENS_URL,
               DOWNLOAD_TIMEOUT_S)
  payload = download(GROUPLENS_URL, DOWNLOAD_TIMEOUT_S)
  try:
    archive = zipfile.ZipFile(io.BytesIO(payload))
  except zipfile.BadZipFile as e:
    raise SourceError(f'{GROUPLENS_URL} did not return a zip: {e}') from e
  with archive:
    members = {}
    for name in _GROUPLENS_FILES:
      try:
        members[name] = archive.read(f'ml-100k/{name}')
      except KeyError as e:
        raise SourceError(
            f'{GROUPLENS_URL} has no ml-100k/{name}; is it ML-100K?') from e
  md5 = hashlib.md5(members[parsing.U_DATA]).hexdigest()
  if md5 != ML100K_U_DATA_MD5:
    raise SourceError(f'u.data from {GROUPLENS_URL} has md5 {md5}, expected '
                      f'{ML100K_U_DATA_MD5}.')
  tf.io.gfile.makedirs(target)
  for name, data in members.items():
    _write_file(os.path.join(target, name), data)
  return DataSource(GROUPLENS, target, md5, f'{GROUPLENS_URL}, downloaded now')


def find_recbole_dataset_dir() -> Optional[str]:
  """Returns recbole's dataset_example/ml-100k directory, or None.

  Only locates the installed package: importing recbole would need torch.

  Returns:
    The directory, or None if recbole is not installed or lacks the files.
  """
  spec = importlib.util.find_spec('recbole')
  if spec is None or not spec.submodule_search_locations:
    return None
  for location in spec.submodule_search_locations:
    candidate = os.path.join(location, 'dataset_example', 'ml-100k')
    if _has_files(candidate, _RECBOLE_FILES.values()):
      return candidate
  return None


def _read_atomic_file(path: str, columns) -> List[List[str]]:
  """Reads a RecBole atomic file, returning the given columns of each row.

  Args:
    path: a tab-separated file whose first line names the columns, as
      'name:type'.
    columns: the column names wanted, in the order wanted.

  Returns:
    One list of values per non-empty row.

  Raises:
    SourceError: if a column is missing or a row has the wrong field count.
  """
  with tf.io.gfile.GFile(path, 'rb') as f:
    lines = f.read().decode('utf-8').split('\n')
  header = [field.split(':')[0] for field in lines[0].split('\t')]
  missing = [c for c in columns if c not in header]
  if missing:
    raise SourceError(f'{path} has no column {missing}; its header is '
                      f'{lines[0]!r}.')
  indices = [header.index(c) for c in columns]
  rows = []
  for line_no, line in enumerate(lines[1:], start=2):
    if not line:
      continue
    fields = line.split('\t')
    if len(fields) != len(header):
      raise SourceError(f'{path}:{line_no} has {len(fields)} fields, its '
                        f'header {len(header)}.')
    rows.append([fields[i] for i in indices])
  return rows


def _grouplens_item_line(item_id: str, title: str, year: str,
                         genres: str) -> str:
  """Returns one u.item line rebuilt from a RecBole ml-100k.item row."""
  if title == _RECBOLE_UNKNOWN:
    title = 'unknown'
  if len(year) == 4 and year.isdecimal():
    title = f'{title} ({year})'
    release_date = f'01-Jan-{year}'
  else:
    release_date = ''
  names = set(genres.split())
  unknown_names = names - set(features.GENRE_NAMES)
  if unknown_names:
    raise SourceError(f'movie {item_id} has genres {sorted(unknown_names)} '
                      'that u.genre does not know.')
  flags = ['1' if name in names else '0' for name in
           features.GENRE_NAMES]
  return '|'.join([item_id, title, release_date, '', ''] + flags)


def convert_recbole(recbole_dir: str, target: str) -> DataSource:
  """Writes GroupLens-format u.data, u.item, u.user, u.genre and u.occupation from RecBole's copy.

  Args:
    recbole_dir: recbole's dataset_example/ml-100k, or a directory laid out
      like it.
    target: where to write the GroupLens files.

  Returns:
    A DataSource of kind RECBOLE.

  Raises:
    SourceError: if u.data does not come out with the published md5, or a
      file is not in the expected format.
  """
  with tf.io.gfile.GFile(
      os.path.join(recbole_dir, _RECBOLE_FILES[parsing.U_DATA]), 'rb') as f:
    _, _, u_data = f.read().partition(b'\n')
  md5 = hashlib.md5(u_data).hexdigest()
  if md5 != ML100K_U_DATA_MD5:
    raise SourceError(
        f'{recbole_dir}/ml-100k.inter without its header has md5 {md5}, not '
        f'{ML100K_U_DATA_MD5}; it is not the ML-100K u.data. Install '
        f'{RECBOLE_REQUIREMENT} exactly.')
  items = _read_atomic_file(
      os.path.join(recbole_dir, _RECBOLE_FILES[parsing.U_ITEM]),
      _RECBOLE_ITEM_COLUMNS)
  users = _read_atomic_file(
      os.path.join(recbole_dir, _RECBOLE_FILES[parsing.U_USER]),
      _RECBOLE_USER_COLUMNS)
  u_item = ''.join(_grouplens_item_line(*row) + '\n' for row in items)
  u_user = ''.join('|'.join(row) + '\n' for row in users)
  tf.io.gfile.makedirs(target)
  _write_file(os.path.join(target, parsing.U_DATA), u_data)
  try:
    _write_file(os.path.join(target, parsing.U_ITEM),
                u_item.encode(parsing.ENCODING))
  except UnicodeEncodeError as e:
    raise SourceError(f'A RecBole title does not fit latin-1: {e}') from e
  _write_file(os.path.join(target, parsing.U_USER),
              u_user.encode(parsing.ENCODING))
  # RecBole has no u.genre or u.occupation; GroupLens's are fixed lists.
  for name, text in synthetic.side_files().items():
    _write_file(os.path.join(target, name), text.encode(parsing.ENCODING))
  return DataSource(
      RECBOLE, target, md5,
      f'{RECBOLE_REQUIREMENT} wheel ({recbole_dir}), converted to GroupLens '
      'format; titles rebuilt as "Title (YEAR)", release dates as '
      '01-Jan-YEAR of the title year')


def resolve_source(
    data_dir: str,
    cache_dir: str,
    download: Callable[[str, float], bytes] = download_url,
    find_recbole: Callable[[], Optional[str]] = find_recbole_dataset_dir,
) -> DataSource:
  """Finds MovieLens 100K: data_dir, else a download, else recbole's copy.

  Args:
    data_dir: a GroupLens ml-100k directory, or '' to find one.
    cache_dir: where downloads and converted files go; '' for
      ~/.cache/movielens_tfx.
    download: fetches a URL, (url, timeout_s) -> bytes; tests replace it.
    find_recbole: returns recbole's ml-100k directory or None; tests
      replace it.

  Returns:
    The DataSource to read.

  Raises:
    FileNotFoundError: if data_dir is given but lacks a file.
    NoDataSourceError: if data_dir is '' and neither the download nor
      recbole's copy can be used; the message says what to do.
  """
  if data_dir:
    return local_data_dir(data_dir)
  cache_dir = cache_dir or default_cache_dir()
  failures = []
  try:
    return fetch_grouplens(cache_dir, download)
  except (OSError, SourceError, tf.errors.OpError) as e:
    logging.warning('Could not use %s: %s', GROUPLENS_URL, e)
    failures.append(f'downloading {GROUPLENS_URL} failed: {e}')
  recbole_dir = find_recbole()
  if recbole_dir is None:
    failures.append(f'{RECBOLE_REQUIREMENT} is not installed')
  else:
    try:
      return convert_recbole(
          recbole_dir, os.path.join(cache_dir, 'recbole-1.2.1', 'ml-100k'))
    except (OSError, SourceError, tf.errors.OpError) as e:
      logging.warning('Could not use the copy in %s: %s', recbole_dir, e)
      failures.append(f'converting {recbole_dir} failed: {e}')
  reasons = ''.join(f'\n  - {failure}' for failure in failures)
  raise NoDataSourceError(
      f'MovieLensExampleGen found no MovieLens 100K data:{reasons}\n'
      'Do one of these, then run again:\n'
      '  - pass data_dir (the pipeline\'s --data-dir) pointing at a GroupLens '
      f'ml-100k directory holding {", ".join(parsing.REQUIRED_FILES)}, '
      f'e.g. unzipped from {GROUPLENS_URL};\n'
      f'  - or `pip install --no-deps {RECBOLE_REQUIREMENT}`: its wheel '
      'carries a copy of ML-100K, and only its data files are read, so '
      'torch is not needed.')
