"""The one create_pipeline: the local and the Kubeflow runner both call it."""
from typing import List, Optional

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components import idempotent_pusher
from contract import names
from pipeline import baseline
from components.data_validator import DataValidator
from components.eval_report import EvalReport, spec as eval_report_spec
from components.movielens_example_gen import MovieLensExampleGen, SplitConfig
from components.retrieval_evaluator import RetrievalEvaluator
from pipeline.configs import PipelineConfig
from pipeline.eval_config import EVAL_SPLIT, make_eval_config
from transforms import features as f


def _fingerprinted(custom_config: dict, fingerprint: str) -> Optional[dict]:
  """``custom_config`` with the module folder's digest, when the runner gives one."""
  if fingerprint:
    custom_config = {**custom_config, 'module_fingerprint': fingerprint}
  return custom_config or None


def create_pipeline(config: PipelineConfig, beam_pipeline_args: List[str],
                    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
                    enable_cache: bool = True) -> tfx.dsl.Pipeline:
  """Builds every component of the MovieLens pipeline.

  Args:
    config: what to run on and how; see ``PipelineConfig``.
    beam_pipeline_args: chosen by the runner (``configs.BEAM_PIPELINE_ARGS``).
    metadata_connection_config: MLMD connection; None lets the orchestrator
      supply one (Kubeflow).
    enable_cache: reuse outputs of executions whose inputs did not change.

  Returns:
    The pipeline, for LocalDagRunner or KubeflowV2DagRunner.
  """
  # Reads GroupLens files, joins ratings with movies and users, splits by time
  # and quarantines bad rows.
  example_gen = MovieLensExampleGen(
      data_dir=config.data_dir,
      split_config=config.split_config or SplitConfig().to_json(),
      max_bad_fraction=config.max_bad_fraction,
      data_fingerprint=config.data_fingerprint,
      cache_dir=config.data_cache_dir or None).with_id(names.EXAMPLE_GEN)

  # Per-split statistics: input to the schema, the validator and drift checks.
  statistics_gen = tfx.components.StatisticsGen(
      examples=example_gen.outputs['examples']).with_id(names.STATISTICS_GEN)

  # A reviewed schema when one is given, otherwise one inferred from the data.
  if config.schema_path:
    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path).with_id(names.IMPORT_SCHEMA_GEN)
  else:
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs['statistics'], infer_feature_shape=True).with_id(names.SCHEMA_GEN)

  # Schema anomalies of every split, drift and id OOV of eval/test against
  # train; fails the run on any, so nothing is trained on bad data.
  example_validator = DataValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema'],
      examples=example_gen.outputs['examples'],
      quarantine=example_gen.outputs['quarantine'],
      oov_thresholds=config.oov_thresholds,
      fail_on_anomalies=config.fail_on_anomalies).with_id(names.EXAMPLE_VALIDATOR)

  # Vocabularies and scalings fitted on features.ANALYZED_SPLITS, applied to
  # train and eval; the Evaluator runs the same graph inside the model on raw
  # test examples.
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      module_file=config.transform_module_file,
      # Pre/post-transform statistics double Transform's time; StatisticsGen
      # already covers the raw splits.
      disable_statistics=not config.transform_statistics,
      custom_config=_fingerprinted({}, config.transform_fingerprint),
      splits_config=tfx.proto.SplitsConfig(analyze=list(f.ANALYZED_SPLITS), transform=['train', 'eval'])
  ).with_id(names.TRANSFORM)
  # Transform consumes no output of the validator, so order it explicitly:
  # a failed validation stops the run before anything is trained or pushed.
  transform.add_upstream_node(example_validator)

  # A KerasTuner search over the model's hyperparameters; Trainer takes its
  # best values (without it, trainer/hparams.py's defaults). Named by import
  # path, not module_file: the cache key then holds the data, the budget and
  # ``tuner_fingerprint`` (the search space), so an edit elsewhere in
  # trainer/ reruns the Trainer but reuses the search (docs/pipeline.md).
  tuner = None
  if config.tuner_trials:
    tuner = tfx.components.Tuner(
        tuner_fn=config.tuner_fn,
        examples=transform.outputs['transformed_examples'],
        transform_graph=transform.outputs['transform_graph'],
        schema=schema_gen.outputs['schema'],
        train_args=tfx.proto.TrainArgs(splits=['train']),
        eval_args=tfx.proto.EvalArgs(splits=['eval']),
        custom_config={'hparams': config.hparams,
                       'tuner': {'max_trials': config.tuner_trials, 'epochs': config.tuner_epochs,
                                 'fingerprint': config.tuner_fingerprint}}
    ).with_id(names.TUNER)

  # Fits the TFRS model and exports it with raw, tf.Example and transform signatures.
  trainer = tfx.components.Trainer(
      module_file=config.trainer_module_file,
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      hyperparameters=tuner.outputs['best_hyperparameters'] if tuner else None,
      train_args=tfx.proto.TrainArgs(splits=['train']),
      eval_args=tfx.proto.EvalArgs(splits=['eval']),
      custom_config=_fingerprinted({'hparams': config.hparams}, config.trainer_fingerprint)).with_id(names.TRAINER)

  # The latest blessed model is the baseline a candidate must not fall behind.
  # Locally, never the candidate itself: comparing a model with itself would
  # rerun the Evaluator on the first rerun after every blessing.
  model_resolver = None
  # EvalReport's blessing, the one the Pusher reads; the Evaluator's alone
  # may bless a model the paired test refused.
  final_blessings = tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                    producer_component_id=names.EVAL_REPORT,
                                    output_key=eval_report_spec.MODEL_BLESSING_KEY)
  if config.baseline_resolver and config.baseline_excludes_candidate:
    model_resolver = tfx.dsl.Resolver(
        strategy_class=baseline.LatestBlessedOtherModelStrategy,
        **{baseline.MODEL: tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
           baseline.MODEL_BLESSING: final_blessings,
           baseline.CANDIDATE: trainer.outputs['model']}
    ).with_id(names.MODEL_RESOLVER)
  elif config.baseline_resolver:
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=final_blessings).with_id(names.MODEL_RESOLVER)

  # TFMA on the held-out test split, overall and by slice (eval_config.py);
  # blesses the model or not.
  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=model_resolver.outputs['model'] if model_resolver else None,
      example_splits=[EVAL_SPLIT],
      eval_config=make_eval_config(config)).with_id(names.EVALUATOR)

  # Recall@K and NDCG@K of the model's lists against popularity and the
  # latest blessed model's, per test user: the list gate's figures. TFMA
  # scores one prediction per example, not lists.
  retrieval_evaluator = RetrievalEvaluator(
      examples=example_gen.outputs['examples'], model=trainer.outputs['model'],
      baseline_model=model_resolver.outputs['model'] if model_resolver else None
  ).with_id(names.RETRIEVAL_EVALUATOR)

  # One static page a reviewer can decide from: the blessing and why, metrics
  # with their intervals against the baseline, slices, fairness, calibration
  # and the data; and the final blessing: the rating gate (TFMA's thresholds
  # and the paired test) and the list gates (Recall@100 against popularity
  # and against the latest blessed model).
  eval_report = EvalReport(
      evaluation=evaluator.outputs['evaluation'],
      blessing=evaluator.outputs['blessing'],
      model=trainer.outputs['model'],
      examples=example_gen.outputs['examples'],
      quarantine=example_gen.outputs['quarantine'],
      anomalies=example_validator.outputs['anomalies'],
      retrieval=retrieval_evaluator.outputs['evaluation'],
      eval_split=EVAL_SPLIT,
      require_not_worse=config.require_not_worse,
      recall_tolerance=config.recall_tolerance).with_id(names.EVAL_REPORT)

  # Copies a blessed model to <serving_model_dir>/<model_name>/<version>/,
  # unless that same model is already there.
  pusher = tfx.components.Pusher(
      custom_executor_spec=executor_spec.ExecutorClassSpec(idempotent_pusher.Executor),
      model=trainer.outputs['model'],
      model_blessing=eval_report.outputs[eval_report_spec.MODEL_BLESSING_KEY],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(
              base_directory=f'{config.serving_model_dir}/{config.model_name}'))).with_id(names.PUSHER)

  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root,
      components=[example_gen, statistics_gen, schema_gen, example_validator, transform,
                  *([tuner] if tuner else []), trainer, *([model_resolver] if model_resolver else []),
                  evaluator, retrieval_evaluator, eval_report, pusher],
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args)
