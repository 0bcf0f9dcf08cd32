"""Builds the evaluation report of any past run, found through MLMD.

    python -m components.eval_report                          # the newest run with an evaluation
    python -m components.eval_report --run-id 2026-11-30T12:00:00.000000
    python -m components.eval_report --list                   # runs with an evaluation, newest first

Reads the artifacts the run's Evaluator read and wrote (its evaluation,
blessing and model, ExampleGen's examples and quarantine, the
DataValidator's anomalies, the RetrievalEvaluator's metrics) and writes report.html, report.json and
summary.md to ``<output-root>/eval_reports/<run id>/`` or ``--out``. Works
for runs from before the pipeline had an EvalReport component too.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

from components.eval_report import executor, report  # noqa: E402
from contract import names  # noqa: E402
from pipeline import configs, eval_config, run_summary  # noqa: E402



def evaluated_runs(store, pipeline_name: str = configs.PIPELINE_NAME) -> List[str]:
  """Runs of ``pipeline_name`` whose Evaluator produced an evaluation, newest first."""
  return [r for r in run_summary.run_ids(store, pipeline_name)
          if run_summary.output_uri(store, r, names.EVALUATOR, 'evaluation')]


def run_artifacts(store, run_id: str) -> Dict[str, Optional[str]]:
  """The URIs ``report.collect`` needs, for one run."""
  evaluation = run_summary.output_uri(store, run_id, names.EVALUATOR, 'evaluation')
  if evaluation is None:
    raise SystemExit(f'Run {run_id} has no Evaluator output: it failed or stopped before evaluation '
                     '(see `--list` for runs that have one).')
  return {
      'evaluation_uri': evaluation,
      'blessing_uri': run_summary.output_uri(store, run_id, names.EVALUATOR, 'blessing'),
      'model_uri': run_summary.input_uri(store, run_id, names.EVALUATOR, 'model'),
      'examples_uri': (run_summary.input_uri(store, run_id, names.EVALUATOR, 'examples')
                       or run_summary.output_uri(store, run_id, names.EXAMPLE_GEN, 'examples')),
      'quarantine_uri': run_summary.output_uri(store, run_id, names.EXAMPLE_GEN, 'quarantine'),
      'anomalies_uri': run_summary.output_uri(store, run_id, names.EXAMPLE_VALIDATOR, 'anomalies'),
      'retrieval_uri': run_summary.output_uri(store, run_id, names.RETRIEVAL_EVALUATOR, 'evaluation'),
  }


def _safe_name(run_id: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', run_id)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m components.eval_report',
                                   description='Write the evaluation report of a past pipeline run.')
  parser.add_argument('--output-root', default='outputs',
                      help='The --output-root the run used: MLMD is read from <root>/metadata/ (default: outputs).')
  parser.add_argument('--run-id', default=None, help='The pipeline run (default: the newest with an evaluation).')
  parser.add_argument('--out', default=None, help='Folder for the report (default: <root>/eval_reports/<run id>/).')
  parser.add_argument('--split', default=eval_config.EVAL_SPLIT, help='The split the Evaluator evaluated.')
  parser.add_argument('--list', action='store_true', help='List the runs that have an evaluation, newest first.')
  parser.add_argument('--require-not-worse', type=int, choices=(0, 1), default=int(configs.DEFAULT_REQUIRE_NOT_WORSE),
                      help='Bless only if not significantly worse than the baseline, as the pipeline does (1).')
  parser.add_argument('--recall-tolerance', type=float, default=configs.DEFAULT_RECALL_TOLERANCE,
                      help='The list gate\'s allowed Recall@100 drop against the latest blessed model, as the '
                           'pipeline has it (default: %(default)s).')
  return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  root = os.path.abspath(args.output_root)
  path = names.metadata_path(root)
  if not os.path.exists(path):
    raise SystemExit(f'No pipeline runs in {root}: {path} is missing. Pass the --output-root the run used.')
  store = run_summary.open_store(path)
  if args.list:
    for run_id in evaluated_runs(store):
      blessing = run_summary.output_uri(store, run_id, names.EVALUATOR, 'blessing')
      blessed = run_summary.artifact_properties(store, blessing).get('blessed') if blessing else None
      print(f'{run_id}\t{"blessed" if blessed else "not blessed"}')
    return 0
  run_id = args.run_id
  if run_id is None:
    runs = evaluated_runs(store)
    if not runs:
      raise SystemExit(f'No run in {path} has reached the Evaluator yet.')
    run_id = runs[0]
  uris = run_artifacts(store, run_id)
  properties = run_summary.artifact_properties(store, uris['examples_uri']) if uris['examples_uri'] else {}
  result = report.collect(eval_split=args.split, examples_properties=properties, run_id=run_id,
                          require_not_worse=bool(args.require_not_worse),
                          recall_tolerance=args.recall_tolerance,
                          regenerate_command=executor.regenerate_command(run_id, root), **uris)
  paths = executor.write(args.out or os.path.join(root, 'eval_reports', _safe_name(run_id)), result)
  print(report.headline(result))
  for kind in ('html', 'markdown', 'json'):
    print(f'{kind}: {paths[kind]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
