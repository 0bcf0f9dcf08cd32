"""The local runner's CLI and the pipeline it builds, without running it."""
import json
import logging as py_logging

import pytest

from pipeline import configs, local_runner

pytestmark = pytest.mark.unit

COMPONENT_IDS = ['MovieLensExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator', 'Transform',
                 'Trainer', 'LatestBlessedModelResolver', 'Evaluator', 'RetrievalEvaluator', 'EvalReport', 'Pusher']


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


def test_progress_log_shows_the_report_path_and_hides_chatter():
  keep = local_runner._ProgressFilter()
  line = lambda text: py_logging.LogRecord('absl', py_logging.INFO, __file__, 1, text, None, None)  # noqa: E731
  assert keep.filter(line('Evaluation report: /out/EvalReport/report/9/report.html'))
  assert keep.filter(line('Component EvalReport is finished.'))
  assert not keep.filter(line('Using /out/Trainer/model/7/Format-Serving as candidate model.'))


def test_defaults_are_in_memory_and_the_seed_threshold(monkeypatch):
  monkeypatch.delenv(local_runner.DATA_DIR_ENV, raising=False)
  args = local_runner.parse_args([])
  assert (args.runner, args.data_dir, args.rmse_threshold) == ('in_memory', '', configs.DEFAULT_RMSE_THRESHOLD)


def test_tuner_is_added_on_request_and_feeds_the_trainer(tmp_path):
  args = local_runner.parse_args(['--data-dir', str(_data_dir(tmp_path)), '--output-root', str(tmp_path / 'out'),
                                  '--model', 'history_ranking', '--tune-trials', '2', '--tune-epochs', '1'])
  pipeline, _, config = local_runner.build(args)
  by_id = {c.id: c for c in pipeline.components}
  assert 'Tuner' in by_id and config.hparams == {'model': 'history_ranking'}
  assert by_id['Trainer'].inputs['hyperparameters'].producer_component_id == 'Tuner'
  assert json.loads(by_id['Tuner'].exec_properties['custom_config'])['tuner'] == {'max_trials': 2, 'epochs': 1}
  plain, _, _ = local_runner.build(local_runner.parse_args(['--data-dir', str(tmp_path), '--output-root',
                                                            str(tmp_path / 'out')]))
  assert 'Tuner' not in {c.id for c in plain.components}


def test_an_edited_schema_gets_a_new_path_so_the_cache_sees_it(tmp_path):
  schema = tmp_path / 'schema.pbtxt'
  schema.write_text('feature { name: "a" }\n')
  first = local_runner.content_addressed_copy(str(schema), str(tmp_path / 'copies'))
  assert local_runner.content_addressed_copy(str(schema), str(tmp_path / 'copies')) == first
  schema.write_text('feature { name: "b" }\n')
  second = local_runner.content_addressed_copy(str(schema), str(tmp_path / 'copies'))
  assert second != first and open(second).read() == 'feature { name: "b" }\n'
  assert open(first).read() == 'feature { name: "a" }\n'
