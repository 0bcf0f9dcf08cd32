"""Hyperparameter defaults: the one place both tuner_fn and run_fn read.

Without a Tuner, Trainer uses DEFAULTS (overridden by custom_config); with a
Tuner, its best hyperparameters override both.
"""
import dataclasses
import json
from typing import Any, Dict, Mapping, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class HParams:
  """What a Trainer run needs to build and fit a model.

  The defaults are the seed's tuned ranking model: 32-d user and movie
  embeddings, Dense 256-64-1, Adagrad lr 0.1, L2 0.01, 50 epochs, batch 8192.
  """
  model: str = 'ranking'
  embedding_dim: int = 32
  layer_sizes: Tuple[int, ...] = (256, 64)
  optimizer: str = 'adagrad'
  learning_rate: float = 0.1
  l2: float = 0.01
  epochs: int = 50
  batch_size: int = 8192
  seed: int = 42

  def replace(self, **overrides: Any) -> 'HParams':
    """Returns a copy with known keys overridden; unknown keys are an error."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
    if unknown:
      raise ValueError(f'Unknown hyperparameters {sorted(unknown)}; known: '
                       f'{sorted(f.name for f in dataclasses.fields(self))}.')
    if 'layer_sizes' in overrides:
      overrides['layer_sizes'] = tuple(int(x) for x in overrides['layer_sizes'])
    return dataclasses.replace(self, **overrides)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)


DEFAULTS = HParams()


def resolve(custom_config: Optional[Mapping[str, Any]],
            tuned: Optional[Mapping[str, Any]] = None) -> HParams:
  """Defaults, then ``custom_config['hparams']``, then the Tuner's best values."""
  overrides: Dict[str, Any] = dict((custom_config or {}).get('hparams', {}))
  overrides.update(tuned or {})
  return DEFAULTS.replace(**overrides)
