"""Pusher executor that skips a push when that exact model is already served.

A rerun whose Trainer came from the cache is re-evaluated against the model
it blessed last time (the baseline changed), passes, and stock Pusher would
copy the same SavedModel into a new version folder: TF Serving would then
reload an identical model. This executor compares the SavedModel fingerprint
(``fingerprint.pb``: graph, signatures and checkpoint hashes) with every
version already in the destination and, on a match, records that version as
the push instead of copying.
"""
import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

_FINGERPRINT_FILE = 'fingerprint.pb'


def _read(path: str) -> Optional[bytes]:
  if not fileio.exists(path):
    return None
  with fileio.open(path, 'rb') as fh:
    return fh.read()


def find_pushed_version(model_dir: str, base_directory: str) -> Optional[str]:
  """The version folder under ``base_directory`` holding the same SavedModel, if any."""
  fingerprint = _read(os.path.join(model_dir, _FINGERPRINT_FILE))
  if fingerprint is None or not fileio.exists(base_directory):
    return None
  for version in sorted(fileio.listdir(base_directory), reverse=True):
    version = version.rstrip('/')
    if version.isdigit() and _read(os.path.join(base_directory, version, _FINGERPRINT_FILE)) == fingerprint:
      return version
  return None


class Executor(tfx_pusher_executor.Executor):
  """Stock Pusher, except that an identical model already pushed is not copied again."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
    if destination.WhichOneof('destination') == 'filesystem' and self.CheckBlessing(input_dict):
      base = destination.filesystem.base_directory
      version = find_pushed_version(self.GetModelPath(input_dict), base)
      if version is not None:
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        logging.info('This model is already served as version %s in %s; not pushing a copy.', version, base)
        self._MarkPushed(model_push, pushed_destination=os.path.join(base, version), pushed_version=version)
        return
    super().Do(input_dict, output_dict, exec_properties)
