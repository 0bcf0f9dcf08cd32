"""RetrievalEvaluator executor."""
import json
import os
from typing import Any, Dict, List

from absl import logging
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components.retrieval_evaluator import protocol, spec
from contract import names
from transforms import features as f


def _columns(per_case: List[Dict[str, float]]) -> Dict[str, List[float]]:
  return {k: [c[k] for c in per_case] for k in (per_case[0] if per_case else {})}


def evaluate(examples_uri: str, model_dir: str) -> Dict[str, Any]:
  """Protocol metrics of the SavedModel in ``model_dir`` and of popularity.

  Returns:
    ``{'evaluated': bool, 'reason'?: str, 'cases': n, 'model': {...}, 'popularity': {...}, 'per_case': {...}}``;
    ``per_case`` holds each case's user and metrics, for the report's
    intervals over users.
  """
  loaded = tf.saved_model.load(model_dir)
  splits = {s: protocol.read_split(examples_uri, s) for s in ('train', 'eval', 'test')}
  test = splits['test']
  everything = {k: sum((splits[s][k] for s in splits), []) for k in (f.USER_ID, f.MOVIE_ID, f.TIMESTAMP)}
  cases = protocol.retrieval_cases(everything, test)
  popularity = protocol.popularity_per_case(everything, min(test[f.TIMESTAMP]), cases)
  result: Dict[str, Any] = {'cases': len(cases), 'popularity': protocol.mean_metrics(popularity) if cases else {}}
  if names.RETRIEVE not in loaded.signatures:
    result.update(evaluated=False, reason=f'the model has no {names.RETRIEVE!r} signature (no retrieval towers)')
    return result
  model = protocol.model_per_case(protocol.retriever(loaded.signatures[names.RETRIEVE]), test, cases)
  result.update(evaluated=True, model=protocol.mean_metrics(model), per_case={
      'users': [test[f.USER_ID][i].decode() for i, _, _ in cases],
      'model': _columns(model), 'popularity': _columns(popularity)})
  return result


class Executor(base_executor.BaseExecutor):
  """Writes metrics.json and records the metrics as MLMD custom properties."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    model = artifact_utils.get_single_instance(input_dict[spec.MODEL_KEY])
    output = artifact_utils.get_single_instance(output_dict[spec.EVALUATION_KEY])
    result = evaluate(examples.uri, path_utils.serving_model_path(model.uri))
    with tf.io.gfile.GFile(os.path.join(output.uri, spec.METRICS_FILE), 'w') as fh:
      json.dump(result, fh, indent=2, sort_keys=True)
    output.set_int_custom_property('evaluated', int(result['evaluated']))
    output.set_int_custom_property('cases', result['cases'])
    for source in ('model', 'popularity'):
      for name, value in result.get(source, {}).items():
        output.set_float_custom_property(f'{source}_{name}', value)
    if result['evaluated']:
      logging.info('Retrieval on %d test users: model %s; popularity %s', result['cases'], result['model'],
                   result['popularity'])
    else:
      logging.info('Retrieval not evaluated: %s', result['reason'])
