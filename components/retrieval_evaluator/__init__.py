"""RetrievalEvaluator: point-in-time Recall@K and NDCG@K of a model's towers, in MLMD."""
from components.retrieval_evaluator.component import RetrievalEvaluator

__all__ = ['RetrievalEvaluator']
