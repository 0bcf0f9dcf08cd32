"""EvalReport: the Evaluator's verdict as one static HTML page, plus JSON and Markdown."""
from components.eval_report.component import EvalReport
from components.eval_report.spec import EvaluationReport

__all__ = ['EvalReport', 'EvaluationReport']
