"""ExampleValidator's spec: key names shared by the component and its executor."""
from tfx.types import component_spec, standard_artifacts

from components.common.artifacts import QuarantinedRows

STATISTICS_KEY = 'statistics'
SCHEMA_KEY = 'schema'
EXAMPLES_KEY = 'examples'
QUARANTINE_KEY = 'quarantine'
ANOMALIES_KEY = 'anomalies'
BASELINE_SPLIT_KEY = 'baseline_split'
OOV_THRESHOLDS_KEY = 'oov_thresholds'
FAIL_ON_ANOMALIES_KEY = 'fail_on_anomalies'


class DataValidatorSpec(component_spec.ComponentSpec):
  """Statistics, schema and examples in; anomalies (with report.html) out."""
  PARAMETERS = {
      BASELINE_SPLIT_KEY: component_spec.ExecutionParameter(type=str),
      OOV_THRESHOLDS_KEY: component_spec.ExecutionParameter(type=str),
      FAIL_ON_ANOMALIES_KEY: component_spec.ExecutionParameter(type=int),
  }
  INPUTS = {
      STATISTICS_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleStatistics),
      SCHEMA_KEY: component_spec.ChannelParameter(type=standard_artifacts.Schema),
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      QUARANTINE_KEY: component_spec.ChannelParameter(type=QuarantinedRows, optional=True),
  }
  OUTPUTS = {
      ANOMALIES_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
  }
