"""TFRS models, each a ``tfrs.Model`` subclass selected by ``HParams.model``."""
from typing import Dict, Sequence, Tuple

import tensorflow as tf
import tensorflow_recommenders as tfrs

from transforms import features as f

PREDICTION_KEY = 'predictions'


class RankingModel(tfrs.Model):
  """The seed's ranking model: user and movie embeddings feeding an MLP.

  It reads the Transform outputs ``user_id_xf`` and ``movie_id_xf`` (int ids,
  OOV ids included) and predicts the rating with a mean-squared-error task.

  Args:
    user_vocab_size: users in the Transform vocabulary, OOV buckets included.
    movie_vocab_size: movies in the Transform vocabulary, OOV buckets included.
    embedding_dim: width of both embeddings.
    layer_sizes: hidden Dense layer widths; a final Dense(1) is added.
    l2: L2 penalty on the embeddings and Dense kernels.
  """

  # Raw features the serving signature needs from a request.
  RAW_FEATURES: Tuple[str, ...] = (f.USER_ID, f.MOVIE_ID)

  def __init__(self, user_vocab_size: int, movie_vocab_size: int, embedding_dim: int = 32,
               layer_sizes: Sequence[int] = (256, 64), l2: float = 0.0):
    super().__init__()
    reg = tf.keras.regularizers.l2(l2) if l2 else None
    self.user_embedding = tf.keras.layers.Embedding(
        user_vocab_size, embedding_dim, embeddings_regularizer=reg, name='user_embedding')
    self.movie_embedding = tf.keras.layers.Embedding(
        movie_vocab_size, embedding_dim, embeddings_regularizer=reg, name='movie_embedding')
    self.rating_head = tf.keras.Sequential(
        [tf.keras.layers.Dense(n, activation='relu', kernel_regularizer=reg) for n in layer_sizes]
        + [tf.keras.layers.Dense(1)], name='rating_head')
    self.task = tfrs.tasks.Ranking(
        loss=tf.keras.losses.MeanSquaredError(),
        metrics=[tf.keras.metrics.RootMeanSquaredError('rmse')])

  def call(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    user = self.user_embedding(features[f.transformed_name(f.USER_ID)])
    movie = self.movie_embedding(features[f.transformed_name(f.MOVIE_ID)])
    return self.rating_head(tf.concat([user, movie], axis=1))

  def compute_loss(self, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    predictions = self(features)
    return self.task(labels=features[f.LABEL_KEY], predictions=predictions)
