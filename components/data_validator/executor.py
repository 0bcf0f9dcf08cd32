"""ExampleValidator executor: schema, drift and OOV checks that can stop the run."""
import json
import os
from typing import Any, Dict, List

from absl import logging
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.common.splits import split_files
from components.data_validator import checks, report
from components.data_validator import spec
from contract import names

_ANOMALIES_FILE = 'SchemaDiff.pb'  # TFX's name, so TFX tooling reads ours


class DataValidationError(RuntimeError):
  """The data failed its checks; the message names the features and figures."""


def _quarantine_summary(input_dict) -> Dict[str, Any]:
  quarantine = input_dict.get(spec.QUARANTINE_KEY)
  if not quarantine:
    return {}
  path = os.path.join(quarantine[0].uri, names.QUARANTINE_SUMMARY_FILE)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as fh:
    summary = json.load(fh)
  return {k: summary.get(k) for k in ('rows_read', 'rows_quarantined', 'counts_by_reason')}


class Executor(base_executor.BaseExecutor):
  """Validates every split; drift and OOV against the baseline (train) split."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    statistics = artifact_utils.get_single_instance(input_dict[spec.STATISTICS_KEY])
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(
        artifact_utils.get_single_uri(input_dict[spec.SCHEMA_KEY])))
    anomalies_artifact = artifact_utils.get_single_instance(output_dict[spec.ANOMALIES_KEY])
    baseline = exec_properties[spec.BASELINE_SPLIT_KEY]
    thresholds = json.loads(exec_properties.get(spec.OOV_THRESHOLDS_KEY) or '{}')
    splits = artifact_utils.decode_split_names(statistics.split_names)
    if baseline not in splits:
      raise ValueError(f'Baseline split {baseline!r} is not among the statistics splits {splits}.')

    baseline_stats = checks.split_statistics(statistics.uri, baseline)
    known = checks.known_ids(checks.read_ids(split_files(examples.uri, baseline)))
    findings, measurements = [], []
    for split in splits:
      anomalies, split_findings, split_measurements = checks.validate(
          checks.split_statistics(statistics.uri, split), schema, split,
          previous=None if split == baseline else baseline_stats)
      io_utils.write_bytes_file(os.path.join(anomalies_artifact.uri, f'Split-{split}', _ANOMALIES_FILE),
                                anomalies.SerializeToString())
      findings += split_findings
      measurements += split_measurements
      if split != baseline:
        oov = checks.oov_measurements(checks.read_ids(split_files(examples.uri, split)), known, split, thresholds)
        measurements += oov
        findings += checks.measurement_findings(oov)
    anomalies_artifact.split_names = artifact_utils.encode_split_names(splits)

    context = {'baseline_split': baseline, 'oov_thresholds': thresholds, 'statistics': statistics.uri,
               'examples': examples.uri, 'ingestion_quarantine': _quarantine_summary(input_dict)}
    result = report.write(anomalies_artifact.uri, 'Data validation of the pipeline splits', findings,
                          measurements, context)
    anomalies_artifact.set_int_custom_property('anomaly_count', len(findings))
    report_path = os.path.join(anomalies_artifact.uri, report.REPORT_HTML)
    anomalies_artifact.set_string_custom_property('report', report_path)
    logging.info('%s\nReport: %s', report.summary_text(result), report_path)
    if findings and exec_properties.get(spec.FAIL_ON_ANOMALIES_KEY, 1):
      raise DataValidationError(
          f'{report.summary_text(result)}\n'
          f'The pipeline stops here: nothing is trained or pushed. Report: {report_path}\n'
          'Fix the data, or, if the change is expected, update the thresholds in schema/schema.pbtxt '
          '(drift, ranges, domains) or the OOV thresholds, and run again.')
