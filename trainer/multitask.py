"""Joint rating prediction and retrieval, sharing the history movie table."""
from typing import Dict

import tensorflow as tf

from trainer import base
from trainer.models import HistoryRankingModel
from trainer.retrieval import RetrievalModel
from transforms import features as f


class MultitaskModel(base.Model):
  """A ``HistoryRankingModel`` and a ``RetrievalModel`` trained as one.

  The retrieval tower embeds a user's history with the ranking model's movie
  table and reads it with the ranking model's ``HistoryEncoder``, so every
  rating trains that table twice: to predict its value, and to predict which
  movie comes next. The loss is
  ``rating_weight * MSE + retrieval_weight * catalogue softmax``, as in TFRS's
  multitask tutorial. ``call`` returns ratings, so the Evaluator and
  ``serving_default`` treat it as a rating model; ``recommend`` and
  ``retrieve`` rank the catalogue with its towers (``query_embeddings`` and
  ``candidate_embeddings``).

  Args:
    ranking: the rating model; its ``movie_embedding`` is shared.
    gender_vocab_size, occupation_vocab_size, movie_vocab_size: vocabulary
      sizes, OOV included.
    retrieval_layer_sizes: hidden Dense widths of the query tower.
    dropout: dropout rate in the query tower.
    rating_weight: weight of the rating loss.
    retrieval_weight: weight of the retrieval loss.
  """

  TRANSFORM_OUTPUTS = tuple(dict.fromkeys(
      HistoryRankingModel.TRANSFORM_OUTPUTS + RetrievalModel.TRANSFORM_OUTPUTS))

  def __init__(self, ranking: HistoryRankingModel, movie_vocab_size: int, gender_vocab_size: int,
               occupation_vocab_size: int, retrieval_layer_sizes=(128,), dropout: float = 0.2,
               rating_weight: float = 1.0, retrieval_weight: float = 3.0):
    super().__init__()
    self.ranking = ranking
    self.retrieval = RetrievalModel(
        movie_vocab_size=movie_vocab_size, gender_vocab_size=gender_vocab_size,
        occupation_vocab_size=occupation_vocab_size, embedding_dim=ranking.movie_embedding.output_dim,
        layer_sizes=retrieval_layer_sizes, dropout=dropout, movie_embedding=ranking.movie_embedding,
        history_encoder=ranking.history_encoder)
    self.rating_weight = rating_weight
    self.retrieval_weight = retrieval_weight

  @property
  def similarity(self):
    """The rating model's kNN layer (``trainer.similarity.Similarity``), or None."""
    return self.ranking.similarity

  def call(self, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    return self.ranking(features, training=training)

  def query_embeddings(self, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    return self.retrieval.query_embeddings(features, training=training)

  def candidate_embeddings(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    return self.retrieval.candidate_embeddings(features)

  def compute_loss(self, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    rating_loss = self.ranking.task(labels=features[f.LABEL_KEY], predictions=self(features, training=training))
    retrieval_loss = self.retrieval.compute_loss(features, training=training)
    return self.rating_weight * rating_loss + self.retrieval_weight * retrieval_loss
