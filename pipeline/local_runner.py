"""Runs the pipeline on this machine: LocalDagRunner, SQLite MLMD, Beam DirectRunner.

    python -m pipeline.local_runner --data-dir ../shared/data/ml-100k

The runner owns the environment: paths, the metadata store and Beam
arguments. A rerun with unchanged inputs is served from the MLMD cache, and a
run killed half-way is completed by running the same command again.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging as py_logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import List, Optional  # noqa: E402

from absl import logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from components.data_validator import DataValidationError  # noqa: E402
from components.movielens_example_gen import parsing  # noqa: E402
from contract import names  # noqa: E402
from pipeline import configs, run_summary  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402
from trainer import hparams as hparams_lib  # noqa: E402

DATA_DIR_ENV = 'MOVIELENS_DATA_DIR'
DATA_VALIDATION_FAILED = 3
# INFO lines worth a person's attention; the rest shows with --verbose.
_PROGRESS = re.compile(r'^(Component \S+ is (running|finished)|MovieLensExampleGen|Trainer epoch|Downloading'
                       r'|Saved model|This model is already served|Model written to serving path|Data validation'
                       r'|Evaluation report)')


class _ProgressFilter(py_logging.Filter):
  """Passes warnings and errors, and only the progress INFO lines."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno > py_logging.INFO or bool(_PROGRESS.match(record.getMessage()))


def data_fingerprint(data_dir: str) -> str:
  """md5 over the three input files, so editing them invalidates the cache."""
  if not data_dir:
    return 'auto'
  digest = hashlib.md5()
  for name in parsing.REQUIRED_FILES:
    path = os.path.join(data_dir, name)
    if not os.path.exists(path):
      raise SystemExit(f'{path} is missing: --data-dir must be a GroupLens ml-100k folder '
                       f'holding {", ".join(parsing.REQUIRED_FILES)}.')
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
  parser.add_argument('--tune-trials', type=int, default=0,
                      help='Run the Tuner with this many KerasTuner trials before training (default: off).')
  parser.add_argument('--tune-epochs', type=int, default=10, help='Epochs per Tuner trial.')
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
  parser.add_argument('--verbose', action='store_true', help='Show every INFO log line, not only progress.')
  return parser.parse_args(argv)


def build(args: argparse.Namespace):
  """The pipeline and its metadata path for these arguments."""
  root = os.path.abspath(args.output_root)
  hparams = json.loads(args.hparams)
  if args.epochs is not None:
    hparams['epochs'] = args.epochs
  if args.model:
    hparams['model'] = args.model
  data_dir = os.path.abspath(args.data_dir) if args.data_dir else ''
  config = configs.PipelineConfig(
      pipeline_root=os.path.join(root, 'pipelines', configs.PIPELINE_NAME),
      serving_model_dir=os.path.join(root, 'serving'),
      data_dir=data_dir,
      data_fingerprint=data_fingerprint(data_dir),
      max_bad_fraction=args.max_bad_fraction,
      schema_path=None if args.infer_schema else content_addressed_copy(
          configs.SCHEMA_FILE, os.path.join(root, 'schemas')),
      fail_on_anomalies=not args.no_data_gate,
      hparams=hparams,
      tuner_trials=args.tune_trials,
      tuner_epochs=args.tune_epochs,
      rmse_threshold=args.rmse_threshold)
  metadata_path = names.metadata_path(root)
  os.makedirs(os.path.dirname(metadata_path), exist_ok=True)
  pipeline = create_pipeline(
      config, beam_pipeline_args=configs.BEAM_PIPELINE_ARGS[args.runner],
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path),
      enable_cache=not args.no_cache)
  return pipeline, metadata_path, config


def summarize(metadata_path: str, pipeline_name: str, wall_s: float) -> dict:
  """What the newest run did, read back from MLMD."""
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
  blessing = run_summary.output_uri(store, run_id, names.EVAL_REPORT, 'model_blessing')
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


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  logging.set_verbosity(logging.INFO)
  if not args.verbose:
    # On the logger, not a handler: TFX and Beam add handlers of their own.
    py_logging.getLogger('absl').addFilter(_ProgressFilter())
  pipeline, metadata_path, _ = build(args)
  start = time.time()
  try:
    tfx.orchestration.LocalDagRunner().run(pipeline)
  except DataValidationError as e:
    print(f'\n{e}', file=sys.stderr)
    return DATA_VALIDATION_FAILED
  summary = summarize(metadata_path, pipeline.pipeline_info.pipeline_name, time.time() - start)
  text = json.dumps(summary, indent=2, sort_keys=True)
  if summary.get('evaluation_report'):
    # Also when the report came from the cache and its executor logged nothing.
    logging.info('Evaluation report: %s', summary['evaluation_report'])
  print(text)
  if args.summary_json:
    with open(args.summary_json, 'w') as fh:
      fh.write(text + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
