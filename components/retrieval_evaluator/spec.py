"""RetrievalEvaluator's spec: key names shared by the component and its executor."""
from tfx.types import artifact, component_spec, standard_artifacts

from contract import names

EXAMPLES_KEY = 'examples'
MODEL_KEY = 'model'
BASELINE_MODEL_KEY = 'baseline_model'
EVALUATION_KEY = 'evaluation'
METRICS_FILE = names.RETRIEVAL_METRICS_FILE


class RetrievalEvaluation(artifact.Artifact):
  """Recall@K and NDCG@K of a model and of popularity; metrics.json and MLMD custom properties."""
  # namespace.TypeName: the only form KFP v2 accepts as a schema title.
  TYPE_NAME = 'movielens.RetrievalEvaluation'


class RetrievalEvaluatorSpec(component_spec.ComponentSpec):
  """Raw examples, a trained model and optionally its baseline in; ranking metrics out."""
  PARAMETERS = {}
  INPUTS = {
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
      # The latest blessed model, scored on the same cases so the list gate can pair them.
      BASELINE_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model, optional=True),
  }
  OUTPUTS = {
      EVALUATION_KEY: component_spec.ChannelParameter(type=RetrievalEvaluation),
  }
