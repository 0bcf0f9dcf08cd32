"""Two-tower retrieval: a query tower for users, a candidate tower for movies.

The query tower reads who the user is (id, gender, occupation, zip3, age
bucket), when they ask (hour, weekday) and what they rated before (the
point-in-time history). The candidate tower reads the movie id, genres and
release year. Both end in L2-normalised vectors, so a dot product is a cosine
and ``temperature`` sets how sharp the in-batch softmax is.

Cold start drives the design: most test users of ML-100K never appear in
training, so their ``user_id_xf`` is the OOV id. The history encoder shares the
movie embedding table with the candidate tower, so a new user's history lands in
the space the candidates live in, and ``user_id_dropout`` sends a fraction of
training rows through the OOV id so that path is trained rather than left at its
initial value.

Serving a top-K list needs an index over the candidate embeddings:
``brute_force_index`` (exact, plain TensorFlow ops) or ``scann_index``
(approximate, ScaNN's custom ops). Stock TensorFlow Serving has no ScaNN ops,
so a SavedModel exported for TF Serving must use the brute-force index; a ScaNN
index only loads where the ``scann`` package (or Google's tf-serving-scann
image) provides them.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_recommenders as tfrs

from transforms import features as f

_xf = f.transformed_name

# Query features, all from Transform; see transforms/preprocessing.py.
USER_ID_KEY = _xf(f.USER_ID)                     # int64 [B]; OOV id = vocab size
USER_GENDER_KEY = _xf(f.USER_GENDER)             # int64 [B]
USER_OCCUPATION_KEY = _xf(f.USER_OCCUPATION)     # int64 [B]
USER_ZIP_KEY = _xf(f.USER_ZIP)                   # int64 [B]
AGE_BUCKET_KEY = _xf('age_bucket')               # int64 [B], 0..len(AGE_BOUNDARIES)
HOUR_KEY = _xf('hour')                           # int64 [B], 0..23
WEEKDAY_KEY = _xf('weekday')                     # int64 [B], 0..6
HISTORY_IDS_KEY = _xf(f.HISTORY_MOVIE_IDS)       # int64 [B, HISTORY_LENGTH], HISTORY_PAD_ID padded
HISTORY_RATINGS_KEY = _xf(f.HISTORY_RATINGS)     # float32 [B, HISTORY_LENGTH], 0 where padded
# Candidate features.
MOVIE_ID_KEY = _xf(f.MOVIE_ID)                   # int64 [B]; OOV id = vocab size
GENRES_KEY = _xf(f.GENRES)                       # float32 [B, len(GENRE_NAMES)] multi-hot
RELEASE_YEAR_KEY = _xf(f.RELEASE_YEAR)           # float32 [B], z-scored

QUERY_FEATURES: Tuple[str, ...] = (
    USER_ID_KEY, USER_GENDER_KEY, USER_OCCUPATION_KEY, USER_ZIP_KEY, AGE_BUCKET_KEY,
    HOUR_KEY, WEEKDAY_KEY, HISTORY_IDS_KEY, HISTORY_RATINGS_KEY)
CANDIDATE_FEATURES: Tuple[str, ...] = (MOVIE_ID_KEY, GENRES_KEY, RELEASE_YEAR_KEY)

# Calendar sizes, fixed by the clock rather than by the data.
_HOURS = 24
_WEEKDAYS = 7
NUM_AGE_BUCKETS = len(f.AGE_BOUNDARIES) + 1


def query_input_signature(history_length: int = f.HISTORY_LENGTH) -> Dict[str, tf.TensorSpec]:
  """TensorSpecs of the query features, keyed by name, for serving signatures.

  Args:
    history_length: width of the padded history tensors.

  Returns:
    ``{name: tf.TensorSpec}`` for every name in ``QUERY_FEATURES``; the batch
    dimension is ``None``.
  """
  specs = {key: tf.TensorSpec([None], tf.int64, name=key) for key in QUERY_FEATURES}
  specs[HISTORY_IDS_KEY] = tf.TensorSpec([None, history_length], tf.int64, name=HISTORY_IDS_KEY)
  specs[HISTORY_RATINGS_KEY] = tf.TensorSpec([None, history_length], tf.float32, name=HISTORY_RATINGS_KEY)
  return specs


class IdDropout(tf.keras.layers.Layer):
  """Replaces a random fraction of ids with the OOV id while training.

  At serving time every user Transform did not see arrives with the OOV id.
  Without this layer no training row carries that id, so its embedding stays
  at its random initial value and cold users get a noisy query vector.

  Args:
    rate: probability, in [0, 1), that a row's id is replaced during training.
    oov_id: the id to substitute, i.e. the first OOV bucket (the vocabulary
      size without OOV buckets).

  Call arguments:
    ids: int tensor of any shape, typically [B].
    training: whether to drop; at inference the ids pass through unchanged.

  Returns:
    An int tensor of the same shape and dtype as ``ids``.
  """

  def __init__(self, rate: float, oov_id: int, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f'rate must be in [0, 1), got {rate}.')
    self.rate = rate
    self.oov_id = oov_id

  def call(self, ids: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    if not training or self.rate == 0.0:
      return ids
    drop = tf.random.uniform(tf.shape(ids)) < self.rate
    return tf.where(drop, tf.cast(self.oov_id, ids.dtype), ids)

  def get_config(self):
    return {**super().get_config(), 'rate': self.rate, 'oov_id': self.oov_id}


class HistoryPooling(tf.keras.layers.Layer):
  """Masked (optionally rating-weighted) mean of a user's history embeddings.

  Padded positions (id == ``pad_id``) get weight 0. With
  ``weight_by_rating``, each watched movie is weighted by its rating, so a
  5-star movie pulls the user vector four times as hard as a 1-star one (the
  ratings are 1..5, never 0, for real entries). A user with an empty history
  gets the zero vector, and the appended ``log1p(length)`` column lets the
  next layer tell that case apart from a history that averages out to zero.

  Args:
    pad_id: id that marks padding in the history ids.
    weight_by_rating: weight entries by their rating instead of equally.

  Call arguments:
    inputs: a tuple ``(embeddings, ids, ratings)``:
      embeddings: float [B, L, D], embeddings of the history ids (any value at
        padded positions; they are masked out).
      ids: int [B, L], history ids, ``pad_id`` where padded.
      ratings: float [B, L], ratings aligned with ``ids``.

  Returns:
    float [B, D + 1]: the pooled embedding and ``log1p`` of the history length.
  """

  def __init__(self, pad_id: int = f.HISTORY_PAD_ID, weight_by_rating: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.pad_id = pad_id
    self.weight_by_rating = weight_by_rating

  def call(self, inputs: Tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
    embeddings, ids, ratings = inputs
    mask = tf.cast(tf.not_equal(ids, tf.cast(self.pad_id, ids.dtype)), embeddings.dtype)  # [B, L]
    weights = mask * tf.cast(ratings, embeddings.dtype) if self.weight_by_rating else mask
    total = tf.reduce_sum(weights, axis=1, keepdims=True)  # [B, 1]
    pooled = tf.math.divide_no_nan(tf.einsum('bl,bld->bd', weights, embeddings), total)
    length = tf.reduce_sum(mask, axis=1, keepdims=True)
    return tf.concat([pooled, tf.math.log1p(length)], axis=1)

  def get_config(self):
    return {**super().get_config(), 'pad_id': self.pad_id, 'weight_by_rating': self.weight_by_rating}


def _mlp(layer_sizes: Sequence[int], name: str) -> tf.keras.Sequential:
  """ReLU hidden layers and a linear output layer of ``layer_sizes[-1]`` units."""
  layers = [tf.keras.layers.Dense(n, activation='relu') for n in layer_sizes[:-1]]
  return tf.keras.Sequential(layers + [tf.keras.layers.Dense(layer_sizes[-1])], name=name)


class _SharedTableConfig:
  """``get_config``/``from_config`` for a tower handed the shared movie table.

  The table travels as its own layer config, so a tower rebuilt from config
  alone gets a fresh table of its own; sharing is RetrievalModel's doing.
  """

  _CONFIG_KEYS: Tuple[str, ...] = ()

  def get_config(self):
    config = {key: getattr(self, f'_{key}') for key in self._CONFIG_KEYS}
    if 'layer_sizes' in config:
      config['layer_sizes'] = [int(n) for n in config['layer_sizes']]
    return {'name': self.name, 'movie_embedding': tf.keras.layers.serialize(self.movie_embedding), **config}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['movie_embedding'] = tf.keras.layers.deserialize(config['movie_embedding'])
    return cls(**config)


class QueryTower(_SharedTableConfig, tf.keras.Model):
  """User and context features plus history to an L2-normalised query vector.

  Args:
    movie_embedding: the Embedding layer shared with the candidate tower.
    user_vocab_size: users in the Transform vocabulary, OOV buckets included.
    gender_vocab_size, occupation_vocab_size, zip_vocab_size: likewise.
    embedding_dim: width of each categorical feature embedding.
    layer_sizes: Dense widths; the last one is the output width.
    user_id_dropout: fraction of training rows whose user id becomes the OOV id.
    weight_history_by_rating: see ``HistoryPooling``.

  Call arguments:
    features: dict with every key of ``QUERY_FEATURES`` (shapes there).
    training: turns on the user-id dropout.

  Returns:
    float32 [B, layer_sizes[-1]], unit L2 norm per row.
  """

  _CONFIG_KEYS = ('user_vocab_size', 'gender_vocab_size', 'occupation_vocab_size', 'zip_vocab_size',
                  'embedding_dim', 'layer_sizes', 'user_id_dropout', 'weight_history_by_rating')

  def __init__(self, movie_embedding: tf.keras.layers.Embedding, user_vocab_size: int,
               gender_vocab_size: int, occupation_vocab_size: int, zip_vocab_size: int,
               embedding_dim: int, layer_sizes: Sequence[int], user_id_dropout: float,
               weight_history_by_rating: bool, **kwargs):
    super().__init__(**kwargs)
    self._user_vocab_size, self._gender_vocab_size = user_vocab_size, gender_vocab_size
    self._occupation_vocab_size, self._zip_vocab_size = occupation_vocab_size, zip_vocab_size
    self._embedding_dim, self._layer_sizes = embedding_dim, tuple(layer_sizes)
    self._user_id_dropout, self._weight_history_by_rating = user_id_dropout, weight_history_by_rating
    self.movie_embedding = movie_embedding
    self.user_id_dropout = IdDropout(user_id_dropout, oov_id=user_vocab_size - f.OOV_BUCKETS)
    self.embeddings = {
        key: tf.keras.layers.Embedding(size, embedding_dim, name=f'{key}_embedding')
        for key, size in ((USER_ID_KEY, user_vocab_size), (USER_GENDER_KEY, gender_vocab_size),
                          (USER_OCCUPATION_KEY, occupation_vocab_size), (USER_ZIP_KEY, zip_vocab_size),
                          (AGE_BUCKET_KEY, NUM_AGE_BUCKETS), (HOUR_KEY, _HOURS), (WEEKDAY_KEY, _WEEKDAYS))}
    self.history_pooling = HistoryPooling(weight_by_rating=weight_history_by_rating)
    self.mlp = _mlp(layer_sizes, 'query_mlp')

  def call(self, features: Dict[str, tf.Tensor], training: Optional[bool] = None) -> tf.Tensor:
    ids = dict(features)
    ids[USER_ID_KEY] = self.user_id_dropout(features[USER_ID_KEY], training=training)
    parts = [layer(ids[key]) for key, layer in self.embeddings.items()]
    history_ids = features[HISTORY_IDS_KEY]
    # The pad id (-1) is not a valid row; look up row 0 there, pooling masks it.
    safe_ids = tf.where(tf.equal(history_ids, f.HISTORY_PAD_ID), tf.zeros_like(history_ids), history_ids)
    parts.append(self.history_pooling(
        (self.movie_embedding(safe_ids), history_ids, features[HISTORY_RATINGS_KEY])))
    return tf.math.l2_normalize(self.mlp(tf.concat(parts, axis=1)), axis=1)


class CandidateTower(_SharedTableConfig, tf.keras.Model):
  """Movie id, genres and release year to an L2-normalised candidate vector.

  Args:
    movie_embedding: the Embedding layer shared with the query tower's history.
    layer_sizes: Dense widths; the last one is the output width.

  Call arguments:
    features: dict with every key of ``CANDIDATE_FEATURES`` (shapes there).

  Returns:
    float32 [B, layer_sizes[-1]], unit L2 norm per row.
  """

  _CONFIG_KEYS = ('layer_sizes',)

  def __init__(self, movie_embedding: tf.keras.layers.Embedding, layer_sizes: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self._layer_sizes = tuple(layer_sizes)
    self.movie_embedding = movie_embedding
    self.mlp = _mlp(layer_sizes, 'candidate_mlp')

  def call(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    x = tf.concat([
        self.movie_embedding(features[MOVIE_ID_KEY]),
        tf.cast(features[GENRES_KEY], tf.float32),
        tf.reshape(tf.cast(features[RELEASE_YEAR_KEY], tf.float32), [-1, 1]),
    ], axis=1)
    return tf.math.l2_normalize(self.mlp(x), axis=1)


class RetrievalModel(tfrs.Model):
  """Two-tower retrieval with in-batch softmax, built for cold-start users.

  Each training row (a rating) is a positive (user, movie) pair; the other
  movies of the batch are its negatives. Duplicates of the positive movie in
  the batch are not counted as negatives (``remove_accidental_hits``), which
  matters on ML-100K where a batch of thousands repeats popular movies.

  Args:
    user_vocab_size: users in the Transform vocabulary, OOV buckets included.
    movie_vocab_size: movies in the Transform vocabulary, OOV buckets included.
    gender_vocab_size: genders, OOV buckets included.
    occupation_vocab_size: occupations, OOV buckets included.
    zip_vocab_size: zip3 prefixes, OOV buckets included.
    embedding_dim: width of every id embedding, the shared movie table included.
    layer_sizes: Dense widths of each tower; the last is the retrieval
      embedding width.
    temperature: softmax temperature on the cosine scores; lower is sharper.
    user_id_dropout: fraction of training rows whose user id is replaced by the
      OOV id, so cold users' path through the tower is trained.
    weight_history_by_rating: weight history movies by rating when pooling.
    candidates: optional dataset of batched candidate feature dicts (the
      catalogue, one row per movie, keys ``CANDIDATE_FEATURES``). When given,
      evaluation reports FactorizedTopK accuracy against it; training skips
      that metric because it scores the whole catalogue for every query.
    metric_ks: cut-offs for the FactorizedTopK metric.
  """

  QUERY_FEATURES = QUERY_FEATURES
  CANDIDATE_FEATURES = CANDIDATE_FEATURES

  def __init__(self, user_vocab_size: int, movie_vocab_size: int, gender_vocab_size: int,
               occupation_vocab_size: int, zip_vocab_size: int, embedding_dim: int = 32,
               layer_sizes: Sequence[int] = (64, 32), temperature: float = 0.1,
               user_id_dropout: float = 0.2, weight_history_by_rating: bool = True,
               candidates: Optional[tf.data.Dataset] = None,
               metric_ks: Sequence[int] = (1, 5, 10, 50, 100)):
    super().__init__()
    if not layer_sizes:
      raise ValueError('layer_sizes needs at least the output width.')
    self.movie_embedding = tf.keras.layers.Embedding(movie_vocab_size, embedding_dim, name='movie_embedding')
    self.query_model = QueryTower(
        self.movie_embedding, user_vocab_size=user_vocab_size, gender_vocab_size=gender_vocab_size,
        occupation_vocab_size=occupation_vocab_size, zip_vocab_size=zip_vocab_size,
        embedding_dim=embedding_dim, layer_sizes=layer_sizes, user_id_dropout=user_id_dropout,
        weight_history_by_rating=weight_history_by_rating, name='query_tower')
    self.candidate_model = CandidateTower(self.movie_embedding, layer_sizes, name='candidate_tower')
    metrics = None
    if candidates is not None:
      # Id-based: the task passes movie ids (needed for accidental hits), so
      # the streamed catalogue carries them too.
      metrics = tfrs.metrics.FactorizedTopK(
          candidates=candidates.map(lambda c: (c[MOVIE_ID_KEY], self.candidate_model(c))), ks=metric_ks)
    self.task = tfrs.tasks.Retrieval(metrics=metrics, temperature=temperature, remove_accidental_hits=True)

  def query_embeddings(self, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    """Query vectors, float32 [B, layer_sizes[-1]], from ``QUERY_FEATURES``."""
    return self.query_model(features, training=training)

  def candidate_embeddings(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Candidate vectors, float32 [B, layer_sizes[-1]], from ``CANDIDATE_FEATURES``."""
    return self.candidate_model(features)

  def call(self, features: Dict[str, tf.Tensor],
           training: Optional[bool] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """Both towers on one batch: (query [B, d], candidate [B, d])."""
    return self.query_model(features, training=training), self.candidate_model(features)

  def compute_loss(self, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    query, candidate = self(features, training=training)
    return self.task(query, candidate, candidate_ids=features[MOVIE_ID_KEY], compute_metrics=not training)


def candidate_table(model: RetrievalModel, candidates: tf.data.Dataset,
                    id_key: str = MOVIE_ID_KEY) -> Tuple[tf.Tensor, tf.Tensor]:
  """Embeds a catalogue.

  Args:
    model: a trained RetrievalModel.
    candidates: batched dicts with ``CANDIDATE_FEATURES`` and ``id_key``.
    id_key: the feature returned as identifier, e.g. ``movie_id_xf``, or a raw
      ``movie_id`` string feature carried alongside.

  Returns:
    (identifiers [N], embeddings float32 [N, d]).
  """
  ids, embeddings = [], []
  for batch in candidates:
    ids.append(batch[id_key])
    embeddings.append(model.candidate_embeddings(batch))
  return tf.concat(ids, axis=0), tf.concat(embeddings, axis=0)


def build_brute_force(embeddings: tf.Tensor, identifiers: Optional[tf.Tensor] = None, k: int = 100,
                      query_model: Optional[tf.keras.Model] = None
                      ) -> tfrs.layers.factorized_top_k.BruteForce:
  """Exact top-K by a full matrix product; runs on stock TensorFlow Serving.

  Args:
    embeddings: float32 [N, d] candidate vectors.
    identifiers: [N] ids returned for hits; row numbers when None.
    k: default number of results.
    query_model: when given, the index takes query features instead of
      query vectors.

  Returns:
    The indexed layer: ``index(queries)`` gives (scores [B, k], ids [B, k]).
  """
  return tfrs.layers.factorized_top_k.BruteForce(query_model=query_model, k=k).index(embeddings, identifiers)


def default_scann_params(num_candidates: int, k: int) -> Dict[str, int]:
  """ScaNN settings for ``num_candidates`` points and top ``k``.

  About sqrt(N) leaves (ScaNN's rule of thumb); enough of them searched to
  cover at least 10% of the leaves and at least 10 * k points, so a small
  catalogue is not searched too thinly to fill k; and 10 * k points (at most N)
  re-scored exactly. On 1M structureless random vectors (no clusters for the
  tree to exploit) these find about 72% of the exact top 100, and searching 30%
  of the leaves about 95% (docs/results/index.md); measure recall on real
  embeddings before relying on either.

  Returns:
    ``{'num_leaves', 'num_leaves_to_search', 'num_reordering_candidates'}``.
  """
  num_leaves = max(1, min(num_candidates, round(math.sqrt(num_candidates))))
  to_search = max(math.ceil(0.1 * num_leaves), math.ceil(10 * k * num_leaves / num_candidates))
  return {'num_leaves': num_leaves, 'num_leaves_to_search': min(num_leaves, to_search),
          'num_reordering_candidates': min(num_candidates, 10 * k)}


def build_scann(embeddings: tf.Tensor, identifiers: Optional[tf.Tensor] = None, k: int = 100,
                query_model: Optional[tf.keras.Model] = None, num_leaves: Optional[int] = None,
                num_leaves_to_search: Optional[int] = None, num_reordering_candidates: Optional[int] = None,
                dimensions_per_block: int = 2, training_iterations: int = 12
                ) -> tfrs.layers.factorized_top_k.ScaNN:
  """Approximate top-K with ScaNN: tree partitioning, AH scoring, exact reordering.

  Not servable by stock TensorFlow Serving, which lacks ScaNN's custom ops;
  saving needs ``tf.saved_model.SaveOptions(namespace_whitelist=['Scann'])``.

  Args:
    embeddings: float32 [N, d] candidate vectors.
    identifiers: [N] ids returned for hits; row numbers when None.
    k: default number of results.
    query_model: when given, the index takes query features.
    num_leaves, num_leaves_to_search, num_reordering_candidates: tree
      partitioning and exact re-scoring; ``default_scann_params`` fills in
      those left None. All leaves searched and all N points reordered makes
      the result exact.
    dimensions_per_block: AH quantisation block width.
    training_iterations: k-means iterations for the tree.

  Returns:
    The indexed layer: ``index(queries)`` gives (scores [B, k], ids [B, k]).

  Raises:
    ImportError: if the scann package is not installed.
  """
  params = default_scann_params(int(embeddings.shape[0]), k)
  given = {'num_leaves': num_leaves, 'num_leaves_to_search': num_leaves_to_search,
           'num_reordering_candidates': num_reordering_candidates}
  params.update({key: value for key, value in given.items() if value is not None})
  params['num_leaves_to_search'] = min(params['num_leaves_to_search'], params['num_leaves'])
  return tfrs.layers.factorized_top_k.ScaNN(
      query_model=query_model, k=k, dimensions_per_block=dimensions_per_block,
      training_iterations=training_iterations, **params).index(embeddings, identifiers)


def brute_force_index(model: RetrievalModel, candidates: tf.data.Dataset, k: int = 100,
                      id_key: str = MOVIE_ID_KEY) -> tfrs.layers.factorized_top_k.BruteForce:
  """Exact index over ``candidates`` that takes query features.

  This is the index to export for TensorFlow Serving.

  Args:
    model: a trained RetrievalModel.
    candidates: batched dicts with ``CANDIDATE_FEATURES`` and ``id_key``.
    k: default number of results.
    id_key: the feature returned as the hit identifier.

  Returns:
    BruteForce layer: ``index(query_features)`` gives (scores [B, k], ids [B, k]).
  """
  ids, embeddings = candidate_table(model, candidates, id_key)
  return build_brute_force(embeddings, ids, k=k, query_model=model.query_model)


def scann_index(model: RetrievalModel, candidates: tf.data.Dataset, k: int = 100,
                id_key: str = MOVIE_ID_KEY, **scann_options) -> tfrs.layers.factorized_top_k.ScaNN:
  """Approximate ScaNN index over ``candidates`` that takes query features.

  Stock TensorFlow Serving cannot load it (no ScaNN ops); export
  ``brute_force_index`` there instead.

  Args:
    model: a trained RetrievalModel.
    candidates: batched dicts with ``CANDIDATE_FEATURES`` and ``id_key``.
    k: default number of results.
    id_key: the feature returned as the hit identifier.
    **scann_options: passed to ``build_scann``.

  Returns:
    ScaNN layer: ``index(query_features)`` gives (scores [B, k], ids [B, k]).
  """
  ids, embeddings = candidate_table(model, candidates, id_key)
  return build_scann(embeddings, ids, k=k, query_model=model.query_model, **scann_options)


def save_index(index: tfrs.layers.factorized_top_k.TopK, export_dir: str,
               history_length: int = f.HISTORY_LENGTH) -> None:
  """Saves an index that takes query features, with a ``serving_default`` signature.

  The signature takes the ``QUERY_FEATURES`` tensors by name and returns
  ``scores`` float32 [B, k] and ``ids`` [B, k].

  Args:
    index: a layer from ``brute_force_index`` (or ``scann_index``, which only
      loads where the scann package provides its ops).
    export_dir: where the SavedModel goes.
    history_length: width of the history features in the signature.
  """
  specs = query_input_signature(history_length)

  @tf.function
  def serve(**features):
    scores, ids = index(features)
    return {'scores': scores, 'ids': ids}

  options = None
  if isinstance(index, tfrs.layers.factorized_top_k.ScaNN):
    options = tf.saved_model.SaveOptions(namespace_whitelist=['Scann'])
  tf.saved_model.save(index, export_dir, signatures={'serving_default': serve.get_concrete_function(**specs)},
                      options=options)
