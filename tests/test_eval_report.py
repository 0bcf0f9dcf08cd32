"""The evaluation report, rendered by headless Chromium and checked against TFMA.

One module-scoped scenario on tiny generated data, all real parts: Transform
through tft_beam (the shared ``tiny_transform``), two small ranking models
exported with the pipeline's signatures, TFX's own Evaluator executor with
the pipeline's EvalConfig (a candidate and a baseline, with an RMSE bound no
model can meet, so the report must explain a refusal), then the EvalReport
executor. The page is rendered with ``chromium --headless --dump-dom`` and
every number in it is compared with ``tfma.load_eval_result``.
"""
import html.parser
import json
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
import tensorflow_transform as tft
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import json_utils, proto_utils

from components.data_validator import checks, report as validation_report
from components.eval_report import executor as report_executor, report, spec
from components.movielens_example_gen import QuarantinedRows, summary as quarantine_summary
from components.retrieval_evaluator import executor as retrieval_executor
from components.retrieval_evaluator.spec import RetrievalEvaluation
from pipeline import configs, eval_config as ec
from trainer import hparams as hp
from trainer.signatures import make_serving_signatures
from trainer.task import build_model
from transforms import features as f

from conftest import make_raw_rows, serialize_row

pytestmark = pytest.mark.unit

# No model can reach this RMSE on random ratings, so the candidate is refused
# on the value threshold while the (generous) change threshold passes.
UNREACHABLE_RMSE = 0.5
GENEROUS_TOLERANCE = 10.0
SECTIONS = {'decision', 'overall', 'fairness', 'slices', 'distributions', 'calibration', 'retrieval', 'data',
            'provenance'}
INSTALL_HINT = 'apt-get install -y chromium'


def chromium() -> str:
  """The Chromium binary; the test fails, not skips, without one: CI must have it."""
  path = shutil.which('chromium') or shutil.which('chromium-browser')
  if path is None:
    pytest.fail(f'Chromium is not installed, and the evaluation report is tested in a real browser. '
                f'Install it (Debian/Ubuntu: `{INSTALL_HINT}`) and run again.')
  return path


def _chromium_args(profile_dir):
  # --no-sandbox: CI containers run as root; a profile per call keeps parallel runs apart.
  return [chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
          f'--user-data-dir={profile_dir}']


def _export(output, transformed, path, epochs, seed):
  """A small seed-architecture model, trained ``epochs`` epochs, in the Trainer's layout."""
  tf.keras.utils.set_random_seed(seed)
  model = build_model(hp.DEFAULTS.replace(model='ranking', embedding_dim=4, layer_sizes=(8,)), output)
  model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
  data = {k: np.stack([t[k] for t in transformed]) for k in transformed[0]}
  model.fit(tf.data.Dataset.from_tensor_slices(data).batch(32), epochs=epochs, verbose=0)
  serving = os.path.join(path, 'Format-Serving')
  tf.saved_model.save(model, serving, signatures=make_serving_signatures(model, output))
  tf.io.gfile.makedirs(os.path.join(serving, 'assets.extra'))
  with open(os.path.join(serving, 'assets.extra', 'hparams.json'), 'w') as fh:
    json.dump({'model': 'ranking', 'epochs': epochs}, fh)


def _artifact(cls, uri, **properties):
  artifact = cls()
  artifact.uri = str(uri)
  for key, value in properties.items():
    setattr(artifact, key, value)
  return artifact


@pytest.fixture(scope='module')
def evaluated(tiny_transform, tmp_path_factory):
  """Evaluator, then EvalReport, on tiny data; returns the paths and what they used."""
  root = tmp_path_factory.mktemp('eval_report')
  out_dir, train_rows, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  _export(output, transformed, root / 'candidate', epochs=3, seed=0)
  _export(output, transformed, root / 'baseline', epochs=1, seed=1)

  # Test rows with users that train never saw, so both new_user slices exist.
  test_rows = make_raw_rows(n_rows=150, n_users=16, seed=1)
  for split, rows in (('train', train_rows), ('test', test_rows)):
    (root / 'examples' / f'Split-{split}').mkdir(parents=True)
    with tf.io.TFRecordWriter(str(root / 'examples' / f'Split-{split}' / 'data_tfrecord-00000.gz'), 'GZIP') as writer:
      for row in rows:
        writer.write(serialize_row(row, with_label=True))
  examples = _artifact(standard_artifacts.Examples, root / 'examples',
                       split_names=artifact_utils.encode_split_names(['train', 'test']))

  quarantine = root / 'quarantine'
  quarantine.mkdir()
  counts = {'train': 200, 'eval': 0, 'test': len(test_rows)}
  summary = quarantine_summary.build_summary(
      source={'kind': 'data_dir', 'path': '/data/ml-100k'}, rows_read={'u.data': 352},
      bad_counts=[(('u.data', 'bad_rating'), 2)], counts_per_split=counts, examples=[], timestamp_range=None,
      split_config={}, split_boundaries=None, quarantine_file=str(quarantine / 'quarantine.jsonl'))
  (quarantine / 'summary.json').write_text(json.dumps(summary))
  anomalies = root / 'anomalies'
  finding = checks.Finding('test', f.USER_OCCUPATION, checks.DRIFT, 'L-infinity distance 0.3 is above 0.25')
  validation_report.write(str(anomalies), 'Data validation', [finding], [
      checks.Measurement('test', f.USER_OCCUPATION, checks.DRIFT, 'L-infinity distance', 0.3, 0.25)])

  config = ec.make_eval_config(configs.PipelineConfig(
      pipeline_root=str(root), serving_model_dir=str(root), rmse_threshold=UNREACHABLE_RMSE,
      rmse_tolerance=GENEROUS_TOLERANCE))
  evaluation = _artifact(standard_artifacts.ModelEvaluation, root / 'evaluation')
  blessing = _artifact(standard_artifacts.ModelBlessing, root / 'blessing')
  candidate = _artifact(standard_artifacts.Model, root / 'candidate')
  evaluator_executor.Executor().Do(
      {'examples': [examples], 'model': [candidate],
       'baseline_model': [_artifact(standard_artifacts.Model, root / 'baseline')]},
      {'evaluation': [evaluation], 'blessing': [blessing]},
      {'eval_config': proto_utils.proto_to_json(config), 'example_splits': json_utils.dumps([ec.EVAL_SPLIT])})

  # The ranking model has no retrieval towers: the report must say so.
  retrieval = _artifact(RetrievalEvaluation, root / 'retrieval')
  (root / 'retrieval').mkdir()  # TFX's launcher makes output folders before an executor runs
  retrieval_executor.Executor().Do({'examples': [examples], 'model': [candidate]}, {'evaluation': [retrieval]}, {})

  report_artifact = _artifact(spec.EvaluationReport, root / 'report')
  report_executor.Executor().Do(
      {spec.EVALUATION_KEY: [evaluation], spec.BLESSING_KEY: [blessing], spec.MODEL_KEY: [candidate],
       spec.EXAMPLES_KEY: [examples],
       spec.QUARANTINE_KEY: [_artifact(QuarantinedRows, quarantine)],
       spec.ANOMALIES_KEY: [_artifact(standard_artifacts.ExampleAnomalies, anomalies)],
       spec.RETRIEVAL_KEY: [retrieval]},
      {spec.REPORT_KEY: [report_artifact]}, {spec.EVAL_SPLIT_KEY: ec.EVAL_SPLIT})
  return {'root': root, 'evaluation': str(root / 'evaluation'), 'blessing': str(root / 'blessing'),
          'report': report_artifact, 'html': os.path.join(report_artifact.uri, spec.REPORT_HTML),
          'test_rows': test_rows, 'split_counts': counts}


class _Dom(html.parser.HTMLParser):
  """The elements of a rendered page that tests look at: tag, attributes and own text."""

  def __init__(self):
    super().__init__()
    self.elements = []
    self._open = []

  def handle_starttag(self, tag, attrs):
    element = {'tag': tag, 'attrs': dict(attrs), 'text': ''}
    self.elements.append(element)
    if tag not in ('meta', 'br', 'img', 'input', 'link', 'hr'):
      self._open.append(element)

  def handle_endtag(self, tag):
    while self._open:
      if self._open.pop()['tag'] == tag:
        break

  def handle_data(self, data):
    if self._open:
      self._open[-1]['text'] += data

  def having(self, attribute, tag=None):
    return [e for e in self.elements if attribute in e['attrs'] and (tag is None or e['tag'] == tag)]


@pytest.fixture(scope='module')
def dom(evaluated, tmp_path_factory):
  """The report as Chromium's DOM after loading it from disk: no server."""
  result = subprocess.run(_chromium_args(tmp_path_factory.mktemp('chromium')) + [
      '--dump-dom', f'file://{evaluated["html"]}'], capture_output=True, text=True, timeout=180)
  assert result.returncode == 0, result.stderr[-2000:]
  parsed = _Dom()
  parsed.feed(result.stdout)
  assert parsed.elements, 'Chromium rendered an empty page'
  return parsed


def _tfma_metrics(evaluation_uri, model_name):
  """{slice id: {metric: value}} as TFMA itself loads them."""
  result = tfma.load_eval_result(evaluation_uri, model_name=model_name)
  out = {}
  for key, by_output in result.slicing_metrics:
    sid = ' & '.join(f'{k}={v}' for k, v in key) or 'Overall'
    out[sid] = {name: v['doubleValue'] for name, v in by_output[''][''].items() if 'doubleValue' in v}
  return out


def test_report_renders_in_chromium_with_every_section(dom):
  assert SECTIONS <= {e['attrs']['id'] for e in dom.having('id', 'section')}
  groups = [e['attrs']['data-feature'] for e in dom.having('data-feature', 'div')]
  assert groups == [s.key for s in ec.SLICE_FEATURES]
  charts = [e['attrs']['data-chart'] for e in dom.having('data-chart', 'svg')]
  assert charts.count('slice-bars') == len(ec.SLICE_FEATURES)
  assert charts.count('distributions') == 1 and charts.count('calibration') == 1
  assert [e for e in dom.elements if e['tag'] == 'rect' and e['attrs'].get('class') == 'predicted']
  assert [e for e in dom.elements if e['tag'] == 'circle' and e['attrs'].get('class') == 'bucket']
  assert not [e for e in dom.elements if e['tag'] in ('script', 'iframe')]  # opens with no server or network


def test_every_number_in_the_report_is_tfmas(dom, evaluated):
  expected = {role: _tfma_metrics(evaluated['evaluation'], role) for role in ('candidate', 'baseline')}
  cells = dom.having('data-metric', 'td')
  slice_count = sum(1 for sid in expected['candidate'] if sid != 'Overall')
  assert slice_count >= 20  # every feature's slices made it through TFMA, transformed ones included
  assert len(cells) >= 2 * len(report.METRICS) + slice_count * len(report.SLICE_COLUMNS)
  for cell in cells:
    a = cell['attrs']
    value = expected[a['data-model']][a['data-slice']][a['data-metric']]
    assert float(a['data-value']) == value, a
    shown = f'{value:+.4f}' if a['data-metric'].endswith('_diff') else f'{value:.4f}'
    if a['data-metric'].startswith(ec.EXAMPLE_COUNT):
      shown = f'{value:+,.0f}' if a['data-metric'].endswith('_diff') else f'{value:,.0f}'
    assert cell['text'] == shown, a


def test_decision_says_not_blessed_and_why(dom, evaluated):
  assert os.path.exists(os.path.join(evaluated['blessing'], 'NOT_BLESSED'))
  [banner] = dom.having('data-blessed')
  assert banner['attrs']['data-blessed'] == 'false' and banner['text'].startswith('NOT BLESSED')
  reasons = [e['text'] for e in dom.elements if e['tag'] == 'li']
  rmse = _tfma_metrics(evaluated['evaluation'], 'candidate')['Overall'][ec.RMSE]
  assert f'RMSE is {rmse:.4f}; the gate requires under {UNREACHABLE_RMSE:g}: FAILS.' in reasons
  assert any(r.startswith('RMSE changed by') and r.endswith('passes.') for r in reasons)
  verdicts = [e['text'] for e in dom.elements if e['tag'] == 'td' and 'verdict' in e['attrs'].get('class', '')]
  assert verdicts == ['FAIL', 'pass']  # value, then change against the baseline
  properties = evaluated['report'].mlmd_artifact.custom_properties
  assert properties[spec.BLESSED_PROPERTY].int_value == 0
  assert properties[spec.RMSE_PROPERTY].double_value == pytest.approx(rmse)
  assert properties[spec.REPORT_PATH_PROPERTY].string_value == evaluated['html']


def test_fairness_spread_is_the_gap_between_tfma_slices(dom, evaluated):
  for role in ('candidate', 'baseline'):
    metrics = _tfma_metrics(evaluated['evaluation'], role)
    for feature in (f.USER_GENDER, ec.AGE_BUCKET_KEY):
      values = [m[ec.RMSE] for sid, m in metrics.items() if sid.startswith(feature + '=')]
      [spread] = [e for e in dom.having('data-feature', 'td')
                  if (e['attrs']['data-feature'], e['attrs']['data-model']) == (feature, role)]
      assert float(spread['attrs']['data-value']) == pytest.approx(max(values) - min(values), abs=1e-12)


def test_prediction_buckets_are_quarter_stars_centred_on_each_rating():
  edges = report.bucket_edges()
  assert edges[0] == -np.inf and edges[-1] == np.inf
  assert np.allclose(np.diff(edges[1:-1]), report.BUCKET_WIDTH)
  for star in range(int(f.RATING_RANGE[0]), int(f.RATING_RANGE[1]) + 1):
    # Each star is the edge between the middle two of its four buckets.
    assert (star - edges[1]) / report.BUCKET_WIDTH % 4 == 2


def test_distributions_are_the_labels_and_the_predictions_tfma_scored(dom, evaluated):
  stars = {int(e['attrs']['data-label-star']): int(e['text'].replace(',', ''))
           for e in dom.having('data-label-star')}
  actual = {}
  for row in evaluated['test_rows']:
    actual[int(row[f.RATING][0])] = actual.get(int(row[f.RATING][0]), 0) + 1
  assert stars == actual
  counts = [int(e['attrs']['data-bucket-count']) for e in dom.having('data-bucket-count')]
  overall = _tfma_metrics(evaluated['evaluation'], 'candidate')['Overall']
  assert sum(counts) == overall[ec.EXAMPLE_COUNT] == len(evaluated['test_rows'])
  with open(os.path.join(evaluated['report'].uri, spec.REPORT_JSON)) as fh:
    dist = json.load(fh)['distributions']
  # The report's own pass over the model gives the predictions TFMA scored.
  assert dist['prediction_mean'] == pytest.approx(overall[ec.MEAN_PREDICTION], rel=1e-5)
  assert sum(b['sum_label'] for b in dist['buckets']) / dist['count'] == pytest.approx(overall[ec.MEAN_LABEL])


def test_data_summary_shows_splits_quarantine_and_anomalies(dom, evaluated):
  splits = {e['attrs']['data-split']: int(e['text'].replace(',', '')) for e in dom.having('data-split')}
  assert splits == evaluated['split_counts']
  [quarantined] = dom.having('data-quarantined')
  assert quarantined['attrs']['data-quarantined'] == '2' and '2 of 352' in quarantined['text']
  [anomalies] = dom.having('data-anomalies')
  assert anomalies['attrs']['data-anomalies'] == '1'
  assert any(f.USER_OCCUPATION in e['text'] and 'L-infinity' in e['text'] for e in dom.elements if e['tag'] == 'li')


def test_retrieval_section_says_why_a_ranking_model_has_no_top_k_metrics(dom, evaluated):
  with open(os.path.join(evaluated['root'], 'retrieval', 'metrics.json')) as fh:
    metrics = json.load(fh)
  assert metrics['evaluated'] is False
  texts = [e['text'] for e in dom.elements if e['tag'] == 'p' and e['text'].startswith('Not evaluated')]
  assert texts == [f'Not evaluated: {metrics["reason"]}.']


def test_markdown_summary_and_json_carry_the_same_decision(evaluated):
  with open(os.path.join(evaluated['report'].uri, spec.SUMMARY_MD)) as fh:
    markdown = fh.read()
  with open(os.path.join(evaluated['report'].uri, spec.REPORT_JSON)) as fh:
    data = json.load(fh)
  rmse = _tfma_metrics(evaluated['evaluation'], 'candidate')['Overall'][ec.RMSE]
  assert data['decision']['blessed'] is False
  assert data['overall']['candidate'][ec.RMSE] == rmse
  assert markdown.startswith('# Evaluation of ranking on the test split')
  assert '**NOT BLESSED' in markdown and f'| RMSE | {rmse:.4f} |' in markdown
  assert evaluated['html'] in markdown and 'python -m components.eval_report' in markdown


def test_screenshot_of_the_report_is_a_full_page(evaluated, tmp_path):
  shot = tmp_path / 'report.png'
  result = subprocess.run(_chromium_args(tmp_path / 'profile') + [
      '--window-size=1280,2400', f'--screenshot={shot}', f'file://{evaluated["html"]}'],
      capture_output=True, text=True, timeout=180)
  assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
  header = shot.read_bytes()[:24]
  assert header[:8] == b'\x89PNG\r\n\x1a\n'
  assert struct.unpack('>II', header[16:24]) == (1280, 2400)
  # A blank page compresses to a few kilobytes; tables and charts do not.
  assert shot.stat().st_size > 50_000
