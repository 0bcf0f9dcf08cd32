"""The feature store through the server's HTTP routes, against a tiny real SavedModel, SQLite and Redis."""
import pytest
import redis

from contract import names
from serving.feature_store import open_store
from serving.feature_store.bootstrap import bootstrap
from transforms import features as f

from test_feature_store import T0, _write_ml100k
from test_serving import NAME, push, start_server, tiny_models  # noqa: F401 (a fixture)

pytestmark = pytest.mark.unit


@pytest.fixture(scope='module', params=['sqlite', 'redis'])
def served_with_store(request, tiny_models, tmp_path_factory, redis_url):  # noqa: F811
  base = tmp_path_factory.mktemp('served')
  push(tiny_models['history_ranking'], base, 1)
  if request.param == 'sqlite':
    url = str(base.parent / 'feature_store.sqlite')
  else:
    url = redis_url
    redis.Redis.from_url(url).flushdb()
  with open_store(url) as store:
    bootstrap(store, _write_ml100k(tmp_path_factory.mktemp('data') / 'ml-100k'))
  server, client = start_server(base, feature_store=url)
  yield client
  server.stop()


def _recommend(client, body):
  response = client.post(f'/v1/models/{NAME}:recommend', body)
  assert response.status_code == 200, response.text
  return [r['movie_id'] for r in response.json()['recommendations']]


def test_ratings_posted_over_http_change_what_recommend_by_id_serves(served_with_store):
  client = served_with_store
  cold = _recommend(client, {f.USER_ID: '600', 'k': 5})
  assert cold == _recommend(client, {'k': 5, f.USER_ID: '600', f.USER_AGE: 0, f.HISTORY_MOVIE_IDS: [],
                                     f.HISTORY_RATINGS: []})
  rated = cold[:2]
  body = {'events': [{f.MOVIE_ID: m, f.RATING: 5, f.TIMESTAMP: T0 + i, f.USER_AGE: 30, f.USER_GENDER: 'F'}
                     for i, m in enumerate(rated)]}
  response = client.post('/v1/users/600/ratings', body)
  assert response.status_code == 200, response.text
  assert response.json()['applied'] == 2
  by_id = _recommend(client, {f.USER_ID: '600', 'k': 5})
  # recommend leaves out the history's movies: the store's history reached the model.
  assert not set(rated) & set(by_id)
  assert by_id == _recommend(client, {'k': 5, f.USER_ID: '600', f.USER_AGE: 30, f.USER_GENDER: 'F',
                                      f.HISTORY_MOVIE_IDS: rated, f.HISTORY_RATINGS: [5, 5]})
  # A field the caller sends wins over the stored one.
  assert _recommend(client, {f.USER_ID: '600', 'k': 5, f.HISTORY_MOVIE_IDS: [], f.HISTORY_RATINGS: []}) != by_id


def test_predict_by_id_equals_predict_with_the_stored_features(served_with_store):
  client = served_with_store
  by_id = client.post(f'/v1/models/{NAME}:predict', {'instances': [{f.USER_ID: '1', f.MOVIE_ID: '2'}]})
  assert by_id.status_code == 200, by_id.text
  full = {f.USER_ID: '1', f.MOVIE_ID: '2', f.MOVIE_TITLE: 'Movie 2 (1995)', f.GENRES: [''], f.RELEASE_YEAR: 1995,
          f.USER_AGE: 24, f.USER_GENDER: 'M', f.USER_OCCUPATION: 'technician', f.USER_ZIP: '85711', f.TIMESTAMP: 0,
          f.HISTORY_MOVIE_IDS: ['1', '2', ''], f.HISTORY_RATINGS: [5, 3, 0], f.MOVIE_RATING_COUNT: 1,
          f.MOVIE_RATING_MEAN: 3.0}
  metadata = client.get(f'/v1/models/{NAME}/metadata').json()
  inputs = metadata['metadata']['signature_def']['signature_def'][names.SERVING_DEFAULT]['inputs']
  plain = client.post(f'/v1/models/{NAME}:predict', {'instances': [{n: v for n, v in full.items() if n in inputs}]})
  assert plain.status_code == 200, plain.text
  assert by_id.json() == plain.json()


def test_a_bad_event_over_http_is_a_400_with_the_reason_and_nothing_applied(served_with_store):
  client = served_with_store
  bad = {'events': [{f.MOVIE_ID: '3', f.RATING: 4, f.TIMESTAMP: T0 + 1}, {f.MOVIE_ID: '4', f.RATING: 9,
                                                                         f.TIMESTAMP: T0 + 2}]}
  response = client.post('/v1/users/700/ratings', bad)
  assert response.status_code == 400
  assert 'Event 1: "rating" must be in 1..5' in response.json()['error']
  assert client.post('/v1/users/700/ratings', bad['events'][0]).json()['new_user'] is True
