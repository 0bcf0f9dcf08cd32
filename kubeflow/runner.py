"""Compiles the one create_pipeline for Kubeflow Pipelines v2 with KubeflowV2DagRunner.

    python -m kubeflow.runner --image REGISTRY/movielens-tfx:TAG \\
        --pipeline-root gs://BUCKET/tfx --data-dir gs://BUCKET/data/ml-100k \\
        --beam-runner dataflow --beam-arg=--project=PROJECT --beam-arg=--region=REGION

Writes two files to ``--output-dir``:

* ``pipeline.json``: the PipelineJob KubeflowV2DagRunner writes (pipeline spec
  plus runtime config), what Vertex AI Pipelines takes;
* ``pipeline.yaml``: the bare PipelineSpec, with the pipeline root as its
  default, what kfp's ``Client.create_run_from_pipeline_package`` takes (it
  reads .yaml, not TFX's PipelineJob JSON).

The runner owns the environment, as the local runner does: paths, the Beam
arguments and the image. There is no metadata connection: KFP supplies MLMD.
Module files and the schema are read from the image (see the Dockerfile), not
packaged and uploaded at compile time, so compiling needs no credentials for
the pipeline root. Submitting: docs/kubeflow.md.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from typing import List, Optional  # noqa: E402

import yaml  # noqa: E402

# Where the Dockerfile puts the repository inside the image.
IMAGE_SOURCE_ROOT = '/pipeline'
PIPELINE_JSON = 'pipeline.json'
PIPELINE_YAML = 'pipeline.yaml'
# KFP's object store in a standard install, for minio:// pipeline roots.
DEFAULT_MINIO_ENDPOINT = 'http://minio-service.kubeflow:9000'
_SCHEMES = ('gs://', 's3://', 'minio://')
# Where the compiled pipeline runs. Open-source KFP 2.x rejects Resolver
# nodes ("resolver executors not implemented"), so for 'kfp' the pipeline
# is built without the latest-blessed-model baseline (docs/kubeflow.md).
VERTEX = 'vertex'
KFP = 'kfp'
PLATFORMS = (VERTEX, KFP)


@dataclasses.dataclass
class KubeflowSettings:
  """What differs between a Kubeflow deployment and another.

  Attributes:
    image: the pipeline image every component runs in (built from the Dockerfile).
    pipeline_root: artifacts root: gs://, s3:// or minio:// (rewritten to s3://).
    data_dir: the GroupLens folder ExampleGen reads, on the same object store.
    beam_runner: a ``configs.BEAM_PIPELINE_ARGS`` key.
    beam_args: extra Beam arguments, appended to the runner's set.
    serving_dir: Pusher's base folder; '' is ``<pipeline_root>/serving``.
    s3_endpoint: S3-compatible endpoint (MinIO); '' is AWS, or for minio://
      roots KFP's in-cluster MinIO.
    distribution_strategy: the Trainer's tf.distribute strategy
      (trainer/distribution.py); 'default' leaves the hyperparameters alone.
    hparams: Trainer hyperparameter overrides (trainer/hparams.py).
    image_source_root: where the repository sits inside the image.
    display_name: the pipeline's name in the KFP UI; '' is the pipeline name.
    platform: 'vertex' (Vertex AI Pipelines: the whole pipeline) or 'kfp'
      (open-source KFP 2.x: no baseline Resolver, the Evaluator blesses on
      the absolute RMSE threshold alone).
  """
  image: str
  pipeline_root: str
  data_dir: str
  beam_runner: str = 'multi_processing'
  beam_args: List[str] = dataclasses.field(default_factory=list)
  serving_dir: str = ''
  s3_endpoint: str = ''
  distribution_strategy: str = 'default'
  hparams: dict = dataclasses.field(default_factory=dict)
  image_source_root: str = IMAGE_SOURCE_ROOT
  display_name: str = ''
  platform: str = VERTEX

  def object_store_root(self) -> str:
    """The pipeline root as TFX's file system sees it: minio:// becomes s3://."""
    if self.pipeline_root.startswith('minio://'):
      return 's3://' + self.pipeline_root[len('minio://'):]
    return self.pipeline_root

  def endpoint(self) -> str:
    if self.s3_endpoint:
      return self.s3_endpoint
    return DEFAULT_MINIO_ENDPOINT if self.pipeline_root.startswith('minio://') else ''


def validate(settings: KubeflowSettings) -> None:
  """Rejects settings that would compile but cannot run.

  Raises:
    ValueError: naming the setting and what to pass instead, or an unknown
      hyperparameter.
  """
  from pipeline import configs
  from trainer import distribution, hparams
  if not settings.image or settings.image.startswith('-'):
    raise ValueError('--image is required: the pipeline image built from the Dockerfile.')
  if not settings.pipeline_root.startswith(_SCHEMES):
    raise ValueError(f'--pipeline-root {settings.pipeline_root!r} must start with one of {_SCHEMES}: '
                     'every pod reads and writes it.')
  if not settings.data_dir.startswith(('gs://', 's3://')):
    raise ValueError(f'--data-dir {settings.data_dir!r} must be a gs:// or s3:// folder the pods can read.')
  if settings.beam_runner not in configs.BEAM_PIPELINE_ARGS:
    raise ValueError(f'--beam-runner {settings.beam_runner!r}: choose one of {sorted(configs.BEAM_PIPELINE_ARGS)}.')
  if settings.beam_runner == 'dataflow':
    if not settings.pipeline_root.startswith('gs://'):
      raise ValueError('The Dataflow runner stages and writes through GCS: --pipeline-root must be gs://.')
    if not any(arg.startswith(('--project=', '--region=')) for arg in settings.beam_args):
      raise ValueError('The Dataflow runner needs --beam-arg=--project=... and --beam-arg=--region=....')
  if settings.platform not in PLATFORMS:
    raise ValueError(f'--platform {settings.platform!r}: choose one of {PLATFORMS}.')
  if settings.distribution_strategy not in distribution.STRATEGIES:
    raise ValueError(f'--distribution-strategy {settings.distribution_strategy!r}: choose one of '
                     f'{distribution.STRATEGIES}.')
  # What the Trainer will do with them, now rather than an hour into the run.
  hparams.resolve({'hparams': pipeline_config(settings).hparams})


def beam_pipeline_args(settings: KubeflowSettings) -> List[str]:
  """The runner's Beam set from configs, plus what this deployment needs.

  Dataflow workers unpickle the project's functions (ExampleGen's parsing),
  so they run the pipeline image and stage temp files under the pipeline
  root; an S3 endpoint reaches Beam's S3 file system. Arguments given in
  ``beam_args`` win over these defaults.
  """
  from pipeline import configs
  args = list(configs.BEAM_PIPELINE_ARGS[settings.beam_runner])
  given = {arg.split('=', 1)[0] for arg in settings.beam_args}
  defaults = []
  if settings.beam_runner == 'dataflow':
    defaults += [f'--temp_location={settings.pipeline_root}/beam-tmp', f'--sdk_container_image={settings.image}']
  if settings.endpoint():
    defaults.append(f'--s3_endpoint_url={settings.endpoint()}')
  args += [arg for arg in defaults if arg.split('=', 1)[0] not in given]
  return args + list(settings.beam_args)


def pipeline_config(settings: KubeflowSettings):
  """The PipelineConfig for Kubeflow: object-store paths, files from the image."""
  from pipeline import configs
  root = settings.object_store_root()
  in_image = lambda *parts: '/'.join([settings.image_source_root.rstrip('/'), *parts])  # noqa: E731
  hparams = dict(settings.hparams)
  if settings.distribution_strategy != 'default':
    hparams['distribution_strategy'] = settings.distribution_strategy
  platform_settings = {'baseline_resolver': False} if settings.platform == KFP else {}
  return configs.PipelineConfig(
      **platform_settings,
      pipeline_root=root,
      serving_model_dir=settings.serving_dir or f'{root}/serving',
      data_dir=settings.data_dir,
      # The cache key of ExampleGen: a new data folder is new data. Unlike the
      # local runner, the compiler cannot read gs:// to hash the files.
      data_fingerprint=settings.data_dir,
      hparams=hparams,
      schema_path=in_image('schema', 'schema.pbtxt'),
      transform_module_file=in_image('transforms', 'preprocessing.py'),
      trainer_module_file=in_image('trainer', 'task.py'))


def compile_pipeline(settings: KubeflowSettings, output_dir: str) -> dict:
  """Compiles create_pipeline into ``output_dir``; returns the PipelineJob dict.

  Args:
    settings: the deployment.
    output_dir: gets pipeline.json (PipelineJob) and pipeline.yaml (PipelineSpec).

  Raises:
    ValueError: if the settings cannot run (see ``validate``).
  """
  from tfx import v1 as tfx
  from pipeline import configs
  from pipeline.pipeline import create_pipeline
  validate(settings)
  with configs.module_files_as_paths():
    pipeline = create_pipeline(pipeline_config(settings), beam_pipeline_args=beam_pipeline_args(settings),
                               metadata_connection_config=None)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          display_name=settings.display_name or None, default_image=settings.image),
      output_dir=output_dir, output_filename=PIPELINE_JSON)
  job = runner.run(pipeline)
  # kfp's client takes a PipelineSpec document; the root travels with it.
  spec = dict(job['pipelineSpec'])
  spec['defaultPipelineRoot'] = job['runtimeConfig']['gcsOutputDirectory']
  with open(os.path.join(output_dir, PIPELINE_YAML), 'w') as fh:
    yaml.safe_dump(spec, fh, sort_keys=True)
  return job


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  from pipeline import configs
  parser = argparse.ArgumentParser(
      prog='python -m kubeflow.runner',
      description='Compile the MovieLens TFX pipeline for Kubeflow Pipelines v2 (KubeflowV2DagRunner).')
  parser.add_argument('--image', required=True, help='Pipeline image built from the Dockerfile, e.g. '
                                                     'us-docker.pkg.dev/PROJECT/repo/movielens-tfx:TAG.')
  parser.add_argument('--pipeline-root', required=True,
                      help='Artifact root: gs://BUCKET/PATH, s3://BUCKET/PATH, or minio://BUCKET/PATH '
                           '(KFP\'s MinIO, read as s3:// through --s3-endpoint).')
  parser.add_argument('--data-dir', required=True,
                      help='GroupLens ml-100k folder (u.data, u.item, u.user) on gs:// or s3://.')
  parser.add_argument('--beam-runner', choices=sorted(configs.BEAM_PIPELINE_ARGS), default='multi_processing',
                      help='Beam set from pipeline/configs.py: multi_processing or in_memory (DirectRunner in '
                           'the component\'s pod), dataflow, flink (default: multi_processing).')
  parser.add_argument('--beam-arg', action='append', default=[],
                      help='Extra Beam argument, repeatable: --beam-arg=--project=P --beam-arg=--flink_master=H:8081.')
  parser.add_argument('--serving-dir', default='', help='Pusher destination (default: <pipeline-root>/serving).')
  parser.add_argument('--s3-endpoint', default='', help=f'S3-compatible endpoint (default for minio:// roots: '
                                                        f'{DEFAULT_MINIO_ENDPOINT}).')
  parser.add_argument('--distribution-strategy', default='default',
                      help='Trainer strategy: default, mirrored, multi_worker_mirrored (docs/kubeflow.md).')
  parser.add_argument('--hparams', default='{}', help='JSON overrides of trainer/hparams.py.')
  parser.add_argument('--image-source-root', default=IMAGE_SOURCE_ROOT,
                      help='Where the repository is inside the image (default: %(default)s, the Dockerfile\'s).')
  parser.add_argument('--platform', choices=PLATFORMS, default=VERTEX,
                      help='vertex: Vertex AI Pipelines, the whole pipeline; kfp: open-source KFP 2.x, which '
                           'cannot run the baseline Resolver, so it is left out (default: vertex).')
  parser.add_argument('--display-name', default='', help='Name in the KFP UI (default: the pipeline name).')
  parser.add_argument('--output-dir', default=os.path.join('outputs', 'kubeflow'),
                      help='Where pipeline.json and pipeline.yaml go (default: %(default)s).')
  return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  settings = KubeflowSettings(
      image=args.image, pipeline_root=args.pipeline_root.rstrip('/'), data_dir=args.data_dir.rstrip('/'),
      beam_runner=args.beam_runner, beam_args=args.beam_arg, serving_dir=args.serving_dir,
      s3_endpoint=args.s3_endpoint, distribution_strategy=args.distribution_strategy,
      hparams=json.loads(args.hparams), image_source_root=args.image_source_root,
      display_name=args.display_name, platform=args.platform)
  try:
    compile_pipeline(settings, args.output_dir)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'Wrote {os.path.join(args.output_dir, PIPELINE_JSON)} (Vertex AI Pipelines) and '
        f'{os.path.join(args.output_dir, PIPELINE_YAML)} (kfp Client); see docs/kubeflow.md.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
