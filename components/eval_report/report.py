"""The evaluation report: what a reviewer needs to decide whether a model ships.

``collect`` reads one TFMA evaluation (with ``tfma.load_eval_result``, so
every point value is TFMA's own), the blessing, the candidate's and the
baseline's predictions on the evaluated split, the data checks and the
retrieval metrics into a typed ``Report``; ``to_html`` and ``to_markdown``
render it through the Jinja2 templates in ``templates/``.

The predictions give what TFMA does not: the rating distributions, the
calibration plot and, by a bootstrap over users (``stats.py``), a 95%
interval for every metric, slice and fairness spread, and the paired RMSE
difference against the baseline that the gate can require to be not
significantly worse. Each slice's point value computed from the predictions
is checked against TFMA's, so the intervals are around the numbers shown.
``explanations.py`` adds, for a few users of the split, the candidate's top
recommendations and why (its own ``recommend`` and ``explain`` signatures).
"""
import dataclasses
import datetime
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from google.protobuf import json_format
import jinja2
import markupsafe
import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.utils import path_utils

from components.common import splits
from components.eval_report import charts, explanations as explain_lib, stats
from components.eval_report.stats import Interval
from contract import names
from pipeline import configs, eval_config as ec
from transforms import features as f

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
SHORT_NAMES = {ec.RMSE: 'RMSE', ec.MAE: 'MAE', ec.MSE: 'MSE', ec.MEAN_PREDICTION: 'mean pred.',
               ec.MEAN_LABEL: 'mean rating', ec.CALIBRATION: 'calibration', ec.EXAMPLE_COUNT: 'examples'}
SLICE_COLUMNS = (ec.EXAMPLE_COUNT, ec.RMSE, ec.MAE, ec.MEAN_LABEL, ec.MEAN_PREDICTION, ec.CALIBRATION)
OVERALL = 'Overall'
_HPARAMS_FILE = os.path.join('assets.extra', names.HPARAMS_FILE)
_BLESSED_FILE, _NOT_BLESSED_FILE = 'BLESSED', 'NOT_BLESSED'
# Warnings, not gates: a model can pass the RMSE gate by predicting about the
# mean rating for everyone, which these make visible at the top of the page.
CONCENTRATED_SHARE = 0.5    # of predictions in one quarter-star bucket
CONSTANT_MARGIN = 0.02      # RMSE a model should gain over predicting the mean
# Slices with fewer test ratings are greyed, and left out of the worst slices
# and the fairness spreads: at 200 ratings RMSE's interval is already about
# +-0.1 wide, the size of the gaps between slices.
MIN_SLICE_COUNT = 200
# The RetrievalEvaluator's output file.
RETRIEVAL_METRICS = names.RETRIEVAL_METRICS_FILE
BUCKET_WIDTH = 0.25         # of the prediction histogram and the calibration plot, in stars
# `make bench-quality`'s results: the run-to-run spread over seeds, by model.
QUALITY_RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               'docs', 'results', 'quality.json')
# A computed point value may differ from TFMA's by float32 rounding only.
_POINT_TOLERANCE = 1e-4
# The gates a blessing must pass, as the report names them. The rating gate is
# TFMA's thresholds and the paired RMSE test; the list gates read the
# RetrievalEvaluator's protocol (docs/evaluation.md).
RATING_GATE = 'rating'
LIST_VS_POPULARITY_GATE = 'list vs popularity'
LIST_VS_BASELINE_GATE = 'list vs baseline'
GATES = (RATING_GATE, LIST_VS_POPULARITY_GATE, LIST_VS_BASELINE_GATE)
# The list gates' metric: the share of a user's next movies in the 100 the
# model retrieves, the candidate pool a re-ranker or a browse page draws from.
LIST_GATE_METRIC = 'recall_at_100'
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates')),
    autoescape=jinja2.select_autoescape(['html', 'html.j2']), undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


# ----- The typed report -----

def list_title(name: str) -> str:
  """'recall_at_100' as the page writes it: 'recall@100'."""
  return name.replace('_at_', '@').replace('_', ' ')


@dataclasses.dataclass
class GateCheck:
  """One check of a blessing gate on the overall slice, the candidate's figure and its verdict.

  Kinds: 'value' and 'change' are TFMA's thresholds, 'paired' the bootstrap's
  RMSE test (the rating gate); 'beats' (the paired difference with
  popularity's lists has its interval above 0) and 'tolerance' (the
  difference with the baseline's lists is at least ``lower``) are the list
  gates'. For 'paired', 'beats' and 'tolerance', ``value`` is the candidate
  minus ``baseline`` (what it is compared with) and ``candidate`` its own figure.
  """
  metric: str
  kind: str
  value: Optional[float]
  baseline: Optional[float]
  applied: bool
  passed: bool
  message: str = ''
  upper: Optional[float] = None
  lower: Optional[float] = None
  interval: Optional[Interval] = None
  gate: str = RATING_GATE
  candidate: Optional[float] = None
  note: str = ''                 # why a check was not applied
  cases: Optional[int] = None    # protocol users the list gates compared on

  @property
  def name(self) -> str:
    return SHORT_NAMES.get(self.metric, list_title(self.metric))

  @property
  def bound(self) -> str:
    if self.kind == 'paired':
      return f'{stats.LEVEL:.0%} interval not above 0'
    if self.kind == 'beats':
      return f'{stats.LEVEL:.0%} interval above 0' if self.interval is not None else '> 0'
    if self.kind == 'tolerance':
      return f'≥ {self.lower:+.4g}'
    if self.upper is not None:
      return '≤ ' + (f'{self.upper:+.4g}' if self.kind == 'change' else f'{self.upper:.4g}')
    return f'≥ {self.lower:.4g}' if self.lower is not None else ''

  @property
  def verdict(self) -> str:
    return 'not applied' if not self.applied else 'pass' if self.passed else 'FAIL'

  def sentence(self) -> str:
    if not self.applied:
      if self.note:
        return f'{self.gate.capitalize()} gate ({self.name}): not checked, {self.note}.'
      return f'{self.name} {self.kind} check against the baseline: not checked, there is no baseline.'
    if self.value is None:
      return f'{self.name}: no value, so the check failed.'
    verdict = 'passes' if self.passed else 'FAILS'
    if self.kind in ('beats', 'tolerance'):
      other = 'popularity' if self.kind == 'beats' else 'the latest blessed model'
      users = f'the same {self.cases:,} users' if self.cases else 'the same users'
      found = (f', {stats.LEVEL:.0%} interval [{self.interval.low:+.4f}, {self.interval.high:+.4f}]'
               if self.interval is not None else '')
      rule = ((f'the {stats.LEVEL:.0%} interval above 0 (it beats popularity beyond chance)'
               if self.interval is not None else 'it to be above 0 (no per-user figures for an interval)')
              if self.kind == 'beats' else f'at least {self.lower:+.4g} (the tolerance for a drop)')
      return (f'{self.gate.capitalize()} gate: {self.name} {self.candidate:.4f} against {other}\'s '
              f'{self.baseline:.4f} on {users}, a difference of {self.value:+.4f}{found}; the gate requires '
              f'{rule}: {verdict}.')
    if self.kind == 'paired':
      return (f'{self.name} differs from the baseline by {self.value:+.4f} on the same examples, '
              f'{stats.LEVEL:.0%} interval [{self.interval.low:+.4f}, {self.interval.high:+.4f}]; the gate requires '
              f'that it is not significantly worse: {verdict}.')
    bound = (f'at most {self.upper:+.4g}' if self.kind == 'change' and self.upper is not None else
             f'under {self.upper:.4g}' if self.upper is not None else
             f'above {self.lower:.4g}' if self.lower is not None else 'within its threshold')
    if self.kind == 'change':
      return (f'{self.name} changed by {self.value:+.4f} against the baseline ({self.baseline:.4f}); '
              f'the gate allows {bound}: {verdict}.')
    return f'{self.name} is {self.value:.4f}; the gate requires {bound}: {verdict}.'


@dataclasses.dataclass
class Comparison:
  """Candidate minus baseline RMSE on the same test examples, with its paired interval."""
  difference: float
  interval: Interval

  @property
  def worse(self) -> bool:
    return self.interval.above_zero

  @property
  def better(self) -> bool:
    return self.interval.below_zero

  @property
  def verdict(self) -> str:
    return ('significantly worse' if self.worse else 'significantly better' if self.better
            else 'not distinguishable from zero')

  def sentence(self) -> str:
    low, high = self.interval.low, self.interval.high
    words = ('the candidate is significantly worse than the baseline' if self.worse else
             'the candidate is significantly better than the baseline' if self.better else
             'the difference is not distinguishable from zero')
    return (f'Paired on the same test examples, RMSE differs by {self.difference:+.4f} '
            f'({stats.LEVEL:.0%} interval {low:+.4f} to {high:+.4f}): {words}.')


@dataclasses.dataclass
class Decision:
  blessed: Optional[bool]            # what the report's blessing says: the Pusher reads it
  evaluator_blessed: Optional[bool]  # TFMA's thresholds alone
  validation_ok: Optional[bool]
  has_baseline: bool
  require_not_worse: bool
  headline: str
  reasons: List[str]
  gate: List[GateCheck]
  warnings: List[str]
  comparison: Optional[Comparison]
  decided_by: List[str] = dataclasses.field(default_factory=list)  # the GATES that refused the model
  recall_tolerance: Optional[float] = None


@dataclasses.dataclass
class SeedSpread:
  """The model's run-to-run spread over seeds, from `make bench-quality`."""
  model: str
  metric: str
  mean: float
  std: float
  seeds: List[int]
  commit: Optional[str]

  def sentence(self) -> str:
    return (f'run to run: {self.mean:.4f} ± {self.std:.4f} (standard deviation over {len(self.seeds)} seeds of '
            f'{self.model}, make bench-quality at {self.commit or "an unknown commit"})')


@dataclasses.dataclass
class Overall:
  candidate: Dict[str, float]              # TFMA's values
  baseline: Optional[Dict[str, float]]
  intervals: Dict[str, Interval]           # the candidate's, by metric (and *_diff: paired)
  baseline_intervals: Dict[str, Interval]
  seed_spread: Optional[SeedSpread]


@dataclasses.dataclass
class SliceRow:
  id: str
  value: Any
  name: str
  candidate: Dict[str, float]              # TFMA's values
  baseline: Optional[Dict[str, float]]
  intervals: Dict[str, Interval]
  small: bool                              # under MIN_SLICE_COUNT ratings
  checked: bool                            # the predictions give TFMA's count and RMSE

  @property
  def count(self) -> float:
    return self.candidate.get(ec.EXAMPLE_COUNT, 0.0)


@dataclasses.dataclass
class SliceGroup:
  feature: str
  title: str
  fairness: bool
  rows: List[SliceRow]


@dataclasses.dataclass
class Spread:
  best: str
  best_value: float
  worst: str
  worst_value: float
  spread: float
  ratio: Optional[float]
  interval: Optional[Interval]


@dataclasses.dataclass
class Fairness:
  feature: str
  title: str
  metric: str
  candidate: Optional[Spread]
  baseline: Optional[Spread]
  left_out: List[str]                      # small slices, not in the spread


@dataclasses.dataclass
class Bucket:
  lower: float
  upper: float
  count: int
  sum_label: float
  sum_prediction: float


@dataclasses.dataclass
class Distributions:
  buckets: List[Bucket]
  count: int
  labels: Dict[int, int]
  prediction_mean: Optional[float] = None
  prediction_std: Optional[float] = None
  prediction_range_90: Optional[List[float]] = None
  label_mean: Optional[float] = None
  constant_rmse: Optional[float] = None    # predicting the split's mean for everyone scores exactly this
  busiest_bucket: Optional[Bucket] = None
  busiest_share: Optional[float] = None


@dataclasses.dataclass
class Validation:
  passed: bool
  findings: List[Dict[str, Any]]
  compared: int
  report: str


@dataclasses.dataclass
class Data:
  split_sizes: Dict[str, int]
  rows_read: Optional[int]
  rows_quarantined: Optional[int]
  quarantined_by_reason: Dict[str, int]
  source: Optional[str]
  quarantine_file: Optional[str]
  validation: Optional[Validation]


@dataclasses.dataclass
class ListMetric:
  """One list metric of the model and of popularity with their intervals, and the paired difference's."""
  name: str
  model: Optional[float]
  model_interval: Optional[Interval]
  popularity: Optional[float]
  popularity_interval: Optional[Interval]
  difference_interval: Optional[Interval]  # model minus popularity, same users
  # The latest blessed model's lists on the same users, when it was scored.
  baseline: Optional[float] = None
  baseline_interval: Optional[Interval] = None
  baseline_difference_interval: Optional[Interval] = None  # model minus baseline, same users

  @property
  def title(self) -> str:
    return list_title(self.name)


@dataclasses.dataclass
class ListGroup:
  feature: str
  title: str
  name: str
  users: int
  metrics: List[ListMetric]


@dataclasses.dataclass
class Retrieval:
  """The RetrievalEvaluator's metrics.json as it is, and intervals over its users."""
  result: Dict[str, Any]
  overall: List[ListMetric]
  groups: List[ListGroup]
  seed_spread: Optional[SeedSpread]


@dataclasses.dataclass
class Method:
  """How the intervals were computed, and what they cost."""
  name: str
  level: float
  replicates: int
  seed: int
  users: int
  min_slice_count: int
  predict_seconds: float                   # the candidate's and baseline's pass over the split
  bootstrap_seconds: float
  slices_checked: int
  mismatches: List[str]                    # slices whose predictions do not give TFMA's figures


@dataclasses.dataclass
class Models:
  candidate: str
  baseline: Optional[str]
  hparams: Dict[str, Dict[str, Any]]


@dataclasses.dataclass
class Report:
  """Everything the page shows; ``to_dict`` is report.json."""
  title: str
  generated: str
  run_id: Optional[str]
  eval_split: str
  decision: Decision
  overall: Overall
  slices: List[SliceGroup]
  fairness: List[Fairness]
  distributions: Distributions
  data: Data
  retrieval: Optional[Dict[str, Any]]
  retrieval_intervals: Optional[Retrieval]
  method: Method
  models: Models
  paths: Dict[str, Optional[str]]
  eval_config: Dict[str, Any]
  regenerate: Optional[str]
  explanations: Optional[explain_lib.Explanations] = None

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def rows(self):
    """Every (group, slice row)."""
    return [(g, r) for g in self.slices for r in g.rows]

  def worst_slices(self, n: int = 3) -> List[Tuple[SliceGroup, SliceRow]]:
    """The ``n`` slices with the highest RMSE among those with at least MIN_SLICE_COUNT ratings."""
    rows = [(g, r) for g, r in self.rows() if ec.RMSE in r.candidate and not r.small]
    return sorted(rows, key=lambda gr: -gr[1].candidate[ec.RMSE])[:n]


# ----- Reading TFMA -----

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


# ----- The per-example pass -----

@dataclasses.dataclass
class Predictions:
  """Every example of the evaluated split: label, predictions, user and slice values."""
  labels: np.ndarray
  candidate: np.ndarray
  baseline: Optional[np.ndarray]
  users: np.ndarray                        # user ids (bytes)
  slices: Dict[str, List[List[str]]]       # slice feature -> each example's values, as TFMA names them
  seconds: float


def _slice_value(value) -> str:
  """A slice value as TFMA's slice key spells it."""
  if isinstance(value, bytes):
    return value.decode()
  if isinstance(value, (np.integer, int)):
    return str(int(value))
  return str(value.item() if isinstance(value, np.generic) else value)


def predict(model_dirs: Dict[str, Optional[str]], examples_uri: str, split: str,
            batch_size: int = 4096, loaded: Optional[Dict[str, Any]] = None) -> Predictions:
  """Labels, each model's prediction and each slice feature's values, for every example of one split.

  Predictions come from each model's tf.Example signature (the one TFMA
  calls), Transform-made slice features from the candidate's
  ``transform_features`` signature (the one TFMA calls to slice), the others
  from the examples themselves. ``loaded`` holds models already loaded, by role.
  """
  start = time.perf_counter()
  files = splits.split_files(examples_uri, split)
  loaded = {role: (loaded or {}).get(role) or tf.saved_model.load(d) for role, d in model_dirs.items() if d}
  serve = {role: m.signatures[ec.SERVING_SIGNATURE] for role, m in loaded.items()}
  transform = loaded['candidate'].signatures[ec.TRANSFORM_SIGNATURE]
  transformed_keys = [s.key for s in ec.SLICE_FEATURES if s.key in transform.structured_outputs]
  spec = {f.LABEL_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=float('nan')),
          f.USER_ID: tf.io.FixedLenFeature([], tf.string, default_value=b'')}
  spec.update({s.key: tf.io.VarLenFeature(tf.string) for s in ec.SLICE_FEATURES if s.key not in transformed_keys})
  out = {'labels': [], 'users': [], **{role: [] for role in serve}}
  slices = {s.key: [] for s in ec.SLICE_FEATURES}
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP' if files and files[0].endswith('.gz') else '')
  for batch in dataset.batch(batch_size):
    for role, signature in serve.items():
      out[role].append(signature(examples=batch)[names.PREDICTION_KEY].numpy().reshape(-1))
    parsed = tf.io.parse_example(batch, spec)
    out['labels'].append(parsed[f.LABEL_KEY].numpy())
    out['users'].append(parsed[f.USER_ID].numpy())
    features = transform(examples=batch) if transformed_keys else {}
    for key in slices:
      if key in transformed_keys:
        values = features[key].numpy().reshape(batch.shape[0], -1).tolist()
      else:
        values = tf.RaggedTensor.from_sparse(parsed[key]).to_list()
      slices[key] += [[_slice_value(v) for v in row] for row in values]
  joined = {k: np.concatenate(v) if v else np.zeros([0]) for k, v in out.items()}
  return Predictions(joined['labels'], joined['candidate'], joined.get('baseline'), joined['users'], slices,
                     time.perf_counter() - start)


# ----- The decision -----

def _blessing(blessing_uri: Optional[str]) -> Optional[bool]:
  """True or False from the Evaluator's BLESSED / NOT_BLESSED file; None when unknown."""
  if not blessing_uri:
    return None
  if tf.io.gfile.exists(os.path.join(blessing_uri, _BLESSED_FILE)):
    return True
  if tf.io.gfile.exists(os.path.join(blessing_uri, _NOT_BLESSED_FILE)):
    return False
  return None


def _gate(evaluation: Evaluation) -> List[GateCheck]:
  """Each TFMA threshold on the overall slice, the candidate's figure and TFMA's verdict on it."""
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
      row = GateCheck(metric=key.name, kind='change' if key.is_diff else 'value',
                      value=overall.get(key.name + ('_diff' if key.is_diff else '')),
                      baseline=baseline.get(key.name) if key.is_diff else None,
                      applied=has_baseline or not key.is_diff, passed=not failed,
                      message='; '.join(x.message for x in failed if x.message))
      # TFMA hands back each MetricThreshold split into its value and its change part.
      if isinstance(threshold, tfma.GenericValueThreshold):
        row.upper = threshold.upper_bound.value if threshold.HasField('upper_bound') else None
        row.lower = threshold.lower_bound.value if threshold.HasField('lower_bound') else None
      else:
        lower_is_better = threshold.direction == tfma.MetricDirection.LOWER_IS_BETTER
        absolute = threshold.absolute.value if threshold.HasField('absolute') else None
        row.upper = absolute if lower_is_better else None
        row.lower = -absolute if absolute is not None and not lower_is_better else None
      rows.append(row)
  return rows


def list_gate(retrieval: Optional[Dict[str, Any]], intervals: Optional[Retrieval],
              recall_tolerance: float) -> List[GateCheck]:
  """The list gates' two checks on LIST_GATE_METRIC, from the RetrievalEvaluator's metrics.json.

  * list vs popularity: the candidate minus popularity on the same protocol
    users, a paired bootstrap over users (``stats.mean_intervals``, the same
    user weights as every other interval); it passes when the 95% interval
    lies above 0. Without per-user figures (a run from before they were
    recorded), the plain difference must be above 0.
  * list vs baseline: the candidate minus the latest blessed model on the
    same users; it passes when the difference is at least
    ``-recall_tolerance``. The paired interval is shown, not gated on.

  A check is not applied when there is nothing to compare: no
  RetrievalEvaluator output, a candidate without a ``retrieve`` signature,
  no baseline, or a baseline without one.

  Args:
    retrieval: metrics.json, or None.
    intervals: ``_retrieval``'s intervals over its users, or None.
    recall_tolerance: the allowed drop against the baseline.
  """
  metric = LIST_GATE_METRIC
  popularity = GateCheck(metric=metric, kind='beats', value=None, baseline=None, applied=False, passed=True,
                         gate=LIST_VS_POPULARITY_GATE)
  baseline = GateCheck(metric=metric, kind='tolerance', value=None, baseline=None, applied=False, passed=True,
                       lower=-recall_tolerance, gate=LIST_VS_BASELINE_GATE)
  if retrieval is None:
    popularity.note = baseline.note = 'there is no RetrievalEvaluator output, so no list was scored'
    return [popularity, baseline]
  if not retrieval.get('evaluated'):
    popularity.note = baseline.note = retrieval.get('reason', 'the RetrievalEvaluator did not score the model')
    return [popularity, baseline]
  found = {m.name: m for m in intervals.overall} if intervals is not None else {}
  row = found.get(metric) or ListMetric(
      metric, retrieval['model'].get(metric), None, retrieval['popularity'].get(metric), None, None,
      (retrieval.get('baseline') or {}).get(metric))
  cases = retrieval.get('cases')
  _compare(popularity, cases, row.model, row.popularity, row.difference_interval,
           lambda difference: (row.difference_interval.above_zero if row.difference_interval is not None
                               else difference > 0.0))
  if not retrieval.get('baseline_evaluated'):
    no_baseline = 'there is no baseline (no other model was blessed before)'
    baseline.note = (retrieval.get('baseline_reason', 'the latest blessed model was not scored')
                     if 'baseline_evaluated' in retrieval else no_baseline)
    return [popularity, baseline]
  _compare(baseline, cases, row.model, row.baseline, row.baseline_difference_interval,
           lambda difference: difference >= -recall_tolerance)
  return [popularity, baseline]


def _compare(check: GateCheck, cases: Optional[int], candidate: Optional[float], other: Optional[float],
             interval: Optional[Interval], passes: Callable[[float], bool]):
  """Applies one list check: candidate against ``other`` on the same users; a missing figure fails it."""
  check.applied, check.cases = True, cases
  check.candidate, check.baseline, check.interval = candidate, other, interval
  if candidate is None or other is None:
    check.passed = False
  else:
    check.value = candidate - other
    check.passed = passes(check.value)


def final_blessing(evaluator_blessed: Optional[bool], comparison: Optional[Comparison],
                   require_not_worse: bool, list_checks: Sequence[GateCheck] = ()) -> Optional[bool]:
  """The blessing the Pusher reads: every gate's.

  TFMA's verdict; when required, not significantly worse than the baseline;
  and every applied list check passed. Without a baseline there is nothing to
  compare with, and those checks are not applied.
  """
  if evaluator_blessed is None:
    return None
  if require_not_worse and comparison is not None and comparison.worse:
    return False
  if any(c.applied and not c.passed for c in list_checks):
    return False
  return evaluator_blessed


def _decided_by(evaluator_blessed: Optional[bool], comparison: Optional[Comparison], require_not_worse: bool,
                list_checks: Sequence[GateCheck]) -> List[str]:
  """The GATES that refused the model, in GATES' order; [] when none did."""
  refused = set()
  if evaluator_blessed is False or (require_not_worse and comparison is not None and comparison.worse):
    refused.add(RATING_GATE)
  refused.update(c.gate for c in list_checks if c.applied and not c.passed)
  return [g for g in GATES if g in refused]


def _decision(evaluation: Evaluation, blessing_uri: Optional[str], comparison: Optional[Comparison],
              require_not_worse: bool, warnings: List[str], list_checks: Sequence[GateCheck] = (),
              recall_tolerance: Optional[float] = None) -> Decision:
  gate = _gate(evaluation)
  validation_ok = evaluation.validation.validation_ok if evaluation.validation is not None else None
  evaluator_blessed = _blessing(blessing_uri)
  if evaluator_blessed is None:
    evaluator_blessed = validation_ok
  if require_not_worse:
    gate.append(GateCheck(metric=ec.RMSE, kind='paired', applied=comparison is not None,
                          value=comparison.difference if comparison else None,
                          baseline=evaluation.metrics.get('baseline', {}).get(OVERALL, {}).get(ec.RMSE),
                          passed=comparison is None or not comparison.worse,
                          interval=comparison.interval if comparison else None))
  reasons = [row.sentence() for row in gate]
  if comparison is not None and not require_not_worse:
    reasons.append(comparison.sentence() + ' (Reported, not gated: the pipeline does not require it.)')
  if evaluation.baseline_name is None:
    # TFX's Evaluator then rubber-stamps: TFMA drops the change thresholds.
    reasons.append('No baseline to compare with (no model was blessed before, or the pipeline runs without '
                   'the baseline Resolver), so the checks against a baseline were not applied.')
  if evaluation.validation is not None:
    if evaluation.validation.missing_slices:
      reasons.append(f'{len(evaluation.validation.missing_slices)} gated slice(s) had no examples: FAILS.')
    other = [x for s in evaluation.validation.metric_validations_per_slice if s.slice_key.single_slice_keys
             for x in s.failures]
    if other:
      reasons.append(f'{len(other)} threshold(s) failed on slices other than the overall one.')
  if not gate:
    reasons.append('No thresholds are configured, so the Evaluator does not bless any model.')
  reasons += [row.sentence() for row in list_checks]
  blessed = final_blessing(evaluator_blessed, comparison, require_not_worse, list_checks)
  decided_by = _decided_by(evaluator_blessed, comparison, require_not_worse, list_checks) if blessed is False else []
  gate = gate + list(list_checks)
  failed = [row for row in gate if row.applied and not row.passed]
  if blessed:
    applied = [g for g in GATES if g == RATING_GATE or any(c.applied and c.gate == g for c in list_checks)]
    headline = f'BLESSED: the model passes every gate ({", ".join(applied)}) and will be pushed.'
  elif blessed is None:
    headline = 'NO DECISION: the evaluation has no blessing.'
  else:
    by = ' and '.join(decided_by) + (' gates' if len(decided_by) > 1 else ' gate')
    against = {'beats': ' against popularity', 'tolerance': ' against the baseline'}
    listed = ', '.join(r.name + against.get(r.kind, f' {r.kind}') for r in failed)
    headline = (f'NOT BLESSED by the {by}: {listed} failed; the model will not be pushed.' if failed
                else f'NOT BLESSED by the {by}; the model will not be pushed.')
  return Decision(blessed=blessed, evaluator_blessed=evaluator_blessed, validation_ok=validation_ok,
                  has_baseline=evaluation.baseline_name is not None, require_not_worse=require_not_worse,
                  headline=headline, reasons=reasons, gate=gate, warnings=warnings, comparison=comparison,
                  decided_by=decided_by, recall_tolerance=recall_tolerance)


# ----- Slices, intervals and spreads -----

def _ordered_slices(evaluation: Evaluation, feature: ec.SliceFeature) -> List[str]:
  """The slice ids of one feature: coded values in code order, others by example count."""
  ids = [sid for sid, key in evaluation.slice_keys.items() if len(key) == 1 and key[0][0] == feature.key]
  candidate = evaluation.metrics['candidate']
  if feature.value_names is not None:
    return sorted(ids, key=lambda sid: evaluation.slice_keys[sid][0][1])
  return sorted(ids, key=lambda sid: (-candidate.get(sid, {}).get(ec.EXAMPLE_COUNT, 0.0), sid))


class _Bootstrap:
  """Per-user sums of each slice and the replicates of every metric, over one set of user weights."""

  def __init__(self, predictions: Predictions):
    self.p = predictions
    self.user_ids, users = np.unique(predictions.users, return_inverse=True)
    self.users = users.reshape(-1)
    self.weights = stats.poisson_weights(len(self.user_ids))
    self.replicates: Dict[str, Dict[str, np.ndarray]] = {}
    self.points: Dict[str, Dict[str, float]] = {}

  def add(self, sid: str, mask: Optional[np.ndarray]) -> None:
    sums = stats.user_sums(self.users, len(self.user_ids), self.p.labels, self.p.candidate, self.p.baseline, mask)
    self.replicates[sid] = stats.replicate(self.weights, sums)
    self.points[sid] = {k: float(v) for k, v in stats.metrics(sums.sum(0)).items()}
    self.points[sid][ec.EXAMPLE_COUNT] = float(sums[:, stats.COUNT].sum())

  def intervals(self, sid: str) -> Dict[str, Interval]:
    out = {}
    for name, values in self.replicates.get(sid, {}).items():
      found = stats.interval(values)
      if found is not None:
        out[name] = found
    return out


def _masks(predictions: Predictions) -> Dict[str, np.ndarray]:
  """Slice id to which examples are in it, from each example's slice values."""
  masks = {}
  n = predictions.labels.size
  for key, per_example in predictions.slices.items():
    for i, values in enumerate(per_example):
      for value in set(values):
        masks.setdefault(f'{key}={value}', np.zeros(n, bool))[i] = True
  return masks


def _matches(tfma_metrics: Dict[str, float], point: Dict[str, float]) -> bool:
  if tfma_metrics.get(ec.EXAMPLE_COUNT) != point.get(ec.EXAMPLE_COUNT):
    return False
  rmse = tfma_metrics.get(ec.RMSE)
  return rmse is not None and math.isclose(rmse, point[ec.RMSE], rel_tol=_POINT_TOLERANCE, abs_tol=_POINT_TOLERANCE)


def _slices(evaluation: Evaluation, boot: _Bootstrap, min_count: int) -> List[SliceGroup]:
  out = []
  baseline = evaluation.metrics.get('baseline')
  for feature in ec.SLICE_FEATURES:
    rows = []
    for sid in _ordered_slices(evaluation, feature):
      value = evaluation.slice_keys[sid][0][1]
      candidate = evaluation.metrics['candidate'].get(sid, {})
      rows.append(SliceRow(id=sid, value=value, name=feature.value_name(value), candidate=candidate,
                           baseline=baseline.get(sid, {}) if baseline is not None else None,
                           intervals=boot.intervals(sid),
                           small=candidate.get(ec.EXAMPLE_COUNT, 0.0) < min_count,
                           checked=sid in boot.points and _matches(candidate, boot.points[sid])))
    out.append(SliceGroup(feature.key, feature.title, feature.fairness, rows))
  return out


def _spread(rows: Sequence[SliceRow], role: str, boot: _Bootstrap) -> Optional[Spread]:
  """Worst minus best RMSE across ``rows`` (TFMA's values), with its interval."""
  values = [(getattr(r, role)[ec.RMSE], r.name, r.id) for r in rows if getattr(r, role) and ec.RMSE in getattr(r, role)]
  if len(values) < 2:
    return None
  (low, best, _), (high, worst, _) = min(values), max(values)
  metric = ec.RMSE if role == 'candidate' else 'baseline_' + ec.RMSE
  replicates = [boot.replicates[sid][metric] for _, _, sid in values if sid in boot.replicates]
  return Spread(best, low, worst, high, high - low, high / low if low > 0 else None,
                stats.spread_interval(replicates) if len(replicates) == len(values) else None)


def _fairness(slices: Sequence[SliceGroup], boot: _Bootstrap) -> List[Fairness]:
  """RMSE's spread (worst slice minus best) across each fairness feature's slices, small slices left out."""
  out = []
  for group in slices:
    if not group.fairness:
      continue
    kept = [r for r in group.rows if not r.small]
    out.append(Fairness(group.feature, group.title, ec.RMSE, _spread(kept, 'candidate', boot),
                        _spread(kept, 'baseline', boot), [r.name for r in group.rows if r.small]))
  return out


def _seed_spread(quality: Optional[Dict[str, Any]], model: str, metric: str) -> Optional[SeedSpread]:
  """``metric``'s spread over seeds for ``model`` in bench-quality's results, when they have one."""
  found = ((quality or {}).get('result', {}).get('models', {}).get(model) or {})
  std = found.get(f'{metric}_std')
  if std is None or len(found.get(f'{metric}_by_seed', quality['result'].get('seeds', []))) < 2:
    return None
  return SeedSpread(model, metric, found.get(f'{metric}_mean', found.get(metric)), std,
                    list(quality['result'].get('seeds', [])), quality.get('commit'))


def _retrieval(result: Optional[Dict[str, Any]], boot: _Bootstrap, quality: Optional[Dict[str, Any]],
               model: str) -> Optional[Retrieval]:
  """Intervals of the list metrics over the RetrievalEvaluator's users, overall and by user group."""
  per_case = (result or {}).get('per_case')
  if not result or not result.get('evaluated') or not per_case:
    return None
  index = {u: i for i, u in enumerate(boot.user_ids.tolist())}
  users = np.array([index.get(u.encode(), -1) for u in per_case['users']])
  known = users >= 0
  by_user = {}
  for key in (s.key for s in ec.SLICE_FEATURES if s.fairness):
    first = {}
    for u, values in zip(boot.users.tolist(), boot.p.slices[key]):
      first.setdefault(u, values[0] if values else None)
    by_user[key] = np.array([first.get(u) for u in users.tolist()], dtype=object)

  def rows(mask):
    model_values = {k: np.asarray(v)[mask & known] for k, v in per_case['model'].items()}
    pop = {k: np.asarray(v)[mask & known] for k, v in per_case['popularity'].items()}
    base = {k: np.asarray(v)[mask & known] for k, v in (per_case.get('baseline') or {}).items()}
    u = users[mask & known]
    model_ci = stats.mean_intervals(boot.weights, u, model_values)
    pop_ci = stats.mean_intervals(boot.weights, u, pop)
    diff_ci = stats.mean_intervals(boot.weights, u, {k: model_values[k] - pop[k] for k in model_values if k in pop})
    base_ci = stats.mean_intervals(boot.weights, u, base)
    base_diff_ci = stats.mean_intervals(boot.weights, u,
                                        {k: model_values[k] - base[k] for k in model_values if k in base})

    def mean(values, k):
      return float(np.mean(values[k])) if k in values and values[k].size else None

    return [ListMetric(k, mean(model_values, k), model_ci.get(k), mean(pop, k), pop_ci.get(k), diff_ci.get(k),
                       mean(base, k), base_ci.get(k), base_diff_ci.get(k))
            for k in sorted(model_values)]

  groups = []
  for feature in (s for s in ec.SLICE_FEATURES if s.fairness):
    for value in sorted({v for v in by_user[feature.key] if v is not None}, key=lambda v: (len(v), v)):
      mask = by_user[feature.key] == value
      coded = int(value) if value.lstrip('-').isdigit() else value
      groups.append(ListGroup(feature.key, feature.title, feature.value_name(coded), int((mask & known).sum()),
                              rows(mask)))
  return Retrieval(result, rows(np.ones(users.size, bool)), groups, _seed_spread(quality, model, 'recall_at_100'))


# ----- Distributions, warnings, data -----

def bucket_edges() -> List[float]:
  """Quarter-star prediction buckets from half a star below the lowest rating to half above the highest.

  Each star sits on the edge between the middle two of its four buckets; the
  first and last buckets are open, so every prediction lands in one.
  """
  low, high = f.RATING_RANGE[0] - 0.5, f.RATING_RANGE[1] + 0.5
  return [-math.inf] + list(np.arange(low, high + BUCKET_WIDTH / 2, BUCKET_WIDTH)) + [math.inf]


def _distributions(predictions: np.ndarray, labels: np.ndarray) -> Distributions:
  """Predicted and actual rating distributions and the calibration table, from (prediction, label) pairs."""
  edges = bucket_edges()
  index = np.searchsorted(edges, predictions, side='right') - 1
  buckets = []
  for i, (lower, upper) in enumerate(zip(edges, edges[1:])):
    members = index == i
    buckets.append(Bucket(float(lower), float(upper), int(members.sum()), float(labels[members].sum()),
                          float(predictions[members].sum())))
  stars, counts = np.unique(np.round(labels).astype(int), return_counts=True)
  out = Distributions(buckets, int(predictions.size), {int(s): int(c) for s, c in zip(stars, counts)})
  if predictions.size:
    busiest = max(buckets, key=lambda b: b.count)
    out = dataclasses.replace(
        out, prediction_mean=float(predictions.mean()), prediction_std=float(predictions.std()),
        prediction_range_90=[float(np.quantile(predictions, 0.05)), float(np.quantile(predictions, 0.95))],
        label_mean=float(labels.mean()), constant_rmse=float(labels.std()), busiest_bucket=busiest,
        busiest_share=busiest.count / predictions.size)
  return out


def _warnings(overall: Dict[str, float], dist: Distributions) -> List[str]:
  """What a reviewer should look at even when the model passes its gates."""
  out = []
  if (dist.busiest_share or 0.0) > CONCENTRATED_SHARE:
    b = dist.busiest_bucket
    out.append(f'{dist.busiest_share:.1%} of predictions fall between {b.lower:g} and {b.upper:g}: '
               'the model predicts nearly the same rating for everyone.')
  rmse, constant = overall.get(ec.RMSE), dist.constant_rmse
  if rmse is not None and constant is not None and constant - rmse < CONSTANT_MARGIN:
    out.append(f'RMSE {rmse:.4f} is less than {CONSTANT_MARGIN} better than predicting the mean rating for '
               f'everyone ({constant:.4f}).')
  return out


def _data(examples_properties: Dict[str, Any], quarantine_uri: Optional[str], anomalies_uri: Optional[str]) -> Data:
  quarantine = _read_json(os.path.join(quarantine_uri, names.QUARANTINE_SUMMARY_FILE)) if quarantine_uri else None
  validation = _read_json(os.path.join(anomalies_uri, 'report.json')) if anomalies_uri else None
  splits = dict((quarantine or {}).get('counts_per_split') or {})
  if not splits:
    splits = {k[len('rows_'):]: v for k, v in examples_properties.items()
              if k.startswith('rows_') and k not in ('rows_read', 'rows_quarantined')}
  return Data(
      split_sizes=splits,
      rows_read=(quarantine or {}).get('rows_read', examples_properties.get('rows_read')),
      rows_quarantined=(quarantine or {}).get('rows_quarantined', examples_properties.get('rows_quarantined')),
      quarantined_by_reason=(quarantine or {}).get('counts_by_reason', {}),
      source=((quarantine or {}).get('source') or {}).get('path'),
      quarantine_file=os.path.join(quarantine_uri, names.QUARANTINE_ROWS_FILE) if quarantine_uri else None,
      validation=None if validation is None else Validation(
          validation['passed'], validation['findings'], len(validation['measurements']),
          os.path.join(anomalies_uri, 'report.html')))


def collect(evaluation_uri: str, examples_uri: str, eval_split: str = 'test', blessing_uri: Optional[str] = None,
            model_uri: Optional[str] = None, quarantine_uri: Optional[str] = None,
            anomalies_uri: Optional[str] = None, retrieval_uri: Optional[str] = None,
            examples_properties: Optional[Dict[str, Any]] = None,
            run_id: Optional[str] = None, regenerate_command: Optional[str] = None,
            require_not_worse: bool = True, min_slice_count: int = MIN_SLICE_COUNT,
            quality_path: Optional[str] = QUALITY_RESULTS, explained_users: int = explain_lib.USERS,
            recall_tolerance: float = configs.DEFAULT_RECALL_TOLERANCE) -> Report:
  """Everything the report shows.

  Args:
    evaluation_uri: the Evaluator's ``evaluation`` (TFMA output folder).
    examples_uri: ExampleGen's ``examples``; ``eval_split`` is read.
    eval_split: the split the Evaluator evaluated.
    blessing_uri: the Evaluator's ``blessing``.
    model_uri: the candidate Model artifact; when None, TFMA's record of the
      model's location is used.
    quarantine_uri: ExampleGen's ``quarantine`` (split sizes, bad rows).
    anomalies_uri: the DataValidator's ``anomalies`` (report.json).
    retrieval_uri: the RetrievalEvaluator's ``evaluation`` (metrics.json).
    examples_properties: the examples artifact's custom properties, used
      when there is no quarantine summary.
    run_id: the pipeline run, for the record.
    regenerate_command: how to build this report again.
    require_not_worse: bless only a candidate whose paired RMSE difference
      with the baseline is not significantly above zero.
    min_slice_count: slices with fewer examples are greyed and left out of
      the worst slices and the fairness spreads.
    quality_path: ``make bench-quality``'s quality.json, for the seed spread.
    explained_users: users of the split whose top recommendations the report
      explains through the candidate's ``explain`` signature (0: none).
    recall_tolerance: the list gate's allowed Recall@100 drop against the
      latest blessed model (``list_gate``).
  """
  evaluation = Evaluation.load(evaluation_uri)
  candidate_dir = path_utils.serving_model_dir(model_uri) if model_uri else evaluation.model_dir('candidate')
  candidate = tf.saved_model.load(candidate_dir)
  predictions = predict({'candidate': candidate_dir, 'baseline': evaluation.model_dir('baseline')},
                        examples_uri, eval_split, loaded={'candidate': candidate})
  explained = (explain_lib.explain_users(candidate, examples_uri, eval_split, candidate_dir, explained_users)
               if explained_users else None)
  started = time.perf_counter()
  boot = _Bootstrap(predictions)
  boot.add(OVERALL, None)
  for sid, mask in _masks(predictions).items():
    if sid in evaluation.slice_keys:
      boot.add(sid, mask)
  slices = _slices(evaluation, boot, min_slice_count)
  fairness = _fairness(slices, boot)
  hparams = {'candidate': _hparams(candidate_dir), 'baseline': _hparams(evaluation.model_dir('baseline'))}
  model_name = hparams['candidate'].get('model', 'the candidate model')
  quality = _read_json(quality_path) if quality_path else None
  retrieval = _read_json(os.path.join(retrieval_uri, RETRIEVAL_METRICS)) if retrieval_uri else None
  retrieval_intervals = _retrieval(retrieval, boot, quality, model_name)
  overall_intervals = boot.intervals(OVERALL)
  comparison = None
  if predictions.baseline is not None and ec.RMSE + '_diff' in overall_intervals:
    comparison = Comparison(boot.points[OVERALL][ec.RMSE + '_diff'], overall_intervals[ec.RMSE + '_diff'])
  bootstrap_seconds = time.perf_counter() - started
  overall = {role: metrics.get(OVERALL, {}) for role, metrics in evaluation.metrics.items()}
  distributions = _distributions(predictions.candidate, predictions.labels)
  decision = _decision(evaluation, blessing_uri, comparison, require_not_worse,
                       _warnings(overall['candidate'], distributions),
                       list_gate(retrieval, retrieval_intervals, recall_tolerance), recall_tolerance)
  checked = [r for g in slices for r in g.rows]
  mismatches = [r.id for r in checked if not r.checked]
  if not _matches(overall['candidate'], boot.points[OVERALL]):
    mismatches.insert(0, OVERALL)
  return Report(
      title=f'Evaluation of {model_name} on the {eval_split} split',
      generated=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      run_id=run_id,
      eval_split=eval_split,
      decision=decision,
      overall=Overall(overall['candidate'], overall.get('baseline'),
                      {k: v for k, v in overall_intervals.items() if not k.startswith('baseline_')},
                      {k[len('baseline_'):]: v for k, v in overall_intervals.items() if k.startswith('baseline_')}
                      if predictions.baseline is not None else {},
                      _seed_spread(quality, model_name, 'rmse')),
      slices=slices,
      fairness=fairness,
      distributions=distributions,
      data=_data(examples_properties or {}, quarantine_uri, anomalies_uri),
      retrieval=retrieval,
      retrieval_intervals=retrieval_intervals,
      method=Method(stats.METHOD, stats.LEVEL, stats.REPLICATES, stats.SEED, len(boot.user_ids), min_slice_count,
                    round(predictions.seconds, 2), round(bootstrap_seconds, 2), len(checked) + 1 - len(mismatches),
                    mismatches),
      models=Models(candidate_dir, evaluation.model_dir('baseline'), hparams),
      paths={'evaluation': evaluation_uri, 'blessing': blessing_uri, 'examples': examples_uri},
      eval_config=json_format.MessageToDict(evaluation.eval_config),
      regenerate=regenerate_command,
      explanations=explained,
  )


# ----- Rendering -----

def fmt(value: Optional[float], metric: str = '', signed: bool = False) -> str:
  """A metric as the page shows it: 4 decimals, counts with thousands separators, n/a for none."""
  if value is None or not math.isfinite(value):
    return 'n/a'
  if metric in (ec.EXAMPLE_COUNT, ec.EXAMPLE_COUNT + '_diff'):
    return f'{value:+,.0f}' if signed else f'{value:,.0f}'
  return f'{value:+.4f}' if signed else f'{value:.4f}'


def fmt_interval(found: Optional[Interval], signed: bool = False) -> str:
  if found is None:
    return ''
  return f'[{fmt(found.low, signed=signed)}, {fmt(found.high, signed=signed)}]'


def _exact(value: Optional[float]) -> str:
  return repr(float(value)) if value is not None else ''


_TEMPLATES.filters.update(fmt=fmt, interval=fmt_interval, exact=_exact)


def _charts(report: Report) -> Dict[str, Any]:
  """The page's SVG charts, already escaped by charts.py."""
  reference = report.overall.candidate.get(ec.RMSE)
  bars = {g.feature: markupsafe.Markup(charts.slice_bars(
      [(r.name, r.candidate.get(ec.RMSE), (r.baseline or {}).get(ec.RMSE), r.count) for r in g.rows],
      reference, 'RMSE')) for g in report.slices}
  dist = report.distributions
  total = dist.count
  lo, hi = dist.buckets[0].upper, dist.buckets[-1].lower
  shares = [(b.lower, b.upper, b.count / total if total else 0.0) for b in dist.buckets]
  label_shares = [(float(s), c / total) for s, c in sorted(dist.labels.items())] if total else []
  points = [(b.sum_prediction / b.count, b.sum_label / b.count, b.count) for b in dist.buckets if b.count > 0]
  return {'bars': bars, 'distributions': markupsafe.Markup(charts.distributions(shares, label_shares, lo, hi)),
          'calibration': markupsafe.Markup(charts.calibration(points, lo, hi))}


def _context(report: Report) -> Dict[str, Any]:
  return {'r': report, 'ec': ec, 'METRICS': METRICS, 'SLICE_COLUMNS': SLICE_COLUMNS, 'SHORT_NAMES': SHORT_NAMES,
          'OVERALL': OVERALL, 'json': json}


def to_html(report: Report) -> str:
  """The self-contained page: inline CSS and SVG, no script, no network."""
  return _TEMPLATES.get_template('report.html.j2').render(charts=_charts(report), **_context(report))


def explanations_html(found: explain_lib.Explanations, split: str) -> str:
  """The page's explanations section alone (report.html.j2 renders the same macro)."""
  return str(_TEMPLATES.get_template('_explanations.html.j2').module.explained(found, split))


def to_markdown(report: Report, html_path: Optional[str] = None) -> str:
  """A short summary for a pull request or a chat message."""
  return _TEMPLATES.get_template('summary.md.j2').render(html_path=html_path, **_context(report))


def write(out_dir: str, report: Report, html_name: str = 'report.html', json_name: str = 'report.json',
          markdown_name: str = 'summary.md') -> Dict[str, str]:
  """Writes the three files into ``out_dir``; returns their paths by kind."""
  tf.io.gfile.makedirs(out_dir)
  paths = {'html': os.path.join(out_dir, html_name), 'json': os.path.join(out_dir, json_name),
           'markdown': os.path.join(out_dir, markdown_name)}
  with tf.io.gfile.GFile(paths['json'], 'w') as fh:
    json.dump(report.to_dict(), fh, indent=1, sort_keys=True, default=_json_default)
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
  """One line for the log: the decision and the candidate's RMSE with its interval."""
  rmse = report.overall.candidate.get(ec.RMSE)
  found = report.overall.intervals.get(ec.RMSE)
  return f'{report.decision.headline} RMSE {fmt(rmse)}' + (f' {fmt_interval(found)}.' if found else '.')
