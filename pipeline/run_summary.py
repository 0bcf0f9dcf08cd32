"""Reads what a pipeline run did back out of MLMD: components, times, metrics.

The local runner prints it, the end-to-end test asserts on it and the
pipeline benchmark records it.
"""
import dataclasses
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

_PIPELINE = 'pipeline'
_PIPELINE_RUN = 'pipeline_run'
_NODE = 'node'
# MLMD execution states as TFX leaves them.
_STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


@dataclasses.dataclass(frozen=True)
class ComponentRun:
  component_id: str
  state: str          # COMPLETE, CACHED, FAILED, RUNNING...
  seconds: float


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = metadata_path
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return metadata_store.MetadataStore(config)


def _contexts_of_type(store, execution_id: int, type_name: str):
  [context_type] = [t for t in store.get_context_types() if t.name == type_name]
  return [c for c in store.get_contexts_by_execution(execution_id) if c.type_id == context_type.id]


def run_ids(store: metadata_store.MetadataStore, pipeline_name: str) -> List[str]:
  """Every pipeline_run context of ``pipeline_name``, newest first."""
  pipeline = store.get_context_by_type_and_name(_PIPELINE, pipeline_name)
  if pipeline is None:
    return []
  runs = {}
  for execution in store.get_executions_by_context(pipeline.id):
    for run in _contexts_of_type(store, execution.id, _PIPELINE_RUN):
      runs[run.name] = run.create_time_since_epoch
  return sorted(runs, key=lambda name: (runs[name], name), reverse=True)


def latest_run_id(store: metadata_store.MetadataStore, pipeline_name: str) -> Optional[str]:
  """The newest pipeline_run context of ``pipeline_name``, or None."""
  runs = run_ids(store, pipeline_name)
  return runs[0] if runs else None


def component_runs(store: metadata_store.MetadataStore, run_id: str) -> List[ComponentRun]:
  """Every execution of one pipeline run, in start order."""
  run = store.get_context_by_type_and_name(_PIPELINE_RUN, run_id)
  if run is None:
    raise ValueError(f'No pipeline run {run_id!r} in this metadata store.')
  result = []
  for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.create_time_since_epoch):
    nodes = _contexts_of_type(store, execution.id, _NODE)
    # Node contexts are named '<pipeline>.<component id>'.
    component_id = nodes[0].name.split('.', 1)[-1] if nodes else str(execution.id)
    seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0
    result.append(ComponentRun(component_id, _STATE_NAMES.get(execution.last_known_state, '?'), seconds))
  return result


_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


def _artifact_uri(store, run_id: str, component_id: str, key: str, event_types) -> Optional[str]:
  run = store.get_context_by_type_and_name(_PIPELINE_RUN, run_id)
  for execution in store.get_executions_by_context(run.id):
    nodes = _contexts_of_type(store, execution.id, _NODE)
    if not nodes or nodes[0].name.split('.', 1)[-1] != component_id:
      continue
    for event in store.get_events_by_execution_ids([execution.id]):
      if event.type in event_types and event.path.steps and event.path.steps[0].key == key:
        [artifact] = store.get_artifacts_by_id([event.artifact_id])
        return artifact.uri
  return None


def output_uri(store: metadata_store.MetadataStore, run_id: str, component_id: str,
               output_key: str) -> Optional[str]:
  """URI of output ``output_key`` of ``component_id`` in run ``run_id``.

  Cached executions count: TFX links them to the artifacts they reused.
  """
  return _artifact_uri(store, run_id, component_id, output_key, _OUTPUT_EVENTS)


def input_uri(store: metadata_store.MetadataStore, run_id: str, component_id: str,
              input_key: str) -> Optional[str]:
  """URI of the artifact ``component_id`` read as ``input_key`` in run ``run_id``."""
  return _artifact_uri(store, run_id, component_id, input_key, _INPUT_EVENTS)


def artifact_properties(store: metadata_store.MetadataStore, uri: str) -> Dict[str, object]:
  """Custom properties of the artifact at ``uri`` as plain Python values."""
  [artifact] = store.get_artifacts_by_uri(uri)
  out = {}
  for key, value in artifact.custom_properties.items():
    out[key] = getattr(value, value.WhichOneof('value'))
  return out


def evaluation_metrics(evaluation_uri: str) -> Dict[str, float]:
  """Overall-slice metrics of a TFMA evaluation, by metric name."""
  import tensorflow_model_analysis as tfma  # heavy; only callers that need it pay
  result = tfma.load_eval_result(evaluation_uri)
  for slice_key, metrics in result.slicing_metrics:
    if not slice_key:
      values = metrics.get('', {}).get('', {})
      return {name: float(value.get('doubleValue', 'nan')) for name, value in values.items()
              if 'doubleValue' in value}
  return {}
