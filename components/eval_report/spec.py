"""EvalReport's spec: key names shared by the component, the executor and the CLI.

The spec lives apart from component.py because the executor needs the keys
and component.py imports the executor.
"""
from tfx.types import artifact, component_spec, standard_artifacts

from components.common.artifacts import QuarantinedRows
from components.retrieval_evaluator.spec import RetrievalEvaluation
from contract import names

# Inputs.
EVALUATION_KEY = 'evaluation'
BLESSING_KEY = 'blessing'
MODEL_KEY = 'model'
EXAMPLES_KEY = 'examples'
QUARANTINE_KEY = 'quarantine'
ANOMALIES_KEY = 'anomalies'
RETRIEVAL_KEY = 'retrieval'
# Parameters.
EVAL_SPLIT_KEY = 'eval_split'
REQUIRE_NOT_WORSE_KEY = 'require_not_worse'   # 0/1: bless only if not significantly worse than the baseline
MIN_SLICE_COUNT_KEY = 'min_slice_count'
RECALL_TOLERANCE_KEY = 'recall_tolerance'     # the list gate's allowed Recall@100 drop against the baseline
# Outputs.
REPORT_KEY = 'report'
MODEL_BLESSING_KEY = names.FINAL_BLESSING_KEY          # the blessing the Pusher and the baseline Resolver read

# Files in the report artifact.
REPORT_HTML = 'report.html'
REPORT_JSON = 'report.json'
SUMMARY_MD = 'summary.md'
# Custom properties the executor sets on the report artifact.
REPORT_PATH_PROPERTY = 'report'
BLESSED_PROPERTY = 'blessed'
# On the report and the final blessing: the gates that refused the model
# (comma-separated names, '' when none did), and the headline that says why.
DECIDED_BY_PROPERTY = 'decided_by'
REASON_PROPERTY = 'reason'
RMSE_PROPERTY = 'rmse'


class EvaluationReport(artifact.Artifact):
  """A reviewer's view of one evaluation: report.html, report.json, summary.md."""
  # namespace.TypeName: the only form KubeflowV2DagRunner accepts as a KFP schema title.
  TYPE_NAME = 'movielens.EvaluationReport'


class EvalReportSpec(component_spec.ComponentSpec):
  """The Evaluator's outputs and the data they were computed on, in; the report and the final blessing out."""
  PARAMETERS = {
      EVAL_SPLIT_KEY: component_spec.ExecutionParameter(type=str),
      REQUIRE_NOT_WORSE_KEY: component_spec.ExecutionParameter(type=int),
      MIN_SLICE_COUNT_KEY: component_spec.ExecutionParameter(type=int),
      RECALL_TOLERANCE_KEY: component_spec.ExecutionParameter(type=float),
  }
  INPUTS = {
      EVALUATION_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation),
      BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
      MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model, optional=True),
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      QUARANTINE_KEY: component_spec.ChannelParameter(type=QuarantinedRows, optional=True),
      ANOMALIES_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies, optional=True),
      RETRIEVAL_KEY: component_spec.ChannelParameter(type=RetrievalEvaluation, optional=True),
  }
  OUTPUTS = {
      REPORT_KEY: component_spec.ChannelParameter(type=EvaluationReport),
      MODEL_BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
  }
