"""The Evaluator's baseline: the latest blessed model that is not the candidate.

TFX's ``LatestBlessedModelStrategy`` resolves the latest blessed model even
when it is the candidate itself. On the first rerun after a blessing that
changes the Evaluator's inputs (baseline: none, then the candidate), so TFMA
runs again to compare the model with itself and learns nothing. Leaving the
candidate out keeps the inputs of that rerun what they were, and the
Evaluator comes from the cache.

Only the local runner uses it: the Kubeflow V2 compiler knows TFX's two
built-in strategies and no others.
"""
from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

# Input keys of the Resolver node.
MODEL = 'model'
MODEL_BLESSING = 'model_blessing'
CANDIDATE = 'candidate'

# Custom properties TFX's Evaluator writes on a ModelBlessing
# (tfx.components.evaluator.constants).
_CURRENT_MODEL_ID = 'current_model_id'
_BLESSED = 'blessed'


def latest_blessed_other_than(models: List[types.Artifact], blessings: List[types.Artifact],
                              candidates: List[types.Artifact]) -> Dict[str, List[types.Artifact]]:
  """The newest blessed model whose id is not a candidate's, with its blessing.

  Returns:
    ``{MODEL: [model], MODEL_BLESSING: [blessing]}``, or empty lists when no
    other model was ever blessed.
  """
  excluded = {a.id for a in candidates}
  blessed = {b.get_int_custom_property(_CURRENT_MODEL_ID): b for b in blessings
             if b.get_int_custom_property(_BLESSED) == 1}
  for model in sorted(models, key=lambda a: a.id, reverse=True):
    if model.id in blessed and model.id not in excluded:
      return {MODEL: [model], MODEL_BLESSING: [blessed[model.id]]}
  return {MODEL: [], MODEL_BLESSING: []}


class LatestBlessedOtherModelStrategy(resolver.ResolverStrategy):
  """Resolves the latest blessed Model other than the ``candidate`` input.

  Use with inputs ``model`` (every Model), ``model_blessing`` (every
  ModelBlessing) and ``candidate`` (the Trainer's model of this run).
  """

  def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                        ) -> Optional[Dict[str, List[types.Artifact]]]:
    del store  # everything needed is in the inputs
    result = latest_blessed_other_than(input_dict.get(MODEL, []), input_dict.get(MODEL_BLESSING, []),
                                       input_dict.get(CANDIDATE, []))
    result[CANDIDATE] = list(input_dict.get(CANDIDATE, []))
    return result
