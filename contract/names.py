"""Names that cross package boundaries, each spelled once; imports only the standard library."""
import os

# Pipeline and model names: in URLs, in MLMD and in the Pusher's folder.
PIPELINE_NAME = 'movielens-recommender'
MODEL_NAME = 'movielens_ranking'

# SavedModel signatures.
SERVING_DEFAULT = 'serving_default'      # raw JSON feature values
SERVING_TF_EXAMPLE = 'serving_tf_example'  # serialized tf.Example protos
TRANSFORM_FEATURES = 'transform_features'  # serialized examples to Transform outputs
RECOMMEND = 'recommend'                   # one user a row to its top k movies
RETRIEVE = 'retrieve'                     # the retrieval towers' top k (models with towers)
RECOMMEND_DIVERSE = 'recommend_diverse'   # recommend plus a diversity weight a row (MMR over genres)
EXPLAIN = 'explain'                       # why a rating model scores a (user, movie) pair so
# The input name of the two signatures that take serialized examples.
EXAMPLES = 'examples'

# Output key of the rating signatures.
PREDICTION_KEY = 'predictions'
# Output keys of recommend and retrieve.
MOVIE_IDS, TITLES, SCORES = 'movie_ids', 'titles', 'scores'
# recommend's list length input; a longer list than MAX_K is a different
# product (a browse page), so k is clipped to it.
K = 'k'
DEFAULT_K = 10
MAX_K = 100
# recommend_diverse's variety knob: the MMR weight over genres of each row,
# in DIVERSITY_RANGE; 0 ranks by score, as recommend does. The server's
# :recommend takes it as an optional field and refuses values outside.
DIVERSITY = 'diversity'
DIVERSITY_RANGE = (0.0, 1.0)

# Output keys of explain (besides PREDICTION_KEY, the score [B]).
BASELINE_SCORE = 'baseline_score'              # [B] every explained feature at its unknown value
GROUP_NAMES = 'group_names'                    # [B, G] feature groups, from the feature table
GROUP_ATTRIBUTIONS = 'group_attributions'      # [B, G] exact Shapley values; they sum to score - baseline
HISTORY_CONTRIBUTIONS = 'history_contributions'  # [B, T] score minus the score without that history entry
# |sum of attributions - (score - baseline)| stays below this (float32 ratings in 1..5).
EXPLAIN_TOLERANCE = 1e-4

# Component ids, as create_pipeline gives them with .with_id().
EXAMPLE_GEN = 'MovieLensExampleGen'
STATISTICS_GEN = 'StatisticsGen'
IMPORT_SCHEMA_GEN = 'ImportSchemaGen'
SCHEMA_GEN = 'SchemaGen'
EXAMPLE_VALIDATOR = 'ExampleValidator'
TRANSFORM = 'Transform'
TUNER = 'Tuner'
TRAINER = 'Trainer'
MODEL_RESOLVER = 'LatestBlessedModelResolver'
EVALUATOR = 'Evaluator'
RETRIEVAL_EVALUATOR = 'RetrievalEvaluator'
EVAL_REPORT = 'EvalReport'
PUSHER = 'Pusher'

# The output key of EvalReport's final blessing, which the Pusher and the
# baseline Resolver read.
FINAL_BLESSING_KEY = 'model_blessing'

# Artifact file names.
QUARANTINE_SUMMARY_FILE = 'summary.json'  # ExampleGen's counts of quarantined rows
QUARANTINE_ROWS_FILE = 'quarantine.jsonl'  # the quarantined rows themselves
RETRIEVAL_METRICS_FILE = 'metrics.json'    # the RetrievalEvaluator's figures
HPARAMS_FILE = 'hparams.json'              # in a SavedModel's assets.extra/


def metadata_path(output_root: str, pipeline_name: str = PIPELINE_NAME) -> str:
  """The local runner's MLMD SQLite file under ``output_root``."""
  return os.path.join(output_root, 'metadata', pipeline_name, 'metadata.db')
