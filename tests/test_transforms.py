"""preprocessing_fn, run for real through tft_beam on tiny generated rows."""
import datetime

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from transforms import features as f

pytestmark = pytest.mark.unit
xf = f.transformed_name


def test_ids_come_from_train_vocabulary_with_oov(tiny_transform):
  out_dir, rows, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  n_users = output.vocabulary_size_by_name(f.USER_VOCAB)
  assert n_users == len({r[f.USER_ID][0] for r in rows})
  ids = [t[xf(f.USER_ID)] for t in transformed]
  assert min(ids) >= 0 and max(ids) < n_users  # every train user is in the vocabulary
  # The same raw user always maps to the same id.
  by_user = {}
  for raw, t in zip(rows, transformed):
    assert by_user.setdefault(raw[f.USER_ID][0], t[xf(f.USER_ID)]) == t[xf(f.USER_ID)]


def test_unseen_ids_map_to_the_oov_bucket(tiny_transform, tmp_path):
  out_dir, rows, _ = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  layer = output.transform_features_layer()
  raw = {f.USER_ID: tf.constant([[b'0'], [b'never-seen']]), f.MOVIE_ID: tf.constant([[b'1'], [b'999999']])}
  got = layer(raw)
  n_users = output.vocabulary_size_by_name(f.USER_VOCAB)
  n_movies = output.vocabulary_size_by_name(f.MOVIE_VOCAB)
  assert got[xf(f.USER_ID)].numpy()[1] == n_users  # the first OOV bucket
  assert got[xf(f.MOVIE_ID)].numpy()[1] == n_movies
  assert got[xf(f.USER_ID)].numpy()[0] < n_users


def test_genres_are_multi_hot_in_u_genre_order(tiny_transform):
  _, rows, transformed = tiny_transform
  for raw, t in zip(rows, transformed):
    expected = np.array([float(name.encode() in raw[f.GENRES]) for name in f.GENRE_NAMES])
    np.testing.assert_array_equal(np.asarray(t[xf(f.GENRES)]), expected)


def test_missing_release_year_is_imputed_and_flagged(tiny_transform):
  _, rows, transformed = tiny_transform
  flags = {bool(raw[f.RELEASE_YEAR]): t[xf(f.RELEASE_YEAR_KNOWN)] for raw, t in zip(rows, transformed)}
  assert flags == {True: 1.0, False: 0.0}
  missing = [t[xf(f.RELEASE_YEAR)] for raw, t in zip(rows, transformed) if not raw[f.RELEASE_YEAR]]
  # Imputed with the train mean, so its z-score is 0.
  assert np.allclose(missing, 0.0, atol=1e-5)


def test_weekday_matches_python_datetime(tiny_transform):
  _, rows, transformed = tiny_transform
  for raw, t in zip(rows, transformed):
    when = datetime.datetime.fromtimestamp(raw[f.TIMESTAMP][0], tz=datetime.timezone.utc)
    assert t[xf(f.WEEKDAY)] == when.weekday()


def test_age_buckets_and_label_pass_through(tiny_transform):
  _, rows, transformed = tiny_transform
  for raw, t in zip(rows, transformed):
    assert t[xf(f.AGE_BUCKET)] == int(np.searchsorted(f.AGE_BOUNDARIES, raw[f.USER_AGE][0], side='right'))
    assert t[f.LABEL_KEY] == pytest.approx(raw[f.RATING][0])


def test_new_user_flags_users_outside_the_train_vocabulary(tiny_transform):
  out_dir, _, transformed = tiny_transform
  assert {t[xf(f.NEW_USER)] for t in transformed} == {0}  # every train user is known
  layer = tft.TFTransformOutput(out_dir).transform_features_layer()
  got = layer({f.USER_ID: tf.constant([[b'0'], [b'never-seen']])})
  assert got[xf(f.NEW_USER)].numpy().tolist() == [0, 1]


def test_popularity_buckets_follow_train_rating_counts(tiny_transform):
  out_dir, rows, transformed = tiny_transform
  counts = {}
  for raw in rows:
    counts[raw[f.MOVIE_ID][0]] = counts.get(raw[f.MOVIE_ID][0], 0) + 1
  bucket = {raw[f.MOVIE_ID][0]: t[xf(f.MOVIE_POPULARITY)] for raw, t in zip(rows, transformed)}
  ranked = sorted(counts, key=lambda m: (-counts[m], m))
  # Head movies are rated at least as often as torso ones, torso as tail ones.
  assert bucket[ranked[0]] == 0 and bucket[ranked[-1]] == 2
  assert all(counts[a] >= counts[b] for a in counts for b in counts if bucket[a] < bucket[b])
  layer = tft.TFTransformOutput(out_dir).transform_features_layer()
  assert layer({f.MOVIE_ID: tf.constant([[b'999999']])})[xf(f.MOVIE_POPULARITY)].numpy().tolist() == [2]


def test_catalog_lists_each_train_movie_once_with_its_features(tiny_transform):
  out_dir, rows, _ = tiny_transform
  lines = tft.TFTransformOutput(out_dir).vocabulary_by_name(f.CATALOG_VOCAB)
  catalog = {}
  for line in lines:
    movie_id, title, genres, year = line.decode().split(f.CATALOG_SEPARATOR)
    assert movie_id not in catalog
    catalog[movie_id] = (title, genres.split('|'), year)
  for raw in rows:
    title, genres, year = catalog[raw[f.MOVIE_ID][0].decode()]
    assert title == raw[f.MOVIE_TITLE][0].decode()
    assert genres == [g.decode() for g in raw[f.GENRES]]
    assert year == (str(raw[f.RELEASE_YEAR][0]) if raw[f.RELEASE_YEAR] else '')
