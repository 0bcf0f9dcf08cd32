"""Two-tower retrieval: a query tower for users, a candidate tower for movies.

The query tower reads who the user is (gender, occupation, age bucket) and
what they rated before (the point-in-time history). There is no user-id
embedding: 90% of ML-100K's test users never appear in training, so a user is
their history and side features, and a new user's first ratings move their
query at once. The candidate tower is a movie-id embedding plus a per-movie
bias, which learns popularity: a query is ``[q, 1]`` and a candidate
``[c, b]``, so their dot product is ``q . c + b``.

Training is a full softmax over the whole catalogue (1,682 movies on ML-100K,
about the size of one in-batch-softmax batch), not in-batch sampling: sampled
negatives follow popularity, which teaches the towers to push popular movies
down, and on the point-in-time protocol that made a two-tower model lose to
plain popularity (Recall@100 0.25 vs 0.32). The full softmax learns
p(movie | user) itself.

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

from contract import names
from trainer import base
from transforms import features as f

_xf = f.transformed_name

# Query features, all from Transform; see transforms/preprocessing.py.
USER_GENDER_KEY = _xf(f.USER_GENDER)             # int64 [B]
USER_OCCUPATION_KEY = _xf(f.USER_OCCUPATION)     # int64 [B]
AGE_BUCKET_KEY = _xf(f.AGE_BUCKET)               # int64 [B], 0..len(AGE_BOUNDARIES)
HISTORY_IDS_KEY = _xf(f.HISTORY_MOVIE_IDS)       # int64 [B, HISTORY_LENGTH], HISTORY_PAD_ID padded
HISTORY_RATINGS_KEY = _xf(f.HISTORY_RATINGS)     # float32 [B, HISTORY_LENGTH], 0 where padded
# The candidate feature.
MOVIE_ID_KEY = _xf(f.MOVIE_ID)                   # int64 [B]; OOV id = vocab size

QUERY_FEATURES: Tuple[str, ...] = (
    USER_GENDER_KEY, USER_OCCUPATION_KEY, AGE_BUCKET_KEY, HISTORY_IDS_KEY, HISTORY_RATINGS_KEY)
CANDIDATE_FEATURES: Tuple[str, ...] = (MOVIE_ID_KEY,)

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


class HistoryEncoder(tf.keras.layers.Layer):
  """Three masked views of a user's history embeddings, and its length.

  * the mean of the history's movie embeddings (what the user watches);
  * their mean weighted by ``rating - rating_center`` (what they liked more
    than they disliked);
  * the mean of the last ``recent`` entries (what they watch now).

  Padded positions (id == ``pad_id``) count for nothing. An empty history gives
  zeros, and the appended ``log1p(length)`` lets the next layer tell that apart
  from a history that averages out to zero.

  Args:
    recent: how many of the latest entries make the recent view.
    rating_center: the rating that counts as neutral.
    pad_id: id that marks padding in the history ids.

  Call arguments:
    inputs: a tuple ``(embeddings, ids, ratings)``:
      embeddings: float [B, L, D], embeddings of the history ids (any value at
        padded positions). Histories are oldest first, padded at the end.
      ids: int [B, L], history ids, ``pad_id`` where padded.
      ratings: float [B, L], ratings aligned with ``ids``.

  Returns:
    float [B, 3 * D + 1].
  """

  def __init__(self, recent: int = 5, rating_center: float = 3.5, pad_id: int = f.HISTORY_PAD_ID, **kwargs):
    super().__init__(**kwargs)
    self.recent = recent
    self.rating_center = rating_center
    self.pad_id = pad_id

  def views(self, embeddings: tf.Tensor, ids: tf.Tensor, ratings: tf.Tensor) -> Dict[str, tf.Tensor]:
    """The views by name: ``mean``, ``liked``, ``recent`` [B, D] and ``log_length`` [B, 1]."""
    mask = tf.cast(tf.not_equal(ids, tf.cast(self.pad_id, ids.dtype)), embeddings.dtype)  # [B, L]
    length = tf.reduce_sum(mask, axis=1, keepdims=True)  # [B, 1]
    positions = tf.range(tf.shape(ids)[1], dtype=embeddings.dtype)[None, :]
    recent = mask * tf.cast(positions >= length - self.recent, embeddings.dtype)
    liked = mask * (tf.cast(ratings, embeddings.dtype) - self.rating_center)

    def pooled(weights, count):
      return tf.einsum('bl,bld->bd', weights, embeddings) / tf.maximum(count, 1.0)

    return {'mean': pooled(mask, length), 'liked': pooled(liked, length),
            'recent': pooled(recent, tf.reduce_sum(recent, axis=1, keepdims=True)), 'log_length': tf.math.log1p(length)}

  def call(self, inputs: Tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
    views = self.views(*inputs)
    return tf.concat([views['mean'], views['liked'], views['recent'], views['log_length']], axis=1)

  def get_config(self):
    return {**super().get_config(), 'recent': self.recent, 'rating_center': self.rating_center,
            'pad_id': self.pad_id}


class QueryTower(tf.keras.Model):
  """History and side features to a query vector ``[q, 1]``.

  Args:
    movie_embedding: the Embedding layer that embeds history movie ids
      (shared with a ranking model in ``MultitaskModel``).
    history_encoder: the ``HistoryEncoder`` to read the history with (the
      ranking model's, in ``MultitaskModel``); None makes one.
    gender_vocab_size, occupation_vocab_size: vocabulary sizes, OOV included.
    layer_sizes: hidden Dense widths.
    output_dim: width of ``q``.
    dropout: dropout rate after each hidden layer.

  Call arguments:
    features: dict with every key of ``QUERY_FEATURES`` (shapes there).
    training: turns dropout on.

  Returns:
    float32 [B, output_dim + 1]; the last column is 1, which picks up the
    candidate's bias in the dot product.
  """

  def __init__(self, movie_embedding: tf.keras.layers.Embedding, gender_vocab_size: int,
               occupation_vocab_size: int, layer_sizes: Sequence[int], output_dim: int, dropout: float = 0.0,
               history_encoder: Optional[HistoryEncoder] = None, **kwargs):
    super().__init__(**kwargs)
    self.movie_embedding = movie_embedding
    self.history = history_encoder or HistoryEncoder()
    self.gender_embedding = tf.keras.layers.Embedding(gender_vocab_size, 4, name='gender_embedding')
    self.occupation_embedding = tf.keras.layers.Embedding(occupation_vocab_size, 8, name='occupation_embedding')
    self.age_embedding = tf.keras.layers.Embedding(NUM_AGE_BUCKETS, 4, name='age_embedding')
    hidden = []
    for n in layer_sizes:
      hidden += [tf.keras.layers.Dense(n, activation='relu'), tf.keras.layers.Dropout(dropout)]
    self.mlp = tf.keras.Sequential(hidden + [tf.keras.layers.Dense(output_dim)], name='query_mlp')

  def call(self, features: Dict[str, tf.Tensor], training: Optional[bool] = None) -> tf.Tensor:
    ids = features[HISTORY_IDS_KEY]
    # The pad id (-1) is not a valid row; look up row 0 there, the encoder masks it.
    history = self.history((self.movie_embedding(tf.maximum(ids, 0)), ids, features[HISTORY_RATINGS_KEY]))
    x = tf.concat([history, self.gender_embedding(features[USER_GENDER_KEY]),
                   self.occupation_embedding(features[USER_OCCUPATION_KEY]),
                   self.age_embedding(features[AGE_BUCKET_KEY])], axis=1)
    q = self.mlp(x, training=training)
    return tf.concat([q, tf.ones_like(q[:, :1])], axis=1)


class CandidateTower(tf.keras.Model):
  """Movie id to a candidate vector ``[c, b]``: an embedding and a popularity bias.

  Args:
    movie_vocab_size: movies in the Transform vocabulary, OOV bucket included.
    output_dim: width of ``c``.

  Call arguments:
    features: dict with ``MOVIE_ID_KEY``, int64 [B].

  Returns:
    float32 [B, output_dim + 1].
  """

  def __init__(self, movie_vocab_size: int, output_dim: int, **kwargs):
    super().__init__(**kwargs)
    self.embedding = tf.keras.layers.Embedding(movie_vocab_size, output_dim, embeddings_initializer='glorot_uniform',
                                               name='candidate_embedding')
    self.bias = tf.keras.layers.Embedding(movie_vocab_size, 1, embeddings_initializer='zeros', name='candidate_bias')

  def call(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    ids = features[MOVIE_ID_KEY]
    return tf.concat([self.embedding(ids), self.bias(ids)], axis=1)


class CatalogueTopK(tfrs.layers.factorized_top_k.TopK):
  """Exact top K over every movie in the vocabulary, embedded at call time.

  ``FactorizedTopK`` needs an index of candidates. A ``BruteForce`` index is a
  snapshot, stale once training moves on; a ``Streaming`` one holds a
  tf.data pipeline, which a SavedModel cannot serialize. This one re-embeds the
  catalogue (movie ids ``0 .. num_candidates - 1``) through the candidate
  tower on each call: cheap at thousands of movies.

  Args:
    candidate_model: the ``CandidateTower``.
    num_candidates: movies to rank; the vocabulary size without OOV buckets.
    k: default number of results.
  """

  def __init__(self, candidate_model: tf.keras.Model, num_candidates: int, k: int = 100, **kwargs):
    super().__init__(k=k, **kwargs)
    self.candidate_model = candidate_model
    self.num_candidates = num_candidates

  def index(self, candidates=None, identifiers=None):
    raise NotImplementedError('CatalogueTopK embeds its catalogue itself; it takes no index.')

  def call(self, queries: tf.Tensor, k: Optional[int] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    ids = tf.range(self.num_candidates, dtype=tf.int64)
    scores = tf.matmul(queries, self.candidate_model({MOVIE_ID_KEY: ids}), transpose_b=True)
    top = tf.math.top_k(scores, k=min(k or self._k, self.num_candidates))
    return top.values, tf.gather(ids, top.indices)

  def is_exact(self) -> bool:
    return True


class RetrievalModel(base.Model):
  """Two-tower retrieval trained with a softmax over the whole catalogue.

  Each training row (a rating) is a positive (user, movie) pair; every other
  movie is a negative. Evaluation reports ``FactorizedTopK`` accuracy over the
  catalogue (the movie the user rated is in the top K); training skips it.

  Args:
    movie_vocab_size: movies in the Transform vocabulary, OOV bucket included.
    gender_vocab_size, occupation_vocab_size: vocabulary sizes, OOV included.
    embedding_dim: width of the history movie embedding and of ``q`` and ``c``.
    layer_sizes: hidden Dense widths of the query tower.
    dropout: dropout rate in the query tower.
    metric_ks: cut-offs for the FactorizedTopK metric.
    movie_embedding: an Embedding layer to embed history movies with, to share
      it with another model; None makes one.
    history_encoder: a ``HistoryEncoder`` to share with another model; None
      makes one.
  """

  QUERY_FEATURES = QUERY_FEATURES
  CANDIDATE_FEATURES = CANDIDATE_FEATURES
  TRANSFORM_OUTPUTS = QUERY_FEATURES + CANDIDATE_FEATURES

  def __init__(self, movie_vocab_size: int, gender_vocab_size: int, occupation_vocab_size: int,
               embedding_dim: int = 64, layer_sizes: Sequence[int] = (128,), dropout: float = 0.2,
               metric_ks: Sequence[int] = (10, 100),
               movie_embedding: Optional[tf.keras.layers.Embedding] = None,
               history_encoder: Optional[HistoryEncoder] = None):
    super().__init__()
    self.movie_vocab_size = movie_vocab_size
    self.movie_embedding = movie_embedding or tf.keras.layers.Embedding(
        movie_vocab_size, embedding_dim, name='movie_embedding')
    self.query_model = QueryTower(
        self.movie_embedding, gender_vocab_size=gender_vocab_size, occupation_vocab_size=occupation_vocab_size,
        layer_sizes=layer_sizes, output_dim=embedding_dim, dropout=dropout, history_encoder=history_encoder,
        name='query_tower')
    self.candidate_model = CandidateTower(movie_vocab_size, embedding_dim, name='candidate_tower')
    # The OOV row is a softmax class (eval rows may rate movies train never
    # saw) but never a recommendation.
    self.top_k = tfrs.metrics.FactorizedTopK(
        candidates=CatalogueTopK(self.candidate_model, movie_vocab_size - f.OOV_BUCKETS, k=max(metric_ks)),
        ks=metric_ks)

  def query_embeddings(self, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    """Query vectors, float32 [B, embedding_dim + 1], from ``QUERY_FEATURES``."""
    return self.query_model(features, training=training)

  def candidate_embeddings(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Candidate vectors, float32 [B, embedding_dim + 1], from ``CANDIDATE_FEATURES``."""
    return self.candidate_model(features)

  def logits(self, query: tf.Tensor) -> tf.Tensor:
    """Scores of every movie in the vocabulary (OOV last), float32 [B, movie_vocab_size]."""
    table = self.candidate_model({MOVIE_ID_KEY: tf.range(self.movie_vocab_size, dtype=tf.int64)})
    return tf.matmul(query, table, transpose_b=True)

  def call(self, features: Dict[str, tf.Tensor], training: Optional[bool] = None) -> tf.Tensor:
    """Catalogue scores for a batch of queries: float32 [B, movie_vocab_size]."""
    return self.logits(self.query_model(features, training=training))

  def compute_loss(self, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    query = self.query_model(features, training=training)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=features[MOVIE_ID_KEY], logits=self.logits(query)))
    if not training:
      self.top_k.update_state(query, self.candidate_model(features), true_candidate_ids=features[MOVIE_ID_KEY])
    return loss


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
  tf.saved_model.save(index, export_dir, signatures={names.SERVING_DEFAULT: serve.get_concrete_function(**specs)},
                      options=options)
