"""Transform module: raw MovieLens features to model inputs.

Kept apart from ``trainer/`` on purpose: TFX packages a module file's folder
into the cache key, so a Trainer edit must not re-run Transform.
"""
import tensorflow as tf
import tensorflow_transform as tft

from transforms import features as f

_SECONDS_PER_HOUR = 3600
_SECONDS_PER_DAY = 86400
# 1970-01-01 was a Thursday; shifting by 3 days makes Monday day 0.
_EPOCH_WEEKDAY_SHIFT = 3
# Titles are short: 8 words cover 99% of ML-100K's; 5,000 words cover them all.
TITLE_TOKENS = 8
TITLE_VOCAB_SIZE = 5000


def _dense(x, default):
  """Returns a rank-1 dense tensor from a [B, 1] dense or a sparse feature.

  Sparse (VarLen) features with no value in a row get ``default``.
  """
  if isinstance(x, tf.SparseTensor):
    x = tf.sparse.to_dense(tf.sparse.reset_shape(x, [x.dense_shape[0], 1]), default_value=default)
  return tf.reshape(x, [-1])


def _ids(x, vocab_filename):
  """Maps strings to integer ids from a train-split vocabulary plus OOV buckets."""
  return tft.compute_and_apply_vocabulary(x, num_oov_buckets=f.OOV_BUCKETS, vocab_filename=vocab_filename)


def _last(x, length: int, default):
  """The last ``length`` values of each row of a sparse feature, padded at the end.

  Returns:
    (dense [B, length], mask [B, length] bool).
  """
  ragged = tf.RaggedTensor.from_sparse(x)[:, -length:]
  mask = tf.sequence_mask(ragged.row_lengths(), length)
  return ragged.to_tensor(default_value=default, shape=[None, length]), mask


def _history(movie_ids, ratings, movie_vocab):
  """The point-in-time history as padded movie vocabulary ids and ratings.

  The same graph runs on training examples (history from ExampleGen) and on
  serving requests (history sent by the client), so the two cannot skew.
  Padding is HISTORY_PAD_ID with rating 0.
  """
  ids, mask = _last(movie_ids, f.HISTORY_LENGTH, '')
  values, _ = _last(ratings, f.HISTORY_LENGTH, 0.0)
  vocab_ids = tft.apply_vocabulary(ids, movie_vocab, num_oov_buckets=f.OOV_BUCKETS)
  pad = tf.constant(f.HISTORY_PAD_ID, tf.int64)
  return tf.where(mask, vocab_ids, pad), tf.where(mask, tf.cast(values, tf.float32), 0.0)


def _title_tokens(titles):
  """Lower-case word ids of each title (the year token included), padded with HISTORY_PAD_ID."""
  words = tf.strings.split(tf.strings.lower(titles))
  ids = tft.compute_and_apply_vocabulary(words, top_k=TITLE_VOCAB_SIZE, num_oov_buckets=f.OOV_BUCKETS,
                                         vocab_filename=f.TITLE_VOCAB)
  return ids[:, :TITLE_TOKENS].to_tensor(default_value=f.HISTORY_PAD_ID, shape=[None, TITLE_TOKENS])


def _multi_hot_genres(genres):
  """Returns a [B, len(GENRE_NAMES)] float multi-hot matrix from sparse genre names."""
  dense = tf.sparse.to_dense(genres, default_value='') if isinstance(genres, tf.SparseTensor) else genres
  names = tf.constant(f.GENRE_NAMES)
  hits = tf.equal(tf.expand_dims(dense, -1), names)  # [B, n_genres_in_row, 19]
  return tf.cast(tf.reduce_any(hits, axis=1), tf.float32)


def _popularity(movie_ids, vocab_size):
  """0 head, 1 torso, 2 tail from frequency-ranked movie ids (OOV is tail)."""
  rank = tf.cast(movie_ids, tf.float32) / tf.cast(vocab_size, tf.float32)
  edges = tf.constant(f.POPULARITY_EDGES, tf.float32)
  return tf.reduce_sum(tf.cast(rank[:, None] >= edges[None, :], tf.int64), axis=1)


def _catalog(inputs):
  """Writes the movie catalog vocabulary (f.CATALOG_VOCAB) from train rows.

  It is an asset of the Transform graph, so a model that carries the graph
  carries its catalog; the trainer reads it to build top-K recommendations.
  """
  genres = inputs[f.GENRES]
  genres = tf.RaggedTensor.from_sparse(genres) if isinstance(genres, tf.SparseTensor) else genres
  year = _dense(inputs[f.RELEASE_YEAR], -1)
  year = tf.where(year > 0, tf.strings.as_string(year), '')
  line = tf.strings.join([
      _dense(inputs[f.MOVIE_ID], ''), _dense(inputs[f.MOVIE_TITLE], ''),
      tf.strings.reduce_join(genres, axis=1, separator='|'), year], separator=f.CATALOG_SEPARATOR)
  tft.vocabulary(line, vocab_filename=f.CATALOG_VOCAB)


def _time_features(timestamp):
  """Hour of day (0-23) and day of week (0 = Monday) from unix seconds, in UTC."""
  hour = tf.math.floormod(timestamp // _SECONDS_PER_HOUR, 24)
  weekday = tf.math.floormod(timestamp // _SECONDS_PER_DAY + _EPOCH_WEEKDAY_SHIFT, 7)
  return hour, weekday


def _rating_year(timestamp):
  """Calendar year of a unix timestamp (UTC), close enough for movie age."""
  return 1970 + tf.cast(tf.cast(timestamp, tf.float64) / (365.2425 * _SECONDS_PER_DAY), tf.int64)


# TFX Transform calls this.
def preprocessing_fn(inputs):
  """Builds the transformed features; analyzers run on the train split only.

  Args:
    inputs: raw features keyed by the names in ``transforms.features``.

  Returns:
    Transformed features keyed by ``transformed_name(raw)``, plus the label.
  """
  out = {}
  out[f.transformed_name(f.USER_ID)] = _ids(_dense(inputs[f.USER_ID], ''), f.USER_VOCAB)
  out[f.transformed_name(f.NEW_USER)] = tf.cast(
      out[f.transformed_name(f.USER_ID)] >= tft.experimental.get_vocabulary_size_by_name(f.USER_VOCAB), tf.int64)
  # Ranked by frequency: id 0 is the most rated train movie.
  movie_vocab = tft.vocabulary(_dense(inputs[f.MOVIE_ID], ''), vocab_filename=f.MOVIE_VOCAB)
  out[f.transformed_name(f.MOVIE_ID)] = tft.apply_vocabulary(
      _dense(inputs[f.MOVIE_ID], ''), movie_vocab, num_oov_buckets=f.OOV_BUCKETS)
  out[f.transformed_name(f.MOVIE_POPULARITY)] = _popularity(
      out[f.transformed_name(f.MOVIE_ID)], tft.experimental.get_vocabulary_size_by_name(f.MOVIE_VOCAB))
  _catalog(inputs)
  history_ids, history_ratings = _history(
      inputs[f.HISTORY_MOVIE_IDS], inputs[f.HISTORY_RATINGS], movie_vocab)
  out[f.transformed_name(f.HISTORY_MOVIE_IDS)] = history_ids
  out[f.transformed_name(f.HISTORY_RATINGS)] = history_ratings
  out[f.transformed_name('title_tokens')] = _title_tokens(_dense(inputs[f.MOVIE_TITLE], ''))
  out[f.transformed_name(f.USER_GENDER)] = _ids(_dense(inputs[f.USER_GENDER], ''), f.GENDER_VOCAB)
  out[f.transformed_name(f.USER_OCCUPATION)] = _ids(_dense(inputs[f.USER_OCCUPATION], ''), f.OCCUPATION_VOCAB)
  zip3 = tf.strings.substr(_dense(inputs[f.USER_ZIP], ''), 0, 3)
  out[f.transformed_name(f.USER_ZIP)] = _ids(zip3, f.ZIP_VOCAB)

  age = tf.cast(_dense(inputs[f.USER_AGE], 0), tf.float32)
  out[f.transformed_name(f.USER_AGE)] = tft.scale_to_z_score(age)
  out[f.transformed_name(f.AGE_BUCKET)] = tf.cast(
      tft.apply_buckets(age, [list(f.AGE_BOUNDARIES)]), tf.int64)

  out[f.transformed_name(f.GENRES)] = _multi_hot_genres(inputs[f.GENRES])

  # A movie with no release date (u.item lists one) gets the train mean year,
  # and a flag so the model can tell it apart.
  year_raw = inputs[f.RELEASE_YEAR]
  known = tf.not_equal(_dense(year_raw, -1), -1)
  mean_year = tft.mean(tf.cast(year_raw.values if isinstance(year_raw, tf.SparseTensor) else year_raw, tf.float32))
  year = tf.where(known, tf.cast(_dense(year_raw, -1), tf.float32), mean_year)
  out[f.transformed_name(f.RELEASE_YEAR)] = tft.scale_to_z_score(year)
  out[f.transformed_name('release_year_known')] = tf.cast(known, tf.float32)

  timestamp = _dense(inputs[f.TIMESTAMP], 0)
  hour, weekday = _time_features(timestamp)
  out[f.transformed_name('hour')] = hour
  out[f.transformed_name(f.WEEKDAY)] = weekday
  movie_age = tf.cast(_rating_year(timestamp), tf.float32) - year
  out[f.transformed_name('movie_age')] = tft.scale_to_z_score(movie_age)

  # Raw, unscaled: the model blends the mean with its own movie bias by count.
  out[f.transformed_name(f.MOVIE_RATING_COUNT)] = tf.cast(_dense(inputs[f.MOVIE_RATING_COUNT], 0), tf.float32)
  out[f.transformed_name(f.MOVIE_RATING_MEAN)] = tf.cast(_dense(inputs[f.MOVIE_RATING_MEAN], 0.0), tf.float32)

  out[f.LABEL_KEY] = tf.cast(_dense(inputs[f.LABEL_KEY], 0.0), tf.float32)
  return out
