"""Transform module: raw MovieLens features to model inputs.

Every output is named in ``features.OUTPUTS`` with the raw features it reads;
tests/test_features.py checks this module against that table. Unknown values
(``features.Feature.unknown``) are filled in one step, ``_fill_unknowns``,
here in the Transform graph, so training, every serving signature and stock
TF Serving treat them alike.

Kept apart from ``trainer/`` on purpose: TFX packages a module file's folder
into the cache key, so a Trainer edit must not re-run Transform.
"""
import tensorflow as tf
import tensorflow_transform as tft

from transforms import features as f

_SECONDS_PER_DAY = 86400
# 1970-01-01 was a Thursday; shifting by 3 days makes Monday day 0.
_EPOCH_WEEKDAY_SHIFT = 3
_xf = f.transformed_name


def _dense(x, default):
  """Returns a rank-1 dense tensor from a [B, 1] dense or a sparse feature.

  Sparse (VarLen) features with no value in a row get ``default``.
  """
  if isinstance(x, tf.SparseTensor):
    x = tf.sparse.to_dense(tf.sparse.reset_shape(x, [x.dense_shape[0], 1]), default_value=default)
  return tf.reshape(x, [-1])


def _ids(x, vocab_filename):
  """Maps strings to integer ids from a vocabulary of the analyzed splits plus OOV buckets."""
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
  ids = tft.compute_and_apply_vocabulary(words, top_k=f.TITLE_VOCAB_SIZE, num_oov_buckets=f.OOV_BUCKETS,
                                         vocab_filename=f.TITLE_VOCAB)
  return ids[:, :f.TITLE_TOKEN_COUNT].to_tensor(default_value=f.HISTORY_PAD_ID, shape=[None, f.TITLE_TOKEN_COUNT])


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
  """Writes the movie catalog vocabulary (f.CATALOG_VOCAB) from the analyzed rows.

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


def _weekday(timestamp):
  """Day of week (0 = Monday) from unix seconds, in UTC."""
  return tf.math.floormod(timestamp // _SECONDS_PER_DAY + _EPOCH_WEEKDAY_SHIFT, 7)


def _rating_year(timestamp):
  """Calendar year of a unix timestamp (UTC), close enough for movie age."""
  return 1970 + tf.cast(tf.cast(timestamp, tf.float64) / (365.2425 * _SECONDS_PER_DAY), tf.int64)


def _fill_unknowns(inputs):
  """The one fill-in-unknowns step: each feature's ``unknown`` becomes what the table says.

  Only the numbers need work here: an unknown string is out of vocabulary
  and an empty list is an empty history by construction, and a live movie
  statistic of 0 is read by the model as "no statistic". ``user_age`` 0
  becomes the mean age of the analyzed splits (an analyzer over the known ages,
  so it comes from the data) and ``timestamp`` 0 the time of the call.
  Returns dense rank-1 ``user_age`` (float) and ``timestamp`` (int64).
  """
  age = tf.cast(_dense(inputs[f.USER_AGE], f.BY_NAME[f.USER_AGE].unknown), tf.float32)
  known = tf.cast(tf.not_equal(age, f.BY_NAME[f.USER_AGE].unknown), tf.float32)
  mean_age = tft.sum(age * known) / tf.maximum(tft.sum(known), 1.0)
  age = tf.where(known > 0, age, mean_age)
  timestamp = _dense(inputs[f.TIMESTAMP], f.BY_NAME[f.TIMESTAMP].unknown)
  now = tf.cast(tf.timestamp(), tf.int64)
  timestamp = tf.where(tf.equal(timestamp, f.BY_NAME[f.TIMESTAMP].unknown), now, timestamp)
  return age, timestamp


# TFX Transform calls this.
def preprocessing_fn(inputs):
  """Builds the transformed features; analyzers run on ``features.ANALYZED_SPLITS`` only.

  Args:
    inputs: raw features keyed by the names in ``transforms.features``.

  Returns:
    Transformed features keyed by ``transformed_name(raw)``, plus the label.
  """
  out = {}
  age, timestamp = _fill_unknowns(inputs)
  user_ids = _dense(inputs[f.USER_ID], '')
  out[_xf(f.USER_ID)] = _ids(user_ids, f.USER_VOCAB)
  out[_xf(f.NEW_USER)] = tf.cast(
      out[_xf(f.USER_ID)] >= tft.experimental.get_vocabulary_size_by_name(f.USER_VOCAB), tf.int64)
  # Ranked by frequency: id 0 is the most rated movie of the analyzed splits.
  movie_ids = _dense(inputs[f.MOVIE_ID], '')
  movie_vocab = tft.vocabulary(movie_ids, vocab_filename=f.MOVIE_VOCAB)
  out[_xf(f.MOVIE_ID)] = tft.apply_vocabulary(movie_ids, movie_vocab, num_oov_buckets=f.OOV_BUCKETS)
  out[_xf(f.MOVIE_POPULARITY)] = _popularity(
      out[_xf(f.MOVIE_ID)], tft.experimental.get_vocabulary_size_by_name(f.MOVIE_VOCAB))
  _catalog(inputs)
  out[_xf(f.HISTORY_MOVIE_IDS)], out[_xf(f.HISTORY_RATINGS)] = _history(
      inputs[f.HISTORY_MOVIE_IDS], inputs[f.HISTORY_RATINGS], movie_vocab)
  out[_xf(f.TITLE_TOKENS)] = _title_tokens(_dense(inputs[f.MOVIE_TITLE], ''))
  out[_xf(f.USER_GENDER)] = _ids(_dense(inputs[f.USER_GENDER], ''), f.GENDER_VOCAB)
  out[_xf(f.USER_OCCUPATION)] = _ids(_dense(inputs[f.USER_OCCUPATION], ''), f.OCCUPATION_VOCAB)

  out[_xf(f.USER_AGE)] = tft.scale_to_z_score(age)
  out[_xf(f.AGE_BUCKET)] = tf.cast(tft.apply_buckets(age, [list(f.AGE_BOUNDARIES)]), tf.int64)

  out[_xf(f.GENRES)] = _multi_hot_genres(inputs[f.GENRES])

  # A movie with no release date (u.item lists one) gets the analyzed splits' mean year,
  # and a flag so the model can tell it apart.
  year_raw = inputs[f.RELEASE_YEAR]
  known = tf.not_equal(_dense(year_raw, -1), -1)
  mean_year = tft.mean(tf.cast(year_raw.values if isinstance(year_raw, tf.SparseTensor) else year_raw, tf.float32))
  year = tf.where(known, tf.cast(_dense(year_raw, -1), tf.float32), mean_year)
  out[_xf(f.RELEASE_YEAR)] = tft.scale_to_z_score(year)
  out[_xf(f.RELEASE_YEAR_KNOWN)] = tf.cast(known, tf.float32)

  out[_xf(f.WEEKDAY)] = _weekday(timestamp)
  out[_xf(f.MOVIE_AGE)] = tft.scale_to_z_score(tf.cast(_rating_year(timestamp), tf.float32) - year)

  # Raw, unscaled: the model blends the mean with its own movie bias by count.
  out[_xf(f.MOVIE_RATING_COUNT)] = tf.cast(_dense(inputs[f.MOVIE_RATING_COUNT], 0), tf.float32)
  out[_xf(f.MOVIE_RATING_MEAN)] = tf.cast(_dense(inputs[f.MOVIE_RATING_MEAN], 0.0), tf.float32)

  out[f.LABEL_KEY] = tf.cast(_dense(inputs[f.LABEL_KEY], 0.0), tf.float32)
  return out
