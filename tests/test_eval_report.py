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
from components.eval_report import executor as report_executor, explanations, report, spec, stats
from components.movielens_example_gen import QuarantinedRows, summary as quarantine_summary
from components.retrieval_evaluator import executor as retrieval_executor
from components.retrieval_evaluator.spec import RetrievalEvaluation
from pipeline import configs, eval_config as ec
from contract import names
from trainer import explain, hparams as hp
from trainer.signatures import make_serving_signatures, save_model
from trainer.task import build_model
from transforms import features as f

from conftest import make_raw_rows, serialize_row

pytestmark = pytest.mark.unit

# No model can reach this RMSE on random ratings, so the candidate is refused
# on the value threshold while the (generous) change threshold passes.
UNREACHABLE_RMSE = 0.5
GENEROUS_TOLERANCE = 10.0
SECTIONS = {'decision', 'overall', 'fairness', 'slices', 'distributions', 'calibration', 'retrieval', 'explanations',
            'method', 'data', 'provenance'}
# 150 test ratings: with this minimum, gender slices are big enough and some age buckets are not.
MIN_SLICE_COUNT = 30
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
  signatures = make_serving_signatures(model, output)
  # As trainer/task.py::serving_signatures adds it to rating models: the report explains through it.
  signatures[names.EXPLAIN] = explain.make_explain_signature(explain.model_scorer(model),
                                                             f.raw_inputs(model.TRANSFORM_OUTPUTS))
  save_model(model, serving, signatures)
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
  final_blessing = _artifact(standard_artifacts.ModelBlessing, root / 'final_blessing')
  (root / 'final_blessing').mkdir()
  report_executor.Executor().Do(
      {spec.EVALUATION_KEY: [evaluation], spec.BLESSING_KEY: [blessing], spec.MODEL_KEY: [candidate],
       spec.EXAMPLES_KEY: [examples],
       spec.QUARANTINE_KEY: [_artifact(QuarantinedRows, quarantine)],
       spec.ANOMALIES_KEY: [_artifact(standard_artifacts.ExampleAnomalies, anomalies)],
       spec.RETRIEVAL_KEY: [retrieval]},
      {spec.REPORT_KEY: [report_artifact], spec.MODEL_BLESSING_KEY: [final_blessing]},
      {spec.EVAL_SPLIT_KEY: ec.EVAL_SPLIT, spec.REQUIRE_NOT_WORSE_KEY: 1, spec.MIN_SLICE_COUNT_KEY: MIN_SLICE_COUNT})
  with open(os.path.join(report_artifact.uri, spec.REPORT_JSON)) as fh:
    data = json.load(fh)
  return {'root': root, 'evaluation': str(root / 'evaluation'), 'blessing': str(root / 'blessing'),
          'report': report_artifact, 'html': os.path.join(report_artifact.uri, spec.REPORT_HTML),
          'test_rows': test_rows, 'split_counts': counts, 'final_blessing': final_blessing, 'json': data,
          'uris': {'evaluation_uri': str(root / 'evaluation'), 'examples_uri': str(root / 'examples'),
                   'blessing_uri': str(root / 'blessing'), 'model_uri': str(root / 'candidate')}}


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
  assert banner['attrs']['data-blessed'] == 'false' and banner['text'].startswith('NOT BLESSED by the rating gate')
  [decided] = dom.having('data-decided-by', 'p')
  assert decided['attrs']['data-decided-by'] == report.RATING_GATE
  reasons = [e['text'] for e in dom.elements if e['tag'] == 'li']
  rmse = _tfma_metrics(evaluated['evaluation'], 'candidate')['Overall'][ec.RMSE]
  assert f'RMSE is {rmse:.4f}; the gate requires under {UNREACHABLE_RMSE:g}: FAILS.' in reasons
  assert any(r.startswith('RMSE changed by') and r.endswith('passes.') for r in reasons)
  verdicts = [e['text'] for e in dom.elements if e['tag'] == 'td' and 'verdict' in e['attrs'].get('class', '')]
  # Value, change against the baseline, then the paired test: FAIL only when its interval is above zero;
  # then the list gates, which a ranking model without `retrieve` does not reach.
  diff = evaluated['json']['decision']['comparison']['interval']
  assert verdicts == ['FAIL', 'pass', 'FAIL' if diff['low'] > 0 else 'pass', 'not applied', 'not applied']
  gates = [e['attrs']['data-gate'] for e in dom.having('data-gate', 'tr')]
  assert gates == [report.RATING_GATE] * 3 + [report.LIST_VS_POPULARITY_GATE, report.LIST_VS_BASELINE_GATE]
  assert any(r.startswith('List vs popularity gate (recall@100): not checked, the model has no') for r in reasons)
  properties = evaluated['report'].mlmd_artifact.custom_properties
  assert properties[spec.BLESSED_PROPERTY].int_value == 0
  assert properties[spec.RMSE_PROPERTY].double_value == pytest.approx(rmse)
  assert properties[spec.REPORT_PATH_PROPERTY].string_value == evaluated['html']


def test_fairness_spread_is_the_gap_between_tfma_slices(dom, evaluated):
  for role in ('candidate', 'baseline'):
    metrics = _tfma_metrics(evaluated['evaluation'], role)
    for feature in (f.USER_GENDER, ec.AGE_BUCKET_KEY):
      # Small slices are left out of the spread.
      values = [m[ec.RMSE] for sid, m in metrics.items()
                if sid.startswith(feature + '=') and m[ec.EXAMPLE_COUNT] >= MIN_SLICE_COUNT]
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


def _cells(dom, attribute):
  return {tuple(e['attrs'][a] for a in ('data-ci-model', 'data-ci-slice', 'data-ci-metric')): e
          for e in dom.having(attribute, 'td') if 'data-ci-slice' in e['attrs']}


def test_every_slice_and_the_overall_rmse_have_an_interval_around_tfmas_value(dom, evaluated):
  expected = _tfma_metrics(evaluated['evaluation'], 'candidate')
  intervals = _cells(dom, 'data-ci-metric')
  for sid, metrics in expected.items():
    cell = intervals[('candidate', sid, ec.RMSE)]
    low, high = float(cell['attrs']['data-low']), float(cell['attrs']['data-high'])
    assert cell['text'] == f'[{low:.4f}, {high:.4f}]'
    assert low < high
    if metrics[ec.EXAMPLE_COUNT] >= MIN_SLICE_COUNT:
      assert low <= metrics[ec.RMSE] <= high, sid
  # The page states the method, the level and the minimum count.
  [method] = dom.having('data-level', 'p')
  assert method['attrs']['data-level'] == '0.95' and method['attrs']['data-min-slice-count'] == str(MIN_SLICE_COUNT)
  assert 'bootstrap over users' in method['text'] and '95% intervals' in method['text']


def test_the_predictions_the_intervals_come_from_give_tfmas_figures_on_every_slice(evaluated):
  method = evaluated['json']['method']
  assert method['mismatches'] == []
  assert method['slices_checked'] == len(_tfma_metrics(evaluated['evaluation'], 'candidate'))
  overall = evaluated['json']['overall']
  assert overall['intervals'][ec.RMSE]['low'] < overall['candidate'][ec.RMSE] < overall['intervals'][ec.RMSE]['high']
  # What the intervals cost, for the pipeline-speed budget.
  assert 0 < method['bootstrap_seconds'] < 5 and method['predict_seconds'] > 0


def test_small_slices_are_greyed_and_not_ranked(dom, evaluated):
  expected = _tfma_metrics(evaluated['evaluation'], 'candidate')
  small = {sid for sid, m in expected.items() if m[ec.EXAMPLE_COUNT] < MIN_SLICE_COUNT}
  assert small and small != set(expected) - {'Overall'}  # the scenario has both kinds
  rows = [e for e in dom.elements if e['tag'] == 'tr' and e['attrs'].get('data-small') == 'true']
  assert len(rows) == len(small)
  for group in evaluated['json']['fairness']:
    names = {r['name'] for g in evaluated['json']['slices'] if g['feature'] == group['feature'] for r in g['rows']
             if r['small']}
    assert set(group['left_out']) == names
    for role in ('candidate', 'baseline'):
      spread = group[role]
      if spread:
        assert {spread['best'], spread['worst']}.isdisjoint(names)
        assert spread['interval']['low'] <= spread['spread'] <= spread['interval']['high']
  with open(os.path.join(evaluated['report'].uri, spec.SUMMARY_MD)) as fh:
    worst = [line for line in fh if line.startswith('- Worst slices')]
  for sid in small:
    feature, value = sid.split('=', 1)
    name = ec.slice_feature(feature).value_name(int(value) if value.isdigit() else value)
    assert not any(f' {name} ' in line for line in worst), (sid, worst)


def test_paired_comparison_is_on_the_page_in_words(dom, evaluated):
  [paragraph] = dom.having('data-verdict', 'p')
  low, high = float(paragraph['attrs']['data-low']), float(paragraph['attrs']['data-high'])
  verdict = paragraph['attrs']['data-verdict']
  assert verdict == ('significantly worse' if low > 0 else 'significantly better' if high < 0
                     else 'not distinguishable from zero')
  assert verdict in paragraph['text'] or 'not distinguishable from zero' in paragraph['text']
  tfma_diff = _tfma_metrics(evaluated['evaluation'], 'candidate')['Overall'][ec.RMSE + '_diff']
  assert evaluated['json']['decision']['comparison']['difference'] == pytest.approx(tfma_diff, abs=1e-4)
  [cell] = [e for e in _cells(dom, 'data-ci-metric').values()
            if (e['attrs']['data-ci-slice'], e['attrs']['data-ci-metric']) == ('Overall', ec.RMSE + '_diff')]
  assert (float(cell['attrs']['data-low']), float(cell['attrs']['data-high'])) == (low, high)


def test_the_final_blessing_is_the_reports_decision(evaluated):
  blessing = evaluated['final_blessing']
  blessed = evaluated['json']['decision']['blessed']
  assert blessed is False  # TFMA refused on the value threshold
  assert os.path.exists(os.path.join(blessing.uri, 'NOT_BLESSED'))
  assert blessing.get_int_custom_property('blessed') == 0
  assert blessing.get_string_custom_property('current_model') == evaluated['uris']['model_uri']
  assert blessing.get_string_custom_property(spec.DECIDED_BY_PROPERTY) == report.RATING_GATE
  assert blessing.get_string_custom_property(spec.REASON_PROPERTY).startswith('NOT BLESSED by the rating gate')


def test_seed_spread_from_bench_quality_is_quoted_next_to_rmse(dom):
  with open(report.QUALITY_RESULTS) as fh:
    ranking = json.load(fh)['result']['models']['ranking']
  [spread] = dom.having('data-std', 'p')
  assert float(spread['attrs']['data-std']) == ranking['rmse_std']
  assert f'± {ranking["rmse_std"]:.4f}' in spread['text']


def _comparison(worse: bool):
  """A Comparison from synthetic paired data: a truly worse candidate, or the same model twice."""
  rng = np.random.default_rng(0)
  user = np.repeat(np.arange(300), 20)
  error = rng.normal(0, 0.5, 300)[user] + rng.normal(0, 0.9, user.size)
  labels = np.full(user.size, 3.0)
  sums = stats.user_sums(user, 300, labels, labels + (1.03 if worse else 1.0) * error, labels + error)
  found = stats.intervals(stats.poisson_weights(300), sums)['root_mean_squared_error_diff']
  return report.Comparison(float(stats.metrics(sums.sum(0))['root_mean_squared_error_diff']), found)


def test_the_gate_requires_not_significantly_worse_only_when_asked():
  worse, same = _comparison(worse=True), _comparison(worse=False)
  assert worse.worse and worse.verdict == 'significantly worse'
  assert not same.worse and same.verdict == 'not distinguishable from zero'
  # TFMA blessed (within the +0.01 tolerance, say): the paired test vetoes only when required.
  assert report.final_blessing(True, worse, require_not_worse=True) is False
  assert report.final_blessing(True, worse, require_not_worse=False) is True
  assert report.final_blessing(True, same, require_not_worse=True) is True
  # No baseline: nothing to compare, TFMA's verdict stands; TFMA's refusal always stands.
  assert report.final_blessing(True, None, require_not_worse=True) is True
  assert report.final_blessing(False, same, require_not_worse=True) is False
  assert report.final_blessing(None, same, require_not_worse=True) is None


def test_without_the_requirement_the_comparison_is_reported_not_gated(evaluated):
  result = report.collect(require_not_worse=False, min_slice_count=MIN_SLICE_COUNT, **evaluated['uris'])
  assert [g.kind for g in result.decision.gate if g.gate == report.RATING_GATE] == ['value', 'change']
  assert result.decision.comparison == report.Comparison(**{
      k: (stats.Interval(**v) if k == 'interval' else v)
      for k, v in evaluated['json']['decision']['comparison'].items()})
  assert any('not gated' in reason for reason in result.decision.reasons)
  # Typed numbers on the object: the same as the page's JSON, seeds fixed.
  assert result.overall.intervals[ec.RMSE] == stats.Interval(**evaluated['json']['overall']['intervals'][ec.RMSE])
  assert '95% interval' in report.to_markdown(result)


# ----- The list gates, on generated per-user figures -----

LIST_USERS = 300


def _list_result(model_shift: float, baseline_shift=None, seed: int = 0):
  """metrics.json as the RetrievalEvaluator writes it, for LIST_USERS cases.

  Popularity's Recall@100 per user is a random share of ten targets; the
  model's is popularity's plus ``model_shift`` and per-user noise, the
  baseline's (None: no baseline) the same with ``baseline_shift``.
  """
  rng = np.random.default_rng(seed)
  popularity = rng.binomial(10, 0.3, LIST_USERS) / 10

  def lists(shift):
    return np.clip(popularity + shift + rng.normal(0.0, 0.15, LIST_USERS), 0.0, 1.0)

  model = lists(model_shift)
  per_case = {'users': [f'u{i}' for i in range(LIST_USERS)], 'model': {report.LIST_GATE_METRIC: model.tolist()},
              'popularity': {report.LIST_GATE_METRIC: popularity.tolist()}}
  result = {'evaluated': True, 'cases': LIST_USERS, 'model': {report.LIST_GATE_METRIC: float(model.mean())},
            'popularity': {report.LIST_GATE_METRIC: float(popularity.mean())}, 'per_case': per_case}
  if baseline_shift is not None:
    baseline = lists(baseline_shift)
    per_case['baseline'] = {report.LIST_GATE_METRIC: baseline.tolist()}
    result.update(baseline_evaluated=True, baseline={report.LIST_GATE_METRIC: float(baseline.mean())})
  return result


def _list_checks(result, tolerance=configs.DEFAULT_RECALL_TOLERANCE):
  """The list gate over the report's own bootstrap: one rating per user, so users weigh as the report weighs them."""
  users = np.array([u.encode() for u in result['per_case']['users']], dtype=object)
  n = users.size
  slices = {s.key: [['x']] * n for s in ec.SLICE_FEATURES}
  boot = report._Bootstrap(report.Predictions(np.full(n, 3.0), np.full(n, 3.0), None, users, slices, 0.0))
  return {c.gate: c for c in report.list_gate(result, report._retrieval(result, boot, None, 'm'), tolerance)}


def test_list_gate_against_popularity_is_a_paired_bound_not_a_plain_comparison():
  strong = _list_checks(_list_result(model_shift=0.1))[report.LIST_VS_POPULARITY_GATE]
  assert strong.applied and strong.passed and strong.interval.low > 0.0
  assert strong.candidate - strong.baseline == pytest.approx(strong.value)
  # Ahead of popularity on average, but within what these 300 users' noise gives: not beaten beyond chance.
  close = _list_checks(_list_result(model_shift=0.002))[report.LIST_VS_POPULARITY_GATE]
  assert close.value > 0.0 and close.interval.low <= 0.0 and not close.passed
  weak = _list_checks(_list_result(model_shift=-0.05))[report.LIST_VS_POPULARITY_GATE]
  assert not weak.passed and weak.interval.high < 0.0
  assert weak.sentence().startswith('List vs popularity gate: recall@100') and weak.sentence().endswith('FAILS.')


def test_list_gate_against_the_baseline_allows_the_stated_tolerance_and_no_more():
  tolerance = configs.DEFAULT_RECALL_TOLERANCE
  # The same popularity margin for both; the candidate a little, then much, below the baseline.
  within = _list_checks(_list_result(model_shift=0.2, baseline_shift=0.2 + tolerance / 2))
  beyond = _list_checks(_list_result(model_shift=0.2, baseline_shift=0.2 + 3 * tolerance))
  for found in (within, beyond):
    assert found[report.LIST_VS_POPULARITY_GATE].passed
  found, refused = within[report.LIST_VS_BASELINE_GATE], beyond[report.LIST_VS_BASELINE_GATE]
  assert found.applied and found.value >= -tolerance and found.passed
  assert refused.applied and refused.value < -tolerance and not refused.passed
  assert refused.interval.low <= refused.value <= refused.interval.high
  assert refused.lower == -tolerance and refused.bound == f'≥ {-tolerance:+.4g}'
  # A looser tolerance, as a pipeline shipping noisier lists would set, lets the same drop through.
  assert _list_checks(_list_result(0.2, 0.2 + 3 * tolerance), tolerance=4 * tolerance)[
      report.LIST_VS_BASELINE_GATE].passed


def test_any_failed_gate_refuses_the_blessing_and_is_named():
  passing = list(_list_checks(_list_result(0.2, 0.2)).values())
  weak = list(_list_checks(_list_result(-0.05, 0.2)).values())
  assert report.final_blessing(True, None, True, passing) is True
  assert report.final_blessing(True, None, True, weak) is False
  # The rating gate's refusal stands whatever the lists, and no decision stays no decision.
  assert report.final_blessing(False, None, True, passing) is False
  assert report.final_blessing(None, None, True, weak) is None
  assert report._decided_by(True, None, True, weak) == [report.LIST_VS_POPULARITY_GATE, report.LIST_VS_BASELINE_GATE]
  assert report._decided_by(False, _comparison(worse=True), True, passing) == [report.RATING_GATE]
  assert report._decided_by(True, _comparison(worse=True), False, passing) == []


def test_list_gates_not_applied_say_why():
  no_output = report.list_gate(None, None, configs.DEFAULT_RECALL_TOLERANCE)
  no_retrieve = report.list_gate({'evaluated': False, 'reason': "the model has no 'retrieve' signature"}, None,
                                 configs.DEFAULT_RECALL_TOLERANCE)
  first = _list_checks(_list_result(0.2))
  old_baseline = _list_result(0.2)
  old_baseline.update(baseline_evaluated=False, baseline_reason='the latest blessed model has no lists')
  for found in (no_output, no_retrieve):
    assert [c.applied for c in found] == [False, False]
    assert report.final_blessing(True, None, True, found) is True
  assert "no 'retrieve' signature" in no_retrieve[0].sentence()
  assert first[report.LIST_VS_POPULARITY_GATE].applied
  assert not first[report.LIST_VS_BASELINE_GATE].applied
  assert 'no baseline' in first[report.LIST_VS_BASELINE_GATE].sentence()
  assert 'has no lists' in _list_checks(old_baseline)[report.LIST_VS_BASELINE_GATE].sentence()
  # A run from before per-user figures were recorded: a plain comparison of the means, and it says so.
  plain = _list_result(0.1)
  del plain['per_case']
  [check, _] = report.list_gate(plain, None, configs.DEFAULT_RECALL_TOLERANCE)
  assert check.applied and check.passed and check.interval is None and check.bound == '> 0'
  assert 'no per-user figures' in check.sentence()


def test_the_page_explains_a_few_test_users_through_the_candidates_own_signatures(dom, evaluated):
  found = evaluated['json']['explanations']
  assert found['reason'] is None
  test_users = {r[f.USER_ID][0].decode() for r in evaluated['test_rows']}
  assert found['candidates'] == len(test_users)
  users = dom.having('data-history-length', 'div')
  assert [u['attrs']['data-user'] for u in users] == [u['user_id'] for u in found['users']]
  assert len(users) == explanations.USERS and {u['attrs']['data-user'] for u in users} <= test_users
  # Spread over history length: the shortest first.
  lengths = [int(u['attrs']['data-history-length']) for u in users]
  assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
  recommend_scores = [float(e['attrs']['data-recommend-score']) for e in dom.having('data-recommend-score', 'td')]
  scores = [float(e['attrs']['data-score']) for e in dom.having('data-score', 'td')]
  # Up to MOVIES each: the tiny catalog has 9 movies, and recommend leaves out the ones a user rated.
  assert len(scores) == sum(len(u['recommendations']) for u in found['users']) > explanations.USERS
  assert all(1 <= len(u['recommendations']) <= explanations.MOVIES for u in found['users'])
  # The ranking model's recommend ranks by the predicted rating explain explains: the same (user, movie) pairs.
  np.testing.assert_allclose(scores, recommend_scores, atol=1e-4)
  for user in found['users']:
    for movie in user['recommendations']:
      e = movie['explanation']
      assert e['completeness_error'] < names.EXPLAIN_TOLERANCE
      assert sum(g['attribution'] for g in e['groups']) == pytest.approx(e['score'] - e['baseline_score'],
                                                                         abs=names.EXPLAIN_TOLERANCE)
      assert {g['group'] for g in e['groups']} == {'user', 'movie'}  # what the ranking model reads
  [shown] = dom.having('data-tolerance', 'span')
  assert float(shown['attrs']['data-value']) == found['max_completeness_error'] < names.EXPLAIN_TOLERANCE
