"""EvalReport executor: renders one evaluation into report.html, report.json and summary.md, and blesses."""
import os
from typing import Any, Dict, List, Optional

from absl import logging
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.eval_report import report, spec
from pipeline import configs, eval_config as ec

# The local runner's progress filter shows log lines that start with this.
LOG_PREFIX = 'Evaluation report'


def regenerate_command(run_id: Optional[str], output_root: Optional[str]) -> str:
  """The command that builds the report of ``run_id`` again from MLMD."""
  command = 'python -m components.eval_report'
  if output_root:
    command += f' --output-root {output_root}'
  if run_id:
    command += f' --run-id {run_id}'
  return command


def output_root_of(artifact_uri: str, pipeline_name: Optional[str]) -> Optional[str]:
  """The local runner's --output-root, when ``artifact_uri`` is in its layout.

  The local runner puts artifacts under ``<root>/pipelines/<pipeline name>/``
  and MLMD under ``<root>/metadata/``; another orchestrator has no such root.
  """
  marker = f'{os.sep}pipelines{os.sep}{pipeline_name}{os.sep}'
  if not pipeline_name or marker not in artifact_uri:
    return None
  return artifact_uri[:artifact_uri.index(marker)]


def _uri(input_dict: Dict[str, List[types.Artifact]], key: str) -> Optional[str]:
  artifacts = input_dict.get(key) or []
  return artifacts[0].uri if artifacts else None


def _custom_properties(artifact: types.Artifact) -> Dict[str, Any]:
  out = {}
  for key, value in artifact.mlmd_artifact.custom_properties.items():
    kind = value.WhichOneof('value')
    out[key] = getattr(value, kind) if kind else None
  return out


# What the Evaluator records on its blessing, copied so the Resolver and the
# Pusher find the model this blessing is about.
_COPIED_BLESSING_PROPERTIES = ('current_model', 'current_model_id', 'baseline_model', 'baseline_model_id')


def bless(blessing: types.Artifact, blessed: Optional[bool], evaluator_blessing: Optional[types.Artifact],
          model: Optional[types.Artifact], decision: Optional[report.Decision] = None) -> None:
  """Writes BLESSED or NOT_BLESSED and the ``blessed`` property, as TFX's Evaluator does.

  No decision (the Evaluator had no thresholds) is not a blessing. With the
  report's ``decision``, the blessing also says which gates refused the model
  and why (``decided_by``, ``reason``).
  """
  if evaluator_blessing is not None:
    for key in _COPIED_BLESSING_PROPERTIES:
      if evaluator_blessing.has_custom_property(key):
        value = evaluator_blessing.get_custom_property(key)
        (blessing.set_int_custom_property if isinstance(value, int) else blessing.set_string_custom_property)(
            key, value)
  if model is not None and not blessing.has_custom_property('current_model_id'):
    blessing.set_string_custom_property('current_model', model.uri)
    blessing.set_int_custom_property('current_model_id', model.id)
  name = evaluator_constants.BLESSED_FILE_NAME if blessed else evaluator_constants.NOT_BLESSED_FILE_NAME
  with tf.io.gfile.GFile(os.path.join(blessing.uri, name), 'w') as fh:
    fh.write('')
  blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                   evaluator_constants.BLESSED_VALUE if blessed else
                                   evaluator_constants.NOT_BLESSED_VALUE)
  if decision is not None:
    blessing.set_string_custom_property(spec.DECIDED_BY_PROPERTY, ','.join(decision.decided_by))
    blessing.set_string_custom_property(spec.REASON_PROPERTY, decision.headline)


def _single(input_dict: Dict[str, List[types.Artifact]], key: str) -> Optional[types.Artifact]:
  artifacts = input_dict.get(key) or []
  return artifacts[0] if artifacts else None


class Executor(base_executor.BaseExecutor):
  """Reads the Evaluator's outputs and the data checks; writes the report artifact and the final blessing."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    run_id = self._context.pipeline_run_id if self._context else None
    pipeline_info = self._context.pipeline_info if self._context else None
    output = artifact_utils.get_single_instance(output_dict[spec.REPORT_KEY])
    output_root = output_root_of(output.uri, pipeline_info.id if pipeline_info else None)
    result = report.collect(
        evaluation_uri=artifact_utils.get_single_uri(input_dict[spec.EVALUATION_KEY]),
        examples_uri=examples.uri,
        eval_split=exec_properties[spec.EVAL_SPLIT_KEY],
        blessing_uri=_uri(input_dict, spec.BLESSING_KEY),
        model_uri=_uri(input_dict, spec.MODEL_KEY),
        quarantine_uri=_uri(input_dict, spec.QUARANTINE_KEY),
        anomalies_uri=_uri(input_dict, spec.ANOMALIES_KEY),
        retrieval_uri=_uri(input_dict, spec.RETRIEVAL_KEY),
        examples_properties=_custom_properties(examples),
        run_id=run_id,
        regenerate_command=regenerate_command(run_id, output_root),
        require_not_worse=bool(exec_properties.get(spec.REQUIRE_NOT_WORSE_KEY, 1)),
        min_slice_count=int(exec_properties.get(spec.MIN_SLICE_COUNT_KEY) or report.MIN_SLICE_COUNT),
        recall_tolerance=float(exec_properties.get(spec.RECALL_TOLERANCE_KEY, configs.DEFAULT_RECALL_TOLERANCE)))
    paths = write(output.uri, result)
    output.set_string_custom_property(spec.REPORT_PATH_PROPERTY, paths['html'])
    blessed = result.decision.blessed
    if blessed is not None:
      output.set_int_custom_property(spec.BLESSED_PROPERTY, int(blessed))
    output.set_string_custom_property(spec.DECIDED_BY_PROPERTY, ','.join(result.decision.decided_by))
    rmse = result.overall.candidate.get(ec.RMSE)
    if rmse is not None:
      output.set_float_custom_property(spec.RMSE_PROPERTY, rmse)
    for blessing in output_dict.get(spec.MODEL_BLESSING_KEY) or []:
      bless(blessing, blessed, _single(input_dict, spec.BLESSING_KEY), _single(input_dict, spec.MODEL_KEY),
            result.decision)
    logging.info('%s: %s\n%s', LOG_PREFIX, paths['html'], report.headline(result))


def write(out_dir: str, result: report.Report) -> Dict[str, str]:
  """Writes the report's files into ``out_dir`` under the spec's names."""
  return report.write(out_dir, result, html_name=spec.REPORT_HTML, json_name=spec.REPORT_JSON,
                      markdown_name=spec.SUMMARY_MD)
