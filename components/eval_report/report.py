"""The evaluation report: what a reviewer needs to decide whether a model ships.

``collect`` reads one TFMA evaluation (with ``tfma.load_eval_result``, so
every metric is TFMA's own), the blessing, the candidate's predictions on the
evaluated split (for the rating distributions and the calibration plot) and
the data checks into one JSON-ready dict; ``to_html`` and ``to_markdown``
render it.
The HTML page leads with the decision and its reason, then the overall
metrics against the baseline, the fairness spreads, every slice as a table
and a bar chart, predicted against actual ratings, the calibration plot, and
the data the model was trained and tested on.
"""
import dataclasses
import datetime
import html
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from google.protobuf import json_format
import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.utils import path_utils

from components.common import splits
from components.eval_report import charts
from contract import names
from pipeline import eval_config as ec
from transforms import features as f

Report = Dict[str, Any]

# Rows of the metric tables, in order, with what the report calls them.
METRICS = (
    (ec.RMSE, 'RMSE'),
    (ec.MAE, 'MAE'),
    (ec.MSE, 'MSE'),
    (ec.MEAN_PREDICTION, 'mean prediction'),
    (ec.MEAN_LABEL, 'mean rating'),
    (ec.CALIBRATION, 'calibration (mean prediction / mean rating)'),
    (ec.EXAMPLE_COUNT, 'examples'),
)
_SHORT_NAMES = {ec.RMSE: 'RMSE', ec.MAE: 'MAE', ec.MSE: 'MSE', ec.MEAN_PREDICTION: 'mean pred.',
                ec.MEAN_LABEL: 'mean rating', ec.CALIBRATION: 'calibration', ec.EXAMPLE_COUNT: 'examples'}
SLICE_COLUMNS = (ec.EXAMPLE_COUNT, ec.RMSE, ec.MAE, ec.MEAN_LABEL, ec.MEAN_PREDICTION, ec.CALIBRATION)
OVERALL = 'Overall'
_HPARAMS_FILE = os.path.join('assets.extra', names.HPARAMS_FILE)
_BLESSED_FILE, _NOT_BLESSED_FILE = 'BLESSED', 'NOT_BLESSED'
# Warnings, not gates: a model can pass the RMSE gate by predicting about the
# mean rating for everyone, which these make visible at the top of the page.
CONCENTRATED_SHARE = 0.5    # of predictions in one quarter-star bucket
CONSTANT_MARGIN = 0.02      # RMSE a model should gain over predicting the mean
# The Markdown's worst slices leave out slices under this share of the examples.
MIN_SLICE_SHARE = 0.01
# The RetrievalEvaluator's output file.
RETRIEVAL_METRICS = names.RETRIEVAL_METRICS_FILE
BUCKET_WIDTH = 0.25         # of the prediction histogram and the calibration plot, in stars


def slice_id(slice_key: Sequence[Tuple[str, Any]]) -> str:
  """'feature=value' for a single-feature TFMA slice key; OVERALL for ()."""
  return ' & '.join(f'{k}={v}' for k, v in slice_key) or OVERALL


def _metric_values(by_output: Dict[str, Any]) -> Dict[str, float]:
  """{metric name: value} from load_eval_result's {output: {sub key: {name: {'doubleValue': v}}}}."""
  values = by_output.get('', {}).get('', {})
  return {name: float(v['doubleValue']) for name, v in values.items() if 'doubleValue' in v}


@dataclasses.dataclass
class Evaluation:
  """One TFMA output folder as load_eval_result reads it, split by model."""
  uri: str
  eval_config: tfma.EvalConfig
  model_locations: Dict[str, str]          # model role -> SavedModel folder
  candidate_name: Optional[str]            # None for a single-model evaluation
  baseline_name: Optional[str]
  metrics: Dict[str, Dict[str, Dict[str, float]]]   # model role -> slice id -> metric -> value
  slice_keys: Dict[str, Tuple[Tuple[str, Any], ...]]  # slice id -> TFMA slice key
  validation: Any                          # tfma ValidationResult proto, or None

  @classmethod
  def load(cls, uri: str) -> 'Evaluation':
    first = tfma.load_eval_result(uri)
    eval_config = first.config
    candidate = baseline = None
    results = {'candidate': first}
    if len(eval_config.model_specs) > 1:
      candidate = next(s.name for s in eval_config.model_specs if not s.is_baseline)
      baseline = next(s.name for s in eval_config.model_specs if s.is_baseline)
      results = {'candidate': tfma.load_eval_result(uri, model_name=candidate),
                 'baseline': tfma.load_eval_result(uri, model_name=baseline)}
    metrics, slice_keys = {}, {}
    for role, result in results.items():
      metrics[role] = {}
      for key, by_output in result.slicing_metrics:
        metrics[role][slice_id(key)] = _metric_values(by_output)
        slice_keys[slice_id(key)] = tuple(key)
    validation = None
    # TFMA writes validations only when thresholds are configured.
    if tf.io.gfile.glob(os.path.join(uri, 'validations*')):
      validation = tfma.load_validation_result(uri)
    return cls(uri, eval_config, {role: r.model_location for role, r in results.items()}, candidate, baseline,
               metrics, slice_keys, validation)

  def model_dir(self, role: str) -> Optional[str]:
    return self.model_locations.get(role) or None


def _read_json(path: str) -> Optional[Dict[str, Any]]:
  if not path or not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as fh:
    return json.load(fh)


def _hparams(model_dir: Optional[str]) -> Dict[str, Any]:
  """The hyperparameters the Trainer wrote next to the SavedModel, or {}."""
  if not model_dir:
    return {}
  for folder in (model_dir, path_utils.serving_model_dir(model_dir)):
    found = _read_json(os.path.join(folder, _HPARAMS_FILE))
    if found is not None:
      return found
  return {}


def predict(model_dir: str, examples_uri: str, split: str, batch_size: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
  """(predictions, labels) of every example of one split, from the model's tf.Example signature.

  The signature TFMA calls (``tf_generic``), so these are the predictions
  TFMA scored; the report checks their mean and count against TFMA's.
  """
  files = splits.split_files(examples_uri, split)
  if not files:
    return np.zeros([0], np.float32), np.zeros([0], np.float32)
  serve = tf.saved_model.load(model_dir).signatures[ec.SERVING_SIGNATURE]
  spec = {f.LABEL_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=float('nan'))}
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP' if files[0].endswith('.gz') else '')
  predictions, labels = [], []
  for batch in dataset.batch(batch_size):
    predictions.append(serve(examples=batch)[names.PREDICTION_KEY].numpy().reshape(-1))
    labels.append(tf.io.parse_example(batch, spec)[f.LABEL_KEY].numpy())
  return np.concatenate(predictions), np.concatenate(labels)


def _blessing(blessing_uri: Optional[str]) -> Optional[bool]:
  """True or False from the Evaluator's BLESSED / NOT_BLESSED file; None when unknown."""
  if not blessing_uri:
    return None
  if tf.io.gfile.exists(os.path.join(blessing_uri, _BLESSED_FILE)):
    return True
  if tf.io.gfile.exists(os.path.join(blessing_uri, _NOT_BLESSED_FILE)):
    return False
  return None


def _gate(evaluation: Evaluation) -> List[Dict[str, Any]]:
  """Each threshold on the overall slice, the candidate's figure and TFMA's verdict on it."""
  thresholds = tfma.metrics.metric_thresholds_from_metrics_specs(
      evaluation.eval_config.metrics_specs, eval_config=evaluation.eval_config)
  failures = []
  if evaluation.validation is not None:
    for per_slice in evaluation.validation.metric_validations_per_slice:
      if not per_slice.slice_key.single_slice_keys:
        failures.extend(per_slice.failures)
  overall = evaluation.metrics['candidate'].get(OVERALL, {})
  baseline = evaluation.metrics.get('baseline', {}).get(OVERALL, {})
  has_baseline = evaluation.baseline_name is not None
  rows = []
  for key, specs in sorted(thresholds.items(), key=lambda kv: (kv[0].name, kv[0].is_diff)):
    if (evaluation.candidate_name or '') != key.model_name:
      continue
    for slicing_spec, threshold in specs:
      if isinstance(slicing_spec, tfma.CrossSlicingSpec) or slicing_spec.feature_keys or slicing_spec.feature_values:
        continue
      failed = [x for x in failures if x.metric_key.name == key.name and x.metric_key.is_diff == key.is_diff]
      row = {'metric': key.name, 'kind': 'change' if key.is_diff else 'value',
             'value': overall.get(key.name + ('_diff' if key.is_diff else '')),
             'baseline': baseline.get(key.name) if key.is_diff else None,
             'applied': has_baseline or not key.is_diff, 'passed': not failed,
             'message': '; '.join(x.message for x in failed if x.message)}
      # TFMA hands back each MetricThreshold split into its value and its change part.
      if isinstance(threshold, tfma.GenericValueThreshold):
        row['upper'] = threshold.upper_bound.value if threshold.HasField('upper_bound') else None
        row['lower'] = threshold.lower_bound.value if threshold.HasField('lower_bound') else None
      else:
        lower_is_better = threshold.direction == tfma.MetricDirection.LOWER_IS_BETTER
        absolute = threshold.absolute.value if threshold.HasField('absolute') else None
        row['upper'] = absolute if lower_is_better else None
        row['lower'] = -absolute if absolute is not None and not lower_is_better else None
      rows.append(row)
  return rows


def _check_sentence(row: Dict[str, Any]) -> str:
  name = _SHORT_NAMES.get(row['metric'], row['metric'])
  bound = (f'at most {row["upper"]:+.4g}' if row['kind'] == 'change' and row.get('upper') is not None else
           f'under {row["upper"]:.4g}' if row.get('upper') is not None else
           f'above {row["lower"]:.4g}' if row.get('lower') is not None else 'within its threshold')
  if not row['applied']:
    return f'{name} change against the baseline: not checked, there is no baseline.'
  if row['value'] is None:
    return f'{name}: no value, so the check failed.'
  verdict = 'passes' if row['passed'] else 'FAILS'
  if row['kind'] == 'change':
    return (f'{name} changed by {row["value"]:+.4f} against the baseline ({row["baseline"]:.4f}); '
            f'the gate allows {bound}: {verdict}.')
  return f'{name} is {row["value"]:.4f}; the gate requires {bound}: {verdict}.'


def _decision(evaluation: Evaluation, blessing_uri: Optional[str]) -> Dict[str, Any]:
  gate = _gate(evaluation)
  blessed = _blessing(blessing_uri)
  validation_ok = evaluation.validation.validation_ok if evaluation.validation is not None else None
  if blessed is None:
    blessed = validation_ok
  reasons = [_check_sentence(row) for row in gate]
  if evaluation.baseline_name is None:
    # TFX's Evaluator then rubber-stamps: TFMA drops the change thresholds.
    reasons.append('No baseline to compare with (no model was blessed before, or the pipeline runs without '
                   'the baseline Resolver), so the change threshold was not applied.')
  if evaluation.validation is not None:
    if evaluation.validation.missing_slices:
      reasons.append(f'{len(evaluation.validation.missing_slices)} gated slice(s) had no examples: FAILS.')
    other = [x for s in evaluation.validation.metric_validations_per_slice if s.slice_key.single_slice_keys
             for x in s.failures]
    if other:
      reasons.append(f'{len(other)} threshold(s) failed on slices other than the overall one.')
  if not gate:
    reasons.append('No thresholds are configured, so the Evaluator does not bless any model.')
  failed = [row for row in gate if row['applied'] and not row['passed']]
  if blessed:
    headline = 'BLESSED: the model passes every gate and will be pushed.'
  elif blessed is None:
    headline = 'NO DECISION: the evaluation has no blessing.'
  else:
    names = ', '.join(f'{_SHORT_NAMES.get(r["metric"], r["metric"])} {r["kind"]}' for r in failed)
    headline = (f'NOT BLESSED: {names} failed; the model will not be pushed.' if failed
                else 'NOT BLESSED; the model will not be pushed.')
  return {'blessed': blessed, 'validation_ok': validation_ok, 'has_baseline': evaluation.baseline_name is not None,
          'headline': headline, 'reasons': reasons, 'gate': gate}


def _ordered_slices(evaluation: Evaluation, feature: ec.SliceFeature) -> List[str]:
  """The slice ids of one feature: coded values in code order, others by example count."""
  ids = [sid for sid, key in evaluation.slice_keys.items() if len(key) == 1 and key[0][0] == feature.key]
  candidate = evaluation.metrics['candidate']
  if feature.value_names is not None:
    return sorted(ids, key=lambda sid: evaluation.slice_keys[sid][0][1])
  return sorted(ids, key=lambda sid: (-candidate.get(sid, {}).get(ec.EXAMPLE_COUNT, 0.0), sid))


def _slices(evaluation: Evaluation) -> List[Dict[str, Any]]:
  out = []
  baseline = evaluation.metrics.get('baseline')
  for feature in ec.SLICE_FEATURES:
    rows = []
    for sid in _ordered_slices(evaluation, feature):
      value = evaluation.slice_keys[sid][0][1]
      rows.append({'id': sid, 'value': value, 'name': feature.value_name(value),
                   'candidate': evaluation.metrics['candidate'].get(sid, {}),
                   'baseline': baseline.get(sid, {}) if baseline is not None else None})
    out.append({'feature': feature.key, 'title': feature.title, 'fairness': feature.fairness, 'rows': rows})
  return out


def _spread(rows: Sequence[Dict[str, Any]], role: str, metric: str = ec.RMSE) -> Optional[Dict[str, Any]]:
  values = [(r[role][metric], r['name']) for r in rows if r.get(role) and metric in r[role]]
  if len(values) < 2:
    return None
  (low, best), (high, worst) = min(values), max(values)
  return {'best': best, 'best_value': low, 'worst': worst, 'worst_value': high, 'spread': high - low,
          'ratio': high / low if low > 0 else None}


def _fairness(slices: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """RMSE's spread (worst slice minus best) across each fairness feature's slices."""
  out = []
  for group in slices:
    if not group['fairness']:
      continue
    out.append({'feature': group['feature'], 'title': group['title'], 'metric': ec.RMSE,
                'candidate': _spread(group['rows'], 'candidate'), 'baseline': _spread(group['rows'], 'baseline')})
  return out


def bucket_edges() -> List[float]:
  """Quarter-star prediction buckets from half a star below the lowest rating to half above the highest.

  Each star sits on the edge between the middle two of its four buckets; the
  first and last buckets are open, so every prediction lands in one.
  """
  low, high = f.RATING_RANGE[0] - 0.5, f.RATING_RANGE[1] + 0.5
  return [-math.inf] + list(np.arange(low, high + BUCKET_WIDTH / 2, BUCKET_WIDTH)) + [math.inf]


def _distributions(predictions: np.ndarray, labels: np.ndarray) -> Dict[str, Any]:
  """Predicted and actual rating distributions and the calibration table, from (prediction, label) pairs."""
  edges = bucket_edges()
  index = np.searchsorted(edges, predictions, side='right') - 1
  buckets = []
  for i, (lower, upper) in enumerate(zip(edges, edges[1:])):
    members = index == i
    buckets.append({'lower': float(lower), 'upper': float(upper), 'count': int(members.sum()),
                    'sum_label': float(labels[members].sum()), 'sum_prediction': float(predictions[members].sum())})
  stars, counts = np.unique(np.round(labels).astype(int), return_counts=True)
  out = {'buckets': buckets, 'count': int(predictions.size),
         'labels': {int(s): int(c) for s, c in zip(stars, counts)}}
  if predictions.size:
    out.update({
        'prediction_mean': float(predictions.mean()), 'prediction_std': float(predictions.std()),
        'prediction_range_90': [float(np.quantile(predictions, 0.05)), float(np.quantile(predictions, 0.95))],
        'label_mean': float(labels.mean()),
        # Predicting the split's mean for everyone scores exactly this RMSE.
        'constant_rmse': float(labels.std()),
    })
    busiest = max(buckets, key=lambda b: b['count'])
    out['busiest_bucket'] = busiest
    out['busiest_share'] = busiest['count'] / predictions.size
  return out


def _warnings(overall: Dict[str, float], dist: Dict[str, Any]) -> List[str]:
  """What a reviewer should look at even when the model passes its gates."""
  out = []
  if dist.get('busiest_share', 0.0) > CONCENTRATED_SHARE:
    b = dist['busiest_bucket']
    out.append(f'{dist["busiest_share"]:.1%} of predictions fall between {b["lower"]:g} and {b["upper"]:g}: '
               'the model predicts nearly the same rating for everyone.')
  rmse, constant = overall.get(ec.RMSE), dist.get('constant_rmse')
  if rmse is not None and constant is not None and constant - rmse < CONSTANT_MARGIN:
    out.append(f'RMSE {rmse:.4f} is less than {CONSTANT_MARGIN} better than predicting the mean rating for '
               f'everyone ({constant:.4f}).')
  return out


def _data(examples_properties: Dict[str, Any], quarantine_uri: Optional[str],
          anomalies_uri: Optional[str]) -> Dict[str, Any]:
  quarantine = _read_json(os.path.join(quarantine_uri, names.QUARANTINE_SUMMARY_FILE)) if quarantine_uri else None
  validation = _read_json(os.path.join(anomalies_uri, 'report.json')) if anomalies_uri else None
  splits = dict((quarantine or {}).get('counts_per_split') or {})
  if not splits:
    splits = {k[len('rows_'):]: v for k, v in examples_properties.items()
              if k.startswith('rows_') and k not in ('rows_read', 'rows_quarantined')}
  out = {'split_sizes': splits,
         'rows_read': (quarantine or {}).get('rows_read', examples_properties.get('rows_read')),
         'rows_quarantined': (quarantine or {}).get('rows_quarantined', examples_properties.get('rows_quarantined')),
         'quarantined_by_reason': (quarantine or {}).get('counts_by_reason', {}),
         'source': ((quarantine or {}).get('source') or {}).get('path'),
         'quarantine_file': os.path.join(quarantine_uri, names.QUARANTINE_ROWS_FILE) if quarantine_uri else None}
  if validation is not None:
    out['validation'] = {'passed': validation['passed'], 'findings': validation['findings'],
                         'compared': len(validation['measurements']),
                         'report': os.path.join(anomalies_uri, 'report.html')}
  return out


def collect(evaluation_uri: str, examples_uri: str, eval_split: str = 'test', blessing_uri: Optional[str] = None,
            model_uri: Optional[str] = None, quarantine_uri: Optional[str] = None,
            anomalies_uri: Optional[str] = None, retrieval_uri: Optional[str] = None,
            examples_properties: Optional[Dict[str, Any]] = None,
            run_id: Optional[str] = None, regenerate_command: Optional[str] = None) -> Report:
  """Everything the report shows, as plain JSON-ready values.

  Args:
    evaluation_uri: the Evaluator's ``evaluation`` (TFMA output folder).
    examples_uri: ExampleGen's ``examples``; ``eval_split``'s labels are read.
    eval_split: the split the Evaluator evaluated.
    blessing_uri: the Evaluator's ``blessing``.
    model_uri: the candidate Model artifact (for its hyperparameters); when
      None, TFMA's record of the model's location is used.
    quarantine_uri: ExampleGen's ``quarantine`` (split sizes, bad rows).
    anomalies_uri: the DataValidator's ``anomalies`` (report.json).
    retrieval_uri: the RetrievalEvaluator's ``evaluation`` (metrics.json).
    examples_properties: the examples artifact's custom properties, used
      when there is no quarantine summary.
    run_id: the pipeline run, for the record.
    regenerate_command: how to build this report again.

  Returns:
    The report as a dict (what report.json holds).
  """
  evaluation = Evaluation.load(evaluation_uri)
  slices = _slices(evaluation)
  candidate_dir = path_utils.serving_model_dir(model_uri) if model_uri else evaluation.model_dir('candidate')
  predictions, labels = predict(candidate_dir, examples_uri, eval_split)
  hparams = {'candidate': _hparams(candidate_dir), 'baseline': _hparams(evaluation.model_dir('baseline'))}
  model_name = hparams['candidate'].get('model', 'the candidate model')
  overall = {role: metrics.get(OVERALL, {}) for role, metrics in evaluation.metrics.items()}
  distributions = _distributions(predictions, labels)
  decision = _decision(evaluation, blessing_uri)
  decision['warnings'] = _warnings(overall['candidate'], distributions)
  return {
      'title': f'Evaluation of {model_name} on the {eval_split} split',
      'generated': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'run_id': run_id,
      'eval_split': eval_split,
      'decision': decision,
      'overall': {'candidate': overall['candidate'], 'baseline': overall.get('baseline')},
      'slices': slices,
      'fairness': _fairness(slices),
      'distributions': distributions,
      'data': _data(examples_properties or {}, quarantine_uri, anomalies_uri),
      'retrieval': _read_json(os.path.join(retrieval_uri, RETRIEVAL_METRICS)) if retrieval_uri else None,
      'models': {'candidate': candidate_dir, 'baseline': evaluation.model_dir('baseline'), 'hparams': hparams},
      'paths': {'evaluation': evaluation_uri, 'blessing': blessing_uri, 'examples': examples_uri},
      'eval_config': json_format.MessageToDict(evaluation.eval_config),
      'regenerate': regenerate_command,
  }


# ----- HTML -----

def _esc(text) -> str:
  return html.escape(str(text), quote=True)


def _fmt(metric: str, value: Optional[float], signed: bool = False) -> str:
  if value is None or not math.isfinite(value):
    return 'n/a'
  if metric in (ec.EXAMPLE_COUNT, ec.EXAMPLE_COUNT + '_diff'):
    return f'{value:+,.0f}' if signed else f'{value:,.0f}'
  return f'{value:+.4f}' if signed else f'{value:.4f}'


def _cell(metric: str, value: Optional[float], model: str, sid: str, signed: bool = False, extra: str = '') -> str:
  """A number with its exact value and what it is in data- attributes, for tests and copy-paste."""
  exact = repr(float(value)) if value is not None else ''
  return (f'<td class="num{extra}" data-model="{_esc(model)}" data-slice="{_esc(sid)}" '
          f'data-metric="{_esc(metric)}" data-value="{exact}">{_fmt(metric, value, signed)}</td>')


def _decision_html(report: Report) -> str:
  d = report['decision']
  css = 'pass' if d['blessed'] else 'fail'
  reasons = ''.join(f'<li>{_esc(r)}</li>' for r in d['reasons'])
  warnings = ''.join(f'<li>{_esc(w)}</li>' for w in d.get('warnings', []))
  if warnings:
    warnings = f'<div class="warnings"><strong>Look before shipping:</strong><ul>{warnings}</ul></div>'
  rows = []
  for g in d['gate']:
    bound = ('≤ ' + (f'{g["upper"]:+.4g}' if g['kind'] == 'change' else f'{g["upper"]:.4g}')
             if g.get('upper') is not None else f'≥ {g["lower"]:.4g}' if g.get('lower') is not None else '')
    verdict = ('not applied' if not g['applied'] else 'pass' if g['passed'] else 'FAIL')
    rows.append(f'<tr class="gate-{_esc(g["kind"])}"><td>{_esc(_SHORT_NAMES.get(g["metric"], g["metric"]))}</td>'
                f'<td>{"change against baseline" if g["kind"] == "change" else "value"}</td>'
                + _cell(g['metric'] + ('_diff' if g['kind'] == 'change' else ''), g['value'], 'candidate', OVERALL,
                        signed=g['kind'] == 'change', extra=' gate-value')
                + f'<td class="num">{_esc(bound)}</td>'
                f'<td class="verdict {"pass" if verdict == "pass" else "fail" if verdict == "FAIL" else ""}">'
                f'{verdict}</td></tr>')
  return (f'<section id="decision"><h2>Decision</h2>'
          f'<p class="verdict-banner {css}" data-blessed="{str(d["blessed"]).lower()}">{_esc(d["headline"])}</p>'
          f'<ul class="reasons">{reasons}</ul>{warnings}'
          '<table class="gate"><tr><th>metric (overall)</th><th>check</th><th>candidate</th><th>threshold</th>'
          f'<th>verdict</th></tr>{"".join(rows)}</table></section>')


def _overall_html(report: Report) -> str:
  cand, base = report['overall']['candidate'], report['overall']['baseline']
  dist = report['distributions']
  head = '<tr><th>metric</th><th>candidate</th>'
  if base is not None:
    head += '<th>baseline (latest blessed)</th><th>change</th>'
  rows = []
  for metric, title in METRICS:
    row = f'<tr><th>{_esc(title)}</th>' + _cell(metric, cand.get(metric), 'candidate', OVERALL)
    if base is not None:
      row += _cell(metric, base.get(metric), 'baseline', OVERALL)
      diff = cand.get(metric + '_diff')
      row += _cell(metric + '_diff', diff, 'candidate', OVERALL, signed=True)
    rows.append(row + '</tr>')
  note = '<p>No baseline: nothing to compare with.</p>' if base is None else ''
  context = []
  if dist.get('constant_rmse') is not None:
    context.append(f'Predicting the {report["eval_split"]} split\'s mean rating ({dist["label_mean"]:.3f}) for '
                   f'everyone would score RMSE {dist["constant_rmse"]:.4f}.')
  if dist.get('prediction_range_90'):
    low, high = dist['prediction_range_90']
    context.append(f'Predictions spread with a standard deviation of {dist["prediction_std"]:.3f} stars '
                   f'(ratings: {dist["constant_rmse"]:.3f}); 90% of them lie between {low:.2f} and {high:.2f}.')
  return (f'<section id="overall"><h2>Overall metrics, candidate against baseline</h2>{note}'
          f'<table class="metrics">{head}</tr>{"".join(rows)}</table>'
          + ''.join(f'<p class="context">{_esc(c)}</p>' for c in context) + '</section>')


def _fairness_html(report: Report) -> str:
  rows = []
  for item in report['fairness']:
    for role in ('candidate', 'baseline'):
      s = item[role]
      if s is None:
        continue
      ratio = f'{s["ratio"]:.3f}' if s['ratio'] is not None else 'n/a'
      rows.append(f'<tr><td>{_esc(item["title"])}</td>'
                  f'<td>{role}</td><td>{_esc(s["best"])} ({s["best_value"]:.4f})</td>'
                  f'<td>{_esc(s["worst"])} ({s["worst_value"]:.4f})</td>'
                  f'<td class="num spread" data-feature="{_esc(item["feature"])}" data-model="{role}" '
                  f'data-value="{s["spread"]!r}">{s["spread"]:.4f}</td>'
                  f'<td class="num">{ratio}</td></tr>')
  return ('<section id="fairness"><h2>Fairness: spread of RMSE across user groups</h2>'
          '<p>For each group, the best and the worst slice by RMSE and the gap between them (TFMA\'s per-slice '
          'RMSE; the slice tables below give the counts). A gap that grows against the baseline means the model '
          'got better for some users at the expense of others.</p>'
          '<table class="fairness"><tr><th>group</th><th>model</th><th>best slice</th><th>worst slice</th>'
          f'<th>spread (worst − best)</th><th>ratio</th></tr>{"".join(rows)}</table></section>')


def _slices_html(report: Report) -> str:
  parts = ['<section id="slices"><h2>Sliced metrics</h2><p>Bars: the candidate\'s RMSE per slice (red when worse '
           'than overall); black tick: the baseline\'s; dashed line: the overall RMSE. A rating of a movie with '
           'several genres counts in each of them.</p>']
  reference = report['overall']['candidate'].get(ec.RMSE)
  for group in report['slices']:
    has_baseline = any(r['baseline'] for r in group['rows'])
    head = ''.join(f'<th>{_esc(_SHORT_NAMES[m])}</th>' for m in SLICE_COLUMNS)
    if has_baseline:
      head += '<th>baseline RMSE</th><th>RMSE change</th>'
    rows = []
    for r in group['rows']:
      row = f'<tr><th>{_esc(r["name"])}</th>' + ''.join(
          _cell(m, r['candidate'].get(m), 'candidate', r['id']) for m in SLICE_COLUMNS)
      if has_baseline:
        base = r['baseline'] or {}
        row += _cell(ec.RMSE, base.get(ec.RMSE), 'baseline', r['id'])
        row += _cell(ec.RMSE + '_diff', r['candidate'].get(ec.RMSE + '_diff'), 'candidate', r['id'], signed=True)
      rows.append(row + '</tr>')
    bars = charts.slice_bars([(r['name'], r['candidate'].get(ec.RMSE), (r['baseline'] or {}).get(ec.RMSE),
                               r['candidate'].get(ec.EXAMPLE_COUNT, 0.0)) for r in group['rows']],
                             reference, 'RMSE')
    feature = _esc(group['feature'])
    parts.append(f'<div class="slice-group" id="slice-{feature}" data-feature="{feature}">'
                 f'<h3>{_esc(group["title"])} <code>{_esc(group["feature"])}</code></h3>'
                 f'<div class="pair"><table class="metrics"><tr><th>slice</th>{head}</tr>{"".join(rows)}</table>'
                 f'{bars}</div></div>')
  return ''.join(parts) + '</section>'


def _distribution_html(report: Report) -> str:
  dist = report['distributions']
  lo, hi = dist['buckets'][0]['upper'], dist['buckets'][-1]['lower']
  total = dist['count']
  bucket_shares = [(b['lower'], b['upper'], b['count'] / total if total else 0.0) for b in dist['buckets']]
  label_shares = [(float(s), c / total) for s, c in sorted(dist['labels'].items())] if total else []
  rows = ''.join(f'<tr><td>{s}</td><td class="num" data-label-star="{s}">{c:,}</td>'
                 f'<td class="num">{c / total:.1%}</td></tr>' for s, c in sorted(dist['labels'].items()))
  check = ''
  tfma_mean = report['overall']['candidate'].get(ec.MEAN_PREDICTION)
  if total and tfma_mean is not None:
    check = (f' Their mean, {dist["prediction_mean"]:.4f} over {total:,} examples, is TFMA\'s mean prediction '
             f'({tfma_mean:.4f}): the same predictions TFMA scored.')
  points = [(b['sum_prediction'] / b['count'], b['sum_label'] / b['count'], b['count'])
            for b in dist['buckets'] if b['count'] > 0]
  calib_rows = ''.join(
      f'<tr><td>{b["lower"]:g} to {b["upper"]:g}</td>'
      f'<td class="num" data-bucket-count="{b["count"]}">{b["count"]:,}</td>'
      f'<td class="num">{b["sum_prediction"] / b["count"]:.3f}</td>'
      f'<td class="num">{b["sum_label"] / b["count"]:.3f}</td></tr>' for b in dist['buckets'] if b['count'] > 0)
  return (f'<section id="distributions"><h2>Predicted against actual ratings</h2>'
          '<p>A model that predicts about the same rating for everyone shows as one tall narrow blue peak. '
          f'Predictions: the candidate\'s <code>{ec.SERVING_SIGNATURE}</code> signature (the one TFMA calls) on '
          f'the {_esc(report["eval_split"])} split, in quarter-star buckets; actual: the same examples\' ratings.'
          f'{_esc(check)}</p>'
          f'<div class="pair">{charts.distributions(bucket_shares, label_shares, lo, hi)}'
          f'<table class="labels"><tr><th>actual stars</th><th>ratings</th><th>share</th></tr>{rows}</table></div>'
          '</section>'
          f'<section id="calibration"><h2>Calibration</h2><p>Mean actual rating of the examples in each '
          'quarter-star bucket of the prediction. On the diagonal the model is calibrated; a flat line means the '
          'prediction says little about the rating.</p>'
          f'<div class="pair">{charts.calibration(points, lo, hi)}'
          '<table class="calibration"><tr><th>prediction bucket</th><th>examples</th><th>mean prediction</th>'
          f'<th>mean actual</th></tr>{calib_rows}</table></div></section>')


def _retrieval_html(report: Report) -> str:
  """Top-K metrics of the model's retrieval towers against popularity, when there are any."""
  result = report.get('retrieval')
  if result is None:
    return ''
  head = ('<section id="retrieval"><h2>Retrieval: top-K recommendations</h2>'
          f'<p>The RetrievalEvaluator\'s point-in-time protocol over {result.get("cases", 0):,} test users: '
          'each user\'s later test ratings are the targets of a top-K list built from their earlier ones; '
          'popularity (most-rated movies before the test period) is the baseline to beat.</p>')
  if not result.get('evaluated'):
    return head + f'<p class="context">Not evaluated: {_esc(result.get("reason", "no reason given"))}.</p></section>'
  model, popularity = result.get('model', {}), result.get('popularity', {})
  rows = ''.join(
      f'<tr><th>{_esc(name.replace("_at_", "@").replace("_", " "))}</th>'
      f'<td class="num" data-retrieval="model" data-retrieval-metric="{_esc(name)}">'
      f'{model.get(name, float("nan")):.4f}</td>'
      f'<td class="num" data-retrieval="popularity" data-retrieval-metric="{_esc(name)}">'
      f'{popularity.get(name, float("nan")):.4f}</td></tr>'
      for name in sorted(set(model) | set(popularity)))
  return (head + '<table class="retrieval"><tr><th>metric</th><th>model</th><th>popularity</th></tr>'
          f'{rows}</table></section>')


def _data_html(report: Report) -> str:
  data = report['data']
  splits = ''.join(f'<tr><td>{_esc(k)}</td><td class="num" data-split="{_esc(k)}">{v:,}</td></tr>'
                   for k, v in data['split_sizes'].items())
  reasons = ''.join(f'<tr><td>{_esc(k)}</td><td class="num">{v:,}</td></tr>'
                    for k, v in sorted(data['quarantined_by_reason'].items())) or '<tr><td colspan="2">none</td></tr>'
  parts = ['<section id="data"><h2>Data</h2>']
  if data.get('source'):
    parts.append(f'<p>Source: <code>{_esc(data["source"])}</code>.</p>')
  parts.append(f'<div class="pair"><table class="splits"><tr><th>split</th><th>examples</th></tr>{splits}</table>')
  read, bad = data.get('rows_read'), data.get('rows_quarantined')
  quarantined = (f'{bad:,} of {read:,} ratings quarantined' if read is not None and bad is not None
                 else 'quarantine counts not available')
  parts.append(f'<table class="quarantine"><tr><th colspan="2" data-quarantined="{bad}">{_esc(quarantined)}</th>'
               f'</tr>{reasons}</table></div>')
  validation = data.get('validation')
  if validation is not None:
    findings = ''.join(f'<li>{_esc(x["split"])}: {_esc(x["feature"])} ({_esc(x["kind"])}): '
                       f'{_esc(x["description"])}</li>' for x in validation['findings'])
    verdict = ('passed: no anomalies' if validation['passed'] else f'{len(validation["findings"])} anomalies')
    parts.append(f'<p class="anomalies" data-anomalies="{len(validation["findings"])}">Data validation '
                 f'{_esc(verdict)} ({validation["compared"]} drift, skew and OOV figures compared). '
                 f'<a href="{_esc(validation["report"])}">Data validation report</a>.</p>'
                 + (f'<ul>{findings}</ul>' if findings else ''))
  else:
    parts.append('<p class="anomalies">No data validation output was found for this run.</p>')
  return ''.join(parts) + '</section>'


def _provenance_html(report: Report) -> str:
  models = report['models']
  rows = [('run', report.get('run_id')), ('candidate model', models['candidate']),
          ('baseline model', models['baseline'] or 'none'), ('evaluation (TFMA output)', report['paths']['evaluation']),
          ('blessing', report['paths']['blessing']), ('examples', report['paths']['examples'])]
  table = ''.join(f'<tr><th>{_esc(k)}</th><td><code>{_esc(v)}</code></td></tr>' for k, v in rows if v)
  hparams = ''.join(f'<tr><th>{role}</th><td><code>{_esc(json.dumps(h, sort_keys=True))}</code></td></tr>'
                    for role, h in models['hparams'].items() if h)
  regenerate = (f'<p>Regenerate this report: <code class="regenerate">{_esc(report["regenerate"])}</code></p>'
                if report.get('regenerate') else '')
  return (f'<section id="provenance"><h2>Where this comes from</h2>{regenerate}<table>{table}</table>'
          f'<h3>Hyperparameters</h3><table>{hparams or "<tr><td>not recorded</td></tr>"}</table>'
          f'<details><summary>TFMA EvalConfig</summary><pre>{_esc(json.dumps(report["eval_config"], indent=1))}'
          '</pre></details></section>')


_CSS = '''
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0 1.5em 1.2em 0; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 9px; text-align: left; vertical-align: middle; }
.num { font-variant-numeric: tabular-nums; text-align: right; }
.verdict-banner { font-size: 1.35em; font-weight: bold; padding: .5em .8em; border-radius: 4px; }
.verdict-banner.pass { color: #1b5e20; background: #e8f5e9; }
.verdict-banner.fail { color: #b71c1c; background: #ffebee; }
td.verdict.pass { color: #2e7d32; font-weight: bold; } td.verdict.fail { color: #c62828; font-weight: bold; }
.warnings { background: #fff8e1; border-left: 4px solid #f9a825; padding: .3em 1em; margin-bottom: 1em; }
.pair { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 1em; }
.chart { background: #fff; }
nav a { margin-right: 1em; }
h3 code { font-weight: normal; color: #666; font-size: .8em; }
'''


def to_html(report: Report) -> str:
  """The self-contained page: inline CSS and SVG, no script, no network."""
  nav = ''.join(f'<a href="#{k}">{v}</a>' for k, v in (
      ('decision', 'Decision'), ('overall', 'Overall'), ('fairness', 'Fairness'), ('slices', 'Slices'),
      ('distributions', 'Distributions'), ('calibration', 'Calibration'),
      *([('retrieval', 'Retrieval')] if report.get('retrieval') is not None else []), ('data', 'Data'),
      ('provenance', 'Provenance')))
  return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(report["title"])}</title>'
          f'<style>{_CSS}</style></head><body><h1>{_esc(report["title"])}</h1>'
          f'<p>Generated {_esc(report["generated"])}'
          + (f' for pipeline run <code>{_esc(report["run_id"])}</code>' if report.get('run_id') else '')
          + f'.</p><nav>{nav}</nav>'
          + _decision_html(report) + _overall_html(report) + _fairness_html(report) + _slices_html(report)
          + _distribution_html(report) + _retrieval_html(report) + _data_html(report) + _provenance_html(report)
          + '</body></html>\n')


# ----- Markdown -----

def _worst_slices(report: Report, n: int = 3) -> List[Tuple[str, str, float, float]]:
  """The ``n`` slices with the highest RMSE among those big enough for it to mean something."""
  total = report['overall']['candidate'].get(ec.EXAMPLE_COUNT, 0.0)
  rows = [(g['title'], r['name'], r['candidate'][ec.RMSE], r['candidate'].get(ec.EXAMPLE_COUNT, 0.0))
          for g in report['slices'] for r in g['rows'] if ec.RMSE in r['candidate']]
  rows = [row for row in rows if row[3] >= MIN_SLICE_SHARE * total]
  return sorted(rows, key=lambda x: -x[2])[:n]


def to_markdown(report: Report, html_path: Optional[str] = None) -> str:
  """A short summary for a pull request or a chat message."""
  d, cand, base = report['decision'], report['overall']['candidate'], report['overall']['baseline']
  lines = [f'# {report["title"]}', '', f'**{d["headline"]}**', '']
  lines += [f'- {r}' for r in d['reasons']]
  lines += [f'- **Warning:** {w}' for w in d.get('warnings', [])] + ['']
  header = '| metric | candidate |' + (' baseline | change |' if base is not None else '')
  lines += [header, '|---|---:|' + ('---:|---:|' if base is not None else '')]
  for metric, title in METRICS:
    line = f'| {title} | {_fmt(metric, cand.get(metric))} |'
    if base is not None:
      line += f' {_fmt(metric, base.get(metric))} | {_fmt(metric, cand.get(metric + "_diff"), signed=True)} |'
    lines.append(line)
  lines.append('')
  for item in report['fairness']:
    s = item['candidate']
    if s is not None:
      lines.append(f'- RMSE spread across {item["title"].lower()}: {s["spread"]:.4f} '
                   f'(best {s["best"]} {s["best_value"]:.4f}, worst {s["worst"]} {s["worst_value"]:.4f})'
                   + (f'; baseline {item["baseline"]["spread"]:.4f}' if item['baseline'] else ''))
  worst = _worst_slices(report)
  if worst:
    listed = '; '.join(f'{t} {n} {v:.4f} (n={c:,.0f})' for t, n, v, c in worst)
    lines.append(f'- Worst slices by RMSE (of those with at least {MIN_SLICE_SHARE:.0%} of the examples): {listed}')
  dist = report['distributions']
  if dist.get('prediction_range_90'):
    low, high = dist['prediction_range_90']
    lines.append(f'- Predictions: standard deviation {dist["prediction_std"]:.3f} '
                 f'(ratings {dist["constant_rmse"]:.3f}), '
                 f'90% between {low:.2f} and {high:.2f}; predicting the mean for everyone would score RMSE '
                 f'{dist["constant_rmse"]:.4f}')
  retrieval = report.get('retrieval')
  if retrieval and retrieval.get('evaluated'):
    shown = ', '.join(f'{k} {retrieval["model"][k]:.4f} (popularity {retrieval["popularity"].get(k, float("nan")):.4f})'
                      for k in sorted(retrieval['model']))
    lines.append(f'- Retrieval over {retrieval.get("cases", 0):,} test users: {shown}')
  data = report['data']
  sizes = ', '.join(f'{k} {v:,}' for k, v in data['split_sizes'].items())
  validation = data.get('validation')
  lines.append(f'- Data: {sizes}; {data.get("rows_quarantined")} rows quarantined; '
               + ('data validation: no data validation output' if validation is None else
                  f'data validation: {len(validation["findings"])} anomalies'))
  lines.append('')
  if html_path:
    lines.append(f'Full report: `{html_path}`')
  if report.get('regenerate'):
    lines.append(f'Regenerate: `{report["regenerate"]}`')
  return '\n'.join(lines) + '\n'


def write(out_dir: str, report: Report, html_name: str = 'report.html', json_name: str = 'report.json',
          markdown_name: str = 'summary.md') -> Dict[str, str]:
  """Writes the three files into ``out_dir``; returns their paths by kind."""
  tf.io.gfile.makedirs(out_dir)
  paths = {'html': os.path.join(out_dir, html_name), 'json': os.path.join(out_dir, json_name),
           'markdown': os.path.join(out_dir, markdown_name)}
  with tf.io.gfile.GFile(paths['json'], 'w') as fh:
    json.dump(report, fh, indent=1, sort_keys=True, default=_json_default)
  with tf.io.gfile.GFile(paths['html'], 'w') as fh:
    fh.write(to_html(report))
  with tf.io.gfile.GFile(paths['markdown'], 'w') as fh:
    fh.write(to_markdown(report, paths['html']))
  return paths


def _json_default(value):
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, bytes):
    return value.decode()
  raise TypeError(f'{type(value).__name__} is not JSON serializable')


def headline(report: Report) -> str:
  """One line for the log: the decision and the candidate's RMSE."""
  rmse = report['overall']['candidate'].get(ec.RMSE)
  return f'{report["decision"]["headline"]} RMSE {_fmt(ec.RMSE, rmse)}.'
