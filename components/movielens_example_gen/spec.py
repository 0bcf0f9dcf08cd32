"""MovieLensExampleGen's ComponentSpec, its key names and its quarantine type.

The spec lives apart from component.py because both the component and the
executor need the keys, and component.py imports the executor.
"""

from tfx import types
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.common.artifacts import QuarantinedRows

# Execution parameters.
DATA_DIR_KEY = 'data_dir'
SPLIT_CONFIG_KEY = 'split_config'
MAX_BAD_FRACTION_KEY = 'max_bad_fraction'
DATA_FINGERPRINT_KEY = 'data_fingerprint'
CACHE_DIR_KEY = 'cache_dir'

# Outputs.
EXAMPLES_KEY = 'examples'
QUARANTINE_KEY = 'quarantine'

DEFAULT_MAX_BAD_FRACTION = 0.01

# Custom properties the executor sets on the examples artifact, besides
# rows_<split> for each split and ExampleGen's own span, input_fingerprint,
# payload_format and file_format.
DATA_SOURCE_PROPERTY = 'data_source'
DATA_SOURCE_PATH_PROPERTY = 'data_source_path'
ROWS_READ_PROPERTY = 'rows_read'
ROWS_QUARANTINED_PROPERTY = 'rows_quarantined'


class MovieLensExampleGenSpec(types.ComponentSpec):
  """ComponentSpec of MovieLensExampleGen; see the component for the keys."""

  PARAMETERS = {
      DATA_DIR_KEY: component_spec.ExecutionParameter(type=str),
      SPLIT_CONFIG_KEY: component_spec.ExecutionParameter(type=str),
      MAX_BAD_FRACTION_KEY: component_spec.ExecutionParameter(type=float),
      DATA_FINGERPRINT_KEY: component_spec.ExecutionParameter(
          type=str, optional=True),
      CACHE_DIR_KEY: component_spec.ExecutionParameter(
          type=str, optional=True),
  }
  INPUTS = {}
  OUTPUTS = {
      EXAMPLES_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Examples),
      QUARANTINE_KEY: component_spec.ChannelParameter(type=QuarantinedRows),
  }
