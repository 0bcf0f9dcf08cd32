"""The models the Trainer can build: one entry each, with its class, defaults and capabilities.

``HParams.model`` names an entry. What the rest of the code asks of a model
(does it rate, does it retrieve, does it read the kNN tables) is answered
here, never by probing the model object.

Importing this module does not import TensorFlow (the builders do, when
called): the local runner reads the model names before it sets TensorFlow's
log level.
"""
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional

from transforms import features as f

if TYPE_CHECKING:  # the builders import the models, and TensorFlow, when called
  import numpy as np
  import tensorflow as tf

# vocab(name) -> the size of Transform vocabulary ``name``, OOV buckets included.
VocabSize = Callable[[str], int]


@dataclasses.dataclass(frozen=True)
class Entry:
  """One model.

  Attributes:
    name: what ``HParams.model`` calls it.
    build: (params, vocab, neighbour tables or None) -> an uncompiled model.
    defaults: hyperparameters on top of ``HParams``' field defaults.
    rates: it predicts a rating, which the Evaluator and ``serving_default`` need.
    retrieves: it has query and candidate towers: ``recommend`` ranks by them
      and the model gets a ``retrieve`` signature.
    neighbours: it reads the kNN tables the Trainer computes from the train split.
    item_item: ``recommend`` and ``retrieve`` rank by the item-item stage
      over the user's history (trainer/item_item.py), whose tables the
      Trainer computes from the train and eval splits; its own scores are the
      fallback for a history with no movie in them. It must read the history
      lists.
  """
  name: str
  build: Callable[[Any, VocabSize, Optional[Dict[str, 'np.ndarray']]], 'tf.keras.Model']
  defaults: Mapping[str, Any]
  rates: bool
  retrieves: bool
  neighbours: bool = False
  item_item: bool = False


def _ranking(params, vocab: VocabSize, neighbours) -> 'tf.keras.Model':
  from trainer import models
  return models.RankingModel(
      user_vocab_size=vocab(f.USER_VOCAB), movie_vocab_size=vocab(f.MOVIE_VOCAB),
      embedding_dim=params.embedding_dim, layer_sizes=params.layer_sizes, l2=params.l2)


def _history_ranking(params, vocab: VocabSize, neighbours) -> 'tf.keras.Model':
  from trainer import models, similarity
  return models.HistoryRankingModel(
      movie_vocab_size=vocab(f.MOVIE_VOCAB), title_vocab_size=vocab(f.TITLE_VOCAB),
      gender_vocab_size=vocab(f.GENDER_VOCAB), occupation_vocab_size=vocab(f.OCCUPATION_VOCAB),
      embedding_dim=params.embedding_dim, layer_sizes=params.layer_sizes, cross_layers=params.cross_layers,
      dropout=params.dropout, l2=params.l2, history_shrinkage=params.history_shrinkage,
      movie_shrinkage=params.movie_shrinkage, movie_stats_dropout=params.movie_stats_dropout,
      similarity=None if neighbours is None else similarity.Similarity(
          neighbours, shrinkage=params.neighbour_shrinkage, name='movie_similarity'))


def _multitask(params, vocab: VocabSize, neighbours) -> 'tf.keras.Model':
  from trainer import multitask
  return multitask.MultitaskModel(
      _history_ranking(params, vocab, neighbours), movie_vocab_size=vocab(f.MOVIE_VOCAB),
      gender_vocab_size=vocab(f.GENDER_VOCAB), occupation_vocab_size=vocab(f.OCCUPATION_VOCAB),
      retrieval_layer_sizes=params.retrieval_layer_sizes, dropout=params.dropout,
      retrieval_weight=params.retrieval_weight)


def _retrieval(params, vocab: VocabSize, neighbours) -> 'tf.keras.Model':
  from trainer import retrieval
  return retrieval.RetrievalModel(
      movie_vocab_size=vocab(f.MOVIE_VOCAB), gender_vocab_size=vocab(f.GENDER_VOCAB),
      occupation_vocab_size=vocab(f.OCCUPATION_VOCAB), embedding_dim=params.embedding_dim,
      layer_sizes=params.layer_sizes, dropout=params.dropout)


# The seed's tuned ranking model is HParams' field defaults.
_HISTORY_DEFAULTS = {
    'embedding_dim': 32, 'layer_sizes': (128, 64), 'cross_layers': 1, 'dropout': 0.2,
    'optimizer': 'adam', 'learning_rate': 1e-3, 'l2': 1e-5, 'epochs': 30, 'batch_size': 1024,
    'early_stopping_patience': 3, 'neighbour_shrinkage': 25.0,
}

MODELS: Dict[str, Entry] = {e.name: e for e in (
    Entry('ranking', _ranking, {}, rates=True, retrieves=False),
    Entry('history_ranking', _history_ranking, _HISTORY_DEFAULTS, rates=True, retrieves=False, neighbours=True),
    # Retrieval weight 3 (single seed, make bench-quality's split): RMSE
    # 0.9538 and Recall@100 0.356; weight 1: 0.9530 and 0.333; 0.1: 0.9542
    # and 0.304.
    # Its lists come from the item-item stage: Recall@100 0.534 against the
    # towers' 0.355 on the RetrievalEvaluator's protocol (docs/models.md).
    Entry('multitask', _multitask, {**_HISTORY_DEFAULTS, 'retrieval_weight': 3.0}, rates=True, retrieves=True,
          neighbours=True, item_item=True),
    # Two towers, full catalogue softmax; stops on the eval softmax loss.
    Entry('retrieval', _retrieval, {
        'embedding_dim': 64, 'layer_sizes': (128,), 'dropout': 0.2, 'optimizer': 'adam', 'learning_rate': 2e-3,
        'l2': 0.0, 'epochs': 15, 'batch_size': 512, 'early_stopping_patience': 2,
    }, rates=False, retrieves=True),
)}
# What the pipeline trains when nothing says otherwise: the best rating
# model of make bench-quality (docs/models.md), which also retrieves.
DEFAULT_MODEL = 'multitask'


def get(name: str) -> Entry:
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; available: {sorted(MODELS)}.')
  return MODELS[name]
