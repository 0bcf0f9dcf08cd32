"""MovieLensExampleGen: MovieLens 100K ratings to split tf.Examples."""

from typing import Union

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_artifacts

from components.movielens_example_gen import executor
from components.movielens_example_gen import spec
from components.movielens_example_gen import split

# Re-exported so that a pipeline needs only this module.
MovieLensExampleGenSpec = spec.MovieLensExampleGenSpec
QuarantinedRows = spec.QuarantinedRows


class MovieLensExampleGen(base_component.BaseComponent):
  """Reads MovieLens 100K and writes one tf.Example per rating.

  Each rating in u.data is joined with its movie (u.item) and user (u.user)
  and written with the raw features of transforms/features.py to the
  `examples` output, split into 'train', 'eval' and 'test' by a SplitConfig.
  Rows that cannot be used (malformed, out of range, unknown ids, duplicate
  (user, movie) pairs) go to the `quarantine` output with their file, line
  and reason; if more than max_bad_fraction of the ratings are quarantined,
  the component fails and says why.

  Usage:

    example_gen = MovieLensExampleGen(
        data_dir=data_dir,
        split_config=SplitConfig().to_json(),
        max_bad_fraction=0.01,
        data_fingerprint=md5_of_u_data,
    ).with_id('MovieLensExampleGen')

  Outputs:
    examples: standard_artifacts.Examples, gzipped TFRecords of
      tf.train.Example in Split-train, Split-eval and Split-test. Custom
      properties: data_source, data_source_path, rows_read, rows_quarantined,
      rows_train, rows_eval, rows_test, span, input_fingerprint (when
      data_fingerprint is given), payload_format and file_format.
    quarantine: QuarantinedRows, with quarantine.jsonl and summary.json.
  """

  SPEC_CLASS = spec.MovieLensExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(
      self,
      data_dir: Union[str, data_types.RuntimeParameter] = '',
      split_config: Union[str, split.SplitConfig, None] = None,
      max_bad_fraction: Union[float, data_types.RuntimeParameter] = (
          spec.DEFAULT_MAX_BAD_FRACTION),
      data_fingerprint: Union[str, data_types.RuntimeParameter, None] = None,
      cache_dir: Union[str, data_types.RuntimeParameter, None] = None):
    """Constructs a MovieLensExampleGen.

    Args:
      data_dir: a GroupLens ml-100k directory (any tf.io.gfile path) with
        u.data, u.item and u.user. '' finds the data at run time: a cached or
        fresh download from GroupLens, else the copy in the recbole==1.2.1
        wheel.
      split_config: SplitConfig().to_json() or a SplitConfig; None for the
        default 60/20/20 time split.
      max_bad_fraction: the most quarantined ratings / ratings read allowed
        before the component fails.
      data_fingerprint: a digest of the input data, e.g. the md5 of u.data.
        The executor ignores it; it is there so that TFX's cache misses when
        the data changes, since data_dir alone does not.
      cache_dir: where downloads and converted data go; None for
        ~/.cache/movielens_tfx on the machine that runs the executor.

    Raises:
      ValueError: if split_config does not parse, or max_bad_fraction is not
        in [0, 1].
    """
    if split_config is None:
      split_config = split.SplitConfig()
    if isinstance(split_config, split.SplitConfig):
      split_config = split_config.to_json()
    else:
      split.SplitConfig.from_json(split_config)
    if isinstance(max_bad_fraction, (int, float)):
      if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(
            f'max_bad_fraction must be in [0, 1], got {max_bad_fraction}.')
      max_bad_fraction = float(max_bad_fraction)
    component_spec = spec.MovieLensExampleGenSpec(
        data_dir=data_dir,
        split_config=split_config,
        max_bad_fraction=max_bad_fraction,
        data_fingerprint=data_fingerprint,
        cache_dir=cache_dir,
        examples=types.Channel(type=standard_artifacts.Examples),
        quarantine=types.Channel(type=spec.QuarantinedRows))
    super().__init__(spec=component_spec)
