"""Data validation: drifted batches trip the right check, a clean one passes.

Batches are generated MovieLens-shaped rows that fit the curated schema; the
training reference is another batch from the same generator.
"""
import csv
import os
import random

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tfx.types import artifact_utils, standard_artifacts

from components.data_validator import DataValidationError, checks, report
from components.data_validator import executor as validator_executor
from components.data_validator import spec
from pipeline import configs, validate
from transforms import features as f

pytestmark = pytest.mark.unit

OCCUPATIONS = ('student', 'engineer', 'writer', 'other', 'educator')
COLUMNS = (f.USER_ID, f.MOVIE_ID, f.MOVIE_TITLE, f.GENRES, f.RELEASE_YEAR, f.USER_AGE, f.USER_GENDER,
           f.USER_OCCUPATION, f.USER_ZIP, f.TIMESTAMP, f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS,
           f.MOVIE_RATING_COUNT, f.MOVIE_RATING_MEAN, f.RATING)


def make_rows(n=1500, seed=0, rating_shift=0, occupation=None, unseen_movies=0.0):
  """Rows like ML-100K's: 150 users and 200 movies with fixed side features."""
  rng = random.Random(seed)
  rows = []
  for _ in range(n):
    user, movie = rng.randrange(150), rng.randrange(200)
    unseen = rng.random() < unseen_movies
    rating = min(5, rng.choices([1, 2, 3, 4, 5], weights=[6, 11, 27, 34, 22])[0] + rating_shift)
    rows.append({
        f.USER_ID: str(user), f.MOVIE_ID: f'new-{movie}' if unseen else str(movie),
        f.MOVIE_TITLE: f'Movie {movie} (199{movie % 10})',
        f.GENRES: '|'.join(f.GENRE_NAMES[1 + (movie + k) % 18] for k in range(1 + movie % 3)),
        f.RELEASE_YEAR: str(1950 + movie % 48), f.USER_AGE: str(18 + user % 50),
        f.USER_GENDER: 'MF'[user % 2], f.USER_OCCUPATION: occupation or OCCUPATIONS[user % len(OCCUPATIONS)],
        f.USER_ZIP: f'{10000 + user:05d}', f.TIMESTAMP: str(880000000 + rng.randrange(10_000_000)),
        f.RATING: str(rating),
        f.HISTORY_MOVIE_IDS: '|'.join(str((movie + k) % 200) for k in range(user % 4)),
        f.HISTORY_RATINGS: '|'.join(str(1 + (movie + k) % 5) for k in range(user % 4)),
        f.MOVIE_RATING_COUNT: str(movie % 40), f.MOVIE_RATING_MEAN: str(3.0 + (movie % 40 > 0) * (movie % 3) / 2),
    })
  return rows


def write_csv(path, rows, columns=COLUMNS):
  with open(path, 'w', newline='') as fh:
    writer = csv.DictWriter(fh, fieldnames=columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  return str(path)


@pytest.fixture(scope='module')
def schema():
  return tfdv.load_schema_text(configs.SCHEMA_FILE)


@pytest.fixture(scope='module')
def reference(tmp_path_factory, schema):
  """Training statistics and ids from a generated training batch."""
  work = tmp_path_factory.mktemp('reference')
  examples, bad = validate.read_csv(write_csv(work / 'train.csv', make_rows(seed=1)), schema)
  assert not bad
  statistics, path = validate._statistics(examples, str(work))
  return statistics, checks.known_ids(checks.read_ids([path]))


def _check(tmp_path, schema, reference, rows, columns=COLUMNS, kind=validate.RATINGS):
  examples, bad = validate.read_csv(write_csv(tmp_path / 'batch.csv', rows, columns), schema)
  statistics, ids = reference
  return validate.validate_batch(examples, bad, kind, schema, statistics, ids, checks.DEFAULT_OOV_THRESHOLDS,
                                 str(tmp_path))


def test_clean_batch_passes(tmp_path, schema, reference):
  findings, measurements = _check(tmp_path, schema, reference, make_rows(seed=2))
  assert findings == []
  kinds = {(m.kind, m.feature) for m in measurements}
  assert (checks.DRIFT, f.RATING) in kinds and (checks.OOV, f.MOVIE_ID) in kinds


def test_shifted_ratings_trip_rating_drift(tmp_path, schema, reference):
  findings, _ = _check(tmp_path, schema, reference, make_rows(seed=2, rating_shift=1))
  assert [(x.feature, x.kind) for x in findings] == [(f.RATING, checks.DRIFT)]
  assert 'Jensen-Shannon' in findings[0].description


def test_new_occupation_trips_the_domain(tmp_path, schema, reference):
  rows = make_rows(seed=2)
  for row in rows[::10]:
    row[f.USER_OCCUPATION] = 'astronaut'
  findings, _ = _check(tmp_path, schema, reference, rows)
  assert {(x.feature, x.kind) for x in findings} == {(f.USER_OCCUPATION, checks.SCHEMA)}
  assert 'astronaut' in findings[0].description


def test_thirty_percent_unseen_movies_trip_oov(tmp_path, schema, reference):
  findings, measurements = _check(tmp_path, schema, reference, make_rows(seed=2, unseen_movies=0.3))
  assert [(x.feature, x.kind) for x in findings] == [(f.MOVIE_ID, checks.OOV)]
  [rate] = [m for m in measurements if m.kind == checks.OOV and m.feature == f.MOVIE_ID]
  assert 0.25 < rate.value < 0.35 and rate.failed


def test_missing_feature_trips_presence(tmp_path, schema, reference):
  columns = tuple(c for c in COLUMNS if c != f.USER_AGE)
  findings, _ = _check(tmp_path, schema, reference, make_rows(seed=2), columns)
  assert [(x.feature, x.kind) for x in findings] == [(f.USER_AGE, checks.SCHEMA)]


def test_serving_requests_need_no_label_and_are_checked_for_skew(tmp_path, schema, reference):
  columns = tuple(c for c in COLUMNS if c != f.RATING)
  findings, measurements = _check(tmp_path, schema, reference, make_rows(seed=2), columns, validate.SERVING)
  assert findings == []
  assert any(m.kind == checks.SKEW and m.feature == f.USER_OCCUPATION for m in measurements)
  # The same requests with every user an engineer are skewed.
  skewed, _ = _check(tmp_path, schema, reference, make_rows(seed=2, occupation='engineer'), columns,
                     validate.SERVING)
  assert (f.USER_OCCUPATION, checks.SKEW) in {(x.feature, x.kind) for x in skewed}


def test_serving_requests_need_only_what_the_served_model_reads(tmp_path, schema, reference):
  """History models read no user_id or user_zip; their requests pass without them, the seed's do not."""
  columns = tuple(c for c in COLUMNS if c not in (f.RATING, f.USER_ID, f.USER_ZIP))
  examples, bad = validate.read_csv(write_csv(tmp_path / 'requests.csv', make_rows(seed=2), columns), schema,
                                    (f.MOVIE_ID,))
  assert not bad

  def findings(served):
    found, _ = validate.validate_batch(examples, bad, validate.SERVING, served, *reference,
                                       checks.DEFAULT_OOV_THRESHOLDS, str(tmp_path))
    return {(x.feature, x.kind) for x in found}

  missing = {(f.USER_ID, checks.SCHEMA), (f.USER_ZIP, checks.SCHEMA)}
  assert missing <= findings(schema)
  assert findings(validate.serving_schema(schema, columns)) == set()
  assert findings(validate.serving_schema(schema, (f.USER_ID, f.MOVIE_ID))) == {(f.USER_ID, checks.SCHEMA)}


def test_served_features_are_the_serving_default_inputs(tmp_path):
  module = tf.Module()
  module.serve = tf.function(lambda movie_id, user_age: {'predictions': tf.zeros_like(user_age)},
                             input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, str(tmp_path), signatures={'serving_default': module.serve})
  assert validate.served_features(str(tmp_path)) == [f.MOVIE_ID, f.USER_AGE]
  with pytest.raises(SystemExit, match='--model-dir'):
    validate.served_features(str(tmp_path / 'missing'))


def test_unreadable_rows_are_quarantined_and_reported(tmp_path, schema, reference):
  rows = make_rows(n=300, seed=2)
  rows[5][f.USER_AGE] = 'NaN'
  rows[6][f.RATING] = 'four'
  rows[7][f.USER_ID] = ''
  examples, bad = validate.read_csv(write_csv(tmp_path / 'bad.csv', rows), schema)
  assert len(examples) == 297
  assert [(b.line, b.reason) for b in bad] == [(7, validate.BAD_VALUE), (8, validate.BAD_VALUE),
                                               (9, validate.MISSING_ID)]


def test_report_draws_every_figure_against_its_threshold(tmp_path):
  measurements = [checks.Measurement('eval', f.MOVIE_ID, checks.OOV, 'OOV rate', 0.3, 0.1),
                  checks.Measurement('eval', f.RATING, checks.DRIFT, 'Jensen-Shannon divergence', 0.001, 0.02)]
  findings = checks.measurement_findings(measurements)
  result = report.write(str(tmp_path), 'Check', findings, measurements, {'rows': 10})
  page = (tmp_path / report.REPORT_HTML).read_text()
  assert not result['passed'] and 'FAILED: 1 anomaly.' in page
  assert page.count('<svg') == 2 and page.count('#c62828') >= 1  # one red bar
  assert 'OOV rate 0.300 is above the threshold 0.100' in page


def _artifact(cls, uri, splits=None):
  artifact = cls()
  artifact.uri = str(uri)
  if splits:
    artifact.split_names = artifact_utils.encode_split_names(splits)
  return artifact


def _write_split(examples_uri, statistics_uri, split, rows, schema, work):
  examples, _ = validate.read_csv(write_csv(work / f'{split}.csv', rows), schema)
  os.makedirs(examples_uri / f'Split-{split}')
  statistics, path = validate._statistics(examples, str(work))
  os.replace(path, examples_uri / f'Split-{split}' / 'data.tfrecord')
  os.makedirs(statistics_uri / f'Split-{split}')
  (statistics_uri / f'Split-{split}' / 'FeatureStats.pb').write_bytes(statistics.SerializeToString())


def test_pipeline_validator_stops_on_drift_with_the_feature_and_figure(tmp_path, schema):
  examples_uri, statistics_uri = tmp_path / 'examples', tmp_path / 'statistics'
  _write_split(examples_uri, statistics_uri, 'train', make_rows(seed=1), schema, tmp_path)
  _write_split(examples_uri, statistics_uri, 'eval', make_rows(seed=2, rating_shift=1), schema, tmp_path)
  schema_dir = tmp_path / 'schema'
  schema_dir.mkdir()
  tfdv.write_schema_text(schema, str(schema_dir / 'schema.pbtxt'))
  anomalies = _artifact(standard_artifacts.ExampleAnomalies, tmp_path / 'anomalies')
  inputs = {spec.STATISTICS_KEY: [_artifact(standard_artifacts.ExampleStatistics, statistics_uri, ['train', 'eval'])],
            spec.EXAMPLES_KEY: [_artifact(standard_artifacts.Examples, examples_uri, ['train', 'eval'])],
            spec.SCHEMA_KEY: [_artifact(standard_artifacts.Schema, schema_dir)]}
  properties = {spec.BASELINE_SPLIT_KEY: 'train', spec.OOV_THRESHOLDS_KEY: '{"movie_id": 0.1}',
                spec.FAIL_ON_ANOMALIES_KEY: 1}
  with pytest.raises(DataValidationError, match=r'(?s)eval: rating \(drift\).*0\.3.*nothing is trained or pushed'):
    validator_executor.Executor().Do(inputs, {spec.ANOMALIES_KEY: [anomalies]}, properties)
  assert (tmp_path / 'anomalies' / 'Split-eval' / 'SchemaDiff.pb').exists()
  assert (tmp_path / 'anomalies' / report.REPORT_HTML).exists()
  assert anomalies.get_int_custom_property('anomaly_count') == 1
  # Reported but not fatal when asked so.
  properties[spec.FAIL_ON_ANOMALIES_KEY] = 0
  validator_executor.Executor().Do(inputs, {spec.ANOMALIES_KEY: [anomalies]}, properties)
