"""A self-attentive sequential model over the history lists: the third scorer of the item-item stage.

SASRec (Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM
2018), cut to one block read from the latest rating: each history entry is
its movie's embedding plus embeddings of its age (0 the latest) and its
stars; the latest entry attends over the history, a feed-forward layer
follows, and a movie's score is the result's dot product with the movie's
embedding plus a bias. The Trainer fits it after the rating model, on every
rating before the test period (train and eval): a softmax over the
catalogue of which movie a rating is, given its history. Like the tables it
reads only the history a request carries, so it serves users with no id in
training.

On the RetrievalEvaluator's protocol it scores about as well alone as the
two tables together, and differently: docs/models.md has the figures.
"""
from typing import Tuple

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


class SequenceModel(tf.keras.layers.Layer):
  """Scores every movie from a history: ``[B, T]`` ids and ratings to ``[B, N]`` logits.

  Args:
    num_movies: N, the movie vocabulary without OOV buckets; other ids
      (padding, OOV) are masked out.
    dim: the embedding width.

  Call args:
    history_ids: int64 [B, T] movie vocabulary ids, oldest first, padded at
      the end with ``features.HISTORY_PAD_ID``.
    history_ratings: float32 [B, T], aligned.
  """

  def __init__(self, num_movies: int, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.num_movies, self.dim = int(num_movies), int(dim)
    self.movie = tf.keras.layers.Embedding(self.num_movies + 1, self.dim)  # row 0: not a known movie
    self.age = tf.keras.layers.Embedding(f.HISTORY_LENGTH, self.dim)
    self.stars = tf.keras.layers.Embedding(_STARS, self.dim)
    self.attention = tf.keras.layers.MultiHeadAttention(HEADS, self.dim // HEADS)
    self.feed_forward = tf.keras.Sequential([tf.keras.layers.Dense(2 * self.dim, activation='gelu'),
                                             tf.keras.layers.Dense(self.dim)])
    self.attended_norm = tf.keras.layers.LayerNormalization()
    self.output_norm = tf.keras.layers.LayerNormalization()
    self.dropout = tf.keras.layers.Dropout(DROPOUT)
    self.bias = self.add_weight(name='bias', shape=(self.num_movies,), initializer='zeros')

  def call(self, history_ids: tf.Tensor, history_ratings: tf.Tensor, training: bool = False) -> tf.Tensor:
    history_ids = history_ids[:, -f.HISTORY_LENGTH:]
    history_ratings = history_ratings[:, -f.HISTORY_LENGTH:]
    known = (history_ids >= 0) & (history_ids < self.num_movies)
    present = tf.not_equal(history_ids, f.HISTORY_PAD_ID)
    position = tf.range(tf.shape(history_ids)[1])[None, :]
    length = tf.reduce_sum(tf.cast(present, tf.int32), axis=1, keepdims=True)
    age = tf.clip_by_value(length - 1 - position, 0, f.HISTORY_LENGTH - 1)
    stars = tf.clip_by_value(tf.cast(tf.round(history_ratings), tf.int32), 0, _STARS - 1)
    entries = self.movie(tf.where(known, history_ids + 1, 0)) + self.age(age) + self.stars(stars)
    entries = self.dropout(entries, training=training)
    latest = tf.maximum(tf.reduce_max(tf.where(known, position, -1), axis=1), 0)
    query = tf.gather(entries, latest, batch_dims=1)[:, None, :]
    attended = self.attended_norm(query + self.attention(query, entries, attention_mask=known[:, None, :],
                                                         training=training))
    out = self.output_norm(attended + self.feed_forward(attended))[:, 0]
    return tf.matmul(out, self.movie.embeddings[1:], transpose_b=True) + self.bias

  def get_config(self):
    return {**super().get_config(), 'num_movies': self.num_movies, 'dim': self.dim}


def training_rows(history_ids: np.ndarray, history_ratings: np.ndarray, movies: np.ndarray,
                  num_movies: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The ratings the model learns from: a known movie with at least one known history movie."""
  known = (history_ids >= 0) & (history_ids < num_movies)
  keep = (movies >= 0) & (movies < num_movies) & known.any(axis=1)
  return history_ids[keep], history_ratings[keep].astype(np.float32), movies[keep]


def fit(history_ids: np.ndarray, history_ratings: np.ndarray, movies: np.ndarray, num_movies: int, dim: int,
        epochs: int, seed: int) -> SequenceModel:
  """A ``SequenceModel`` trained to tell each rating's movie from its history (catalogue softmax).

  Args:
    history_ids, history_ratings: [R, T] each rating's history, as
      ``SequenceModel`` takes them.
    movies: [R] the rated movies' vocabulary ids.
    num_movies, dim: as ``SequenceModel``.
    epochs: passes over the ratings; the weights returned are the mean of
      those after each of the last ``AVERAGED_EPOCHS`` (or all of them).
    seed: of the shuffle (the weights' initialization follows the global seed).
  """
  history_ids, history_ratings, movies = training_rows(history_ids, history_ratings, movies, num_movies)
  if not len(movies):
    raise ValueError('No rating with a known movie in its history to train the sequence model on.')
  model = SequenceModel(num_movies, dim, name='sequence_model')
  model(history_ids[:1], history_ratings[:1])  # builds the weights before the step is traced
  optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)  # not tracked by the model: its slots are not saved

  @tf.function(autograph=False)
  def step(ids, ratings, targets):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, model(ids, ratings, True)))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss

  data = tf.data.Dataset.from_tensor_slices((history_ids, history_ratings, movies))
  averaged = min(AVERAGED_EPOCHS, epochs)
  total = [np.zeros(v.shape, v.dtype.as_numpy_dtype) for v in model.trainable_variables]
  for epoch in range(epochs):
    losses = [step(*batch) for batch in data.shuffle(len(movies), seed=seed + epoch).batch(BATCH_SIZE)]
    logging.info('Sequence model epoch %d/%d: loss %.4f', epoch + 1, epochs, float(np.mean(losses)))
    if epoch >= epochs - averaged:
      total = [t + v.numpy() for t, v in zip(total, model.trainable_variables)]
  for variable, value in zip(model.trainable_variables, total):
    variable.assign(value / averaged)
  return model
