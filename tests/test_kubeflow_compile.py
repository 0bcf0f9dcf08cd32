"""The Kubeflow runner compiles create_pipeline, and kfp reads the spec back.

One compile (about 10 s of CPU) for the module; kfp's own loader parses the
PipelineSpec the kfp client submits, and the PipelineJob is parsed with the
pipeline_spec proto. Also: the Dockerfile builds what the runner points at.
"""
import dataclasses
import json
import os
import re

from google.protobuf import json_format
from kfp import components as kfp_components
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest

from conftest import REPO_ROOT
from kubeflow import runner
from pipeline import configs

pytestmark = pytest.mark.compile

IMAGE = 'us-docker.pkg.dev/example/movielens/movielens-tfx:test'
ROOT = 'gs://example-bucket/tfx'
DATA = 'gs://example-bucket/data/ml-100k'
BEAM_EXTRA = ['--project=example', '--region=europe-west4', '--max_num_workers=4']
# Each must run after the one before it, directly or not.
CHAIN = ['MovieLensExampleGen', 'StatisticsGen', 'ExampleValidator', 'Transform', 'Trainer', 'Evaluator',
         'Pusher']
REQUIRED_TASKS = set(CHAIN) | {'ImportSchemaGen', 'LatestBlessedModelResolver-model-resolver',
                               'LatestBlessedModelResolver-model-blessing-resolver', 'RetrievalEvaluator',
                               'EvalReport'}
BEAM_COMPONENTS = ('MovieLensExampleGen', 'StatisticsGen', 'Transform', 'Evaluator')


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  """(PipelineJob proto, PipelineSpec as kfp loads it, output dir) of one compile."""
  out = tmp_path_factory.mktemp('kfp')
  settings = runner.KubeflowSettings(image=IMAGE, pipeline_root=ROOT, data_dir=DATA, beam_runner='dataflow',
                                     beam_args=BEAM_EXTRA, hparams={'epochs': 7})
  runner.compile_pipeline(settings, str(out))
  with open(out / runner.PIPELINE_JSON) as fh:
    job = json_format.ParseDict(json.load(fh), pipeline_spec_pb2.PipelineJob(), ignore_unknown_fields=False)
  loaded = kfp_components.load_component_from_file(str(out / runner.PIPELINE_YAML))
  return job, loaded.pipeline_spec, out


def _spec(job):
  return json_format.MessageToDict(job.pipeline_spec)


def _ancestors(tasks, name):
  seen, todo = set(), list(tasks[name].get('dependentTasks', []))
  while todo:
    task = todo.pop()
    if task not in seen:
      seen.add(task)
      todo.extend(tasks[task].get('dependentTasks', []))
  return seen


def _parameter(spec, task, name):
  value = spec['root']['dag']['tasks'][task]['inputs']['parameters'][name]['runtimeValue']['constantValue']
  return next(iter(value.values()))


def _container(spec, task):
  executor = spec['components'][spec['root']['dag']['tasks'][task]['componentRef']['name']]['executorLabel']
  return spec['deploymentSpec']['executors'][executor]['container']


def test_every_component_in_dag_order(compiled):
  job, loaded_spec, _ = compiled
  spec = _spec(job)
  tasks = spec['root']['dag']['tasks']
  assert REQUIRED_TASKS <= set(tasks), REQUIRED_TASKS - set(tasks)
  # kfp's loader sees the same DAG as the PipelineJob.
  assert set(loaded_spec.root.dag.tasks) == set(tasks)
  for earlier, later in zip(CHAIN, CHAIN[1:]):
    assert earlier in _ancestors(tasks, later), f'{earlier} does not run before {later}'
  assert 'ImportSchemaGen' in _ancestors(tasks, 'Transform')
  assert 'LatestBlessedModelResolver-model-resolver' in _ancestors(tasks, 'Evaluator')
  # The report reads both evaluations.
  assert {'Trainer'} <= _ancestors(tasks, 'RetrievalEvaluator')
  assert {'Evaluator', 'RetrievalEvaluator'} <= _ancestors(tasks, 'EvalReport')
  # Transform reads no output of the validator: the order is explicit, so
  # bad data stops the run before training.
  transform_inputs = tasks['Transform']['inputs']['artifacts']
  assert all(a['taskOutputArtifact']['producerTask'] != 'ExampleValidator' for a in transform_inputs.values())
  assert 'ExampleValidator' in tasks['Transform']['dependentTasks']
  assert spec['pipelineInfo']['name'] == 'movielens-recommender'


def test_images_and_entrypoint(compiled):
  job, _, _ = compiled
  spec = _spec(job)
  executors = spec['deploymentSpec']['executors']
  containers = [e['container'] for e in executors.values() if 'container' in e]
  # Every task except the two resolver queries runs in a container.
  assert len(containers) == len(executors) - 2
  assert {c['image'] for c in containers} == {IMAGE}
  for c in containers:
    assert c['command'] == ['python', '-m', 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor']
  assert '--executor_class_path' in _container(spec, 'MovieLensExampleGen')['args']
  args = _container(spec, 'MovieLensExampleGen')['args']
  assert args[args.index('--executor_class_path') + 1] == 'components.movielens_example_gen.executor.Executor'


def test_module_files_and_schema_come_from_the_image(compiled):
  job, _, _ = compiled
  spec = _spec(job)
  paths = {
      ('Transform', 'module_file'): '/pipeline/transforms/preprocessing.py',
      ('Trainer', 'module_file'): '/pipeline/trainer/task.py',
      ('ImportSchemaGen', 'schema_file'): '/pipeline/schema/schema.pbtxt',
  }
  for (task, name), path in paths.items():
    assert _parameter(spec, task, name) == path
    # The Dockerfile copies the repository to IMAGE_SOURCE_ROOT, so the
    # path in the image is the repository path.
    assert (REPO_ROOT / os.path.relpath(path, runner.IMAGE_SOURCE_ROOT)).is_file(), path
  # Not packaged into wheels at compile time (that needs credentials for gs://).
  for task in ('Transform', 'Trainer'):
    params = spec['root']['dag']['tasks'][task]['inputs']['parameters']
    assert 'module_path' not in params or not _parameter(spec, task, 'module_path')
  assert configs.NO_WHEELS_ENV not in os.environ


def test_parameters_beam_args_and_root(compiled):
  job, loaded_spec, out = compiled
  spec = _spec(job)
  assert _parameter(spec, 'MovieLensExampleGen', 'data_dir') == DATA
  assert _parameter(spec, 'MovieLensExampleGen', 'data_fingerprint') == DATA
  custom_config = json.loads(_parameter(spec, 'Trainer', 'custom_config'))
  assert custom_config['hparams']['epochs'] == 7
  push = json.loads(_parameter(spec, 'Pusher', 'push_destination'))
  assert push['filesystem']['base_directory'] == f'{ROOT}/serving/movielens_ranking'
  for task in BEAM_COMPONENTS:
    args = _container(spec, task)['args']
    for arg in ['--runner=DataflowRunner', '--experiments=use_runner_v2', f'--temp_location={ROOT}/beam-tmp',
                f'--sdk_container_image={IMAGE}', *BEAM_EXTRA]:
      assert arg in args, (task, arg)
  assert job.runtime_config.gcs_output_directory == ROOT
  assert loaded_spec.default_pipeline_root == ROOT
  assert 'pipelineSpec' not in (out / runner.PIPELINE_YAML).read_text()


def test_minio_root_reads_as_s3_with_the_endpoint():
  settings = runner.KubeflowSettings(image=IMAGE, pipeline_root='minio://mlpipeline/tfx', data_dir='s3://mlpipeline/ml-100k')
  runner.validate(settings)
  config = runner.pipeline_config(settings)
  assert config.pipeline_root == 's3://mlpipeline/tfx'
  assert config.serving_model_dir == 's3://mlpipeline/tfx/serving'
  args = runner.beam_pipeline_args(settings)
  assert f'--s3_endpoint_url={runner.DEFAULT_MINIO_ENDPOINT}' in args
  assert '--direct_running_mode=multi_processing' in args
  # A given argument wins over the runner's default.
  settings.beam_args = ['--s3_endpoint_url=http://minio.example:9000']
  assert [a for a in runner.beam_pipeline_args(settings) if a.startswith('--s3_endpoint_url')] == [
      '--s3_endpoint_url=http://minio.example:9000']


@pytest.mark.parametrize('change, message', [
    ({'pipeline_root': '/local/path'}, 'must start with'),
    ({'data_dir': '/local/ml-100k'}, 'gs:// or s3://'),
    ({'beam_runner': 'spark'}, 'choose one of'),
    ({'beam_args': []}, '--project'),
    ({'pipeline_root': 's3://bucket/tfx'}, 'must be gs://'),
    ({'distribution_strategy': 'tpu'}, 'choose one of'),
    ({'hparams': {'epoch': 3}}, 'Unknown hyperparameters'),
    ({'platform': 'airflow'}, 'choose one of'),
])
def test_settings_that_cannot_run_are_refused(change, message):
  settings = runner.KubeflowSettings(image=IMAGE, pipeline_root=ROOT, data_dir=DATA, beam_runner='dataflow',
                                     beam_args=BEAM_EXTRA)
  with pytest.raises(ValueError, match=re.escape(message)):
    runner.validate(dataclasses.replace(settings, **change))


def test_distribution_strategy_reaches_the_trainer(tmp_path):
  from trainer import hparams
  settings = runner.KubeflowSettings(image=IMAGE, pipeline_root=ROOT, data_dir=DATA,
                                     distribution_strategy='multi_worker_mirrored')
  if 'distribution_strategy' not in {f.name for f in dataclasses.fields(hparams.HParams)}:
    # Until trainer/task.py reads it, compiling it in would fail the Trainer at run time.
    with pytest.raises(ValueError, match='Unknown hyperparameters'):
      runner.validate(settings)
    return
  assert runner.pipeline_config(settings).hparams == {'distribution_strategy': 'multi_worker_mirrored'}
  assert hparams.resolve({'hparams': runner.pipeline_config(settings).hparams}).distribution_strategy == (
      'multi_worker_mirrored')


def test_kfp_platform_leaves_out_the_resolver_kfp_cannot_run(tmp_path):
  """Open-source KFP 2.x rejects resolver executors; --platform kfp compiles without one."""
  settings = runner.KubeflowSettings(image=IMAGE, pipeline_root='minio://mlpipeline/tfx',
                                     data_dir='s3://mlpipeline/ml-100k', platform=runner.KFP)
  runner.compile_pipeline(settings, str(tmp_path))
  spec = json_format.MessageToDict(
      kfp_components.load_component_from_file(str(tmp_path / runner.PIPELINE_YAML)).pipeline_spec)
  executors = spec['deploymentSpec']['executors'].values()
  assert all('container' in e for e in executors), 'a non-container executor is left for KFP to reject'
  tasks = spec['root']['dag']['tasks']
  assert not any('Resolver' in name for name in tasks)
  assert {'Evaluator', 'Pusher'} <= set(tasks) and 'baseline_model' not in tasks['Evaluator']['inputs'].get(
      'artifacts', {})


def test_cli_writes_both_files(tmp_path):
  code = runner.main(['--image', IMAGE, '--pipeline-root', 's3://bucket/tfx', '--data-dir', 's3://bucket/ml-100k',
                      '--s3-endpoint', 'http://minio.example:9000', '--output-dir', str(tmp_path)])
  assert code == 0
  spec = kfp_components.load_component_from_file(str(tmp_path / runner.PIPELINE_YAML)).pipeline_spec
  assert spec.default_pipeline_root == 's3://bucket/tfx'
  args = json_format.MessageToDict(spec)['deploymentSpec']['executors']['StatisticsGen_executor']['container']['args']
  assert '--s3_endpoint_url=http://minio.example:9000' in args
  assert runner.main(['--image', IMAGE, '--pipeline-root', 'file:///tmp', '--data-dir', DATA,
                      '--output-dir', str(tmp_path / 'bad')]) == 2


def test_dockerfile_builds_what_the_runner_points_at():
  dockerfile = (REPO_ROOT / 'Dockerfile').read_text()
  assert re.search(r'^FROM python:3\.10-slim', dockerfile, re.M)
  assert re.search(rf'^WORKDIR {re.escape(runner.IMAGE_SOURCE_ROOT)}$', dockerfile, re.M)
  copied = [name for line in re.findall(r'^COPY (?!--)(.+)$', dockerfile, re.M) for name in line.split()[:-1]]
  assert 'setup.py' in copied and 'constraints.txt' in copied
  for name in copied:
    assert (REPO_ROOT / name).exists(), f'Dockerfile copies {name}, which is not in the repository'
  assert '-c constraints.txt' in dockerfile
  # The same --no-deps extras, at the same versions, as the Makefile installs.
  makefile = (REPO_ROOT / 'Makefile').read_text()
  no_deps = re.search(r'^NO_DEPS := (.+)$', makefile, re.M).group(1).split()
  for pin in no_deps:
    assert pin in dockerfile, f'{pin} from the Makefile is missing in the Dockerfile'
  ignored = (REPO_ROOT / '.dockerignore').read_text().split()
  # What the image must not hold: the venv, outputs, and MovieLens (not ours to redistribute).
  for entry in ('.venv', 'outputs', '.git'):
    assert entry in ignored
