"""The local server against tiny real SavedModels: TF Serving's REST API, errors, metrics, request log, hot swap."""
import csv
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
import requests
import tensorflow as tf
import tensorflow_transform as tft

from contract import names
from serving import codec, server as server_lib
from trainer import hparams as hp
from trainer import signatures as sig
from trainer.task import build_model, serving_signatures
from transforms import features as f

from conftest import serialize_row

pytestmark = pytest.mark.unit
NAME = 'movielens_ranking'


def export_tiny_model(tiny_transform, export_dir, model_name, seed=0):
  """Fits ``model_name`` for one epoch on the tiny rows and saves it as the Trainer does."""
  out_dir, _, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  tf.keras.utils.set_random_seed(seed)
  params = hp.resolve({'hparams': {'model': model_name, 'embedding_dim': 4, 'layer_sizes': '8'}})
  model = build_model(params, output)
  data = {k: np.stack([t[k] for t in transformed]) for k in transformed[0]}
  model.fit(tf.data.Dataset.from_tensor_slices(data).batch(64), epochs=1, verbose=0)
  sig.save_model(model, str(export_dir), serving_signatures(params, model, output))
  return str(export_dir)


@pytest.fixture(scope='session')
def tiny_models(tiny_transform, tmp_path_factory):
  root = tmp_path_factory.mktemp('tiny_models')
  return {name: export_tiny_model(tiny_transform, root / name, name) for name in ('history_ranking', 'ranking')}


def push(model_dir, base, version):
  """Copies a SavedModel into base/version file by file, as the Pusher does (not atomically)."""
  shutil.copytree(model_dir, os.path.join(base, str(version)))


class Client:
  def __init__(self, port):
    self.url = f'http://127.0.0.1:{port}'
    self.session = requests.Session()

  def get(self, path):
    return self.session.get(self.url + path, timeout=30)

  def post(self, path, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return self.session.post(self.url + path, data=data, timeout=30)


def start_server(base, **kwargs):
  config = server_lib.Config(str(base), NAME, port=0, poll_s=kwargs.pop('poll_s', 0.1), **kwargs)
  server = server_lib.Server(config)
  port = server.start(wait_s=120)
  assert server.app.store.current() is not None, 'no version loaded'
  return server, Client(port)


@pytest.fixture(scope='module')
def served(tiny_models, tmp_path_factory):
  """The history model as version 1, with small limits so the limit checks are quick."""
  base = tmp_path_factory.mktemp('served')
  push(tiny_models['history_ranking'], base, 1)
  server, client = start_server(base, max_body_bytes=200_000, limits=codec.Limits(max_rows=50, max_width=60))
  client.server = server
  yield client, tf.saved_model.load(tiny_models['history_ranking'])
  server.stop()


def history_instance(rows, i, history=(('1', 4.0), ('2', 5.0))):
  """One serving_default instance of the history model, as JSON gives it."""
  row = rows[i]
  ids = [m for m, _ in history]
  return {
      'movie_id': row[f.MOVIE_ID][0].decode(), 'movie_title': row[f.MOVIE_TITLE][0].decode(),
      'genres': ([g.decode() for g in row[f.GENRES]] + ['', ''])[:2],
      'release_year': (row[f.RELEASE_YEAR] or [0])[0], 'user_age': row[f.USER_AGE][0],
      'user_gender': row[f.USER_GENDER][0].decode(), 'user_occupation': row[f.USER_OCCUPATION][0].decode(),
      'timestamp': row[f.TIMESTAMP][0], 'history_movie_ids': ids + [''],
      'history_ratings': [r for _, r in history] + [0.0],
      'movie_rating_count': row[f.MOVIE_RATING_COUNT][0], 'movie_rating_mean': row[f.MOVIE_RATING_MEAN][0]}


def direct(loaded, instances):
  """The same instances through the loaded SavedModel, no server."""
  specs = loaded.signatures['serving_default'].structured_input_signature[1]
  return loaded.signatures['serving_default'](**{
      n: tf.constant([x[n] for x in instances], s.dtype) for n, s in specs.items()})[names.PREDICTION_KEY].numpy()


def test_status_and_metadata_are_tf_servings(served):
  client, _ = served
  assert client.get(f'/v1/models/{NAME}').json() == {'model_version_status': [
      {'version': '1', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}]}
  assert client.get(f'/v1/models/{NAME}/versions/1').status_code == 200
  metadata = client.get(f'/v1/models/{NAME}/metadata').json()
  assert metadata['model_spec'] == {'name': NAME, 'signature_name': '', 'version': '1'}
  defs = metadata['metadata']['signature_def']['signature_def']
  assert {'serving_default', 'serving_tf_example', 'recommend'} <= set(defs)
  assert defs['recommend']['inputs']['k']['dtype'] == 'DT_INT32'
  assert defs['serving_default']['outputs']['predictions']['dtype'] == 'DT_FLOAT'


def test_predict_rows_and_columns_match_the_saved_model(served, tiny_transform):
  client, loaded = served
  rows = tiny_transform[1]
  instances = [history_instance(rows, i) for i in range(7)]
  expected = direct(loaded, instances)
  by_rows = client.post(f'/v1/models/{NAME}:predict', {'instances': instances})
  assert by_rows.status_code == 200, by_rows.text
  np.testing.assert_allclose(np.array(by_rows.json()['predictions']), expected, rtol=1e-5)
  columns = {n: [x[n] for x in instances] for n in instances[0]}
  by_columns = client.post(f'/v1/models/{NAME}/versions/1:predict',
                           {'signature_name': 'serving_default', 'inputs': columns})
  np.testing.assert_allclose(np.array(by_columns.json()['outputs']), expected, rtol=1e-5)


def test_concurrent_requests_are_merged_and_each_gets_its_own_answer(served, tiny_transform):
  client, loaded = served
  rows = tiny_transform[1]
  # Different history lengths: merged batches pad them, which must not change an answer.
  bodies = [[history_instance(rows, i, history=[(str(m), 1.0 + m % 5) for m in range(i % 4)])] for i in range(40)]
  results = [None] * len(bodies)

  def call(i):
    results[i] = Client(client.url.rsplit(':', 1)[1]).post(f'/v1/models/{NAME}:predict', {'instances': bodies[i]})

  threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  for body, result in zip(bodies, results):
    assert result.status_code == 200, result.text
    np.testing.assert_allclose(result.json()['predictions'], direct(loaded, body), rtol=1e-5)
  assert 'serving_batch_requests_bucket' in client.get('/metrics').text


def test_tf_example_signature_takes_base64(served, tiny_transform):
  import base64
  client, loaded = served
  rows = tiny_transform[1][:3]
  examples = [serialize_row(row) for row in rows]
  response = client.post(f'/v1/models/{NAME}:predict', {
      'signature_name': 'serving_tf_example',
      'instances': [{'b64': base64.b64encode(e).decode()} for e in examples]})
  assert response.status_code == 200, response.text
  broken = client.post(f'/v1/models/{NAME}:predict', {'signature_name': 'serving_tf_example',
                                                      'instances': [{'b64': 'bm90IGEgcHJvdG8='}]})
  assert broken.status_code == 400 and 'Graph execution' not in broken.json()['error']
  expected = loaded.signatures['serving_tf_example'](examples=tf.constant(examples))[names.PREDICTION_KEY].numpy()
  np.testing.assert_allclose(response.json()['predictions'], expected, rtol=1e-5)


def test_recommend_route_fills_defaults_and_leaves_out_the_history(served, tiny_transform):
  client, _ = served
  response = client.post(f'/v1/models/{NAME}:recommend', {'history_movie_ids': ['1', '3'],
                                                          'history_ratings': [5, 1], 'k': 4})
  assert response.status_code == 200, response.text
  recommendations = response.json()['recommendations']
  assert len(recommendations) == 4 and not {'1', '3'} & {r['movie_id'] for r in recommendations}
  scores = [r['score'] for r in recommendations]
  assert scores == sorted(scores, reverse=True) and all(r['title'] for r in recommendations)
  # The same through TF Serving's own route, as any TF Serving client would call it.
  instance = {'user_age': 0, 'user_gender': '', 'user_occupation': '', 'timestamp': 0,
              'history_movie_ids': ['1', '3', ''], 'history_ratings': [5, 1, 0], 'k': 4}
  raw = client.post(f'/v1/models/{NAME}:predict', {'signature_name': 'recommend', 'instances': [instance]})
  assert raw.status_code == 200, raw.text
  assert raw.json()['predictions'][0]['movie_ids'] == [r['movie_id'] for r in recommendations]
  # A brand-new user with no history gets the default k, or the whole tiny catalog.
  n_movies = len(sig.read_catalog(tft.TFTransformOutput(tiny_transform[0]))[f.MOVIE_ID])
  newcomer = client.post(f'/v1/models/{NAME}:recommend', {}).json()['recommendations']
  assert len(newcomer) == min(names.DEFAULT_K, n_movies)


def test_recommend_with_a_diversity_weight_is_recommend_diverses_answer(served):
  client, _ = served
  body = {'history_movie_ids': ['1'], 'history_ratings': [4], 'k': 6}
  instance = {'user_age': 0, 'user_gender': '', 'user_occupation': '', 'timestamp': 0,
              'history_movie_ids': ['1', ''], 'history_ratings': [4, 0], 'k': 6}
  listed = {}
  for weight in (0, 0.5, 1.0):
    response = client.post(f'/v1/models/{NAME}:recommend', {**body, names.DIVERSITY: weight})
    assert response.status_code == 200, response.text
    listed[weight] = [r['movie_id'] for r in response.json()['recommendations']]
    raw = client.post(f'/v1/models/{NAME}:predict', {'signature_name': names.RECOMMEND_DIVERSE,
                                                     'instances': [{**instance, names.DIVERSITY: weight}]})
    assert raw.status_code == 200, raw.text
    assert raw.json()['predictions'][0]['movie_ids'] == listed[weight]
  plain = client.post(f'/v1/models/{NAME}:recommend', body).json()['recommendations']
  assert listed[0] == [r['movie_id'] for r in plain]
  # The weight reaches the model: the most varied list is another order of movies.
  assert listed[1.0] != listed[0]


BAD_REQUESTS = [
    # (path, body, status, words the message must contain)
    (':predict', b'{"instances": [', 400, 'not valid JSON'),
    (':predict', b'\xff\xfe', 400, 'not valid JSON'),
    (':predict', [1, 2], 400, 'JSON object'),
    (':predict', {'instances': [{'movie_id': 5}]}, 400, 'missing inputs'),
    (':predict', {'instances': []}, 400, 'non-empty'),
    (':predict', {'instances': [{}], 'inputs': {}}, 400, 'exactly one'),
    (':predict', {'signature_name': 'nope', 'instances': [{}]}, 400, 'not found'),
    (':recommend', {'k': 0}, 400, '"k" must be'),
    (':recommend', {'k': '10'}, 400, '"k" must be'),
    (':recommend', {'user_age': 'old'}, 400, 'expected a number'),
    (':recommend', {'user_age': 1.5}, 400, 'expected an integer'),
    (':recommend', {'user_gender': 7}, 400, 'expected a string'),
    (':recommend', {'history_movie_ids': ['1'], 'history_ratings': []}, 400, 'same length'),
    (':recommend', {'history_movie_ids': ['1'], 'history_ratings': [float('nan')]}, 400, 'finite'),
    (':recommend', {'history_movie_ids': ['1'] * 80, 'history_ratings': [3] * 80}, 400, 'at most 60'),
    (':recommend', {'user_id': '1', 'zzz': 1}, 400, 'Unknown fields'),
    (':recommend', {'diversity': 1.5}, 400, '"diversity" must be a number from 0 (by score) to 1'),
    (':recommend', {'diversity': -0.1}, 400, '"diversity" must be a number from 0'),
    (':recommend', {'diversity': '0.5'}, 400, '"diversity" must be a number from 0'),
    (':recommend', {'diversity': True}, 400, '"diversity" must be a number from 0'),
    (':recommend', {'diversity': float('nan')}, 400, '"diversity" must be a number from 0'),
    (':classify', {'examples': []}, 400, 'not served'),
    ('/versions/7:predict', {'instances': [{}]}, 404, 'version 1 only'),
    ('/versions/x:predict', {'instances': [{}]}, 400, 'positive integer'),
]


@pytest.mark.parametrize('path,body,status,words', BAD_REQUESTS)
def test_bad_requests_get_a_4xx_that_says_what_to_do(served, path, body, status, words):
  client, _ = served
  response = client.post(f'/v1/models/{NAME}{path}', body)
  assert response.status_code == status, response.text
  assert words in response.json()['error']


def test_wrong_types_in_predict_name_the_input_and_instance(served, tiny_transform):
  client, _ = served
  instance = history_instance(tiny_transform[1], 0)
  instance['user_age'] = 'forty'
  response = client.post(f'/v1/models/{NAME}:predict', {'instances': [history_instance(tiny_transform[1], 1),
                                                                       instance]})
  assert response.status_code == 400
  assert 'input "user_age", instance 1: expected a number' in response.json()['error']


def test_oversized_batches_and_bodies_get_413_and_unknown_models_404(served, tiny_transform):
  client, _ = served
  instance = history_instance(tiny_transform[1], 0)
  too_many = client.post(f'/v1/models/{NAME}:predict', {'instances': [instance] * 51})
  assert too_many.status_code == 413 and 'at most 50' in too_many.json()['error']
  huge = client.post(f'/v1/models/{NAME}:predict', {'instances': [{'movie_title': 'x' * 300_000}]})
  assert huge.status_code == 413 and 'Split the batch' in huge.json()['error']
  unknown = client.post('/v1/models/other:predict', {'instances': [instance]})
  assert unknown.status_code == 404 and 'movielens_ranking' in unknown.json()['error']
  assert client.get('/v1/models/other').status_code == 404
  assert client.get('/nothing/here').status_code == 404


OUT_OF_RANGE = [
    # (route, field, value, the range the message must state)
    (':recommend', f.USER_AGE, 10**12, '"user_age" must be in'),
    (':recommend', f.USER_AGE, -5, '"user_age" must be in'),
    (':recommend', f.TIMESTAMP, -1, '"timestamp" must be in'),
    (':predict', f.USER_AGE, 10**12, '"user_age" must be in'),
    (':predict', f.TIMESTAMP, -7, '"timestamp" must be in'),
    (':predict', f.MOVIE_RATING_MEAN, 9.5, '"movie_rating_mean" must be in'),
]


@pytest.mark.parametrize('route,field,value,words', OUT_OF_RANGE)
def test_values_outside_the_feature_table_get_a_400_that_states_the_range(served, tiny_transform, route, field,
                                                                          value, words):
  client, _ = served
  if route == ':recommend':
    response = client.post(f'/v1/models/{NAME}:recommend', {field: value})
  else:
    instance = history_instance(tiny_transform[1], 0)
    instance[field] = value
    response = client.post(f'/v1/models/{NAME}:predict', {'instances': [history_instance(tiny_transform[1], 1),
                                                                         instance]})
  assert response.status_code == 400, response.text
  message = response.json()['error']
  assert words in message and message == f.BY_NAME[field].check([value]), message


def test_a_rating_outside_its_range_counts_only_where_a_movie_is_given(served):
  client, _ = served
  bad = client.post(f'/v1/models/{NAME}:recommend', {'history_movie_ids': ['1'], 'history_ratings': [7]})
  assert bad.status_code == 400 and '"history_ratings" must be in' in bad.json()['error']
  # The route pads the lists with "" and 0 itself; padding is never out of range.
  assert client.post(f'/v1/models/{NAME}:recommend', {'history_movie_ids': ['1'], 'history_ratings': [5]}
                     ).status_code == 200


def test_an_out_of_range_request_fails_alone_among_concurrent_ones(served, tiny_transform):
  client, loaded = served
  rows = tiny_transform[1]
  bodies = [[history_instance(rows, i)] for i in range(24)]
  bodies[5][0]['user_age'] = 10**12
  results = [None] * len(bodies)
  port = client.url.rsplit(':', 1)[1]

  def call(i):
    results[i] = Client(port).post(f'/v1/models/{NAME}:predict', {'instances': bodies[i]})

  threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert results[5].status_code == 400 and '"user_age" must be in' in results[5].json()['error']
  for i, result in enumerate(results):
    if i != 5:
      assert result.status_code == 200, result.text
      np.testing.assert_allclose(result.json()['predictions'], direct(loaded, bodies[i]), rtol=1e-5)


class _Dummy(tf.Module):
  """A model whose only input, "dummy", is a feature the default table does not have."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name='dummy')])
  def serve(self, dummy):
    return {names.PREDICTION_KEY: tf.cast(dummy, tf.float32)[:, None] * 0.5}


def test_the_ranges_come_from_the_table_the_server_is_given(tmp_path):
  model = _Dummy()
  tf.saved_model.save(model, str(tmp_path / 'base' / '1'), signatures={'serving_default': model.serve})
  dummy = f.Feature('dummy', 'int64', f.SCALAR, f.USER, 'a test feature', valid_range=(1, 10), unknown=0)
  with_dummy, client = start_server(tmp_path / 'base', features=f.FEATURES + (dummy,))
  default, plain = start_server(tmp_path / 'base')
  try:
    body = {'instances': [{'dummy': 3}, {'dummy': 11}]}
    rejected = client.post(f'/v1/models/{NAME}:predict', body)
    assert rejected.status_code == 400, rejected.text
    assert rejected.json()['error'] == '"dummy" must be in 1..10, or 0 for unknown; got 11.'
    assert client.post(f'/v1/models/{NAME}:predict', {'instances': [{'dummy': 0}, {'dummy': 10}]}).json() == {
        'predictions': [[0.0], [5.0]]}
    # The same server code with the default table has no range for "dummy".
    assert plain.post(f'/v1/models/{NAME}:predict', body).json() == {'predictions': [[1.5], [5.5]]}
  finally:
    with_dummy.stop()
    default.stop()


def test_a_body_far_over_the_limit_gets_a_413_not_a_reset(served, tiny_transform):
  client, _ = served
  limit = client.server.config.max_body_bytes
  hundred_mb = client.post(f'/v1/models/{NAME}:predict', b'{"instances": ["' + b'x' * (100 << 20) + b'"]}')
  assert hundred_mb.status_code == 413 and f'over {limit} bytes' in hundred_mb.json()['error']
  ten_mb_list = client.post(f'/v1/models/{NAME}:recommend', {'history_movie_ids': ['1'] * (2 << 20),
                                                             'history_ratings': [4] * (2 << 20)})
  assert ten_mb_list.status_code == 413 and '--max-body-bytes' in ten_mb_list.json()['error']

  def chunks():  # no Content-Length: the server counts as it reads
    for _ in range(64):
      yield b' ' * 65536
  chunked = requests.post(client.url + f'/v1/models/{NAME}:predict', data=chunks(), timeout=30)
  assert chunked.status_code == 413 and chunked.json()['error']
  # The connection is still good for the next request.
  assert client.post(f'/v1/models/{NAME}:recommend', {'k': 2}).status_code == 200


def test_health_readiness_and_metrics(served, tiny_transform):
  client, _ = served
  assert client.get('/healthz').json() == {'status': 'ok'}
  assert client.get('/readyz').json()['version'] == '1'
  client.post(f'/v1/models/{NAME}:predict', {'instances': [history_instance(tiny_transform[1], 0)]})
  client.post(f'/v1/models/{NAME}:predict', {'instances': 'nope'})
  text = client.get('/metrics').text
  assert f'serving_requests_total{{code="200",model="{NAME}",route="predict"}}' in text
  assert f'serving_requests_total{{code="400",model="{NAME}",route="predict"}}' in text
  assert f'serving_request_latency_seconds_bucket{{le="0.5",model="{NAME}",route="predict"}}' in text
  assert f'serving_predictions_count{{model="{NAME}",signature="serving_default"}}' in text
  assert f'serving_model_version{{model="{NAME}"}} 1.0' in text


def test_a_request_the_model_does_not_answer_in_time_gets_503_and_the_server_goes_on(served, tiny_transform):
  client, _ = served
  config = client.server.config
  config.request_timeout_s, saved = 1e-6, config.request_timeout_s
  try:
    late = client.post(f'/v1/models/{NAME}:recommend', {'k': 2})
  finally:
    config.request_timeout_s = saved
  assert late.status_code == 503 and 'retry later' in late.json()['error']
  assert client.post(f'/v1/models/{NAME}:recommend', {'k': 2}).status_code == 200


def test_default_bind_is_loopback():
  assert server_lib.parse_args(['--model-base-path', 'x']).host == '127.0.0.1'


def test_request_log_is_what_the_validate_command_reads(tiny_models, tmp_path, tiny_transform):
  import tensorflow_data_validation as tfdv
  from pipeline import configs, validate
  base = tmp_path / 'base'
  push(tiny_models['ranking'], base, 3)
  log = tmp_path / 'requests.csv'
  server, client = start_server(base, request_log=str(log))
  rows = tiny_transform[1][:5]
  response = client.post(f'/v1/models/{NAME}:predict', {'instances': [
      {'user_id': r[f.USER_ID][0].decode(), 'movie_id': r[f.MOVIE_ID][0].decode()} for r in rows]})
  assert response.status_code == 200
  server.stop()
  with open(log) as fh:
    logged = list(csv.DictReader(fh))
  assert [r['movie_id'] for r in logged] == [r[f.MOVIE_ID][0].decode() for r in rows]
  assert [float(r['prediction']) for r in logged] == pytest.approx(
      [p[0] for p in response.json()['predictions']], abs=1e-4)
  examples, bad_rows = validate.read_csv(str(log), tfdv.load_schema_text(configs.SCHEMA_FILE))
  assert len(examples) == 5 and not bad_rows
  parsed = tf.train.Example.FromString(examples[0])
  assert parsed.features.feature[f.USER_ID].bytes_list.value == rows[0][f.USER_ID]


def test_a_version_pushed_under_load_is_served_with_no_failed_request(tiny_models, tmp_path):
  base = tmp_path / 'base'
  push(tiny_models['ranking'], base, 1)
  server, client = start_server(base, poll_s=0.2)
  failures, versions, stop = [], set(), threading.Event()

  def hammer(i):
    own = Client(client.url.rsplit(':', 1)[1])
    while not stop.is_set():
      try:
        response = own.post(f'/v1/models/{NAME}:recommend', {'user_id': str(i), 'k': 3})
        if response.status_code != 200:
          failures.append(response.text)
        else:
          versions.add(response.json()['model_version'])
        predict = own.post(f'/v1/models/{NAME}:predict', {'instances': [{'user_id': str(i), 'movie_id': '2'}]})
        if predict.status_code != 200:
          failures.append(predict.text)
      except requests.RequestException as error:
        failures.append(repr(error))

  threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
  for thread in threads:
    thread.start()
  time.sleep(1.0)
  push(tiny_models['ranking'], base, 2)
  deadline = time.time() + 45
  while '2' not in versions and time.time() < deadline:
    time.sleep(0.1)
  time.sleep(1.0)  # keep the load on while the old version drains
  stop.set()
  for thread in threads:
    thread.join()
  old = [s for s in [server.app.store.current()] if s.version != 2]
  server.stop()
  assert not failures, failures[:3]
  assert versions == {'1', '2'} and not old


# Schema-driven fuzzing: bodies built from the served signatures, with each
# value right, of the wrong type, out of range, or missing, plus junk.
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_TEXT = st.text(st.characters(blacklist_categories=()), max_size=12)  # lone surrogates included
_SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.integers(-10**400, 10**400) | st.floats()
            | _TEXT
            | st.fixed_dictionaries({'b64': st.text(max_size=12)}))
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
                     max_leaves=12)


def _typed(spec):
  scalar = {'string': _TEXT, 'int64': st.integers(-2**64, 2**64), 'int32': st.integers(-2**33, 2**33),
            'float32': st.floats() | st.integers(-2**70, 2**70) | st.integers(-10**400, 10**400)}[spec['dtype']]
  value = st.lists(scalar, max_size=70) if spec['rank'] == 2 else scalar
  return st.one_of(value, value, _JSON)


@st.composite
def _instance(draw, inputs):
  instance = {}
  for name, spec in inputs.items():
    if draw(st.integers(0, 9)):  # one time in ten the input is missing
      instance[name] = draw(_typed(spec))
  if not draw(st.integers(0, 9)):
    instance[draw(_TEXT)] = draw(_JSON)
  return instance


@st.composite
def _request(draw, signatures):
  name = draw(st.sampled_from(sorted(signatures)))
  inputs = signatures[name]
  kind = draw(st.sampled_from(['rows', 'columns', 'recommend', 'junk', 'bytes']))
  path = draw(st.sampled_from([':predict', ':predict', '/versions/1:predict', '/versions/2:predict', ':recommend']))
  if kind == 'rows':
    body = {'signature_name': draw(st.sampled_from([name, name, 'transform_features', ''])),
            'instances': draw(st.lists(_instance(inputs), min_size=0, max_size=4))}
  elif kind == 'columns':
    body = {'signature_name': name, 'inputs': {n: draw(st.lists(_typed(s), max_size=3)) for n, s in inputs.items()}}
  elif kind == 'recommend':
    path, body = ':recommend', draw(_instance(signatures['recommend']))
  elif kind == 'junk':
    body = draw(_JSON)
  else:
    body = draw(st.binary(max_size=40))
  return path, body


@pytest.fixture(scope='module')
def served_signatures(served):
  client, _ = served
  defs = client.get(f'/v1/models/{NAME}/metadata').json()['metadata']['signature_def']['signature_def']
  dtypes = {'DT_STRING': 'string', 'DT_INT64': 'int64', 'DT_INT32': 'int32', 'DT_FLOAT': 'float32'}
  return {name: {n: {'dtype': dtypes[t['dtype']], 'rank': len(t['tensor_shape']['dim'])}
                 for n, t in defs[name]['inputs'].items()}
          for name in ('serving_default', 'serving_tf_example', 'recommend')}


def test_fuzzed_requests_never_get_a_5xx(served, served_signatures):
  client, _ = served

  @settings(max_examples=250, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
  @given(_request(served_signatures))
  def check(request):
    path, body = request
    response = client.post(f'/v1/models/{NAME}{path}', body if isinstance(body, bytes) else
                           json.dumps(body).encode('utf-8', 'surrogatepass'))
    assert response.status_code < 500, (path, body, response.text)
    if response.status_code >= 400:
      assert response.json()['error']

  check()
  assert client.get('/healthz').status_code == 200


def test_processes_share_a_port_metrics_a_request_log_and_a_hot_swap(tiny_models, tmp_path):
  """``--processes 2`` as a platform team runs it: one port, one /metrics and one log for both, no failed request."""
  import glob
  import signal
  import subprocess
  import sys
  import tempfile
  from serving import metrics as metrics_lib
  base, log = tmp_path / 'base', tmp_path / 'requests.csv'
  push(tiny_models['ranking'], base, 1)
  port = server_lib._free_port('127.0.0.1')
  process = subprocess.Popen([sys.executable, '-m', 'serving.server', '--model-base-path', str(base), '--port',
                              str(port), '--processes', '2', '--poll-s', '0.2', '--request-log', str(log)],
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  published = os.path.join(tempfile.gettempdir(), f'serving-metrics-{process.pid}-*', '*.json')
  client = Client(port)

  def loaded():
    try:
      text = client.get('/metrics').text
    except requests.RequestException:
      return 0
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('serving_model_loads_total{') and 'result="ok"' in line)

  try:
    deadline = time.time() + 240
    while loaded() < 2:
      assert process.poll() is None and time.time() < deadline, 'the two processes did not both load version 1'
      time.sleep(0.5)
    assert len(glob.glob(published)) == 2
    failures, answered, stop = [], [0], threading.Event()

    def hammer(i):
      own = Client(port)  # a connection each, which the kernel gives to either process
      while not stop.is_set():
        response = own.post(f'/v1/models/{NAME}:predict', {'instances': [{'user_id': str(i), 'movie_id': '2'}]})
        if response.status_code != 200:
          failures.append(response.text)
        answered[0] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
      thread.start()
    time.sleep(1.0)
    push(tiny_models['ranking'], base, 2)
    deadline = time.time() + 60
    while loaded() < 4 and time.time() < deadline:  # both processes swapped
      time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
      thread.join()
    assert not failures, failures[:3]
    assert loaded() == 4, 'a process did not load version 2'
    time.sleep(metrics_lib.PUBLISH_S * 1.5)  # both have published since the last request
    text = client.get('/metrics').text
    served = sum(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith('serving_requests_total{') and 'route="predict"' in line)
    assert served == answered[0]
    assert f'serving_model_version{{model="{NAME}"}} 2.0' in text
  finally:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
  assert not glob.glob(published), 'the metrics folder outlived the server'
  with open(log) as fh:
    rows = list(csv.DictReader(fh))
  assert len(rows) == answered[0] and {r['movie_id'] for r in rows} == {'2'}
  assert {r['model_version'] for r in rows} == {'1', '2'}


def test_merged_metrics_sum_counts_and_take_the_live_processes_smallest_gauge():
  from serving import metrics as metrics_lib

  def snapshot(requests_total, version):
    return [{'name': 'serving_requests', 'documentation': 'd', 'type': 'counter',
             'samples': [['serving_requests_total', {'route': 'predict'}, requests_total],
                         ['serving_requests_created', {'route': 'predict'}, 100.0 + version]]},
            {'name': 'serving_model_version', 'documentation': 'd', 'type': 'gauge',
             'samples': [['serving_model_version', {'model': NAME}, version]]}]

  # Two live processes mid-swap, and one that died while serving version 3.
  merged = {m.name: m for m in metrics_lib.merge([(True, snapshot(5, 2)), (True, snapshot(7, 1)),
                                                 (False, snapshot(11, 3))])}
  samples = {s.name: s.value for m in merged.values() for s in m.samples}
  assert samples == {'serving_requests_total': 23, 'serving_requests_created': 101.0, 'serving_model_version': 1}


def test_two_request_logs_on_one_file_write_whole_rows_and_one_header(tmp_path, tiny_transform):
  from serving import request_log
  path = str(tmp_path / 'shared.csv')
  request_log.create(path)
  logs = [request_log.RequestLog(path) for _ in range(2)]
  inputs = {f.USER_ID: np.array([b'u' * 300] * 50, dtype=object), f.MOVIE_ID: np.array([b'7'] * 50, dtype=object)}
  for _ in range(200):
    for log in logs:
      log.log(1, names.SERVING_DEFAULT, inputs, np.full((50, 1), 3.5, np.float32))
  for log in logs:
    log.close()
  with open(path) as fh:
    lines = fh.read().splitlines()
  assert lines[0].split(',') == list(request_log.COLUMNS) and lines.count(lines[0]) == 1
  rows = list(csv.DictReader(lines))
  assert len(rows) == 2 * 200 * 50
  assert all(r[f.USER_ID] == 'u' * 300 and r[f.MOVIE_ID] == '7' and r['prediction'] == '3.5000' for r in rows)


def test_string_columns_keep_nul_characters_and_refuse_lone_surrogates():
  specs = {'s': codec.InputSpec('s', 'string', 1), 'l': codec.InputSpec('l', 'string', 2)}
  rows = [{'s': 'a\x00b', 'l': ['x', '\x00']}, {'s': 'é', 'l': ['', 'y']}]
  arrays, _ = codec.parse_predict({'instances': rows}, specs, codec.Limits())
  assert arrays['s'].tolist() == [b'a\x00b', 'é'.encode()]
  assert arrays['l'].tolist() == [[b'x', b'\x00'], [b'', b'y']]
  with pytest.raises(codec.BadRequest, match='instance 1.*UTF-8'):
    codec.parse_predict({'instances': [rows[0], {'s': '\ud800', 'l': ['', '']}]}, specs, codec.Limits())


@pytest.mark.parametrize('array', [
    np.array(b'x', object), np.array([b'a', 'é'.encode(), b'\xff'], object), np.zeros((2, 0), object),
    np.array([[b'1', b'2', b'3'], [b'4', b'\x00', b'']], object), np.array([[[b'a'], [b'b']]], object),
    np.array([[b'a\xe2', b'\x82\xac']], object)])
def test_string_outputs_decode_as_each_value_alone_would(array):
  def one_at_a_time(value):
    return [one_at_a_time(v) for v in value] if isinstance(value, list) else value.decode('utf-8', 'replace')
  assert codec.format_predict({'out': array}, False) == {'outputs': one_at_a_time(array.tolist())}
