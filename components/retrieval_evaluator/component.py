"""RetrievalEvaluator: Recall@K and NDCG@K of a model's retrieval towers, recorded in MLMD."""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec

from components.retrieval_evaluator import executor, spec


class RetrievalEvaluator(base_component.BaseComponent):
  """Scores the model's ``retrieve`` signature on the point-in-time protocol.

  TFMA evaluates one prediction per example; a top-K list per user is not
  that, so this runs next to the Evaluator. It reads ExampleGen's raw splits,
  builds one case per test user (``protocol.py``), asks the SavedModel for
  its top movies, and writes Recall@10, Recall@100 and NDCG@10 of the model
  and of a popularity baseline to ``metrics.json`` and to the output
  artifact's MLMD custom properties (``model_recall_at_100``,
  ``popularity_recall_at_100``, ...). A model without a ``retrieve``
  signature (no retrieval towers) gets ``evaluated = 0`` and its reason.
  With a ``baseline_model`` (the latest blessed model), that model is scored
  on the same cases too (``baseline_...``), so EvalReport's list gate pairs
  the two per user.
  """
  SPEC_CLASS = spec.RetrievalEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
               baseline_model: Optional[types.BaseChannel] = None):
    """Constructs a RetrievalEvaluator.

    Args:
      examples: ExampleGen's raw examples (train, eval and test splits).
      model: the Trainer's model.
      baseline_model: the latest blessed model (the baseline Resolver's), or None.
    """
    super().__init__(spec.RetrievalEvaluatorSpec(
        examples=examples, model=model, baseline_model=baseline_model,
        evaluation=types.Channel(type=spec.RetrievalEvaluation)))
