"""Serving signatures; every one runs the Transform graph inside the model.

- ``serving_default``: raw feature values, one tensor per feature, as JSON
  gives them to TF Serving's REST API (``{"instances": [{"user_id": "196",
  "movie_id": "242"}]}``). Only the raw features the model reads are asked
  for (``features.raw_inputs`` of the model's Transform outputs). Lists
  (genres, the user's history) come padded at the end with "";
  ``history_ratings`` pairs up with ``history_movie_ids``.
- ``serving_tf_example``: serialized ``tf.Example`` protos (``examples``).
- ``transform_features``: serialized examples to transformed features, for
  the Evaluator and for debugging skew.
- ``recommend``: one user per row (the model's user and context features,
  and the user's recent ratings, padded like ``serving_default``) and ``k``;
  it scores every movie of the catalog Transform wrote (f.CATALOG_VOCAB) and
  returns the top ``k`` movie ids, titles and scores, leaving out the movies
  in the given history. Brute force in plain TF ops, so stock TF Serving
  runs it (it has no ScaNN ops).
- ``recommend_diverse``: ``recommend``'s inputs plus ``diversity``, one
  weight a row (0 to 1), which re-ranks the best ``MAX_K`` by MMR over
  genres (``_mmr``); 0 keeps the score order. A separate signature, so
  ``recommend``'s inputs, which every TF Serving client must send, stay as
  they were.
- ``retrieve`` (models that retrieve): serialized examples and ``k`` to the
  towers' top ``k``, for the RetrievalEvaluator.

Every feature's "unknown" value (``features.Feature.unknown``: "" for
strings, 0 for ``user_age``, ``timestamp`` and the movie statistics, an empty
list) means the same in every signature: Transform's fill step gives it what
the feature table says it becomes. A value outside a feature's range fails
the call with a message that states the range, in every signature but
``transform_features`` (the Evaluator's, on data ExampleGen already checked).
"""
import functools
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from contract import names
from trainer import item_item as ii
from transforms import features as f

# Every serving signature is traced as written, without AutoGraph: they branch
# only on Python values, and AutoGraph's rewrite of every function they reach
# (the models, TFRS, the Transform layer) was most of their tracing time.
signature_function = functools.partial(tf.function, autograph=False)

_DTYPES = {'string': tf.string, 'int64': tf.int64, 'float32': tf.float32}


def raw_spec_without_label(tf_transform_output: tft.TFTransformOutput):
  """The raw feature spec a request or a tf.Example at serving time has: no label."""
  spec = tf_transform_output.raw_feature_spec()
  spec.pop(f.LABEL_KEY, None)
  return spec


def signature_inputs(raw_features: Sequence[str],
                     table: Sequence[f.Feature] = f.FEATURES) -> Dict[str, tf.TensorSpec]:
  """The JSON-friendly inputs of ``raw_features``, from the feature table.

  One value per instance for SCALAR and OPTIONAL features (``unknown`` for a
  missing optional one); a list padded at the end for MULTI ones.
  """
  by_name = {x.name: x for x in table}
  return {name: tf.TensorSpec([None, None] if by_name[name].shape == f.MULTI else [None],
                              _DTYPES[by_name[name].dtype], name=name) for name in raw_features}


def to_parsed(inputs: Mapping[str, tf.Tensor], table: Sequence[f.Feature] = f.FEATURES) -> Dict[str, tf.Tensor]:
  """Raw-signature inputs as ``tf.io.parse_example`` would give them to Transform.

  SCALAR features become [B, 1]; OPTIONAL and MULTI ones sparse, without
  their unknown value or padding. A list aligned with another (ratings with
  movie ids) takes the other's lengths.
  """
  by_name = {x.name: x for x in table}
  lengths = {name: tf.reduce_sum(tf.cast(tf.not_equal(value, ''), tf.int64), axis=1)
             for name, value in inputs.items() if by_name[name].shape == f.MULTI and value.dtype == tf.string}
  parsed = {}
  for name, value in inputs.items():
    feature = by_name[name]
    if feature.shape == f.SCALAR:
      parsed[name] = tf.expand_dims(value, -1)
    elif feature.shape == f.OPTIONAL:
      present = tf.cast(tf.not_equal(value, feature.unknown), tf.int64)
      parsed[name] = tf.RaggedTensor.from_tensor(value[:, None], lengths=present).to_sparse()
    else:
      row_lengths = lengths.get(name, lengths.get(feature.aligned_with))
      parsed[name] = tf.RaggedTensor.from_tensor(value, lengths=row_lengths).to_sparse()
  return parsed


def check_ranges(parsed: Mapping[str, tf.Tensor], table: Sequence[f.Feature] = f.FEATURES) -> List[tf.Operation]:
  """Assertions that every parsed value is in its feature's range (or is its unknown value).

  The server checks the same before a request reaches the model (and says
  so in a 400); these make a SavedModel under stock TF Serving refuse the
  value too, rather than score it.
  """
  checks = []
  for feature in table:
    if feature.name not in parsed or feature.valid_range is None:
      continue
    value = parsed[feature.name]
    values = value.values if isinstance(value, tf.SparseTensor) else tf.reshape(value, [-1])
    if feature.shape == f.SCALAR:
      values = tf.boolean_mask(values, tf.not_equal(values, tf.cast(feature.unknown, values.dtype)))
    low, high = (tf.cast(bound, values.dtype) for bound in feature.valid_range)
    # The raw op, not tf.debugging.Assert: that one wraps itself in a cond
    # (an If, about 20 us a call each) to spare computing data that is here
    # the input itself.
    checks.append(tf.raw_ops.Assert(
        condition=tf.reduce_all((values >= low) & (values <= high)),
        data=[f'{feature.name} must be {feature.range_text()}; got', values], summarize=3))
  return checks


def _transform(model: tf.keras.Model, parsed: Mapping[str, tf.Tensor], table) -> Dict[str, tf.Tensor]:
  with tf.control_dependencies(check_ranges(parsed, table)):
    return model.tft_layer(parsed)


# What the signatures read: the weights, the Transform layer's tables and
# assets, the catalogue's tables.
_STATE = (tf.Variable, tf.saved_model.experimental.TrackableResource, tf.saved_model.Asset)


def save_model(model: tf.keras.Model, export_dir: str,
               signatures: Mapping[str, tf.types.experimental.ConcreteFunction]) -> None:
  """Saves ``signatures`` with the state they read, not the Keras model around it.

  ``tf.saved_model.save(model)`` also serializes every Keras layer's call
  functions, traced again at save and restored again at every
  ``tf.saved_model.load``; nothing calls them (TF Serving, TFMA, the
  components and ``serving/`` call the signatures); what that saves is
  measured in docs/pipeline.md ("Trainer: the export"). The optimizer's
  slots are left out too.
  """
  optimizer = getattr(model, 'optimizer', None)
  skip = {id(t) for t in tf.train.TrackableView(optimizer).descendants()} if optimizer else set()
  root = tf.Module()
  root.state = [t for t in tf.train.TrackableView(model).descendants()
                if isinstance(t, _STATE) and id(t) not in skip]
  tf.saved_model.save(root, export_dir, signatures=dict(signatures))


def make_serving_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                            table: Sequence[f.Feature] = f.FEATURES,
                            outputs: Sequence[f.Output] = f.OUTPUTS,
                            retrieves: bool = False,
                            item_item: bool = False) -> Dict[str, tf.types.experimental.ConcreteFunction]:
  """Builds the signatures for ``model``.

  Args:
    model: a model whose call takes transformed features and returns [B, 1],
      and whose ``TRANSFORM_OUTPUTS`` name the Transform outputs it reads.
    tf_transform_output: the Transform output the model was trained on.
    table, outputs: the feature and Transform-output tables.
    retrieves: the model has retrieval towers (``query_embeddings`` and
      ``candidate_embeddings``); ``recommend`` ranks by them, and a
      ``retrieve`` signature is added.
    item_item: ``recommend`` and ``retrieve`` rank by ``model.item_item``
      (``trainer.item_item.ItemItemScorer``) over the request's history, and
      by the model's own scores where the history has no movie in the
      stage's tables.

  Returns:
    Signature name to concrete function, for ``tf.saved_model.save``.
  """
  # Tracked as an attribute so the Transform assets are saved with the model.
  model.tft_layer = tf_transform_output.transform_features_layer()
  raw_spec = raw_spec_without_label(tf_transform_output)
  raw_features = f.raw_inputs(model.TRANSFORM_OUTPUTS, table, outputs)
  if item_item and f.transformed_name(f.HISTORY_MOVIE_IDS) not in model.TRANSFORM_OUTPUTS:
    raise ValueError('item_item ranks by the history lists, which this model does not read.')
  if item_item and not hasattr(model, 'item_item'):
    raise ValueError('item_item needs model.item_item, the table trainer.task.fit attaches (item_item_scorer).')

  def predict(parsed: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {names.PREDICTION_KEY: model(_transform(model, parsed, table))}

  @signature_function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=names.EXAMPLES)])
  def serve_tf_examples(serialized):
    return predict(tf.io.parse_example(serialized, raw_spec))

  @signature_function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=names.EXAMPLES)])
  def transform_features(serialized):
    return model.tft_layer(tf.io.parse_example(serialized, tf_transform_output.raw_feature_spec()))

  @signature_function(input_signature=[signature_inputs(raw_features, table)])
  def serve_raw(inputs):
    return predict(to_parsed(inputs, table))

  signatures = {
      names.SERVING_DEFAULT: serve_raw.get_concrete_function(),
      names.SERVING_TF_EXAMPLE: serve_tf_examples.get_concrete_function(),
      names.TRANSFORM_FEATURES: transform_features.get_concrete_function(),
  }
  signatures[names.RECOMMEND], signatures[names.RECOMMEND_DIVERSE] = _make_recommend(
      model, tf_transform_output, raw_features, table, outputs, retrieves, item_item)
  if retrieves:
    signatures[names.RETRIEVE] = make_retrieve_signature(
        model, model.tft_layer, raw_spec, tf_transform_output.vocabulary_by_name(f.MOVIE_VOCAB), item_item)
  return signatures


def read_catalog(tf_transform_output: tft.TFTransformOutput) -> Dict[str, np.ndarray]:
  """The catalog as raw-signature inputs: one row per movie of the analyzed splits, most rated first.

  Returns:
    movie_id, movie_title [N] bytes; genres [N, G] bytes padded with b'';
    release_year [N] int64, its unknown value when u.item has no date.
  """
  rows = f.parse_catalog(tf_transform_output.vocabulary_by_name(f.CATALOG_VOCAB))
  genres = [g for _, _, g, _ in rows]
  width = max([len(g) for g in genres] + [1])
  unknown_year = f.BY_NAME[f.RELEASE_YEAR].unknown
  return {
      f.MOVIE_ID: np.array([r[0] for r in rows], dtype=object),
      f.MOVIE_TITLE: np.array([r[1] for r in rows], dtype=object),
      f.GENRES: np.array([g + [b''] * (width - len(g)) for g in genres], dtype=object).reshape(len(rows), width),
      f.RELEASE_YEAR: np.array([unknown_year if r[3] is None else r[3] for r in rows], dtype=np.int64),
  }


def recommend_input_names(raw_features: Sequence[str], table: Sequence[f.Feature] = f.FEATURES) -> List[str]:
  """The request inputs of ``recommend`` for a model reading ``raw_features``.

  Its user and context features (``features.REQUEST_ROLES``), the history
  lists (always: they say what to leave out), and k.
  """
  request = set(f.names(f.USER, table=table) + f.names(f.CONTEXT, table=table))
  wanted = set(raw_features) | {f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS}
  return [x.name for x in table if x.name in wanted and x.name in request] + [names.K]


class _Plan:
  """Which Transform outputs a recommendation computes once, per request, or per (request, movie).

  Read off the Transform-output table: an output whose raw inputs are all
  movie features is computed once at export, over the catalog; one whose
  inputs are all user or context features once per request row; one that
  reads both (a movie's age at rating time) per pair of a request row and a
  distinct value of the movie features it reads (70-odd release years, not
  1,682 movies), then gathered per movie. Transform runs row by row at
  serving time, so equal inputs give equal outputs and the gather changes no
  value.
  """

  def __init__(self, read: Sequence[str], table: Sequence[f.Feature], outputs: Sequence[f.Output]):
    role = {x.name: x.role for x in table}
    by_name = {o.name: o for o in outputs}
    self.candidate_keys, self.request_keys, self.pair_keys = set(), set(), set()
    request_inputs, candidate_inputs = set(), set()
    for key in read:
      roles = {role[name] for name in by_name[key].inputs}
      if roles == {f.MOVIE}:
        self.candidate_keys.add(key)
      elif roles <= set(f.REQUEST_ROLES):
        self.request_keys.add(key)
      else:
        self.pair_keys.add(key)
        request_inputs |= {n for n in by_name[key].inputs if role[n] in f.REQUEST_ROLES}
        candidate_inputs |= {n for n in by_name[key].inputs if role[n] == f.MOVIE}
    self.pair_request_inputs = [x.name for x in table if x.name in request_inputs]
    self.pair_candidate_inputs = [x.name for x in table if x.name in candidate_inputs]


def _candidates(catalog: Dict[str, np.ndarray], raw_features: Sequence[str],
                table: Sequence[f.Feature]) -> Dict[str, np.ndarray]:
  """Every movie feature the model reads, one row per catalog movie, as raw-signature inputs.

  A movie feature the catalog lacks (a live statistic such as
  movie_rating_count) gets its unknown value.
  """
  n = len(catalog[f.MOVIE_ID])
  out = {}
  for feature in table:
    if feature.name not in raw_features or feature.role != f.MOVIE:
      continue
    if feature.name in catalog:
      out[feature.name] = catalog[feature.name]
    else:
      shape = (n, 1) if feature.shape == f.MULTI else (n,)
      fill = b'' if feature.dtype == 'string' else (0 if feature.shape == f.MULTI else feature.unknown)
      out[feature.name] = np.full(shape, fill, dtype=object if feature.dtype == 'string' else feature.dtype)
  return out


def _distinct_rows(catalog: Dict[str, np.ndarray], columns: Sequence[str],
                   n: int) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
  """The distinct rows of ``catalog`` over ``columns``, and each of the ``n`` movies' index among them."""
  keys = [tuple(tuple(np.atleast_1d(catalog[name][i]).tolist()) for name in columns) for i in range(n)]
  first = {}
  for i, key in enumerate(keys):
    first.setdefault(key, i)
  rows = np.array(sorted(first.values()))
  position = {keys[i]: j for j, i in enumerate(rows)}
  return {c: catalog[c][rows] for c in columns}, np.array([position[key] for key in keys], dtype=np.int64)


def _seen(index: tf.lookup.StaticHashTable, history: tf.Tensor, row_of_id: Optional[np.ndarray]) -> tf.Tensor:
  """bool [B, catalog rows]: which catalog movies are in each request's history ([B, T] ids).

  One hash lookup per history entry and a scatter, so the cost grows with
  the history, not with history x catalog as comparing strings would (that
  was 1 ms per request at 1,682 movies and 50 ratings). Ids outside the
  catalog and "" padding match nothing. ``row_of_id`` maps catalog rows to
  the index's values; None when they are the catalog rows themselves.
  """
  positions = index.lookup(history)  # [B, T], -1 where unknown
  known = positions >= 0
  shape = tf.shape(positions, out_type=tf.int64)
  rows = tf.broadcast_to(tf.range(shape[0])[:, None], shape)
  cells = tf.stack([tf.boolean_mask(rows, known), tf.boolean_mask(positions, known)], axis=1)
  marked = tf.scatter_nd(cells, tf.ones_like(cells[:, 0], tf.int32), tf.stack([shape[0], index.size()]))
  seen = marked > 0
  return seen if row_of_id is None else tf.gather(seen, tf.constant(row_of_id, tf.int64), axis=1)


def _make_recommend(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput, raw_features: Sequence[str],
                    table: Sequence[f.Feature], outputs: Sequence[f.Output],
                    retrieves: bool, item_item: bool = False) -> Tuple[tf.types.experimental.ConcreteFunction,
                                                                       tf.types.experimental.ConcreteFunction]:
  """The ``recommend`` and ``recommend_diverse`` signatures: brute-force top-K over the catalog.

  A model that retrieves scores by its towers: the candidates' vectors are
  computed once here and saved as constants, and a call costs one
  query-tower pass and one [B, d] x [d, movies] product. Any other rating
  model scores by predicted rating: the candidates' Transform outputs are
  computed once here, by the model's own Transform graph, and saved as
  constants; the request's are computed per call and repeated for each
  candidate.
  """
  catalog_np = read_catalog(tf_transform_output)
  candidates_np = _candidates(catalog_np, raw_features, table)
  n_movies = len(catalog_np[f.MOVIE_ID])
  specs = signature_inputs([n for n in recommend_input_names(raw_features, table) if n != names.K], table)
  specs[names.K] = tf.TensorSpec(shape=[None], dtype=tf.int32, name=names.K)
  diverse_specs = {**specs, names.DIVERSITY: tf.TensorSpec(shape=[None], dtype=tf.float32, name=names.DIVERSITY)}
  genre_names = sorted({g for row in catalog_np[f.GENRES] for g in row if g})
  catalog_genres = np.array([[g in set(row) for g in genre_names] for row in catalog_np[f.GENRES]], np.float32)
  plan = _Plan(model.TRANSFORM_OUTPUTS, table, outputs)
  # Eager tensors would be captured by reference; numpy becomes graph constants.
  transformed = model.tft_layer(to_parsed({k: tf.constant(v) for k, v in candidates_np.items()}, table))
  candidate_features = {k: transformed[k].numpy() for k in plan.candidate_keys}
  if retrieves:
    movie_key = f.transformed_name(f.MOVIE_ID)
    candidate_vectors = model.candidate_embeddings({movie_key: tf.constant(candidate_features[movie_key])}).numpy()
  pair_catalog, pair_index = _distinct_rows(candidates_np, plan.pair_candidate_inputs, n_movies)
  # Movie id -> index among the distinct ids; catalog row -> its id's index
  # (None when the ids are distinct: then an id's index is its catalog row).
  catalog_ids = catalog_np[f.MOVIE_ID].astype(bytes)
  distinct_ids, row_of_id = np.unique(catalog_ids, return_inverse=True)
  if len(distinct_ids) == n_movies:
    distinct_ids, row_of_id = catalog_ids, None
  model.recommend_movie_index = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(distinct_ids, tf.string),
                                          tf.range(len(distinct_ids), dtype=tf.int64)), default_value=-1)
  n_pairs = len(next(iter(pair_catalog.values()))) if pair_catalog else 0
  # The item-item table's columns are movie vocabulary ids: each catalog row's.
  vocab_position = {m: i for i, m in enumerate(tf_transform_output.vocabulary_by_name(f.MOVIE_VOCAB))}
  catalog_vocab_ids = np.array([vocab_position.get(m, 0) for m in catalog_np[f.MOVIE_ID]], np.int64)

  def _rating_scores(request_features, request, batch):
    """Predicted ratings of every catalog movie for each request row: [B, movies]."""
    features = {key: tf.repeat(request_features[key], n_movies, axis=0) for key in plan.request_keys}
    for key, value in candidate_features.items():
      features[key] = tf.tile(tf.constant(value), [batch] + [1] * (value.ndim - 1))
    if plan.pair_keys:
      pairs = {n: tf.repeat(request[n], n_pairs, axis=0) for n in plan.pair_request_inputs}
      for name, value in pair_catalog.items():
        pairs[name] = tf.tile(tf.constant(value), [batch] + [1] * (value.ndim - 1))
      per_pair_features = model.tft_layer(to_parsed(pairs, table))
      for key in plan.pair_keys:
        value = per_pair_features[key]
        per_pair = tf.reshape(value, tf.concat([[batch, n_pairs], tf.shape(value)[1:]], 0))
        per_movie = tf.gather(per_pair, tf.constant(pair_index), axis=1)
        features[key] = tf.reshape(per_movie, tf.concat([[batch * n_movies], tf.shape(value)[1:]], 0))
    return tf.reshape(model(features), [batch, n_movies])

  def top_movies(inputs, diversity=None):
    request = {n: v for n, v in inputs.items() if n in raw_features}
    batch = tf.shape(inputs[names.K])[0]
    request_features = _transform(model, to_parsed(request, table), table)
    if retrieves:
      scores = tf.matmul(model.query_embeddings(request_features), tf.constant(candidate_vectors), transpose_b=True)
    else:
      scores = _rating_scores(request_features, request, batch)
    if item_item:
      scores = ii.scores_or_fallback(model.item_item, request_features, scores, columns=catalog_vocab_ids)
    movie_ids = tf.constant(catalog_np[f.MOVIE_ID])
    scores = tf.where(_seen(model.recommend_movie_index, inputs[f.HISTORY_MOVIE_IDS], row_of_id), -np.inf, scores)
    k = tf.clip_by_value(inputs[names.K], 0, min(names.MAX_K, n_movies))
    width = tf.reduce_max(tf.concat([k, [0]], 0))
    if diversity is None:
      top = tf.math.top_k(scores, k=width)
      indices, values = top.indices, top.values
    else:
      top = tf.math.top_k(scores, k=min(names.MAX_K, n_movies))
      # The greedy loop costs ~100 small steps: only batches that ask for variety run it.
      indices, values = tf.cond(tf.reduce_any(diversity > 0),
                                lambda: _mmr(top.indices, top.values, diversity, catalog_genres),
                                lambda: (top.indices, top.values))
      indices, values = indices[:, :width], values[:, :width]
    # Rows asking for fewer than the batch's largest k, or users who have
    # seen almost everything, are padded: movie id '', score 0.
    valid = (tf.range(tf.shape(indices)[1])[None, :] < k[:, None]) & tf.math.is_finite(values)
    return {
        names.MOVIE_IDS: tf.where(valid, tf.gather(movie_ids, indices), ''),
        names.TITLES: tf.where(valid, tf.gather(tf.constant(catalog_np[f.MOVIE_TITLE]), indices), ''),
        names.SCORES: tf.where(valid, values, 0.0),
    }

  @signature_function(input_signature=[specs])
  def recommend(inputs):
    return top_movies(inputs)

  @signature_function(input_signature=[diverse_specs])
  def recommend_diverse(inputs):
    return top_movies({n: v for n, v in inputs.items() if n != names.DIVERSITY}, inputs[names.DIVERSITY])

  return recommend.get_concrete_function(), recommend_diverse.get_concrete_function()


def _mmr(indices: tf.Tensor, values: tf.Tensor, weight: tf.Tensor, genres: np.ndarray) -> Tuple[tf.Tensor, tf.Tensor]:
  """Maximal marginal relevance over genres (Carbonell and Goldstein, SIGIR 1998) of each row's candidates.

  Greedily picks the candidate with the highest ``(1 - w) relevance - w
  closest``, where relevance is the score min-max scaled over the row's
  candidates and ``closest`` the highest genre Jaccard similarity to a movie
  already picked. With ``w`` 0 the order is the score order. Candidates
  with a score of -inf (seen movies) come last, in their order.

  Args:
    indices: int32 [B, P] catalog rows, by descending score.
    values: float32 [B, P] their scores.
    weight: float32 [B] the diversity weight of each row, clipped to [0, 1].
    genres: float32 [catalog rows, G] multi-hot genres.

  Returns:
    The candidates' rows and scores [B, P], in MMR order.
  """
  weight = tf.clip_by_value(weight, 0.0, 1.0)[:, None]
  valid = tf.math.is_finite(values)
  low = tf.reduce_min(tf.where(valid, values, np.inf), axis=1, keepdims=True)
  high = tf.reduce_max(tf.where(valid, values, -np.inf), axis=1, keepdims=True)
  relevance = tf.where(valid, (values - low) / tf.maximum(high - low, 1e-12), 0.0)
  multi_hot = tf.gather(tf.constant(genres), indices)  # [B, P, G]
  shared = tf.matmul(multi_hot, multi_hot, transpose_b=True)
  sizes = tf.reduce_sum(multi_hot, axis=2)
  union = sizes[:, :, None] + sizes[:, None, :] - shared
  jaccard = tf.where(union > 0, shared / tf.maximum(union, 1.0), 0.0)  # [B, P, P]
  pool = tf.shape(indices)[1]
  rows = tf.range(tf.shape(indices)[0])

  def pick(step, taken, closest, order):
    objective = tf.where(valid, (1.0 - weight) * relevance - weight * closest, -1e30)
    best = tf.argmax(tf.where(taken, -np.inf, objective), axis=1, output_type=tf.int32)
    cells = tf.stack([rows, best], axis=1)
    taken = tf.tensor_scatter_nd_update(taken, cells, tf.ones_like(best, tf.bool))
    closest = tf.maximum(closest, tf.gather_nd(jaccard, cells))
    return step + 1, taken, closest, order.write(step, best)

  _, _, _, order = tf.while_loop(
      lambda step, *_: step < pool, pick,
      (0, tf.zeros_like(indices, tf.bool), tf.zeros_like(values), tf.TensorArray(tf.int32, size=pool)))
  order = tf.transpose(order.stack())  # [B, P] positions among the candidates
  return tf.gather(indices, order, batch_dims=1), tf.gather(values, order, batch_dims=1)


def make_retrieve_signature(model: tf.keras.Model, tft_layer: tf.keras.layers.Layer, raw_spec,
                            movie_ids: Sequence[bytes],
                            item_item: bool = False) -> tf.types.experimental.ConcreteFunction:
  """``retrieve``: serialized tf.Examples and ``k`` to the top ``k`` catalogue movies.

  Candidate generation by the towers (or, with ``item_item``, by
  ``model.item_item`` over the example's history, the towers where it has
  no movie in the stage's tables), exact (brute force in plain TF
  ops, so stock TF Serving runs it). It excludes nothing: the caller drops
  movies the user has seen, so ask for ``k`` plus their number. The
  pipeline's RetrievalEvaluator scores a model through it, and so does
  ``make bench-quality``.

  Args:
    model: a model with ``query_embeddings`` and ``candidate_embeddings``.
    tft_layer: the Transform layer, tracked on the model when it is saved.
    raw_spec: the raw feature spec of a serving tf.Example (no label).
    movie_ids: the movie vocabulary, row i being vocabulary id i.
    item_item: rank by the model's item-item stage.

  Returns:
    A concrete function: ``examples`` string [B], ``k`` int32 scalar (clipped
    to the catalogue) to ``movie_ids`` string [B, k] and ``scores`` float32 [B, k].
  """
  identifiers = tf.constant(list(movie_ids), dtype=tf.string)
  count = len(movie_ids)
  movie_key = f.transformed_name(f.MOVIE_ID)

  @signature_function(input_signature=[tf.TensorSpec([None], tf.string, name=names.EXAMPLES),
                                       tf.TensorSpec([], tf.int32, name=names.K)])
  def retrieve(examples, k):
    features = tft_layer(tf.io.parse_example(examples, raw_spec))
    candidates = model.candidate_embeddings({movie_key: tf.range(count, dtype=tf.int64)})
    scores = tf.matmul(model.query_embeddings(features), candidates, transpose_b=True)
    if item_item:
      scores = ii.scores_or_fallback(model.item_item, features, scores)
    top = tf.math.top_k(scores, k=tf.minimum(k, count))
    return {names.MOVIE_IDS: tf.gather(identifiers, top.indices), names.SCORES: top.values}

  return retrieve.get_concrete_function()
