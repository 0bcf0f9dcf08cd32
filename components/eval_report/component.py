"""EvalReport: a static HTML report of the Evaluator's verdict, for reviewers."""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts

from components.eval_report import executor, report, spec
from pipeline import configs


class EvalReport(base_component.BaseComponent):
  """Turns the Evaluator's TFMA output into one page a reviewer can decide from, and the final blessing.

  Writes ``report.html`` (no server, no notebook, no network: inline CSS and
  SVG), ``report.json`` (the same figures for machines) and ``summary.md``
  into its ``report`` artifact. The page shows the blessing and why, the
  overall metrics against the baseline, the RMSE spread across user groups,
  every slice as a table and a bar chart, predicted against actual ratings,
  the calibration plot, top-K retrieval metrics when the model has retrieval
  towers, and the data's split sizes, quarantine and anomalies, each metric
  with its 95% interval (a bootstrap over users).

  Its ``model_blessing`` is the Evaluator's, and, with ``require_not_worse``,
  also requires that the candidate is not significantly worse than the
  baseline on the same examples (the paired RMSE difference's interval is not
  above zero): the rating gate. With the RetrievalEvaluator's output, the
  list gates must pass too: Recall@100 beats popularity's on the same users,
  and is at most ``recall_tolerance`` below the latest blessed model's. The
  report names the gates that decided. The Pusher and the baseline Resolver
  read this blessing.
  """
  SPEC_CLASS = spec.EvalReportSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, evaluation: types.BaseChannel, examples: types.BaseChannel,
               blessing: Optional[types.BaseChannel] = None, model: Optional[types.BaseChannel] = None,
               quarantine: Optional[types.BaseChannel] = None, anomalies: Optional[types.BaseChannel] = None,
               retrieval: Optional[types.BaseChannel] = None, eval_split: str = 'test',
               require_not_worse: bool = True, min_slice_count: int = report.MIN_SLICE_COUNT,
               recall_tolerance: float = configs.DEFAULT_RECALL_TOLERANCE):
    """Constructs an EvalReport.

    Args:
      evaluation: the Evaluator's ``evaluation`` (TFMA output).
      examples: the examples the Evaluator read; ``eval_split``'s labels give
        the actual rating distribution.
      blessing: the Evaluator's ``blessing``.
      model: the candidate model, for the hyperparameters it was trained with.
      quarantine: ExampleGen's quarantine (split sizes, bad rows by reason).
      anomalies: the DataValidator's ``anomalies`` (its report.json).
      retrieval: the RetrievalEvaluator's ``evaluation`` (Recall@K and NDCG@K
        of the model's lists against popularity and the baseline's): the
        list gates' figures.
      eval_split: the split the Evaluator evaluated.
      require_not_worse: bless only a candidate not significantly worse than
        the baseline, as well as what the Evaluator's thresholds require.
      min_slice_count: slices with fewer examples are greyed, and left out of
        the worst slices and the fairness spreads.
      recall_tolerance: the list gate's allowed Recall@100 drop against the
        latest blessed model (``configs.DEFAULT_RECALL_TOLERANCE``).
    """
    super().__init__(spec.EvalReportSpec(
        evaluation=evaluation, examples=examples, blessing=blessing, model=model, quarantine=quarantine,
        anomalies=anomalies, retrieval=retrieval, eval_split=eval_split,
        require_not_worse=int(require_not_worse), min_slice_count=min_slice_count,
        recall_tolerance=float(recall_tolerance),
        report=types.Channel(type=spec.EvaluationReport),
        model_blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
