"""Runs the pipeline on this machine: LocalDagRunner, SQLite MLMD, Beam DirectRunner.

    python -m pipeline.local_runner --data-dir ../shared/data/ml-100k

The runner owns the environment: paths, the metadata store, Beam arguments,
how user code reaches the components and what reaches the terminal. A rerun
with unchanged inputs is served from the MLMD cache, and a run killed
half-way is completed by running the same command again.

TensorFlow is imported only once the arguments are read: with no
``--verbose`` its C++ log level is raised first, which hides the GPU
plugins' registration errors it prints on every import on a machine
without a GPU.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging as py_logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import List, Optional  # noqa: E402

from contract import names  # noqa: E402
from pipeline import configs, progress  # noqa: E402
from trainer import hparams as hparams_lib  # noqa: E402

DATA_DIR_ENV = 'MOVIELENS_DATA_DIR'
DATA_VALIDATION_FAILED = 3
# The GroupLens files ExampleGen reads (components/movielens_example_gen/parsing.py).
DATA_FILES = ('u.data', 'u.item', 'u.user')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_fingerprint(data_dir: str) -> str:
  """md5 over the three input files, so editing them invalidates the cache."""
  if not data_dir:
    return 'auto'
  digest = hashlib.md5()
  for name in DATA_FILES:
    path = os.path.join(data_dir, name)
    if not os.path.exists(path):
      raise SystemExit(f'{path} is missing: --data-dir must be a GroupLens ml-100k folder '
                       f'holding {", ".join(DATA_FILES)}.')
    with open(path, 'rb') as fh:
      digest.update(fh.read())
  return digest.hexdigest()


def content_addressed_copy(path: str, root: str) -> str:
  """Copies ``path`` to ``<root>/<md5>/<name>`` and returns the copy's path.

  ImportSchemaGen's cache key is the schema's path, not its content: without
  this, an edited schema/schema.pbtxt would be served from the cache.
  """
  with open(path, 'rb') as fh:
    content = fh.read()
  target = os.path.join(root, hashlib.md5(content).hexdigest(), os.path.basename(path))
  if not os.path.exists(target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, 'wb') as fh:
      fh.write(content)
  return target


def folder_fingerprint(*folders: str) -> str:
  """sha256 over the .py files of ``folders``, names and contents.

  What TFX's user-code wheel version hashes (udf_utils._get_version_hash), so
  the cache sees the same edits without a wheel built and installed per run.
  """
  digest = hashlib.sha256()
  for folder in folders:
    for name in sorted(n for n in os.listdir(folder) if n.endswith('.py')):
      digest.update(f'{os.path.basename(folder)}/{name}\0'.encode())
      with open(os.path.join(folder, name), 'rb') as fh:
        digest.update(fh.read())
  return digest.hexdigest()


def search_fingerprint(task_file: str = configs.TRAINER_MODULE_FILE) -> str:
  """sha256 of what defines the Tuner's search: the defaults' files and the search functions of task.py.

  The Tuner's cache key holds this and no other code, so an edit to the
  model or the training loop keeps the last search (docs/pipeline.md).
  """
  import ast
  with open(task_file) as fh:
    source = fh.read()
  parts = [ast.get_source_segment(source, node) for node in ast.parse(source).body
           if isinstance(node, ast.FunctionDef) and node.name in SEARCH_FUNCTIONS]
  if len(parts) != len(SEARCH_FUNCTIONS):
    raise SystemExit(f'{task_file} must define {", ".join(SEARCH_FUNCTIONS)}: the Tuner\'s cache key is made of '
                     'them; update pipeline/local_runner.SEARCH_FUNCTIONS if they were renamed.')
  for name in SEARCH_DEFAULTS_FILES:
    path = os.path.join(os.path.dirname(task_file), name)
    if os.path.exists(path):
      with open(path) as fh:
        parts.append(fh.read())
  return hashlib.sha256('\0'.join(parts).encode()).hexdigest()


# The functions of trainer/task.py that define the Tuner's search, and the
# files beside it that hold the defaults it searches around.
SEARCH_FUNCTIONS = ('_search_space', 'tuner_fn')
SEARCH_DEFAULTS_FILES = ('hparams.py', 'registry.py')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m pipeline.local_runner',
      description='Run the MovieLens TFX pipeline locally (LocalDagRunner + Beam DirectRunner).')
  parser.add_argument('--data-dir', default=os.environ.get(DATA_DIR_ENV, ''),
                      help=f'GroupLens ml-100k folder (default: ${DATA_DIR_ENV}; if unset, download '
                           'ml-100k.zip, or offline use the copy in the recbole==1.2.1 wheel).')
  parser.add_argument('--output-root', default='outputs',
                      help='Folder for artifacts, the MLMD store and pushed models (default: outputs).')
  parser.add_argument('--epochs', type=int, default=None,
                      help='Training epochs (default: the model\'s, from trainer/hparams.py).')
  parser.add_argument('--model', choices=hparams_lib.RATING_MODELS, default=None,
                      help='Which model to train (default: the one trainer/hparams.py names).')
  parser.add_argument('--tune-trials', type=int, default=configs.DEFAULT_TUNER_TRIALS,
                      help='KerasTuner trials before training (default: %(default)s; 0 skips the Tuner). The '
                           'search is reused until the data, Transform or the search space changes.')
  parser.add_argument('--tune-epochs', type=int, default=configs.DEFAULT_TUNER_EPOCHS,
                      help='Epochs per Tuner trial (default: %(default)s).')
  parser.add_argument('--trainer-module-file', default=configs.TRAINER_MODULE_FILE,
                      help='The Trainer\'s module file (default: trainer/task.py); its folder is its cache key.')
  parser.add_argument('--hparams', default='{}',
                      help='JSON overrides of trainer/hparams.py, e.g. \'{"learning_rate": 0.05}\'.')
  parser.add_argument('--runner', choices=sorted(configs.BEAM_PIPELINE_ARGS), default='in_memory',
                      help='Beam runner mode (default: in_memory, fastest on 2 cores).')
  parser.add_argument('--max-bad-fraction', type=float, default=0.01,
                      help='Fail ExampleGen when more than this fraction of rows is quarantined.')
  parser.add_argument('--rmse-threshold', type=float, default=configs.DEFAULT_RMSE_THRESHOLD,
                      help='Bless only models whose test RMSE is below this.')
  parser.add_argument('--infer-schema', action='store_true',
                      help='Infer a schema with SchemaGen instead of loading schema/schema.pbtxt.')
  parser.add_argument('--no-data-gate', action='store_true',
                      help='Report data anomalies but train and push anyway.')
  parser.add_argument('--no-cache', action='store_true', help='Re-run every component.')
  parser.add_argument('--summary-json', default=None, help='Also write the run summary here.')
  parser.add_argument('--verbose', action='store_true',
                      help='Show every log line (TFX, Beam, TensorFlow), not only one line per component.')
  return parser.parse_args(argv)


def build(args: argparse.Namespace):
  """The pipeline and its metadata path for these arguments."""
  from tfx import v1 as tfx
  from pipeline.pipeline import create_pipeline
  root = os.path.abspath(args.output_root)
  hparams = json.loads(args.hparams)
  if args.epochs is not None:
    hparams['epochs'] = args.epochs
  if args.model:
    hparams['model'] = args.model
  data_dir = os.path.abspath(args.data_dir) if args.data_dir else ''
  trainer_module_file = os.path.abspath(args.trainer_module_file)
  config = configs.PipelineConfig(
      pipeline_root=os.path.join(root, 'pipelines', configs.PIPELINE_NAME),
      serving_model_dir=os.path.join(root, 'serving'),
      data_dir=data_dir,
      data_cache_dir='' if data_dir else os.path.join(root, 'cache'),
      data_fingerprint=data_fingerprint(data_dir),
      max_bad_fraction=args.max_bad_fraction,
      schema_path=None if args.infer_schema else content_addressed_copy(
          configs.SCHEMA_FILE, os.path.join(root, 'schemas')),
      fail_on_anomalies=not args.no_data_gate,
      hparams=hparams,
      tuner_trials=args.tune_trials,
      tuner_epochs=args.tune_epochs,
      tuner_fingerprint=search_fingerprint(trainer_module_file) if args.tune_trials else '',
      transform_fingerprint=folder_fingerprint(os.path.dirname(configs.TRANSFORM_MODULE_FILE)),
      trainer_module_file=trainer_module_file,
      trainer_fingerprint=folder_fingerprint(os.path.dirname(trainer_module_file), os.path.join(REPO_ROOT, 'contract')),
      rmse_threshold=args.rmse_threshold,
      baseline_excludes_candidate=True)
  metadata_path = names.metadata_path(root)
  os.makedirs(os.path.dirname(metadata_path), exist_ok=True)
  with configs.module_files_as_paths():
    pipeline = create_pipeline(
        config, beam_pipeline_args=configs.BEAM_PIPELINE_ARGS[args.runner],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path),
        enable_cache=not args.no_cache)
  return pipeline, metadata_path, config


def summarize(metadata_path: str, pipeline_name: str, wall_s: float) -> dict:
  """What the newest run did, read back from MLMD."""
  from pipeline import run_summary
  store = run_summary.open_store(metadata_path)
  run_id = run_summary.latest_run_id(store, pipeline_name)
  runs = run_summary.component_runs(store, run_id)
  summary = {'run_id': run_id, 'wall_s': round(wall_s, 1),
             'components': {r.component_id: {'state': r.state, 'seconds': round(r.seconds, 1)} for r in runs}}
  examples = run_summary.output_uri(store, run_id, names.EXAMPLE_GEN, 'examples')
  if examples:
    properties = run_summary.artifact_properties(store, examples)
    summary['data'] = {k: v for k, v in properties.items() if k.startswith(('data_source', 'rows_'))}
    quarantine = run_summary.output_uri(store, run_id, names.EXAMPLE_GEN, 'quarantine')
    with open(os.path.join(quarantine, names.QUARANTINE_SUMMARY_FILE)) as fh:
      summary['data']['quarantined_by_reason'] = json.load(fh)['counts_by_reason']
  anomalies = run_summary.output_uri(store, run_id, names.EXAMPLE_VALIDATOR, 'anomalies')
  if anomalies:
    summary['data_validation_report'] = os.path.join(anomalies, 'report.html')
  evaluation = run_summary.output_uri(store, run_id, names.EVALUATOR, 'evaluation')
  if evaluation:
    summary['test_metrics'] = run_summary.evaluation_metrics(evaluation)
  # EvalReport's blessing is the one the Pusher reads.
  blessing = run_summary.output_uri(store, run_id, names.EVAL_REPORT, names.FINAL_BLESSING_KEY)
  if blessing:
    summary['blessed'] = bool(run_summary.artifact_properties(store, blessing).get('blessed', 0))
  report = run_summary.output_uri(store, run_id, names.EVAL_REPORT, 'report')
  if report:
    summary['evaluation_report'] = run_summary.artifact_properties(store, report).get('report')
  pushed = run_summary.output_uri(store, run_id, names.PUSHER, 'pushed_model')
  if pushed:
    properties = run_summary.artifact_properties(store, pushed)
    summary['pushed'] = bool(properties.get('pushed', 0))
    summary['pushed_destination'] = properties.get('pushed_destination')
  return summary


def _quiet_logging(args: argparse.Namespace) -> progress.Progress:
  """One handler on the root logger, filtered by Progress; TensorFlow's C++ log raised to errors-off."""
  if not args.verbose:
    # Before TensorFlow loads; --verbose keeps whatever the caller set.
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
    # As the Makefile's PYTHONWARNINGS: libraries warning about their own
    # futures (google.api_core on Python 3.10, wheel, TF).
    warnings.filterwarnings('ignore', category=FutureWarning)
    warnings.filterwarnings('ignore', category=DeprecationWarning)
  from absl import logging
  logging.set_verbosity(logging.INFO)
  reporter = progress.Progress(sys.stdout, verbose=args.verbose)
  handler = py_logging.StreamHandler(sys.stderr)
  handler.setFormatter(py_logging.Formatter('%(levelname)s:%(name)s:%(message)s'))
  handler.addFilter(reporter)
  root = py_logging.getLogger()
  for old in list(root.handlers):
    root.removeHandler(old)
  root.addHandler(handler)
  root.setLevel(py_logging.INFO)
  # TensorFlow's logger has a handler of its own and does not propagate.
  tf_logger = py_logging.getLogger('tensorflow')
  for old in list(tf_logger.handlers):
    tf_logger.removeHandler(old)
  tf_logger.propagate = True
  return reporter


def _headline(summary: dict) -> List[str]:
  """The few lines a person reads after a run; the rest is in the JSON file."""
  metrics = summary.get('test_metrics') or {}
  lines = [f'Done in {summary["wall_s"]:.0f} s ({sum(c["state"] == "CACHED" for c in summary["components"].values())}'
           f' of {len(summary["components"])} components from the cache).']
  if metrics:
    lines.append(f'Test RMSE {metrics.get("root_mean_squared_error", float("nan")):.4f}, MAE '
                 f'{metrics.get("mean_absolute_error", float("nan")):.4f}; '
                 f'blessed: {summary.get("blessed")}; pushed: {summary.get("pushed_destination") or "no"}.')
  if summary.get('evaluation_report'):
    lines.append(f'Evaluation report: {summary["evaluation_report"]}')
  return lines


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  _quiet_logging(args)
  from tfx import v1 as tfx
  from components.data_validator import DataValidationError
  pipeline, metadata_path, _ = build(args)
  start = time.time()
  try:
    tfx.orchestration.LocalDagRunner().run(pipeline)
  except DataValidationError as e:
    print(f'\n{e}', file=sys.stderr)
    return DATA_VALIDATION_FAILED
  summary = summarize(metadata_path, pipeline.pipeline_info.pipeline_name, time.time() - start)
  text = json.dumps(summary, indent=2, sort_keys=True)
  summary_path = args.summary_json or os.path.join(os.path.abspath(args.output_root), 'run_summary.json')
  with open(summary_path, 'w') as fh:
    fh.write(text + '\n')
  print('\n'.join(_headline(summary) + [f'Run summary: {summary_path}']))
  return 0


if __name__ == '__main__':
  sys.exit(main())
