"""DataValidator: TFX's ExampleValidator plus drift, OOV and a stop on anomalies."""
import json
from typing import Mapping, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts

from components.data_validator import checks, executor, spec


class DataValidator(base_component.BaseComponent):
  """Checks every split against the schema, and eval/test against train.

  Schema anomalies (types, presence, ranges, domains), drift over the
  thresholds in the schema, and id OOV rates over ``oov_thresholds`` are
  written as a standard ExampleAnomalies artifact (``Split-*/SchemaDiff.pb``)
  plus ``report.html`` and ``report.json``; with ``fail_on_anomalies`` the
  component then fails, so that nothing downstream of it runs.
  """
  SPEC_CLASS = spec.DataValidatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, statistics: types.BaseChannel, schema: types.BaseChannel, examples: types.BaseChannel,
               quarantine: Optional[types.BaseChannel] = None, baseline_split: str = 'train',
               oov_thresholds: Optional[Mapping[str, float]] = None, fail_on_anomalies: bool = True):
    """Constructs a DataValidator.

    Args:
      statistics: StatisticsGen's per-split statistics.
      schema: the curated (ImportSchemaGen) or inferred schema.
      examples: the examples the statistics describe; ids are read for OOV.
      quarantine: ExampleGen's quarantine, whose counts go into the report.
      baseline_split: the split the others are compared with.
      oov_thresholds: id feature to the largest allowed share of unseen ids;
        defaults to ``checks.DEFAULT_OOV_THRESHOLDS``.
      fail_on_anomalies: fail the component (and so the run) on any finding.
    """
    thresholds = checks.DEFAULT_OOV_THRESHOLDS if oov_thresholds is None else dict(oov_thresholds)
    super().__init__(spec.DataValidatorSpec(
        statistics=statistics, schema=schema, examples=examples, quarantine=quarantine,
        baseline_split=baseline_split, oov_thresholds=json.dumps(thresholds, sort_keys=True),
        fail_on_anomalies=int(fail_on_anomalies),
        anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies)))
