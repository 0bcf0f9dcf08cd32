"""Hyperparameter defaults: the one place both tuner_fn and run_fn read.

Each model has its defaults (its ``trainer.registry`` entry); custom_config['hparams']
overrides them, and a Tuner's best values override both, so Trainer works the
same with or without the Tuner.
"""
import dataclasses
import json
from typing import Any, Dict, Mapping, Optional, Tuple

from trainer import registry


@dataclasses.dataclass(frozen=True)
class HParams:
  """What a Trainer run needs to build and fit a model.

  The field defaults are the seed's tuned ranking model: 32-d user and movie
  embeddings, Dense 256-64-1, Adagrad lr 0.1, L2 0.01, 50 epochs, batch 8192.
  """
  model: str = 'ranking'
  embedding_dim: int = 32
  layer_sizes: Tuple[int, ...] = (256, 64)
  cross_layers: int = 0
  dropout: float = 0.0
  optimizer: str = 'adagrad'
  learning_rate: float = 0.1
  l2: float = 0.01
  history_shrinkage: float = 5.0
  # history_ranking: co-rater pseudo-count of the kNN term's movie
  # similarities (trainer/similarity.py); 0 leaves the term out.
  neighbour_shrinkage: float = 0.0
  # history_ranking: pseudo-count of the movie bias against the movie's
  # point-in-time mean, and the share of training rows that hide it.
  movie_shrinkage: float = 5.0
  movie_stats_dropout: float = 0.25
  # multitask: hidden widths of the retrieval query tower, and the weight of
  # the retrieval loss next to the rating loss (weight 1).
  retrieval_layer_sizes: Tuple[int, ...] = (128,)
  retrieval_weight: float = 3.0
  # Models whose registry entry has item_item (trainer/item_item.py): the
  # EASE ridge penalty; the half-life of a rating's weight in history
  # positions for the EASE and the sequential table; the sequential scores'
  # weight next to EASE's; how many of a rating's most recent history
  # entries the sequential table counts; what each star above the middle
  # of the rating range adds to a rating's weight; the sequence model's
  # (trainer/sequential.py) weight (0 leaves it out, untrained), width and
  # passes over the ratings.
  item_item_l2: float = 1000.0
  item_item_half_life: float = 8.0
  item_item_sequence_half_life: float = 1.0
  item_item_sequence_weight: float = 0.5
  item_item_sequence_window: int = 20
  item_item_rating_weight: float = 0.5
  item_item_model_weight: float = 3.5
  item_item_model_dim: int = 64
  item_item_model_epochs: int = 10
  epochs: int = 50
  batch_size: int = 8192
  # Stop when eval RMSE has not improved for this many epochs (0: never) and
  # keep the best epoch's weights.
  early_stopping_patience: int = 0
  # trainer/distribution.py: 'default', 'mirrored' or 'multi_worker_mirrored'.
  distribution_strategy: str = 'default'
  seed: int = 42

  def replace(self, **overrides: Any) -> 'HParams':
    """Returns a copy with known keys overridden; unknown keys are an error."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
    if unknown:
      raise ValueError(f'Unknown hyperparameters {sorted(unknown)}; known: '
                       f'{sorted(f.name for f in dataclasses.fields(self))}.')
    for key in ('layer_sizes', 'retrieval_layer_sizes'):
      if key in overrides:
        sizes = overrides[key]
        # KerasTuner can only search strings: '128,64'.
        sizes = sizes.split(',') if isinstance(sizes, str) else sizes
        overrides[key] = tuple(int(x) for x in sizes if str(x).strip())
    return dataclasses.replace(self, **overrides)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)


DEFAULTS = HParams()
DEFAULT_MODEL = registry.DEFAULT_MODEL
# Models whose output is a rating: the pipeline's Evaluator and serving
# signatures need one (the retrieval-only model is scored by make bench-quality).
RATING_MODELS = tuple(name for name, entry in registry.MODELS.items() if entry.rates)


def resolve(custom_config: Optional[Mapping[str, Any]],
            tuned: Optional[Mapping[str, Any]] = None) -> HParams:
  """Model defaults, then ``custom_config['hparams']``, then the Tuner's best values.

  The model is ``hparams['model']``, or DEFAULT_MODEL.
  """
  overrides: Dict[str, Any] = dict((custom_config or {}).get('hparams', {}))
  overrides.update(tuned or {})
  model = overrides.get('model', DEFAULT_MODEL)
  return DEFAULTS.replace(**{**registry.get(model).defaults, **overrides, 'model': model})
