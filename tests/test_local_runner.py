"""The local runner's CLI and the pipeline it builds, without running it."""
import io
import json
import logging as py_logging
import subprocess
import sys

import pytest

from pipeline import baseline, configs, local_runner, progress

pytestmark = pytest.mark.unit

COMPONENT_IDS = ['MovieLensExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator', 'Transform',
                 'Tuner', 'Trainer', 'LatestBlessedModelResolver', 'Evaluator', 'RetrievalEvaluator', 'EvalReport',
                 'Pusher']


def _data_dir(tmp_path, ratings=b'1\t1\t5\t881250949\n'):
  for name, content in (('u.data', ratings), ('u.item', b'item'), ('u.user', b'user')):
    (tmp_path / name).write_bytes(content)
  return tmp_path


def test_fingerprint_changes_with_the_data(tmp_path):
  before = local_runner.data_fingerprint(str(_data_dir(tmp_path)))
  assert local_runner.data_fingerprint(str(_data_dir(tmp_path))) == before
  after = local_runner.data_fingerprint(str(_data_dir(tmp_path, ratings=b'1\t1\t4\t881250949\n')))
  assert after != before


def test_missing_input_file_says_what_the_folder_must_hold(tmp_path):
  (tmp_path / 'u.data').write_bytes(b'')
  with pytest.raises(SystemExit, match='u.item.*must be a GroupLens ml-100k folder'):
    local_runner.data_fingerprint(str(tmp_path))


def test_build_wires_every_component_with_the_chosen_runner(tmp_path):
  args = local_runner.parse_args(['--data-dir', str(_data_dir(tmp_path)), '--output-root', str(tmp_path / 'out'),
                                  '--epochs', '3', '--runner', 'multi_processing'])
  pipeline, metadata_path, config = local_runner.build(args)
  order = [c.id for c in pipeline.components]  # topologically sorted
  assert sorted(order) == sorted(COMPONENT_IDS)
  chain = ['MovieLensExampleGen', 'StatisticsGen', 'ExampleValidator', 'Transform', 'Trainer', 'Evaluator', 'Pusher']
  assert [order.index(c) for c in chain] == sorted(order.index(c) for c in chain)
  assert pipeline.beam_pipeline_args == configs.BEAM_PIPELINE_ARGS['multi_processing']
  assert config.hparams == {'epochs': 3}
  assert metadata_path.startswith(str(tmp_path / 'out'))
  assert config.serving_model_dir == str(tmp_path / 'out' / 'serving')


def test_the_evaluation_report_reads_what_the_evaluator_and_the_data_checks_wrote(tmp_path):
  args = local_runner.parse_args(['--data-dir', str(_data_dir(tmp_path)), '--output-root', str(tmp_path / 'out')])
  pipeline, _, _ = local_runner.build(args)
  by_id = {c.id: c for c in pipeline.components}
  report = by_id['EvalReport']
  producers = {key: channel.producer_component_id for key, channel in report.inputs.items()}
  assert producers == {'evaluation': 'Evaluator', 'blessing': 'Evaluator', 'model': 'Trainer',
                       'examples': 'MovieLensExampleGen', 'quarantine': 'MovieLensExampleGen',
                       'anomalies': 'ExampleValidator', 'retrieval': 'RetrievalEvaluator'}
  assert report.exec_properties['eval_split'] == 'test'
  evaluator_config = json.loads(by_id['Evaluator'].exec_properties['eval_config'])
  assert evaluator_config['model_specs'][0]['preprocessing_function_names'] == ['transform_features']


def _record(text, level=py_logging.INFO):
  return py_logging.LogRecord('absl', level, __file__, 1, text, None, None)


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_progress_prints_one_line_per_component_with_state_and_seconds():
  out, clock = io.StringIO(), _Clock()
  reporter = progress.Progress(out, clock=clock)
  for text, at in (('Component Transform is running.', 0.0), ('Going to run a new execution 7', 0.1),
                   ('Component Transform is finished.', 41.25), ('Component Trainer is running.', 41.3),
                   ('A cached execution 9 is used.', 41.4), ('Component Trainer is finished.', 41.8)):
    clock.now = at
    assert not reporter.filter(_record(text))  # TFX's own line is hidden
  assert out.getvalue().splitlines() == [f'{"Transform":<28} COMPLETE    41.2 s', f'{"Trainer":<28} CACHED       0.5 s']
  assert reporter.states == {'Transform': 'COMPLETE', 'Trainer': 'CACHED'}


def test_progress_estimates_the_epochs_left_from_the_epochs_after_the_first():
  out, clock = io.StringIO(), _Clock()
  reporter = progress.Progress(out, clock=clock)
  reporter.filter(_record('Component Trainer is running.'))
  # The first epoch traces the model (10 s); the next take 6 s each.
  for epoch, at in ((1, 10.0), (2, 16.0), (3, 22.0)):
    clock.now = at
    reporter.filter(_record(f'Trainer epoch {epoch}/30: loss=1.0, val_rmse=0.9{epoch}'))
  lines = out.getvalue().splitlines()
  # Non-TTY output is throttled: epoch 1, then one line per 10 s.
  assert len(lines) == 2 and 'about 290 s left' in lines[0]
  assert '6.0 s each, about 162 s left' in lines[1] and lines[1].endswith('val_rmse 0.93')
  assert progress.estimate(3, 30, 22.0, 10.0) == pytest.approx(162.0)


def test_progress_keeps_warnings_that_matter_and_drops_known_noise():
  reporter = progress.Progress(io.StringIO())
  assert reporter.filter(_record('Evaluator found no baseline model', py_logging.WARNING))
  assert not reporter.filter(_record('ArtifactQuery.property_predicate is not supported.', py_logging.WARNING))
  assert not reporter.filter(_record('From /x/tf_example_record.py:343: parse_example_dataset (from tensorflow) is '
                                     'deprecated and will be removed in a future version.\nInstructions for '
                                     'updating:\nUse `tf.data`', py_logging.WARNING))
  assert not reporter.filter(_record('Examples artifact does not have payload_format custom property. Falling back '
                                     'to FORMAT_TF_EXAMPLE', py_logging.WARNING))
  assert not reporter.filter(_record('Using /out/Trainer/model/7/Format-Serving as candidate model.'))
  assert progress.Progress(io.StringIO(), verbose=True).filter(_record('Using /out/Trainer/model/7 as candidate.'))


def _artifact(type_name, artifact_id, **int_properties):
  from tfx.types import standard_artifacts
  artifact = getattr(standard_artifacts, type_name)()
  artifact.id = artifact_id
  for key, value in int_properties.items():
    artifact.set_int_custom_property(key, value)
  return artifact


def test_baseline_is_the_latest_blessed_model_other_than_the_candidate():
  models = [_artifact('Model', i) for i in (1, 2, 3)]
  blessings = [_artifact('ModelBlessing', 10 + i, current_model_id=i, blessed=int(i != 2)) for i in (1, 2, 3)]
  pick = lambda candidate: baseline.LatestBlessedOtherModelStrategy().resolve_artifacts(  # noqa: E731
      None, {'model': models, 'model_blessing': blessings, 'candidate': [models[candidate - 1]]})
  # Model 3 was blessed; rerunning with model 3 as the candidate compares it
  # with model 1 again (2 was not blessed), as when 3 was first evaluated.
  assert [m.id for m in pick(3)['model']] == [1] and [b.id for b in pick(3)['model_blessing']] == [11]
  assert [m.id for m in pick(1)['model']] == [3]
  assert pick(3)['candidate'] == [models[2]]
  assert baseline.latest_blessed_other_than(models[:1], blessings[:1], models[:1]) == {
      'model': [], 'model_blessing': []}


def test_the_local_baseline_resolver_leaves_the_candidate_out(tmp_path):
  pipeline, _, _ = local_runner.build(local_runner.parse_args(['--data-dir', str(_data_dir(tmp_path)),
                                                               '--output-root', str(tmp_path / 'out')]))
  by_id = {c.id: c for c in pipeline.components}
  resolver = by_id['LatestBlessedModelResolver']
  assert resolver.exec_properties['resolver_class'] == baseline.LatestBlessedOtherModelStrategy
  # The candidate is an input: the Resolver runs after the Trainer.
  assert 'Trainer' in {node.id for node in resolver.upstream_nodes}
  assert by_id['Evaluator'].inputs['baseline_model'].producer_component_id == 'LatestBlessedModelResolver'


def test_defaults_are_in_memory_and_the_seed_threshold(monkeypatch):
  monkeypatch.delenv(local_runner.DATA_DIR_ENV, raising=False)
  args = local_runner.parse_args([])
  assert (args.runner, args.data_dir, args.rmse_threshold) == ('in_memory', '', configs.DEFAULT_RMSE_THRESHOLD)


def test_tuner_runs_by_default_and_feeds_the_trainer(tmp_path):
  args = local_runner.parse_args(['--data-dir', str(_data_dir(tmp_path)), '--output-root', str(tmp_path / 'out'),
                                  '--model', 'history_ranking'])
  pipeline, _, config = local_runner.build(args)
  by_id = {c.id: c for c in pipeline.components}
  assert 'Tuner' in by_id and config.hparams == {'model': 'history_ranking'}
  assert by_id['Trainer'].inputs['hyperparameters'].producer_component_id == 'Tuner'
  budget = json.loads(by_id['Tuner'].exec_properties['custom_config'])['tuner']
  assert (budget['max_trials'], budget['epochs']) == (configs.DEFAULT_TUNER_TRIALS, configs.DEFAULT_TUNER_EPOCHS)
  assert configs.DEFAULT_TUNER_TRIALS >= 5
  assert budget['fingerprint'] == local_runner.search_fingerprint()
  # By import path: no wheel of trainer/ in the Tuner's cache key.
  assert by_id['Tuner'].exec_properties['tuner_fn'] == configs.TUNER_FN
  assert not by_id['Tuner'].exec_properties.get('module_file')
  plain, _, _ = local_runner.build(local_runner.parse_args(['--data-dir', str(tmp_path), '--output-root',
                                                            str(tmp_path / 'out'), '--tune-trials', '0']))
  assert 'Tuner' not in {c.id for c in plain.components}


def test_the_search_fingerprint_moves_with_the_search_space_only(tmp_path):
  trainer = tmp_path / 'trainer'
  trainer.mkdir()
  (trainer / 'hparams.py').write_text('A = 1\n')
  task = trainer / 'task.py'
  task.write_text('def _search_space(h, p):\n  return 1\n\ndef tuner_fn(a):\n  pass\n\ndef run_fn(a):\n  pass\n')
  before = local_runner.search_fingerprint(str(task))
  task.write_text(task.read_text().replace('def run_fn(a):\n  pass', 'def run_fn(a):\n  return 2'))
  assert local_runner.search_fingerprint(str(task)) == before
  task.write_text(task.read_text().replace('return 1', 'return 3'))
  assert local_runner.search_fingerprint(str(task)) != before
  task.write_text('def tuner_fn(a):\n  pass\n')
  with pytest.raises(SystemExit, match='_search_space'):
    local_runner.search_fingerprint(str(task))


def test_module_files_go_as_paths_with_their_folders_digest_in_the_cache_key(tmp_path):
  pipeline, _, config = local_runner.build(local_runner.parse_args(['--data-dir', str(_data_dir(tmp_path)),
                                                                    '--output-root', str(tmp_path / 'out')]))
  by_id = {c.id: c for c in pipeline.components}
  assert by_id['Transform'].exec_properties['module_file'] == configs.TRANSFORM_MODULE_FILE
  assert by_id['Trainer'].exec_properties['module_file'] == configs.TRAINER_MODULE_FILE
  trainer_config = json.loads(by_id['Trainer'].exec_properties['custom_config'])
  assert trainer_config['module_fingerprint'] == config.trainer_fingerprint
  assert json.loads(by_id['Transform'].exec_properties['custom_config'])['module_fingerprint'] == \
      config.transform_fingerprint
  assert not pipeline.components[0].spec.exec_properties.get('module_path')
  assert configs.NO_WHEELS_ENV not in __import__('os').environ
  folder = tmp_path / 'mod'
  folder.mkdir()
  (folder / 'a.py').write_text('x = 1\n')
  (folder / 'notes.txt').write_text('not code')
  before = local_runner.folder_fingerprint(str(folder))
  (folder / 'notes.txt').write_text('still not code')
  assert local_runner.folder_fingerprint(str(folder)) == before
  (folder / 'a.py').write_text('x = 2\n')
  assert local_runner.folder_fingerprint(str(folder)) != before


def test_an_edited_schema_gets_a_new_path_so_the_cache_sees_it(tmp_path):
  schema = tmp_path / 'schema.pbtxt'
  schema.write_text('feature { name: "a" }\n')
  first = local_runner.content_addressed_copy(str(schema), str(tmp_path / 'copies'))
  assert local_runner.content_addressed_copy(str(schema), str(tmp_path / 'copies')) == first
  schema.write_text('feature { name: "b" }\n')
  second = local_runner.content_addressed_copy(str(schema), str(tmp_path / 'copies'))
  assert second != first and open(second).read() == 'feature { name: "b" }\n'
  assert open(first).read() == 'feature { name: "a" }\n'


def test_tests_find_movielens_as_make_run_does(tmp_path, monkeypatch):
  from conftest import resolve_ml100k
  (tmp_path / 'shared').mkdir()
  shared = _data_dir(tmp_path / 'shared')
  given = tmp_path / 'given'
  given.mkdir()
  _data_dir(given)
  calls = []

  class Source:
    kind, path, detail = 'recbole', str(tmp_path / 'cache' / 'ml-100k'), 'recbole==1.2.1 wheel'

  fake = lambda data_dir, cache_dir: calls.append((data_dir, cache_dir)) or Source  # noqa: E731
  assert resolve_ml100k({'MOVIELENS_DATA_DIR': str(given)}, shared, tmp_path / 'cache', fake)[0] == given
  assert resolve_ml100k({'MOVIELENS_DATA_DIR': ''}, shared, tmp_path / 'cache', fake)[0] == shared
  path, how = resolve_ml100k({}, tmp_path / 'absent', tmp_path / 'cache', fake)
  assert (str(path), how) == (Source.path, 'recbole: recbole==1.2.1 wheel')
  assert calls == [('', str(tmp_path / 'cache'))]
  with pytest.raises(pytest.fail.Exception, match='has no u.data'):
    resolve_ml100k({'MOVIELENS_DATA_DIR': str(tmp_path / 'absent')}, shared, tmp_path / 'cache', fake)


def test_the_runner_reads_its_arguments_before_tensorflow_loads():
  # TensorFlow's C++ log level must be set before TensorFlow is imported, or
  # the GPU plugins' registration errors reach the terminal on every run.
  code = ('import sys; from pipeline import local_runner; local_runner.parse_args(["--tune-trials", "0"]); '
          'print("tensorflow" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=local_runner.REPO_ROOT)
  assert out.stdout.strip() == 'False', out.stderr[-2000:]
