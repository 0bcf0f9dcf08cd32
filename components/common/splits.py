"""Reading one split of an Examples artifact."""
import os
from typing import List

import tensorflow as tf


def split_files(artifact_uri: str, split: str) -> List[str]:
  """The data files of one split of an Examples artifact (TFX's Split-<name> layout)."""
  return sorted(tf.io.gfile.glob(os.path.join(artifact_uri, f'Split-{split}', '*')))
