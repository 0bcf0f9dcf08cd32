"""A self-attentive sequential model over the history lists: the third scorer of the item-item stage.

SASRec (Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM
2018), cut to one block read from the latest rating: each history entry is
its movie's vector plus embeddings of its age (0 the latest) and its stars;
the latest entry, plus embeddings of the user's gender and age bucket,
attends over the history, a feed-forward layer follows, and a movie's score
is the result's dot product with the movie's vector plus a bias. A movie's
vector is its embedding plus a projection of its genres (side information,
as in Zhang et al., "Feature-level Deeper Self-Attention Network for
Sequential Recommendation", IJCAI 2019), which gives a rarely rated movie
the direction of its genres. The Trainer fits it after the rating model, on
every rating before the test period (train and eval): a softmax over the
catalogue of which movie a rating is, given its history and demographics.
Like the tables it reads only what a request carries, so it serves users
with no id in training.

On the RetrievalEvaluator's protocol it scores about as well alone as the
two tables together, and differently: docs/models.md has the figures.
"""
from typing import NamedTuple, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from transforms import features as f

BATCH_SIZE = 1024
LEARNING_RATE = 4e-3
DROPOUT = 0.4
# The model saved is the average of the weights after each of the last
# epochs (stochastic weight averaging: Izmailov et al., UAI 2018).
AVERAGED_EPOCHS = 3
HEADS = 2
# Stars are embedded by their rounded value; 0 is padding.
_STARS = int(max(f.RATING_RANGE)) + 1
# Transform's age buckets: one more than the boundaries.
AGE_BUCKETS = len(f.AGE_BOUNDARIES) + 1


class Side(NamedTuple):
  """What the model reads beside the history lists (``fit``'s and ``SequenceModel``'s ``side``).

  genres: float32 [N, G] each movie's genres, multi-hot, row j movie
    vocabulary id j (``item_item.movie_genres``).
  gender_vocab_size: Transform's gender vocabulary, OOV bucket included.
  """
  genres: np.ndarray
  gender_vocab_size: int


class SequenceModel(tf.keras.layers.Layer):
  """Scores every movie from a history: ``[B, T]`` ids and ratings to ``[B, N]`` logits.

  Args:
    num_movies: N, the movie vocabulary without OOV buckets; other ids
      (padding, OOV) are masked out.
    dim: the embedding width.
    side: the movies' genres and the gender vocabulary's size; None scores
      from the history lists alone.

  Call args:
    history_ids: int64 [B, T] movie vocabulary ids, oldest first, padded at
      the end with ``features.HISTORY_PAD_ID``.
    history_ratings: float32 [B, T], aligned.
    gender, age_bucket: int64 [B] Transform's ``user_gender_xf`` and
      ``age_bucket_xf``; required with ``side``, ignored without.
  """

  def __init__(self, num_movies: int, dim: int, side: Optional[Side] = None, **kwargs):
    super().__init__(**kwargs)
    self.num_movies, self.dim = int(num_movies), int(dim)
    self.movie = tf.keras.layers.Embedding(self.num_movies + 1, self.dim)  # row 0: not a known movie
    self.has_side = side is not None
    if self.has_side:
      genres = np.asarray(side.genres, np.float32)
      if genres.ndim != 2 or genres.shape[0] != self.num_movies:
        raise ValueError(f'The genre table is {genres.shape}; the model covers {self.num_movies} movies.')
      self.genres = self.add_weight(name='genres', shape=genres.shape, trainable=False,
                                    initializer=tf.constant_initializer(genres))
      self.genre_projection = tf.keras.layers.Dense(self.dim, use_bias=False)
      self.gender = tf.keras.layers.Embedding(int(side.gender_vocab_size), self.dim)
      self.age_bucket = tf.keras.layers.Embedding(AGE_BUCKETS, self.dim)
    self.age = tf.keras.layers.Embedding(f.HISTORY_LENGTH, self.dim)
    self.stars = tf.keras.layers.Embedding(_STARS, self.dim)
    self.attention = tf.keras.layers.MultiHeadAttention(HEADS, self.dim // HEADS)
    self.feed_forward = tf.keras.Sequential([tf.keras.layers.Dense(2 * self.dim, activation='gelu'),
                                             tf.keras.layers.Dense(self.dim)])
    self.attended_norm = tf.keras.layers.LayerNormalization()
    self.output_norm = tf.keras.layers.LayerNormalization()
    self.dropout = tf.keras.layers.Dropout(DROPOUT)
    self.bias = self.add_weight(name='bias', shape=(self.num_movies,), initializer='zeros')

  def movie_vectors(self) -> tf.Tensor:
    """float32 [N + 1, dim]: row 0 an unknown movie's, row j + 1 movie j's embedding plus its genres' projection."""
    if not self.movie.built:  # the first call builds it, where the history lookup used to
      self.movie.build((None,))
    vectors = self.movie.embeddings
    if not self.has_side:
      return vectors
    return vectors + tf.pad(self.genre_projection(self.genres), [[1, 0], [0, 0]])

  def call(self, history_ids: tf.Tensor, history_ratings: tf.Tensor, gender: Optional[tf.Tensor] = None,
           age_bucket: Optional[tf.Tensor] = None, training: bool = False) -> tf.Tensor:
    if self.has_side and (gender is None or age_bucket is None):
      raise ValueError('This sequence model reads the user\'s gender and age bucket (user_gender_xf, '
                       'age_bucket_xf): pass both.')
    history_ids = history_ids[:, -f.HISTORY_LENGTH:]
    history_ratings = history_ratings[:, -f.HISTORY_LENGTH:]
    known = (history_ids >= 0) & (history_ids < self.num_movies)
    present = tf.not_equal(history_ids, f.HISTORY_PAD_ID)
    position = tf.range(tf.shape(history_ids)[1])[None, :]
    length = tf.reduce_sum(tf.cast(present, tf.int32), axis=1, keepdims=True)
    age = tf.clip_by_value(length - 1 - position, 0, f.HISTORY_LENGTH - 1)
    stars = tf.clip_by_value(tf.cast(tf.round(history_ratings), tf.int32), 0, _STARS - 1)
    vectors = self.movie_vectors()
    entries = tf.gather(vectors, tf.where(known, history_ids + 1, 0)) + self.age(age) + self.stars(stars)
    entries = self.dropout(entries, training=training)
    latest = tf.maximum(tf.reduce_max(tf.where(known, position, -1), axis=1), 0)
    query = tf.gather(entries, latest, batch_dims=1)[:, None, :]
    if self.has_side:
      user = self.gender(tf.reshape(gender, [-1])) + self.age_bucket(tf.reshape(age_bucket, [-1]))
      query += user[:, None, :]
    attended = self.attended_norm(query + self.attention(query, entries, attention_mask=known[:, None, :],
                                                         training=training))
    out = self.output_norm(attended + self.feed_forward(attended))[:, 0]
    return tf.matmul(out, vectors[1:], transpose_b=True) + self.bias

  def get_config(self):
    return {**super().get_config(), 'num_movies': self.num_movies, 'dim': self.dim}


def training_rows(history_ids: np.ndarray, history_ratings: np.ndarray, movies: np.ndarray, num_movies: int,
                  *users: np.ndarray) -> Tuple[np.ndarray, ...]:
  """The ratings the model learns from: a known movie with at least one known history movie.

  Returns the kept rows of each column, ``users`` (any [R] columns) after the first three.
  """
  known = (history_ids >= 0) & (history_ids < num_movies)
  keep = (movies >= 0) & (movies < num_movies) & known.any(axis=1)
  return (history_ids[keep], history_ratings[keep].astype(np.float32), movies[keep],
          *(np.asarray(column)[keep] for column in users))


def fit(history_ids: np.ndarray, history_ratings: np.ndarray, movies: np.ndarray, num_movies: int, dim: int,
        epochs: int, seed: int, side: Optional[Side] = None, gender: Optional[np.ndarray] = None,
        age_bucket: Optional[np.ndarray] = None) -> SequenceModel:
  """A ``SequenceModel`` trained to tell each rating's movie from its history (catalogue softmax).

  Args:
    history_ids, history_ratings: [R, T] each rating's history, as
      ``SequenceModel`` takes them.
    movies: [R] the rated movies' vocabulary ids.
    num_movies, dim, side: as ``SequenceModel``.
    epochs: passes over the ratings; the weights returned are the mean of
      those after each of the last ``AVERAGED_EPOCHS`` (or all of them).
    seed: of the shuffle (the weights' initialization follows the global seed).
    gender, age_bucket: [R] each rating's user's, as ``SequenceModel`` takes
      them; required with ``side``.
  """
  if side is not None and (gender is None or age_bucket is None):
    raise ValueError('A sequence model with side information trains on each rating\'s gender and age bucket.')
  users = (gender, age_bucket) if side is not None else ()
  columns = training_rows(history_ids, history_ratings, movies, num_movies, *users)
  if not len(columns[2]):
    raise ValueError('No rating with a known movie in its history to train the sequence model on.')
  model = SequenceModel(num_movies, dim, side, name='sequence_model')
  inputs = (columns[0], columns[1], *columns[3:])  # what the model is called with
  model(*(column[:1] for column in inputs))  # builds the weights before the step is traced
  optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)  # not tracked by the model: its slots are not saved

  @tf.function(autograph=False)
  def step(targets, *batch):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, model(*batch, training=True)))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss

  data = tf.data.Dataset.from_tensor_slices((columns[2], *inputs))
  averaged = min(AVERAGED_EPOCHS, epochs)
  total = [np.zeros(v.shape, v.dtype.as_numpy_dtype) for v in model.trainable_variables]
  for epoch in range(epochs):
    losses = [step(*batch) for batch in data.shuffle(len(columns[2]), seed=seed + epoch).batch(BATCH_SIZE)]
    logging.info('Sequence model epoch %d/%d: loss %.4f', epoch + 1, epochs, float(np.mean(losses)))
    if epoch >= epochs - averaged:
      total = [t + v.numpy() for t, v in zip(total, model.trainable_variables)]
  for variable, value in zip(model.trainable_variables, total):
    variable.assign(value / averaged)
  return model
