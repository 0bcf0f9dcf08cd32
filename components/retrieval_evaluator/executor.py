"""RetrievalEvaluator executor."""
import json
import os
from typing import Any, Dict, List, Optional, Tuple

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


_NO_RETRIEVE = f'the model has no {names.RETRIEVE!r} signature (no retrieval towers)'
_BASELINE_NO_RETRIEVE = f'the latest blessed model has no {names.RETRIEVE!r} signature, so it has no lists to compare'


def evaluate(examples_uri: str, model_dir: str, baseline_dir: Optional[str] = None) -> Dict[str, Any]:
  """Protocol metrics of the SavedModel in ``model_dir`` and of popularity, accuracy and beyond.

  Args:
    examples_uri: ExampleGen's raw examples (train, eval and test splits).
    model_dir: the candidate SavedModel.
    baseline_dir: the latest blessed model's SavedModel, scored on the same
      cases, or None.

  Returns:
    ``{'evaluated': bool, 'reason'?: str, 'cases': n, 'model': {...}, 'popularity': {...}, 'per_case': {...}}``;
    ``per_case`` holds each case's user and metrics, for the report's
    intervals over users. With ``baseline_dir``, also
    ``'baseline_evaluated'`` and ``'baseline'`` (or ``'baseline_reason'``),
    and ``per_case['baseline']`` when both models were scored.
  """
  loaded = tf.saved_model.load(model_dir)
  splits = {s: protocol.read_split(examples_uri, s) for s in ('train', 'eval', 'test')}
  test = splits['test']
  everything = {k: sum((splits[s][k] for s in splits), []) for k in (f.USER_ID, f.MOVIE_ID, f.TIMESTAMP)}
  cases = protocol.retrieval_cases(everything, test)
  test_start = min(test[f.TIMESTAMP])
  context = protocol.list_context(splits, test_start, cases)
  popularity, popularity_means = protocol.score_lists(protocol.popularity_lists(everything, test_start, cases), cases,
                                                      context)
  result: Dict[str, Any] = {'cases': len(cases), 'popularity': popularity_means}

  def score(signatures) -> Tuple[List[Dict[str, float]], Dict[str, float]]:
    return protocol.score_lists(protocol.model_lists(protocol.retriever(signatures[names.RETRIEVE]), test, cases),
                                cases, context)

  if names.RETRIEVE not in loaded.signatures:
    result.update(evaluated=False, reason=_NO_RETRIEVE)
    return result
  model, model_means = score(loaded.signatures)
  result.update(evaluated=True, model=model_means, per_case={
      'users': [test[f.USER_ID][i].decode() for i, _, _ in cases],
      'model': _columns(model), 'popularity': _columns(popularity)})
  if baseline_dir:
    baseline = tf.saved_model.load(baseline_dir)
    if names.RETRIEVE in baseline.signatures:
      per_case, means = score(baseline.signatures)
      result.update(baseline_evaluated=True, baseline=means)
      result['per_case']['baseline'] = _columns(per_case)
    else:
      result.update(baseline_evaluated=False, baseline_reason=_BASELINE_NO_RETRIEVE)
  return result


class Executor(base_executor.BaseExecutor):
  """Writes metrics.json and records the metrics as MLMD custom properties."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    model = artifact_utils.get_single_instance(input_dict[spec.MODEL_KEY])
    output = artifact_utils.get_single_instance(output_dict[spec.EVALUATION_KEY])
    baselines = input_dict.get(spec.BASELINE_MODEL_KEY) or []
    result = evaluate(examples.uri, path_utils.serving_model_path(model.uri),
                      path_utils.serving_model_path(baselines[0].uri) if baselines else None)
    with tf.io.gfile.GFile(os.path.join(output.uri, spec.METRICS_FILE), 'w') as fh:
      json.dump(result, fh, indent=2, sort_keys=True)
    output.set_int_custom_property('evaluated', int(result['evaluated']))
    output.set_int_custom_property('cases', result['cases'])
    if 'baseline_evaluated' in result:
      output.set_int_custom_property('baseline_evaluated', int(result['baseline_evaluated']))
    for source in ('model', 'popularity', 'baseline'):
      for name, value in result.get(source, {}).items():
        output.set_float_custom_property(f'{source}_{name}', value)
    if result['evaluated']:
      logging.info('Retrieval on %d test users: model %s; popularity %s; baseline %s', result['cases'],
                   result['model'], result['popularity'],
                   result.get('baseline', result.get('baseline_reason', 'none (no model was blessed before)')))
    else:
      logging.info('Retrieval not evaluated: %s', result['reason'])
