"""Tests of the online feature store, each run against SQLite and against a real redis-server.

The Redis fixture starts Debian's redis-server on a free port in a temp
folder and stops it at the end; nothing is mocked. The consistency tests
build the store from the real MovieLens 100K and compare what it serves at a
rating's time with what ExampleGen writes for that rating.
"""
import collections
import os
import random
import threading

import numpy as np
import pytest
import redis
import tensorflow as tf

from components.movielens_example_gen import history, parsing, split
from serving.feature_store import BadEvent, apply_events, open_store, resolve_predict, resolve_recommend, stream
from serving.feature_store.bootstrap import bootstrap
from serving.feature_store.redis_store import RedisStore
from serving.feature_store.store import PROFILE_FEATURES
from transforms import features as f

pytestmark = pytest.mark.unit

T0 = 880000000  # a second inside ML-100K's span
N_MOVIES = 40  # movies 0..40: the tiny models of test_serving know 0..8


def _open(kind, tmp_path, redis_url):
  if kind == 'sqlite':
    return open_store(str(tmp_path / 'serving' / 'feature_store.sqlite'))
  redis.Redis.from_url(redis_url).flushdb()
  return open_store(redis_url)


@pytest.fixture(params=['sqlite', 'redis'])
def backend(request):
  return request.param


def _write_ml100k(folder, extra_ratings=()):
  """A tiny GroupLens folder: 4 users, movies 0..N_MOVIES, a few ratings, and one bad row of four kinds."""
  folder.mkdir(parents=True, exist_ok=True)
  flags = ['0'] * len(f.GENRE_NAMES)
  items = ['|'.join([str(m), f'Movie {m} (1995)', '01-Jan-1995', '', ''] + flags) for m in range(N_MOVIES + 1)]
  items.append('|'.join(['7', 'Seven again', '', '', ''] + flags))  # duplicate_id
  (folder / 'u.item').write_bytes(('\n'.join(items) + '\n').encode('latin-1'))
  users = ['1|24|M|technician|85711', '2|53|F|other|94043', '3|23|M|writer|32067', '4|24|M|technician|43537']
  (folder / 'u.user').write_text('\n'.join(users) + '\n')
  ratings = [(1, 1, 5, T0), (1, 2, 3, T0 + 10), (2, 1, 4, T0 + 5), (3, 3, 2, T0 + 7)] + list(extra_ratings)
  lines = [f'{u}\t{m}\t{r}\t{t}' for u, m, r, t in ratings]
  lines += [f'1\t3\t9\t{T0}', f'99\t1\t4\t{T0}', f'1\t1\t2\t{T0 + 100}']  # bad_rating, unknown_user, duplicate
  (folder / 'u.data').write_text('\n'.join(lines) + '\n')
  return str(folder)


@pytest.fixture
def store(backend, tmp_path, redis_url):
  s = _open(backend, tmp_path, redis_url)
  s.report = bootstrap(s, _write_ml100k(tmp_path / 'ml-100k'))
  yield s
  s.close()


def _features(s, user_id, at=None, movie_id=None):
  instance = {f.USER_ID: user_id}
  if at is not None:
    instance[f.TIMESTAMP] = at
  if movie_id is not None:
    instance[f.MOVIE_ID] = movie_id
  return resolve_predict(s, {'instances': [instance]})['instances'][0]


def _event(movie_id, rating, timestamp, **profile):
  return {f.MOVIE_ID: movie_id, f.RATING: rating, f.TIMESTAMP: timestamp, **profile}


def _snapshot(s, users=('1', '2', '3', '4', '5'), movies=('1', '2', '3', '4', '5')):
  """Everything served about these users and movies, live."""
  return {(u, m): _features(s, u, movie_id=m) for u in users for m in movies}


def test_bootstrap_loads_the_valid_rows_and_counts_every_skipped_one(store):
  assert store.report['loaded'] == {'users': 4, 'movies': N_MOVIES + 1, 'ratings': 4}
  assert store.report['skipped'] == {'u.data': {'bad_rating': 1, 'unknown_user': 1, 'duplicate': 1},
                                     'u.item': {'duplicate_id': 1}}
  assert store.counts() == store.report['loaded']
  served = _features(store, '2', movie_id='7')
  assert {n: served[n] for n in PROFILE_FEATURES} == {f.USER_AGE: 53, f.USER_GENDER: 'F',
                                                      f.USER_OCCUPATION: 'other', f.USER_ZIP: '94043'}
  assert (served[f.MOVIE_TITLE], served[f.GENRES], served[f.RELEASE_YEAR]) == ('Movie 7 (1995)', [], 1995)
  # The duplicate (1, 1) at T0 + 100 is not held: ExampleGen keeps the earliest.
  assert _features(store, '1')[f.HISTORY_RATINGS] == [5.0, 3.0]


def test_the_next_lookup_sees_the_new_history_and_movie_statistics(store):
  before = _features(store, '2', movie_id='1')
  assert (before[f.HISTORY_MOVIE_IDS], before[f.MOVIE_RATING_COUNT], before[f.MOVIE_RATING_MEAN]) == (['1'], 2, 4.5)
  result = apply_events(store, '2', _event('3', 5, T0 + 20))
  assert (result['applied'], result['new_user'], result['ratings']) == (1, False, 2)
  assert _features(store, '2')[f.HISTORY_MOVIE_IDS] == ['1', '3']
  after = _features(store, '4', movie_id='3')
  assert (after[f.MOVIE_RATING_COUNT], after[f.MOVIE_RATING_MEAN]) == (2, 3.5)


def test_the_same_event_twice_counts_once(store):
  event = _event('5', 4, T0 + 30)
  first = apply_events(store, '3', [event, dict(event)])
  again = apply_events(store, '3', event)
  assert (first['applied'], first['duplicates'], again['applied'], again['duplicates']) == (1, 1, 0, 1)
  served = _features(store, '3', movie_id='5')
  assert served[f.HISTORY_MOVIE_IDS] == ['3', '5']
  assert (served[f.MOVIE_RATING_COUNT], served[f.MOVIE_RATING_MEAN]) == (1, 4.0)


def test_an_event_older_than_the_newest_goes_in_its_place_in_time(store):
  apply_events(store, '4', [_event('10', 5, T0 + 300), _event('11', 4, T0 + 100)])
  apply_events(store, '4', _event('12', 1, T0 + 200))
  served = _features(store, '4')
  assert (served[f.HISTORY_MOVIE_IDS], served[f.HISTORY_RATINGS]) == (['11', '12', '10'], [4.0, 1.0, 5.0])
  # As of a second, only ratings strictly before it count, as ExampleGen trains.
  assert _features(store, '4', at=T0 + 200)[f.HISTORY_MOVIE_IDS] == ['11']


def test_ratings_of_the_same_second_keep_their_arrival_order(store):
  apply_events(store, '4', [_event('21', 5, T0 + 50), _event('20', 3, T0 + 50)])
  apply_events(store, '4', _event('19', 2, T0 + 50))
  assert _features(store, '4')[f.HISTORY_MOVIE_IDS] == ['21', '20', '19']


def test_the_earliest_rating_of_a_movie_is_kept_as_exampleGen_keeps_it(store):
  later = apply_events(store, '1', _event('1', 1, T0 + 500))
  assert later['applied'] == 0
  assert later['kept_earlier'] == [{f.MOVIE_ID: '1', f.TIMESTAMP: T0 + 500, 'kept_timestamp': T0}]
  earlier = apply_events(store, '1', _event('2', 4, T0 - 10))
  assert (earlier['applied'], earlier['replaced'], earlier['ratings']) == (1, 1, 2)
  served = _features(store, '1', movie_id='2')
  assert (served[f.HISTORY_MOVIE_IDS], served[f.HISTORY_RATINGS]) == (['2', '1'], [4.0, 5.0])
  assert (served[f.MOVIE_RATING_COUNT], served[f.MOVIE_RATING_MEAN]) == (1, 4.0)


def test_the_state_does_not_depend_on_the_order_events_arrive_in(backend, tmp_path, redis_url):
  rng = random.Random(0)
  # Re-ratings, replays and out-of-order seconds; distinct seconds, since
  # ratings of one second are served in arrival order (the next test).
  seconds = rng.sample(range(-40, 40), 30)
  events = [(str(rng.choice([1, 5])), _event(str(rng.randrange(1, 8)), 1 + t % 5, T0 + t)) for t in seconds]
  events += events[:5]
  snapshots = []
  for seed in range(3):
    order = events[:]
    random.Random(seed).shuffle(order)
    s = _open(backend, tmp_path / str(seed), redis_url)
    bootstrap(s, _write_ml100k(tmp_path / 'ml-100k'))
    for user_id, event in order:
      apply_events(s, user_id, event)
    snapshot = _snapshot(s, movies=tuple(str(m) for m in range(1, 8)))
    s.close()
    snapshots.append(snapshot)
  assert len(snapshots[0][('5', '1')][f.HISTORY_MOVIE_IDS]) > 3
  assert snapshots[0] == snapshots[1] == snapshots[2]


BAD_EVENTS = [
    (_event('1', 6, T0), '"rating" must be in 1..5'),
    (_event('1', float('nan'), T0), '"rating" must be in 1..5'),
    (_event('1', '5', T0), '"rating" must be a number'),
    (_event('1', True, T0), '"rating" must be a number'),
    (_event('1', 4, 0), '0 means unknown'),
    (_event('1', 4, 2**40), '"timestamp" must be in 788918400..4102444800'),
    (_event('1', 4, T0 + 0.5), '"timestamp" must be an integer'),
    (_event('abc', 4, T0), '"movie_id" must be a MovieLens id'),
    (_event('999', 4, T0), "Movies ['999'] are not in the feature store's catalogue"),
    (_event('1', 4, T0, user_age=200), '"user_age" must be in 1..120'),
    (_event('1', 4, T0, user_gender='X'), '"user_gender" must be one of [\'M\', \'F\']'),
    ({f.MOVIE_ID: '1', f.RATING: 4}, "missing ['timestamp']"),
    ({**_event('1', 4, T0), 'title': 'x'}, "unknown fields ['title']"),
    ('not an event', 'An event is a JSON object'),
]


@pytest.mark.parametrize('bad, reason', BAD_EVENTS, ids=[r for _, r in BAD_EVENTS])
def test_a_bad_event_fails_its_whole_batch_with_the_reason(store, bad, reason):
  before = _snapshot(store)
  with pytest.raises(BadEvent, match=None) as error:
    apply_events(store, '3', [_event('4', 5, T0 + 1, user_age=40), bad])
  assert reason in str(error.value)
  assert error.value.status == 400
  assert _snapshot(store) == before


def test_the_same_key_with_another_rating_is_a_conflict(store):
  before = _snapshot(store)
  with pytest.raises(BadEvent, match=r'rated movie 2 at \d+ both 3 and 4; \(user, movie, timestamp\) names one'):
    apply_events(store, '1', [_event('5', 5, T0 + 1), _event('2', 4, T0 + 10)])
  assert _snapshot(store) == before


def test_batch_limits_and_bad_user_ids_are_refused(store):
  with pytest.raises(BadEvent, match='at most 3'):
    apply_events(store, '1', [_event('5', 5, T0 + i) for i in range(4)], max_events=3)
  with pytest.raises(BadEvent, match='no events'):
    apply_events(store, '1', [])
  with pytest.raises(BadEvent, match='"user_id" must be a MovieLens id'):
    apply_events(store, 'alice', _event('5', 5, T0))


def test_users_are_upserted_with_a_profile(store):
  created = apply_events(store, '0500', {'events': [_event('1', 4, T0 + 1, user_age=31, user_gender='F')]})
  assert (created[f.USER_ID], created['new_user']) == ('500', True)
  apply_events(store, '500', _event('2', 2, T0 + 2, user_occupation='artist', user_age=32))
  served = _features(store, '500')
  assert {n: served[n] for n in PROFILE_FEATURES} == {f.USER_AGE: 32, f.USER_GENDER: 'F',
                                                      f.USER_OCCUPATION: 'artist', f.USER_ZIP: ''}
  assert served[f.HISTORY_MOVIE_IDS] == ['1', '2']


def test_an_unknown_user_gets_the_tables_unknown_values(store):
  served = resolve_recommend(store, {f.USER_ID: '777', 'k': 5})
  unknown = f.unknown_values()
  assert served == {f.USER_ID: '777', 'k': 5, **{n: unknown[n] for n in PROFILE_FEATURES},
                    f.HISTORY_MOVIE_IDS: [], f.HISTORY_RATINGS: [], f.TIMESTAMP: 0}
  assert served[f.USER_AGE] == 0 and served[f.USER_GENDER] == ''


def test_fields_the_caller_sends_override_the_stored_ones(store):
  served = resolve_recommend(store, {f.USER_ID: '1', f.USER_AGE: 60, f.HISTORY_MOVIE_IDS: ['9'],
                                     f.HISTORY_RATINGS: [2.0]})
  assert (served[f.USER_AGE], served[f.USER_GENDER]) == (60, 'M')
  assert (served[f.HISTORY_MOVIE_IDS], served[f.HISTORY_RATINGS]) == (['9'], [2.0])
  accepted = {f.USER_ID, f.USER_AGE, f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS, 'k'}
  assert set(resolve_recommend(store, {f.USER_ID: '1'}, accepted)) == accepted - {'k'}
  # A signature without user_id (the history model's recommend) gets the features, not the id.
  assert set(resolve_recommend(store, {f.USER_ID: '1', 'k': 3}, accepted - {f.USER_ID})) == accepted - {f.USER_ID}
  full = {'instances': [{f.USER_ID: '1', f.MOVIE_ID: '2', **{n: v for n, v in f.unknown_values().items()
                                                             if n not in (f.USER_ID, f.MOVIE_ID)}}]}
  assert resolve_predict(store, full) == full
  columnar = {'inputs': {f.USER_ID: ['1']}}
  assert resolve_predict(store, columnar) is columnar


def test_concurrent_writers_of_one_user_lose_no_event(backend, store, tmp_path, redis_url):
  # Each thread has its own connection, as replicas and consumers do.
  stores = [store] + [_open(backend, tmp_path, redis_url) if backend == 'sqlite' else RedisStore(redis_url)
                      for _ in range(3)]
  errors = []

  def write(index, s):
    try:
      for m in range(index * 10 + 1, index * 10 + 11):
        apply_events(s, '4', _event(str(m), 1 + m % 5, T0 + m))
    except Exception as error:  # noqa: BLE001: handed to the main thread's assert
      errors.append(error)

  threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(stores)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == []
  assert len(_features(store, '4')[f.HISTORY_MOVIE_IDS]) == 40
  for s in stores[1:]:
    s.close()


def test_the_consumer_applies_the_stream_and_dead_letters_bad_entries(store, redis_url):
  client = redis.Redis.from_url(redis_url)
  name = f'events-{id(store)}'
  stream.publish(client, '2', [_event('8', 4, T0 + 1), _event('9', 2, T0 + 2)], name)
  stream.publish(client, '2', _event('9', 2, T0 + 2), name)  # a replay: applied, held once
  stream.publish(client, '2', _event('8', 7, T0 + 3), name)
  client.xadd(name, {'user_id': '2', 'body': '{not json'})
  consumer = stream.Consumer(store, client, stream=name, count=2, block_ms=10)
  while consumer.poll():
    pass
  assert consumer.stats() == {'entries': 4, 'applied': 2, 'dead_lettered': 2}
  assert _features(store, '2')[f.HISTORY_MOVIE_IDS] == ['8', '9', '1']  # T0 + 1, T0 + 2, T0 + 5
  dead = client.xrange(stream.dead_letter_stream(name))
  assert [b'"rating" must be in 1..5' in fields[b'reason'] for _, fields in dead] == [True, False]
  assert b'Expecting property name' in dead[1][1][b'reason']
  assert client.xpending(name, stream.GROUP)['pending'] == 0


def test_the_consumer_leaves_an_entry_pending_when_the_store_fails(tmp_path, redis_url):
  client = redis.Redis.from_url(redis_url)
  name = f'events-failing-{os.getpid()}'
  s = _open('sqlite', tmp_path, redis_url)
  bootstrap(s, _write_ml100k(tmp_path / 'ml-100k'))
  stream.publish(client, '2', _event('8', 4, T0 + 1), name)
  consumer = stream.Consumer(s, client, stream=name, block_ms=10)
  s.close()
  with pytest.raises(Exception):
    consumer.poll()
  assert client.xpending(name, stream.GROUP)['pending'] == 1
  again = open_store(str(tmp_path / 'serving' / 'feature_store.sqlite'))
  restarted = stream.Consumer(again, client, stream=name, block_ms=10)
  assert restarted.poll() == 1 and restarted.applied == 1
  assert client.xpending(name, stream.GROUP)['pending'] == 0
  again.close()


# Offline/online consistency on the real MovieLens 100K.

def _exampleGen_test_examples(data_dir, sample, seed=0):
  """ExampleGen's examples of a sample of test-split ratings, built by its own functions on the real files."""
  movies, _ = parsing.parse_lookup_file(parsing.U_ITEM, parsing.read_numbered_lines(f'{data_dir}/u.item'),
                                        parsing.parse_movie_line)
  users, _ = parsing.parse_lookup_file(parsing.U_USER, parsing.read_numbered_lines(f'{data_dir}/u.user'),
                                       parsing.parse_user_line)
  by_pair = collections.defaultdict(list)
  for line_no, line in parsing.read_numbered_lines(f'{data_dir}/u.data'):
    rating = parsing.parse_rating_line(line_no, line)
    if not isinstance(rating, parsing.BadRow) and parsing.check_join(rating, movies, users) is None:
      by_pair[rating.user_id, rating.movie_id].append(rating)
  valid = [parsing.split_duplicates(ratings)[0] for ratings in by_pair.values()]
  by_user = collections.defaultdict(list)
  for rating in valid:
    by_user[rating.user_id].append(rating)
  by_movie = collections.defaultdict(list)
  for ratings in by_user.values():
    for rated in history.histories(ratings):
      by_movie[rated[0].movie_id].append(rated)
  ts_range = (min(r.timestamp for r in valid), max(r.timestamp for r in valid))
  test = [(rated, count, mean) for rated_of_movie in by_movie.values()
          for rated, count, mean in history.movie_priors(rated_of_movie)
          if split.assign_split(split.SplitConfig(), rated[0].user_id, rated[0].movie_id, rated[0].timestamp,
                                ts_range) == split.TEST]
  chosen = random.Random(seed).sample(test, sample)
  return [tf.train.Example.FromString(parsing.serialize_example(
      rating, parsing.movie_example_part(movies[rating.movie_id]), parsing.user_example_part(users[rating.user_id]),
      ids, values, (count, mean))) for (rating, ids, values), count, mean in chosen]


def _as_written(example):
  """An example's features as JSON values, by the table's shape."""
  out = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof('kind')
    values = [v.decode('utf-8') if kind == 'bytes_list' else v for v in getattr(feature, kind).value]
    out[name] = values if f.BY_NAME[name].shape == f.MULTI else values[0]
  return out


def _assert_store_serves(s, examples):
  """The store, asked at each example's time for its user and movie, serves every feature the example holds."""
  requests = [{f.USER_ID: e[f.USER_ID], f.MOVIE_ID: e[f.MOVIE_ID], f.TIMESTAMP: e[f.TIMESTAMP]} for e in examples]
  served = resolve_predict(s, {'instances': requests})['instances']
  compared = 0
  for written, got in zip(examples, served):
    for name, value in written.items():
      if name == f.LABEL_KEY:
        continue
      float32 = f.BY_NAME[name].dtype == 'float32'
      # The example holds floats as float32; the store serves the float64 they were rounded from.
      assert (np.float32(got[name]).tolist() if float32 else got[name]) == value, (name, written, got)
      compared += 1
  assert compared >= len(examples) * (len(f.SERVING_FEATURES) - 1)  # release_year is absent for movie 267


@pytest.fixture(scope='module')
def ml100k_stores(ml100k_dir, tmp_path_factory, redis_url):
  stores = {'sqlite': open_store(str(tmp_path_factory.mktemp('fs') / 'feature_store.sqlite')),
            'redis': RedisStore(redis_url, prefix='ml100k:')}
  for s in stores.values():
    report = bootstrap(s, str(ml100k_dir))
    assert report['loaded'] == {'users': 943, 'movies': 1682, 'ratings': 100000} and report['skipped'] == {}
  yield stores
  for s in stores.values():
    s.close()


@pytest.fixture(scope='module')
def exampleGen_examples(ml100k_dir):
  return [_as_written(e) for e in _exampleGen_test_examples(str(ml100k_dir), 500)]


def test_store_serves_what_exampleGen_writes_for_test_ratings(exampleGen_examples, ml100k_stores, backend):
  examples = exampleGen_examples
  assert sum(len(e[f.HISTORY_MOVIE_IDS]) == f.HISTORY_LENGTH for e in examples) > 100  # truncation is exercised
  _assert_store_serves(ml100k_stores[backend], examples)
