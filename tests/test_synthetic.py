"""Tests of the synthetic MovieLens generator: format, shape, signal, and ExampleGen on it."""
import collections
import glob
import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from components.movielens_example_gen import SplitConfig
from components.movielens_example_gen import executor
from components.movielens_example_gen import parsing
from components.movielens_example_gen import spec
from components.movielens_example_gen import summary as summary_lib
from components.movielens_example_gen import synthetic
from transforms import features

pytestmark = pytest.mark.unit

# Large enough for the statistics below to be stable, small enough for a second.
_CONFIG = synthetic.SyntheticConfig(num_ratings=30_000, seed=3)


@pytest.fixture(scope='module')
def synthetic_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('synthetic'))
  counts = synthetic.generate(out, _CONFIG)
  return out, counts


def _parse_all(data_dir):
  """Every rating, movie and user through ExampleGen's own parsers."""
  ratings = [parsing.parse_rating_line(n, line)
             for n, line in parsing.read_numbered_lines(os.path.join(data_dir, parsing.U_DATA))]
  movies, bad_movies = parsing.parse_lookup_file(
      parsing.U_ITEM, parsing.read_numbered_lines(os.path.join(data_dir, parsing.U_ITEM)),
      parsing.parse_movie_line)
  users, bad_users = parsing.parse_lookup_file(
      parsing.U_USER, parsing.read_numbered_lines(os.path.join(data_dir, parsing.U_USER)),
      parsing.parse_user_line)
  return ratings, movies, users, bad_movies + bad_users


def _md5(data_dir):
  digest = hashlib.md5()
  for name in sorted(os.listdir(data_dir)):
    with open(os.path.join(data_dir, name), 'rb') as fh:
      digest.update(name.encode() + fh.read())
  return digest.hexdigest()


def test_every_line_parses_and_joins(synthetic_dir):
  data_dir, counts = synthetic_dir
  ratings, movies, users, bad_lookups = _parse_all(data_dir)
  assert not bad_lookups
  bad = [r for r in ratings if isinstance(r, parsing.BadRow)]
  assert not bad, bad[:3]
  assert len(ratings) == _CONFIG.num_ratings == counts['ratings']
  assert len(movies) == counts['movies'] and len(users) == counts['users']
  assert all(parsing.check_join(r, movies, users) is None for r in ratings)
  pairs = collections.Counter((r.user_id, r.movie_id) for r in ratings)
  assert max(pairs.values()) == 1, 'a (user, movie) pair is rated twice'
  per_user = collections.Counter(r.user_id for r in ratings)
  assert min(per_user.values()) >= _CONFIG.min_ratings_per_user
  assert len(per_user) == counts['users'], 'every user in u.user rates something'
  low, high = features.TIMESTAMP_RANGE
  assert all(synthetic.FIRST_TIMESTAMP <= r.timestamp <= synthetic.LAST_TIMESTAMP for r in ratings)
  assert low <= synthetic.FIRST_TIMESTAMP and synthetic.LAST_TIMESTAMP <= high
  assert {r.rating for r in ratings} == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_side_files_match_grouplens_layout(synthetic_dir, ml100k_dir):
  data_dir, counts = synthetic_dir
  for name in ('u.genre', 'u.occupation'):
    with open(os.path.join(data_dir, name), 'rb') as mine, open(ml100k_dir / name, 'rb') as theirs:
      assert mine.read() == theirs.read(), name
  with open(os.path.join(data_dir, 'u.info')) as fh:
    assert fh.read().split('\n')[:3] == [f'{counts["users"]} users', f'{counts["movies"]} items',
                                         f'{counts["ratings"]} ratings']
  with open(os.path.join(data_dir, parsing.U_ITEM), 'rb') as fh:
    raw = fh.read()
  # latin-1, as GroupLens: accented titles are single bytes, never UTF-8 pairs.
  assert b'\xe9' in raw or b'\xf1' in raw
  assert b'\xc3' not in raw
  _, movies, users, _ = _parse_all(data_dir)
  assert sum(m.release_year is None for m in movies.values()) < 0.01 * len(movies)
  occupations = {u.occupation for u in users.values()}
  assert occupations <= {name for name, _ in synthetic.OCCUPATIONS} and len(occupations) > 10
  low, high = features.AGE_RANGE
  assert all(low <= u.age <= high for u in users.values())
  women = sum(u.gender == 'F' for u in users.values()) / len(users)
  assert 0.15 < women < 0.45


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
  config = synthetic.SyntheticConfig(num_ratings=3_000, seed=7)
  synthetic.generate(str(tmp_path / 'a'), config)
  synthetic.generate(str(tmp_path / 'b'), config)
  synthetic.generate(str(tmp_path / 'c'), synthetic.SyntheticConfig(num_ratings=3_000, seed=8))
  assert _md5(tmp_path / 'a') == _md5(tmp_path / 'b')
  assert _md5(tmp_path / 'a') != _md5(tmp_path / 'c')


def test_popularity_is_heavy_tailed(synthetic_dir):
  data_dir, counts = synthetic_dir
  ratings = np.loadtxt(os.path.join(data_dir, parsing.U_DATA), dtype=np.int64)
  per_movie = np.sort(np.bincount(ratings[:, 1], minlength=counts['movies'] + 1)[1:])[::-1]
  top_tenth = per_movie[:len(per_movie) // 10].sum() / per_movie.sum()
  # ML-100K: the top 10% of movies hold 43% of the ratings; uniform would be 10%.
  assert 0.3 < top_tenth < 0.6
  # Log-log rank-frequency slope over the head, as a power law has.
  ranks = np.arange(1, 101)
  slope = np.polyfit(np.log(ranks), np.log(per_movie[:100]), 1)[0]
  assert slope < -0.3


def _bias_predictions(train, test, shrink=5.0):
  mean = train[:, 2].mean()
  def biases(key_col, residual):
    sums = np.bincount(train[:, key_col], weights=residual)
    n = np.bincount(train[:, key_col])
    return sums / (n + shrink)
  movie_bias = biases(1, train[:, 2] - mean)
  movie_of = lambda rows: np.take(movie_bias, rows[:, 1], mode='clip')  # noqa: E731
  user_bias = biases(0, train[:, 2] - mean - movie_of(train))
  user_of = lambda rows: np.take(user_bias, rows[:, 0], mode='clip')  # noqa: E731
  return mean + movie_of(test) + user_of(test), mean, movie_of, user_of


def test_ratings_carry_learnable_signal(synthetic_dir):
  """Biases beat the global mean, and genre taste beats biases: there is something to learn."""
  data_dir, _ = synthetic_dir
  ratings = np.loadtxt(os.path.join(data_dir, parsing.U_DATA), dtype=np.int64)
  rng = np.random.default_rng(0)
  is_test = rng.random(len(ratings)) < 0.2
  train, test = ratings[~is_test], ratings[is_test]
  rmse = lambda pred: float(np.sqrt(np.mean((pred - test[:, 2]) ** 2)))  # noqa: E731
  bias_pred, mean, movie_of, user_of = _bias_predictions(train, test)
  assert rmse(bias_pred) < rmse(np.full(len(test), mean)) - 0.1

  # A user's mean residual on each genre, from u.item's genre flags.
  _, movies, _, _ = _parse_all(data_dir)
  genre_index = {name: i for i, name in enumerate(features.GENRE_NAMES)}
  flags = np.zeros((max(int(k) for k in movies) + 1, len(genre_index)))
  for movie_id, movie in movies.items():
    flags[int(movie_id), [genre_index[g] for g in movie.genres]] = 1
  residual = train[:, 2] - mean - movie_of(train) - user_of(train)
  users = ratings[:, 0].max() + 1
  taste = np.zeros((users, len(genre_index)))
  seen = np.zeros((users, len(genre_index)))
  np.add.at(taste, train[:, 0], flags[train[:, 1]] * residual[:, None])
  np.add.at(seen, train[:, 0], flags[train[:, 1]])
  taste /= seen + 5.0
  genre_pred = (taste[test[:, 0]] * flags[test[:, 1]]).sum(1) / np.maximum(flags[test[:, 1]].sum(1), 1)
  assert rmse(bias_pred + genre_pred) < rmse(bias_pred) - 0.005


def test_sizes_scale_and_reject_impossible_shapes():
  assert synthetic.SyntheticConfig(num_ratings=100_000).sizes() == (943, 1682)
  users, movies = synthetic.SyntheticConfig(num_ratings=1_000_000).sizes()
  assert users == 9430 and movies == round(1682 * 10 ** 0.5)
  with pytest.raises(ValueError, match='exceed'):
    synthetic.SyntheticConfig(num_ratings=1_000, num_users=100).sizes()
  with pytest.raises(ValueError, match='distinct'):
    synthetic.SyntheticConfig(num_ratings=100_000, num_users=50, num_movies=100).sizes()


def test_cli_writes_the_requested_size(tmp_path):
  assert synthetic.main(['--ratings', '2500', '--out-dir', str(tmp_path), '--seed', '1']) == 0
  with open(tmp_path / parsing.U_DATA) as fh:
    assert sum(1 for _ in fh) == 2500


def test_example_gen_reads_it_without_quarantine(tmp_path):
  """The real executor: every synthetic row becomes an example, in all three splits."""
  data_dir = str(tmp_path / 'data')
  synthetic.generate(data_dir, synthetic.SyntheticConfig(num_ratings=4_000, seed=5))
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'examples')
  quarantine = spec.QuarantinedRows()
  quarantine.uri = str(tmp_path / 'quarantine')
  executor.Executor().Do({}, {spec.EXAMPLES_KEY: [examples], spec.QUARANTINE_KEY: [quarantine]}, {
      spec.DATA_DIR_KEY: data_dir, spec.SPLIT_CONFIG_KEY: SplitConfig().to_json(),
      spec.MAX_BAD_FRACTION_KEY: 0.0})
  with open(os.path.join(quarantine.uri, summary_lib.SUMMARY_FILE)) as fh:
    summary = json.load(fh)
  assert summary['rows_read'] == 4_000 and summary['rows_quarantined'] == 0
  per_split = summary['counts_per_split']
  assert sum(per_split.values()) == 4_000 and min(per_split.values()) > 0
  files = glob.glob(os.path.join(examples.uri, 'Split-test', '*.gz'))
  test_examples = [tf.train.Example.FromString(r) for r in
                   tf.data.TFRecordDataset(files, 'GZIP').as_numpy_iterator()]
  assert len(test_examples) == per_split['test']
  assert all(e.features.feature[features.MOVIE_TITLE].bytes_list.value for e in test_examples)
  history_lengths = [len(e.features.feature[features.HISTORY_MOVIE_IDS].bytes_list.value)
                     for e in test_examples]
  # Users rate at least 20 movies, so most ratings come with a history.
  assert np.mean(history_lengths) > 5
