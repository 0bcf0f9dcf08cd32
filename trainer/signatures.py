"""Serving signatures; every one runs the Transform graph inside the model.

- ``serving_default``: raw feature values, one tensor per feature, as JSON
  gives them to TF Serving's REST API (``{"instances": [{"user_id": "196",
  "movie_id": "242"}]}``). Only the raw features the model reads are asked for.
  Lists (genres, the user's history) come padded at the end with "";
  ``history_ratings`` pairs up with ``history_movie_ids``; an unknown
  ``release_year`` is 0.
- ``serving_tf_example``: serialized ``tf.Example`` protos (``examples``).
- ``transform_features``: serialized examples to transformed features, for
  the Evaluator and for debugging skew.
- ``recommend``: one user per row (the user features the model reads, and
  the user's recent ratings, padded like ``serving_default``) and ``k``; it
  scores every movie of the catalog Transform wrote (f.CATALOG_VOCAB) with
  the model's rating, drops the movies in the given history, and returns the
  top ``k`` movie ids, titles and scores. Brute force in plain TF ops, so
  stock TF Serving runs it (it has no ScaNN ops).

Defaults a client may send for what it does not know: ``""`` for any string
(it maps to the out-of-vocabulary bucket), ``user_age`` 0 (the signature
uses DEFAULT_USER_AGE), ``timestamp`` 0 (the time of the request), an empty
history (``[""]`` and ``[0]``).
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from contract import names
from transforms import features as f

RECOMMEND, MOVIE_IDS, TITLES, SCORES, K, MAX_K = (
    names.RECOMMEND, names.MOVIE_IDS, names.TITLES, names.SCORES, names.K, names.MAX_K)
# What a recommend request says about the user; every other raw feature a
# model reads describes the candidate movie. The catalog gives the movie's id,
# title, genres and year; a movie feature it lacks (a live statistic such as
# movie_rating_count) gets the value a request sends when it does not know it:
# 0, or "".
REQUEST_FEATURES = (f.USER_ID, f.USER_AGE, f.USER_GENDER, f.USER_OCCUPATION, f.USER_ZIP, f.TIMESTAMP,
                    f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS)
# Used when a request's user_age is 0 (unknown): the median age in ML-100K's u.user.
DEFAULT_USER_AGE = 31


def raw_spec_without_label(tf_transform_output: tft.TFTransformOutput):
  """The raw feature spec a request or a tf.Example at serving time has: no label."""
  spec = tf_transform_output.raw_feature_spec()
  spec.pop(f.LABEL_KEY, None)
  return spec


def _raw_tensor_spec(name: str, feature_spec) -> tf.TensorSpec:
  """The JSON-friendly input of one raw feature.

  One value per instance for scalar features; a list padded at the end with
  '' (or, for a list aligned with an id list, anything) for multi-valued
  ones; a single int, 0 for unknown, for optional ints (release_year).
  """
  if isinstance(feature_spec, tf.io.VarLenFeature) and feature_spec.dtype != tf.int64:
    return tf.TensorSpec(shape=[None, None], dtype=feature_spec.dtype, name=name)
  return tf.TensorSpec(shape=[None], dtype=feature_spec.dtype, name=name)


def _to_parsed(inputs: Dict[str, tf.Tensor], raw_spec) -> Dict[str, tf.Tensor]:
  """Turns raw-signature inputs into what tf.io.parse_example would give Transform."""
  lengths = {}
  for name, value in inputs.items():
    if isinstance(raw_spec[name], tf.io.VarLenFeature) and value.dtype == tf.string:
      lengths[name] = tf.reduce_sum(tf.cast(tf.not_equal(value, ''), tf.int64), axis=1)
  parsed = {}
  for name, value in inputs.items():
    spec = raw_spec[name]
    if not isinstance(spec, tf.io.VarLenFeature):
      parsed[name] = tf.expand_dims(value, -1)
    elif value.shape.rank == 1:  # optional int: 0 is unknown
      parsed[name] = tf.RaggedTensor.from_tensor(value[:, None], lengths=tf.cast(value > 0, tf.int64)).to_sparse()
    else:
      row_lengths = lengths.get(name, lengths.get(f.ALIGNED_WITH.get(name)))
      parsed[name] = tf.RaggedTensor.from_tensor(value, lengths=row_lengths).to_sparse()
  return parsed


def make_serving_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                            raw_features: Sequence[str]) -> Dict[str, tf.types.experimental.ConcreteFunction]:
  """Builds the three signatures for ``model``.

  Args:
    model: a model whose call takes transformed features and returns [B, 1].
    tf_transform_output: the Transform output the model was trained on.
    raw_features: raw feature names ``serving_default`` takes; Transform
      outputs that need other raw features are pruned, so the model must only
      read outputs derived from these.

  Returns:
    Signature name to concrete function, for ``tf.saved_model.save``.
  """
  # Tracked as an attribute so the Transform assets are saved with the model.
  model.tft_layer = tf_transform_output.transform_features_layer()
  raw_spec = raw_spec_without_label(tf_transform_output)

  def predict(raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    transformed = model.tft_layer(raw)
    return {names.PREDICTION_KEY: model(transformed)}

  @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name='examples')])
  def serve_tf_examples(serialized):
    return predict(tf.io.parse_example(serialized, raw_spec))

  @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name='examples')])
  def transform_features(serialized):
    return model.tft_layer(tf.io.parse_example(serialized, tf_transform_output.raw_feature_spec()))

  raw_inputs = {name: _raw_tensor_spec(name, raw_spec[name]) for name in raw_features}

  @tf.function(input_signature=[raw_inputs])
  def serve_raw(inputs):
    return predict(_to_parsed(inputs, raw_spec))

  return {
      'serving_default': serve_raw.get_concrete_function(),
      'serving_tf_example': serve_tf_examples.get_concrete_function(),
      'transform_features': transform_features.get_concrete_function(),
      RECOMMEND: _make_recommend(model, tf_transform_output, raw_features, raw_spec),
  }


def read_catalog(tf_transform_output: tft.TFTransformOutput) -> Dict[str, np.ndarray]:
  """The catalog as raw-signature inputs: one row per train movie, most rated first.

  Returns:
    movie_id, movie_title [N] bytes; genres [N, G] bytes padded with b'';
    release_year [N] int64, 0 when unknown.
  """
  rows = [line.split(f.CATALOG_SEPARATOR.encode())
          for line in tf_transform_output.vocabulary_by_name(f.CATALOG_VOCAB)]
  genres = [g.split(b'|') if g else [] for _, _, g, _ in rows]
  width = max([len(g) for g in genres] + [1])
  return {
      f.MOVIE_ID: np.array([r[0] for r in rows], dtype=object),
      f.MOVIE_TITLE: np.array([r[1] for r in rows], dtype=object),
      f.GENRES: np.array([g + [b''] * (width - len(g)) for g in genres], dtype=object).reshape(len(rows), width),
      f.RELEASE_YEAR: np.array([int(r[3]) if r[3] else 0 for r in rows], dtype=np.int64),
  }


def recommend_input_names(raw_features: Sequence[str]) -> List[str]:
  """The request inputs of ``recommend`` for a model reading ``raw_features``.

  The user features the model reads, the history lists (always: they say
  what to leave out), and k.
  """
  names = [n for n in raw_features if n in REQUEST_FEATURES]
  names += [n for n in (f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS) if n not in names]
  return names + [K]


def _example_request(specs: Dict[str, tf.TensorSpec]) -> Dict[str, tf.Tensor]:
  """One row of the defaults a client may send for every request input."""
  example = {}
  for name, spec in specs.items():
    shape = [1] * len(spec.shape)
    example[name] = tf.zeros(shape, spec.dtype) if spec.dtype != tf.string else tf.fill(shape, '')
  return example


def _computable(tft_layer, raw_spec, inputs: Dict[str, tf.Tensor]) -> set:
  """The Transform outputs that ``inputs`` alone determine (Transform prunes the rest)."""
  return set(tft_layer(_to_parsed(inputs, raw_spec)))


def _fewest(tft_layer, raw_spec, keys: set, needed: Dict[str, tf.Tensor],
            given: Dict[str, tf.Tensor]) -> List[str]:
  """Drops features of ``needed`` one at a time while ``keys`` stay computable with ``given``."""
  kept = dict(needed)
  for name in list(needed):
    trial = {n: v for n, v in kept.items() if n != name}
    if keys <= _computable(tft_layer, raw_spec, {**trial, **given}):
      kept = trial
  return list(kept)


class _Plan:
  """Where each Transform output a recommendation needs comes from.

  Transform prunes the outputs whose raw inputs were not given, so feeding
  each side alone tells which outputs it determines: candidate-only outputs
  are computed once at export; request-only outputs once per request row;
  outputs that need both (a movie's age at rating time) per pair of a
  request row and a distinct value of the few candidate features they read
  (70-odd release years, not 1,682 movies), then gathered per movie.
  Transform runs row by row at serving time, so equal inputs give equal
  outputs and the gather changes no value.
  """

  def __init__(self, tft_layer, raw_spec, request: Dict[str, tf.Tensor], catalog: Dict[str, tf.Tensor]):
    one_movie = {k: v[:1] for k, v in catalog.items()}
    self.candidate_keys = _computable(tft_layer, raw_spec, catalog)
    self.request_keys = _computable(tft_layer, raw_spec, request)
    every_key = _computable(tft_layer, raw_spec, {**request, **one_movie})
    self.pair_keys = every_key - self.candidate_keys - self.request_keys
    self.pair_request_inputs, self.pair_candidate_inputs = [], []
    if self.pair_keys:
      self.pair_request_inputs = _fewest(tft_layer, raw_spec, self.pair_keys, request, one_movie)
      self.pair_candidate_inputs = _fewest(
          tft_layer, raw_spec, self.pair_keys, one_movie, {n: request[n] for n in self.pair_request_inputs})


def _candidates(catalog: Dict[str, np.ndarray], raw_features: Sequence[str], raw_spec) -> Dict[str, np.ndarray]:
  """Every candidate feature the model reads, one row per catalog movie, as raw-signature inputs."""
  n = len(catalog[f.MOVIE_ID])
  out = {}
  for name in raw_features:
    if name in REQUEST_FEATURES:
      continue
    if name in catalog:
      out[name] = catalog[name]
    else:
      spec = _raw_tensor_spec(name, raw_spec[name])
      shape = (n,) if spec.shape.rank == 1 else (n, 1)
      out[name] = np.full(shape, b'', dtype=object) if spec.dtype == tf.string else np.zeros(
          shape, spec.dtype.as_numpy_dtype)
  return out


def _distinct_rows(catalog: Dict[str, np.ndarray], names: Sequence[str],
                   n: int) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
  """The distinct rows of ``catalog`` over ``names``, and each of the ``n`` movies' index among them."""
  keys = [tuple(tuple(np.atleast_1d(catalog[name][i]).tolist()) for name in names) for i in range(n)]
  first = {}
  for i, key in enumerate(keys):
    first.setdefault(key, i)
  rows = np.array(sorted(first.values()))
  position = {keys[i]: j for j, i in enumerate(rows)}
  return {n: catalog[n][rows] for n in names}, np.array([position[key] for key in keys], dtype=np.int64)


def _seen(index: tf.lookup.StaticHashTable, history: tf.Tensor, row_of_id: np.ndarray) -> tf.Tensor:
  """bool [B, catalog rows]: which catalog movies are in each request's history ([B, T] ids).

  One hash lookup per history entry and a scatter, so the cost grows with
  the history, not with history x catalog as comparing strings would (that
  was 1 ms per request at 1,682 movies and 50 ratings). Ids outside the
  catalog and "" padding match nothing.
  """
  positions = index.lookup(history)  # [B, T], -1 where unknown
  known = positions >= 0
  shape = tf.shape(positions, out_type=tf.int64)
  rows = tf.broadcast_to(tf.range(shape[0])[:, None], shape)
  cells = tf.stack([tf.boolean_mask(rows, known), tf.boolean_mask(positions, known)], axis=1)
  marked = tf.scatter_nd(cells, tf.ones_like(cells[:, 0], tf.int32), tf.stack([shape[0], index.size()]))
  return tf.gather(marked > 0, tf.constant(row_of_id, tf.int64), axis=1)


def _make_recommend(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                    raw_features: Sequence[str], raw_spec) -> tf.types.experimental.ConcreteFunction:
  """The ``recommend`` signature: brute-force top-K over the catalog.

  A model with retrieval towers (``query_embeddings``, as the multitask
  model has) scores by its towers: the candidates' vectors are computed once
  here and saved as constants, and a call costs one query-tower pass and one
  [B, d] x [d, movies] product. Any other rating model scores by predicted
  rating: the candidates' Transform outputs are computed once here, by the
  model's own Transform graph, and saved as constants; the request's are
  computed per call and repeated for each candidate.
  """
  catalog_np = read_catalog(tf_transform_output)
  candidates_np = _candidates(catalog_np, raw_features, raw_spec)
  catalog = {k: tf.constant(v) for k, v in candidates_np.items()}
  n_movies = len(catalog_np[f.MOVIE_ID])
  names = recommend_input_names(raw_features)
  specs = {n: _raw_tensor_spec(n, raw_spec[n]) for n in names if n != K}
  specs[K] = tf.TensorSpec(shape=[None], dtype=tf.int32, name=K)
  user_specs = {n: s for n, s in specs.items() if n != K}
  plan = _Plan(model.tft_layer, raw_spec,
               {n: v for n, v in _example_request(user_specs).items() if n in raw_features}, catalog)
  # Eager tensors would be captured by reference; numpy becomes graph constants.
  candidate_features = {k: v.numpy() for k, v in model.tft_layer(_to_parsed(catalog, raw_spec)).items()
                        if k in plan.candidate_keys}
  towers = hasattr(model, 'query_embeddings')
  if towers:
    movie_key = f.transformed_name(f.MOVIE_ID)
    candidate_vectors = model.candidate_embeddings({movie_key: tf.constant(candidate_features[movie_key])}).numpy()
  pair_catalog, pair_index = _distinct_rows(candidates_np, plan.pair_candidate_inputs, n_movies)
  # Movie id -> index among the distinct ids; catalog row -> its id's index.
  distinct_ids, row_of_id = np.unique(catalog_np[f.MOVIE_ID].astype(bytes), return_inverse=True)
  model.recommend_movie_index = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(distinct_ids, tf.string),
                                          tf.range(len(distinct_ids), dtype=tf.int64)), default_value=-1)
  n_pairs = len(next(iter(pair_catalog.values()))) if pair_catalog else 0

  def _defaults(inputs):
    out = dict(inputs)
    if f.USER_AGE in out:
      out[f.USER_AGE] = tf.where(out[f.USER_AGE] > 0, out[f.USER_AGE], DEFAULT_USER_AGE)
    if f.TIMESTAMP in out:
      now = tf.cast(tf.timestamp(), tf.int64)
      out[f.TIMESTAMP] = tf.where(out[f.TIMESTAMP] > 0, out[f.TIMESTAMP], now)
    return out

  def _rating_scores(request_features, request, batch):
    """Predicted ratings of every catalog movie for each request row: [B, movies]."""
    features = {key: tf.repeat(value, n_movies, axis=0) for key, value in request_features.items()
                if key in plan.request_keys}
    for key, value in candidate_features.items():
      features[key] = tf.tile(tf.constant(value), [batch] + [1] * (value.ndim - 1))
    if plan.pair_keys:
      pairs = {n: tf.repeat(request[n], n_pairs, axis=0) for n in plan.pair_request_inputs}
      for name, value in pair_catalog.items():
        pairs[name] = tf.tile(tf.constant(value), [batch] + [1] * (value.ndim - 1))
      transformed = model.tft_layer(_to_parsed(pairs, raw_spec))
      for key in plan.pair_keys:
        per_pair = tf.reshape(transformed[key], tf.concat([[batch, n_pairs], tf.shape(transformed[key])[1:]], 0))
        per_movie = tf.gather(per_pair, tf.constant(pair_index), axis=1)
        features[key] = tf.reshape(per_movie, tf.concat([[batch * n_movies], tf.shape(transformed[key])[1:]], 0))
    return tf.reshape(model(features), [batch, n_movies])

  @tf.function(input_signature=[specs])
  def recommend(inputs):
    request = _defaults({n: v for n, v in inputs.items() if n in raw_features})
    batch = tf.shape(inputs[K])[0]
    request_features = model.tft_layer(_to_parsed(request, raw_spec))
    if towers:
      scores = tf.matmul(model.query_embeddings(request_features), tf.constant(candidate_vectors), transpose_b=True)
    else:
      scores = _rating_scores(request_features, request, batch)
    movie_ids = tf.constant(catalog_np[f.MOVIE_ID])
    scores = tf.where(_seen(model.recommend_movie_index, inputs[f.HISTORY_MOVIE_IDS], row_of_id), -np.inf, scores)
    k = tf.clip_by_value(inputs[K], 0, min(MAX_K, n_movies))
    top = tf.math.top_k(scores, k=tf.reduce_max(tf.concat([k, [0]], 0)))
    # Rows asking for fewer than the batch's largest k, or users who have
    # seen almost everything, are padded: movie id '', score 0.
    valid = (tf.range(tf.shape(top.indices)[1])[None, :] < k[:, None]) & tf.math.is_finite(top.values)
    return {
        MOVIE_IDS: tf.where(valid, tf.gather(movie_ids, top.indices), ''),
        TITLES: tf.where(valid, tf.gather(tf.constant(catalog_np[f.MOVIE_TITLE]), top.indices), ''),
        SCORES: tf.where(valid, top.values, 0.0),
    }

  return recommend.get_concrete_function()
