"""Checks a new batch of ratings, or of serving requests, against training.

    python -m pipeline.validate new_ratings.data             # GroupLens u.data format
    python -m pipeline.validate batch.csv --kind serving     # CSV of requests, no rating

The reference is the latest pipeline run in --output-root: its training
statistics, its training ids and the curated schema. The batch gets the same
checks as the pipeline's splits: schema (ranges, domains, presence), drift
(ratings) or training/serving skew (requests), and OOV ids. Rows that cannot
be read are quarantined and counted. The report is printed, and written as
report.html and report.json; the exit code is 1 when anything was found.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import csv  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Dict, List, Optional, Sequence, Tuple  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_data_validation as tfdv  # noqa: E402
from tensorflow_metadata.proto.v0 import schema_pb2  # noqa: E402
from tfx.utils import path_utils  # noqa: E402

from components.common import splits  # noqa: E402
from components.data_validator import checks, report  # noqa: E402
from components.movielens_example_gen import history, parsing  # noqa: E402
from contract import names  # noqa: E402
from pipeline import configs, run_summary  # noqa: E402
from transforms import features as f  # noqa: E402

RATINGS, SERVING = 'ratings', 'serving'
BAD_VALUE = 'bad_value'
MISSING_ID = 'missing_id'


class Reference:
  """What a batch is compared with: one pipeline run's training split."""

  def __init__(self, output_root: str):
    metadata = names.metadata_path(output_root)
    if not os.path.exists(metadata):
      raise SystemExit(f'No pipeline run found ({metadata} is missing). Run `make run` first, '
                       'or point --output-root at the outputs of one.')
    store = run_summary.open_store(metadata)
    run_id = run_summary.latest_run_id(store, configs.PIPELINE_NAME)
    statistics = run_summary.output_uri(store, run_id, names.STATISTICS_GEN, 'statistics')
    examples = run_summary.output_uri(store, run_id, names.EXAMPLE_GEN, 'examples')
    if not (statistics and examples):
      raise SystemExit(f'Run {run_id} in {metadata} has no statistics or examples; run the pipeline to the end.')
    self.run_id = run_id
    self.statistics_uri = statistics
    self.examples_uri = examples
    self.data_dir = run_summary.artifact_properties(store, examples).get('data_source_path', '')
    model = run_summary.output_uri(store, run_id, names.TRAINER, 'model')
    self.model_dir = path_utils.serving_model_dir(model) if model else None

  def train_statistics(self):
    return checks.split_statistics(self.statistics_uri, 'train')

  def train_ids(self):
    return checks.known_ids(checks.read_ids(splits.split_files(self.examples_uri, 'train')))


def served_features(model_dir: str) -> List[str]:
  """The raw features a SavedModel's ``serving_default`` signature takes: what a request must carry."""
  from tensorflow.python.tools import saved_model_utils  # reads the graph without loading variables
  try:
    meta_graph = saved_model_utils.get_meta_graph_def(model_dir, 'serve')
  except (OSError, RuntimeError) as e:
    raise SystemExit(f'Cannot read the served model at {model_dir} ({e}); pass --model-dir.')
  return sorted(meta_graph.signature_def[names.SERVING_DEFAULT].inputs)


def serving_schema(schema: schema_pb2.Schema, required: Sequence[str]) -> schema_pb2.Schema:
  """The schema with presence relaxed for every feature the served model does not read.

  The SERVING environment of schema/schema.pbtxt lists what any of our models
  may need (the seed's model reads user_id; history models read the history
  instead), so a request is only required to carry what its model reads.
  Domains, ranges and skew still apply to whatever it does carry.
  """
  relaxed = schema_pb2.Schema()
  relaxed.CopyFrom(schema)
  for feature in relaxed.feature:
    if feature.name not in required:
      feature.presence.min_fraction = 0.0
      feature.presence.min_count = 0
  return relaxed


def read_grouplens(path: str, data_dir: str) -> Tuple[List[bytes], List[parsing.BadRow]]:
  """u.data-format ratings joined with u.item and u.user from ``data_dir``.

  Each rating's history is built from the batch's own earlier ratings of that
  user, with ExampleGen's rule (components/movielens_example_gen/history.py).
  """
  movies, bad = parsing.parse_lookup_file(
      parsing.U_ITEM, parsing.read_numbered_lines(os.path.join(data_dir, parsing.U_ITEM)), parsing.parse_movie_line)
  users, bad_users = parsing.parse_lookup_file(
      parsing.U_USER, parsing.read_numbered_lines(os.path.join(data_dir, parsing.U_USER)), parsing.parse_user_line)
  examples, bad_rows, seen = [], bad + bad_users, {}
  for line_no, line in parsing.read_numbered_lines(path):
    parsed = parsing.parse_rating_line(line_no, line)
    if isinstance(parsed, parsing.BadRow):
      bad_rows.append(parsed._replace(file=os.path.basename(path)))
      continue
    unknown = parsing.check_join(parsed, movies, users)
    if unknown:
      bad_rows.append(unknown._replace(file=os.path.basename(path)))
      continue
    seen.setdefault((parsed.user_id, parsed.movie_id), []).append(parsed)
  by_user = collections.defaultdict(list)
  for group in seen.values():
    kept, duplicates = parsing.split_duplicates(group)
    by_user[kept.user_id].append(kept)
    bad_rows += [d._replace(file=os.path.basename(path)) for d in duplicates]
  by_movie = collections.defaultdict(list)
  for user_ratings in by_user.values():
    for rated in history.histories(user_ratings):
      by_movie[rated[0].movie_id].append(rated)
  for movie_rated in by_movie.values():
    for (rating, ids, values), count, mean in history.movie_priors(movie_rated):
      examples.append(parsing.to_tf_example(rating, movies[rating.movie_id], users[rating.user_id],
                                            ids, values, (count, mean)).SerializeToString())
  return examples, bad_rows


def _csv_feature(name: str, text: str, feature_type) -> tf.train.Feature:
  multi_valued = name in f.MULTI_VALUED
  values = [v for v in text.split('|') if v != ''] if multi_valued else ([text] if text != '' else [])
  if feature_type == schema_pb2.INT:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
  if feature_type == schema_pb2.FLOAT:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode('utf-8') for v in values]))


def read_csv(path: str, schema: schema_pb2.Schema,
             required: Sequence[str] = checks.ID_FEATURES) -> Tuple[List[bytes], List[parsing.BadRow]]:
  """A CSV with a header of raw feature names; lists (genres, history) are '|'-separated.

  Columns the schema does not know are ignored; a missing column is left
  out of every example, so the schema check reports it. A row without one of
  the ``required`` ids is quarantined.
  """
  types = {feature.name: feature.type for feature in schema.feature}
  examples, bad_rows = [], []
  with tf.io.gfile.GFile(path) as fh:
    reader = csv.DictReader(fh)
    for row in reader:
      line_no = reader.line_num
      raw = ','.join(row.get(k) or '' for k in reader.fieldnames)
      try:
        # An empty cell is an absent value (a request without a user_id), not an empty list.
        feature = {name: _csv_feature(name, text.strip(), types[name])
                   for name, text in row.items() if name in types and text is not None
                   and (text.strip() or name in f.MULTI_VALUED)}
      except ValueError as e:
        bad_rows.append(parsing.BadRow(os.path.basename(path), line_no, BAD_VALUE, raw, str(e)))
        continue
      if not all(feature.get(n) and feature[n].bytes_list.value for n in required):
        bad_rows.append(parsing.BadRow(os.path.basename(path), line_no, MISSING_ID, raw,
                                       f'every row needs {" and ".join(required)}'))
        continue
      examples.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  return examples, bad_rows


def _statistics(examples: Sequence[bytes], work_dir: str):
  path = os.path.join(work_dir, 'batch.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for example in examples:
      writer.write(example)
  return tfdv.generate_statistics_from_tfrecord(
      path, stats_options=tfdv.StatsOptions(), pipeline_options=None), path


def validate_batch(examples: Sequence[bytes], bad_rows: Sequence[parsing.BadRow], kind: str,
                   schema: schema_pb2.Schema, train_statistics, train_ids, oov_thresholds: Dict[str, float],
                   work_dir: str):
  """Findings and measurements for one batch; pure apart from a scratch folder."""
  if not examples:
    raise SystemExit(f'No readable rows in the batch ({len(bad_rows)} quarantined).')
  batch_statistics, path = _statistics(examples, work_dir)
  if kind == RATINGS:
    _, findings, measurements = checks.validate(batch_statistics, schema, 'batch', 'TRAINING',
                                                previous=train_statistics)
  else:
    _, findings, _ = checks.validate(batch_statistics, schema, 'batch', 'SERVING')
    _, skew, measurements = checks.validate(train_statistics, schema, 'batch', 'SERVING',
                                            serving=batch_statistics)
    findings += [x for x in skew if x.kind == checks.SKEW]
  oov = checks.oov_measurements(checks.read_ids([path]), train_ids, 'batch', oov_thresholds)
  findings += checks.measurement_findings(oov)
  if bad_rows:
    counts = collections.Counter(row.reason for row in bad_rows)
    findings.append(checks.Finding('batch', '(rows)', 'quarantine',
                                   f'{len(bad_rows)} rows quarantined: {dict(sorted(counts.items()))}'))
  return findings, measurements + oov


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m pipeline.validate', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('batch', help='the batch: a u.data-format ratings file, or a .csv with a header')
  parser.add_argument('--kind', choices=(RATINGS, SERVING), default=RATINGS,
                      help='ratings (with labels; drift check) or serving requests (no label; skew check)')
  parser.add_argument('--format', choices=('auto', 'grouplens', 'csv'), default='auto',
                      help='auto: .csv is CSV, anything else GroupLens')
  parser.add_argument('--data-dir', default=None,
                      help='u.item and u.user for a GroupLens batch (default: the data the reference run read)')
  parser.add_argument('--output-root', default='outputs', help='the pipeline outputs holding the reference run')
  parser.add_argument('--model-dir', default=None,
                      help='serving: the SavedModel the requests are for; only the features it reads are '
                           'required (default: the reference run\'s Trainer model)')
  parser.add_argument('--report-dir', default=None, help='default: <output-root>/validation/<batch>-<time>')
  parser.add_argument('--oov-thresholds', default=json.dumps(checks.DEFAULT_OOV_THRESHOLDS),
                      help='JSON: id feature to the largest allowed share of ids unseen in training')
  return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  reference = Reference(args.output_root)
  schema = tfdv.load_schema_text(configs.SCHEMA_FILE)
  is_csv = args.format == 'csv' or (args.format == 'auto' and args.batch.endswith('.csv'))
  if is_csv:
    # history_ranking's requests carry no user id: a serving row needs only the movie.
    examples, bad_rows = read_csv(args.batch, schema,
                                  (f.MOVIE_ID,) if args.kind == SERVING else checks.ID_FEATURES)
  else:
    data_dir = args.data_dir or reference.data_dir
    if not data_dir:
      raise SystemExit('A GroupLens batch needs u.item and u.user: pass --data-dir.')
    examples, bad_rows = read_grouplens(args.batch, data_dir)
  context = {}
  if args.kind == SERVING:
    model_dir = args.model_dir or reference.model_dir
    if not model_dir:
      raise SystemExit(f'Run {reference.run_id} has no Trainer model to check requests for; pass --model-dir.')
    required = served_features(model_dir)
    schema = serving_schema(schema, required)
    context.update(model=model_dir, required_features=', '.join(required))
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  report_dir = args.report_dir or os.path.join(args.output_root, 'validation',
                                               f'{os.path.basename(args.batch)}-{stamp}')
  with tempfile.TemporaryDirectory() as work_dir:
    findings, measurements = validate_batch(
        examples, bad_rows, args.kind, schema, reference.train_statistics(), reference.train_ids(),
        json.loads(args.oov_thresholds), work_dir)
  os.makedirs(report_dir, exist_ok=True)
  with open(os.path.join(report_dir, names.QUARANTINE_ROWS_FILE), 'w') as fh:
    fh.writelines(row.to_json() + '\n' for row in bad_rows)
  context.update({'batch': os.path.abspath(args.batch), 'kind': args.kind, 'rows_valid': len(examples),
                  'rows_quarantined': len(bad_rows), 'reference_run': reference.run_id,
                  'reference_statistics': reference.statistics_uri, 'schema': configs.SCHEMA_FILE})
  result = report.write(report_dir, f'Data validation of {os.path.basename(args.batch)} ({args.kind})',
                        findings, measurements, context)
  print(report.summary_text(result))
  print(f'Report: {os.path.join(report_dir, report.REPORT_HTML)}')
  return 0 if result['passed'] else 1


if __name__ == '__main__':
  sys.exit(main())
