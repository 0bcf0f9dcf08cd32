"""Pipeline settings: one dataclass the runners fill in and create_pipeline reads.

Nothing here reads the environment or the file system; runners do that.
"""
import contextlib
import dataclasses
import os
from typing import Any, Dict, Iterator, List, Optional

from contract.names import MODEL_NAME, PIPELINE_NAME  # noqa: F401 (re-exported for runners)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSFORM_MODULE_FILE = os.path.join(_REPO_ROOT, 'transforms', 'preprocessing.py')
TRAINER_MODULE_FILE = os.path.join(_REPO_ROOT, 'trainer', 'task.py')
# The Tuner imports its entry point by path (see create_pipeline).
TUNER_FN = 'trainer.task.tuner_fn'
SCHEMA_FILE = os.path.join(_REPO_ROOT, 'schema', 'schema.pbtxt')

# Global-mean RMSE on the seed's test split: a model must beat it to ship.
DEFAULT_RMSE_THRESHOLD = 1.117
# The local runner's Tuner budget: trials of this many epochs each; see
# docs/pipeline.md for what it costs and why it is this size.
DEFAULT_TUNER_TRIALS = 5
DEFAULT_TUNER_EPOCHS = 2
# A candidate may be this much worse than the last blessed model (run-to-run noise).
DEFAULT_RMSE_TOLERANCE = 0.01
# And, as well, not significantly worse on the same test examples (EvalReport's
# paired bootstrap).
DEFAULT_REQUIRE_NOT_WORSE = True
# The list gates (EvalReport): Recall@100 on the RetrievalEvaluator's protocol
# must beat popularity's on the same users (the paired 95% interval of the
# difference above zero), and may fall at most this far below the latest
# blessed model's on the same users. 0.02 is three standard deviations of the
# trained retrieval towers' Recall@100 over seeds (0.0064, make
# bench-quality), so a retrain that differs only by its seed passes; the
# shipped item-item lists move less (closed-form tables and a small trained
# sequence model: recall_at_100_std in docs/results/quality.json). A drop of
# 0.02 is 5 of the 273 protocol users losing every target from their list.
# The multitask towers alone spread wider (0.036 over seeds): a pipeline that
# ships them needs a looser tolerance.
DEFAULT_RECALL_TOLERANCE = 0.02


@dataclasses.dataclass
class PipelineConfig:
  """Everything create_pipeline needs that is not a runner's business.

  Attributes:
    pipeline_root: where artifacts are written (a local path, gs://, s3://).
    serving_model_dir: Pusher destination; models land in
      ``<serving_model_dir>/<model_name>/<version>/``.
    data_dir: GroupLens ml-100k directory; '' lets ExampleGen resolve one
      (download, then the recbole wheel's copy).
    data_cache_dir: where ExampleGen keeps a downloaded or converted copy
      when ``data_dir`` is ''; '' is ~/.cache/movielens_tfx.
    data_fingerprint: a digest of the input data, so the cache invalidates
      when the files change under the same path.
    split_config: a ``SplitConfig.to_json()`` string; None is the seed's time split.
    max_bad_fraction: quarantined rows above this fraction fail ExampleGen.
    schema_path: the curated schema for ImportSchemaGen; None infers one with SchemaGen.
    oov_thresholds: id feature to the largest share of eval/test ids unseen
      in train; None is components.data_validator.checks.DEFAULT_OOV_THRESHOLDS.
    fail_on_anomalies: stop the run when data validation finds anything.
    hparams: Trainer hyperparameter overrides (see trainer/hparams.py); 'model' picks the model.
    tuner_trials: run the Tuner with this many trials (0: no Tuner).
    tuner_epochs: epochs per Tuner trial.
    tuner_fingerprint: a digest of what defines the search (the search
      space and the hyperparameter defaults); part of the Tuner's cache key,
      which holds no other code.
    tuner_fn: import path of the Tuner's entry point.
    transform_fingerprint, trainer_fingerprint: digests of the module
      files' folders, for runners that hand module files over as paths
      instead of wheels (whose version is such a digest); they go into the
      components' custom_config, and so into their cache keys.
    transform_statistics: have Transform compute pre/post-transform statistics.
    rmse_threshold: the Evaluator blesses only models under this test RMSE.
    rmse_tolerance: allowed RMSE increase over the latest blessed model
      (TFMA's change threshold); None: no such threshold.
    require_not_worse: bless only a candidate whose paired RMSE difference
      with the latest blessed model is not significantly above zero
      (EvalReport), instead of or as well as ``rmse_tolerance``.
    recall_tolerance: the list gate's allowed Recall@100 drop against the
      latest blessed model, on the same protocol users (EvalReport); see
      DEFAULT_RECALL_TOLERANCE.
    baseline_resolver: compare with the latest blessed model (a Resolver
      node). Off for open-source KFP 2.x, which cannot run Resolver nodes:
      the Evaluator then blesses on ``rmse_threshold`` alone.
    baseline_excludes_candidate: the baseline is the latest blessed model
      other than this run's candidate (pipeline/baseline.py), so a rerun
      after a blessing does not evaluate the model against itself. The
      Kubeflow V2 compiler only knows TFX's own strategy.
  """
  pipeline_root: str
  serving_model_dir: str
  data_dir: str = ''
  data_cache_dir: str = ''
  data_fingerprint: str = ''
  split_config: Optional[str] = None
  max_bad_fraction: float = 0.01
  schema_path: Optional[str] = SCHEMA_FILE
  oov_thresholds: Optional[Dict[str, float]] = None
  fail_on_anomalies: bool = True
  hparams: Dict[str, Any] = dataclasses.field(default_factory=dict)
  tuner_trials: int = 0
  tuner_epochs: int = 10
  tuner_fingerprint: str = ''
  tuner_fn: str = TUNER_FN
  transform_fingerprint: str = ''
  trainer_fingerprint: str = ''
  transform_statistics: bool = False
  rmse_threshold: float = DEFAULT_RMSE_THRESHOLD
  rmse_tolerance: Optional[float] = DEFAULT_RMSE_TOLERANCE
  require_not_worse: bool = DEFAULT_REQUIRE_NOT_WORSE
  recall_tolerance: float = DEFAULT_RECALL_TOLERANCE
  baseline_resolver: bool = True
  baseline_excludes_candidate: bool = False
  pipeline_name: str = PIPELINE_NAME
  model_name: str = MODEL_NAME
  transform_module_file: str = TRANSFORM_MODULE_FILE
  trainer_module_file: str = TRAINER_MODULE_FILE


# Beam arguments by runner. The runner picks one; create_pipeline passes it on.
# On 2 cores the in-memory DirectRunner measured faster than multi_processing.
BEAM_PIPELINE_ARGS: Dict[str, List[str]] = {
    'in_memory': ['--runner=DirectRunner', '--direct_running_mode=in_memory', '--direct_num_workers=1'],
    'multi_processing': ['--runner=DirectRunner', '--direct_running_mode=multi_processing',
                         '--direct_num_workers=0'],
    'dataflow': ['--runner=DataflowRunner', '--experiments=use_runner_v2'],
    'flink': ['--runner=FlinkRunner', '--environment_type=LOOPBACK'],
}


# TFX's switch for handing module files to components as paths instead of
# building a wheel of their folder and pip-installing it in every executor.
# Both runners set it: locally the paths are the clone's, on Kubeflow the image's.
NO_WHEELS_ENV = 'UNSUPPORTED_DO_NOT_PACKAGE_USER_MODULES'


@contextlib.contextmanager
def module_files_as_paths() -> Iterator[None]:
  """While components are built, keep module_file paths (no wheels); the runner's, not create_pipeline's, choice."""
  previous = os.environ.get(NO_WHEELS_ENV)
  os.environ[NO_WHEELS_ENV] = '1'
  try:
    yield
  finally:
    if previous is None:
      del os.environ[NO_WHEELS_ENV]
    else:
      os.environ[NO_WHEELS_ENV] = previous
