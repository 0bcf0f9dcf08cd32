"""A local server for the pushed models that speaks TF Serving's REST API.

``python -m serving.server --model-base-path outputs/serving/movielens_ranking``;
see serving/README.md and docs/serving.md.
"""
