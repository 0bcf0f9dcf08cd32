"""Shared fixtures. TF_USE_LEGACY_KERAS must be set before TensorFlow loads."""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR_ENV = 'MOVIELENS_DATA_DIR'
SHARED_ML100K_DIR = REPO_ROOT.parent / 'shared' / 'data' / 'ml-100k'
# Where a download or the recbole wheel's converted copy is kept between
# sessions: under make run's default output folder, which make clean removes.
DATA_CACHE_DIR = REPO_ROOT / 'outputs' / 'cache'
# (path, how it was found) once a test asked for the data; shown at the end.
_RESOLVED = {}


def resolve_ml100k(environ=os.environ, shared_dir=SHARED_ML100K_DIR, cache_dir=DATA_CACHE_DIR,
                   resolve_source=None):
  """MovieLens 100K as make run finds it: $MOVIELENS_DATA_DIR, ../shared, the download, the recbole wheel.

  Returns:
    (directory, where it came from in words).
  """
  given = environ.get(DATA_DIR_ENV, '')
  if given:
    if not (pathlib.Path(given) / 'u.data').exists():
      pytest.fail(f'${DATA_DIR_ENV}={given} has no u.data: point it at a GroupLens ml-100k folder, '
                  'or unset it to use ../shared, the download or the recbole wheel.')
    return pathlib.Path(given), f'${DATA_DIR_ENV}'
  if (shared_dir / 'u.data').exists():
    return shared_dir, '../shared/data/ml-100k beside the clone'
  if resolve_source is None:
    from components.movielens_example_gen.sources import resolve_source
  source = resolve_source('', str(cache_dir))  # the download, else the recbole wheel; raises saying what to do
  return pathlib.Path(source.path), f'{source.kind}: {source.detail}'


@pytest.fixture(scope='session')
def ml100k_dir() -> pathlib.Path:
  if 'dir' not in _RESOLVED:
    _RESOLVED['dir'], _RESOLVED['how'] = resolve_ml100k()
  return _RESOLVED['dir']


def pytest_terminal_summary(terminalreporter):
  if _RESOLVED:
    terminalreporter.write_line(f'MovieLens 100K for these tests: {_RESOLVED["dir"]} ({_RESOLVED["how"]})')


def raw_feature_spec():
  """The raw feature spec the pipeline's Transform gets, from the curated schema."""
  import tensorflow_data_validation as tfdv
  from tensorflow_transform.tf_metadata import schema_utils
  from pipeline import configs
  return schema_utils.schema_as_feature_spec(tfdv.load_schema_text(configs.SCHEMA_FILE)).feature_spec


def make_raw_rows(n_rows=200, n_users=12, n_movies=9, seed=0):
  """Tiny MovieLens-shaped instances in tft_beam's instance-dict format."""
  import random
  from transforms import features as f
  rng = random.Random(seed)
  rows = []
  seen = {}
  movie_ratings = {}
  for _ in range(n_rows):
    user, movie = rng.randrange(n_users), rng.randrange(n_movies)
    history = seen.setdefault(user, [])
    rows.append({
        f.USER_ID: [str(user).encode()],
        f.MOVIE_ID: [str(movie).encode()],
        f.MOVIE_TITLE: [f'Movie {movie} (199{movie % 10})'.encode()],
        f.USER_GENDER: [b'MF'[user % 2:user % 2 + 1]],
        f.USER_OCCUPATION: [[b'writer', b'student', b'other'][user % 3]],
        f.USER_ZIP: [f'{10000 + user * 7919:05d}'.encode()],
        f.USER_AGE: [18 + user * 3],
        f.TIMESTAMP: [874724710 + rng.randrange(0, 10_000_000)],
        f.GENRES: [f.GENRE_NAMES[1 + movie % 18].encode(), b'Drama'][:1 + movie % 2],
        # Movie 0 has no release date, like movie 267 in u.item.
        f.RELEASE_YEAR: [] if movie == 0 else [1990 + movie],
        f.RATING: [float(1 + (user + movie) % 5)],
        f.HISTORY_MOVIE_IDS: [str(m).encode() for m, _ in history[-f.HISTORY_LENGTH:]],
        f.HISTORY_RATINGS: [r for _, r in history[-f.HISTORY_LENGTH:]],
        # Timestamps are random here, so "before" is "generated earlier".
        f.MOVIE_RATING_COUNT: [len(movie_ratings.get(movie, []))],
        f.MOVIE_RATING_MEAN: [sum(movie_ratings.get(movie, [])) / max(len(movie_ratings.get(movie, [])), 1)],
    })
    history.append((movie, float(1 + (user + movie) % 5)))
    movie_ratings.setdefault(movie, []).append(float(1 + (user + movie) % 5))
  return rows


def serialize_row(row, with_label=False) -> bytes:
  """A raw row as the serialized tf.Example ExampleGen writes (a serving request has no label)."""
  import tensorflow as tf
  from transforms import features as f
  spec = raw_feature_spec()
  feature = {}
  for key, values in row.items():
    if key == f.LABEL_KEY and not with_label:
      continue
    if spec[key].dtype == tf.string:
      feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    elif spec[key].dtype == tf.float32:
      feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    else:
      feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope='session')
def tiny_transform(tmp_path_factory):
  """Runs preprocessing_fn for real through tft_beam on tiny rows.

  Returns (transform_output_dir, raw_rows, transformed_rows).
  """
  import tensorflow_transform.beam as tft_beam
  import tensorflow_transform as tft
  from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
  from transforms.preprocessing import preprocessing_fn

  out_dir = tmp_path_factory.mktemp('transform_output')
  rows = make_raw_rows()
  metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_feature_spec()))
  with tft_beam.Context(temp_dir=str(tmp_path_factory.mktemp('tft_tmp')), force_tf_compat_v1=False):
    analyze = tft_beam.AnalyzeAndTransformDataset(preprocessing_fn, output_record_batches=False)
    (transformed, _), transform_fn = (rows, metadata) | analyze
    _ = transform_fn | tft_beam.WriteTransformFn(str(out_dir))
  # TFTransformOutput.raw_feature_spec() reads the raw schema from here, as in TFX.
  metadata_io.write_metadata(metadata, str(out_dir / tft.TFTransformOutput.RAW_METADATA_DIR))
  return str(out_dir), rows, transformed


@pytest.fixture(scope='session')
def redis_url(tmp_path_factory):
  """A real redis-server of its own, on a free port, without persistence; stopped at the end."""
  from serving.feature_store.redis_store import local_server
  with local_server(str(tmp_path_factory.mktemp('redis'))) as url:
    yield url
