"""The recommend signature: top-K over the catalog, history excluded, any user."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from contract import names
from trainer import hparams as hp
from trainer import item_item, registry, signatures
from trainer.task import build_model, item_item_scorer, serving_signatures
from transforms import features as f

pytestmark = pytest.mark.unit


def _export(tiny_transform, tmp_path, model_name):
  out_dir, _, transformed = tiny_transform
  output = tft.TFTransformOutput(out_dir)
  tf.keras.utils.set_random_seed(0)
  overrides = {'model': model_name, 'embedding_dim': 4, 'layer_sizes': '8'}
  params = hp.resolve({'hparams': overrides})
  model = build_model(params, output)
  data = {k: np.stack([t[k] for t in transformed]) for k in transformed[0]}
  model.fit(tf.data.Dataset.from_tensor_slices(data).batch(64), epochs=1, verbose=0)
  if registry.get(model_name).item_item:
    model.item_item = item_item_scorer(params.replace(item_item_l2=1.0), output,
                                       tf.data.Dataset.from_tensor_slices(data).batch(64))
  export_dir = str(tmp_path / model_name)
  signatures.save_model(model, export_dir, serving_signatures(params, model, output))
  return tf.saved_model.load(export_dir), output, model, registry.get(model_name)


_REQUEST = set(f.names(f.USER) + f.names(f.CONTEXT))


def _user(loaded, history=(), k=3, **values):
  """One recommend row with defaults for every input the signature has."""
  inputs = {}
  for name, spec in loaded.signatures[names.RECOMMEND].structured_input_signature[1].items():
    if name == f.HISTORY_MOVIE_IDS:
      inputs[name] = tf.constant([[m for m, _ in history] + ['']])
    elif name == f.HISTORY_RATINGS:
      inputs[name] = tf.constant([[float(r) for _, r in history] + [0.0]])
    elif name == names.K:
      inputs[name] = tf.constant([k], tf.int32)
    elif spec.dtype == tf.string:
      inputs[name] = tf.constant([values.get(name, '')])
    else:
      inputs[name] = tf.constant([values.get(name, 0)], spec.dtype)
  return inputs


@pytest.fixture(scope='module', params=['ranking', 'history_ranking', 'multitask'])
def exported(request, tiny_transform, tmp_path_factory):
  return _export(tiny_transform, tmp_path_factory.mktemp('sig'), request.param)


def test_recommend_inputs_are_the_user_features_the_model_reads(exported):
  loaded, _, _, entry = exported
  inputs = set(loaded.signatures[names.RECOMMEND].structured_input_signature[1])
  assert {f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS, names.K} <= inputs
  assert inputs - {names.K} <= _REQUEST
  diverse = set(loaded.signatures[names.RECOMMEND_DIVERSE].structured_input_signature[1])
  assert diverse == inputs | {names.DIVERSITY}
  retrieves = {names.RETRIEVE} if entry.retrieves else set()
  explains = {names.EXPLAIN} if entry.rates else set()
  assert set(loaded.signatures) == {names.SERVING_DEFAULT, names.SERVING_TF_EXAMPLE, names.TRANSFORM_FEATURES,
                                    names.RECOMMEND, names.RECOMMEND_DIVERSE} | retrieves | explains


def test_explain_attributions_sum_to_the_score_minus_the_baseline_for_every_rating_model(exported):
  loaded = exported[0]
  specs = loaded.signatures[names.EXPLAIN].structured_input_signature[1]
  values = {f.HISTORY_MOVIE_IDS: [['1', '2', '']], f.HISTORY_RATINGS: [[5.0, 2.0, 0.0]], f.MOVIE_ID: ['3'],
            f.USER_AGE: [30], f.USER_GENDER: ['F'], f.TIMESTAMP: [880000000], f.GENRES: [['Drama']]}
  inputs = {}
  for name, spec in specs.items():
    unknown = [''] if spec.dtype == tf.string else [0]
    inputs[name] = tf.constant(values.get(name, [unknown] if spec.shape.rank == 2 else unknown), spec.dtype)
  out = loaded.signatures[names.EXPLAIN](**inputs)
  gap = out[names.PREDICTION_KEY].numpy() - out[names.BASELINE_SCORE].numpy()
  assert abs(out[names.GROUP_ATTRIBUTIONS].numpy().sum() - gap[0]) < names.EXPLAIN_TOLERANCE


def test_recommend_scores_match_serving_default_or_the_towers_for_the_same_pairs(exported, tiny_transform):
  loaded, output, model, entry = exported
  catalog = signatures.read_catalog(output)
  history = [('1', 4), ('2', 2)]
  user = dict(user_id='3', user_age=27, user_gender='F', user_occupation='writer', timestamp=880000000)
  top = loaded.signatures[names.RECOMMEND](**_user(loaded, history, k=4, **user))
  ids = [m.decode() for m in top[names.MOVIE_IDS].numpy()[0]]
  scores = top[names.SCORES].numpy()[0]
  assert len(ids) == 4 and not {'1', '2'} & set(ids)
  assert list(scores) == sorted(scores, reverse=True)
  # The same user and movies, scored one pair at a time through serving_default.
  serve = loaded.signatures['serving_default']
  rows = [list(catalog[f.MOVIE_ID]).index(m.encode()) for m in ids]
  request = {}
  for name, spec in serve.structured_input_signature[1].items():
    if name in catalog:
      request[name] = tf.constant(catalog[name][rows])
    elif name == f.HISTORY_MOVIE_IDS:
      request[name] = tf.constant([[b'1', b'2']] * len(rows))
    elif name == f.HISTORY_RATINGS:
      request[name] = tf.constant([[4.0, 2.0]] * len(rows))
    elif name not in _REQUEST:
      # A movie feature the catalog lacks: recommend sends what a client that does not know it sends.
      request[name] = tf.zeros([len(rows)], spec.dtype)
    else:
      request[name] = tf.constant([user[name]] * len(rows), spec.dtype)
  vocab = output.vocabulary_by_name(f.MOVIE_VOCAB)
  if entry.item_item:
    # The history's item-item votes (trainer/item_item.py).
    raw = {name: tf.constant([user[name]]) for name in (f.USER_AGE, f.USER_GENDER)}
    raw[f.USER_AGE] = tf.cast(raw[f.USER_AGE], tf.int64)
    transformed = model.tft_layer(signatures.to_parsed(
        {**raw, f.HISTORY_MOVIE_IDS: tf.constant([[b'1', b'2']]), f.HISTORY_RATINGS: tf.constant([[4.0, 2.0]])}))
    votes = model.item_item(*item_item.scorer_inputs(transformed)).numpy()[0]
    expected = votes[[vocab.index(m.encode()) for m in ids]]
  elif entry.retrieves:
    # A model with retrieval towers scores by them: query . candidate.
    raw = {name: tf.constant([user[name]]) for name in (f.USER_AGE, f.USER_GENDER, f.USER_OCCUPATION)}
    raw[f.USER_AGE] = tf.cast(raw[f.USER_AGE], tf.int64)
    raw[f.HISTORY_MOVIE_IDS] = tf.constant([[b'1', b'2']])
    raw[f.HISTORY_RATINGS] = tf.constant([[4.0, 2.0]])
    query = model.query_embeddings(model.tft_layer(signatures.to_parsed(raw)))
    candidates = model.candidate_embeddings(
        {f.transformed_name(f.MOVIE_ID): tf.constant([vocab.index(m.encode()) for m in ids], tf.int64)})
    expected = tf.matmul(query, candidates, transpose_b=True).numpy()[0]
  else:
    expected = serve(**request)[names.PREDICTION_KEY].numpy()[:, 0]
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
  titles = dict(zip(catalog[f.MOVIE_ID], catalog[f.MOVIE_TITLE]))
  assert list(top[names.TITLES].numpy()[0]) == [titles[m.encode()] for m in ids]


def test_item_item_recommend_and_retrieve_agree_and_fall_back_to_the_towers_without_train_movies(exported):
  loaded, output, model, entry = exported
  if not entry.item_item:
    pytest.skip('ranks by its own scores')
  user = dict(user_id='3', user_age=27, user_gender='F', user_occupation='writer', timestamp=880000000)
  for history, by_item_item in (([('1', 4), ('2', 5)], True), ([('no-such-movie', 5)], False)):
    top = loaded.signatures[names.RECOMMEND](**_user(loaded, history, k=3, **user))
    catalog = signatures.read_catalog(output)
    movie = {f.MOVIE_ID: catalog[f.MOVIE_ID][-1].decode(), f.MOVIE_TITLE: catalog[f.MOVIE_TITLE][-1].decode(),
             f.GENRES: [g.decode() for g in catalog[f.GENRES][-1] if g],
             f.RELEASE_YEAR: int(catalog[f.RELEASE_YEAR][-1])}
    example = _example({**_KNOWN, **user, **movie}, history)
    retrieved = loaded.signatures[names.RETRIEVE](examples=tf.constant([example]), k=tf.constant(50))
    seen = {m.encode() for m, _ in history}
    unseen = [(m, s) for m, s in zip(retrieved[names.MOVIE_IDS].numpy()[0], retrieved[names.SCORES].numpy()[0])
              if m not in seen][:3]
    assert [m for m, _ in unseen] == list(top[names.MOVIE_IDS].numpy()[0])
    np.testing.assert_allclose([s for _, s in unseen], top[names.SCORES].numpy()[0], rtol=1e-4, atol=1e-5)
    raw = {f.HISTORY_MOVIE_IDS: tf.constant([[m.encode() for m, _ in history]]),
           f.HISTORY_RATINGS: tf.constant([[float(r) for _, r in history]])}
    for name in (f.USER_AGE, f.USER_GENDER, f.USER_OCCUPATION):
      raw[name] = tf.constant([user[name]], tf.int64 if name == f.USER_AGE else tf.string)
    query = model.query_embeddings(model.tft_layer(signatures.to_parsed(raw)))
    vocab = output.vocabulary_by_name(f.MOVIE_VOCAB)
    ids = top[names.MOVIE_IDS].numpy()[0]
    towers = tf.matmul(query, model.candidate_embeddings(
        {f.transformed_name(f.MOVIE_ID): tf.constant([vocab.index(m) for m in ids], tf.int64)}),
        transpose_b=True).numpy()[0]
    assert np.allclose(top[names.SCORES].numpy()[0], towers, rtol=1e-4, atol=1e-5) != by_item_item


def _genre_diversity(ids, catalog):
  genres = {m: {g for g in row if g} for m, row in zip(catalog[f.MOVIE_ID], catalog[f.GENRES])}
  pairs = [(genres[a], genres[b]) for i, a in enumerate(ids) for b in ids[i + 1:]]
  return np.mean([1 - len(a & b) / len(a | b) if a | b else 0.0 for a, b in pairs])


def test_recommend_diversity_reorders_the_same_candidates_towards_varied_genres(exported, tiny_transform):
  loaded, output, _, _ = exported
  catalog = signatures.read_catalog(output)
  n = len(catalog[f.MOVIE_ID])
  history = [('1', 4)]
  plain = loaded.signatures[names.RECOMMEND](**_user(loaded, history, k=n))
  request = _user(loaded, history, k=4)
  by_weight = {}
  for weight in (0.0, 0.5, 1.0):
    request[names.DIVERSITY] = tf.constant([weight])
    by_weight[weight] = loaded.signatures[names.RECOMMEND_DIVERSE](**request)
  ids = {w: list(top[names.MOVIE_IDS].numpy()[0]) for w, top in by_weight.items()}
  assert ids[0.0] == list(plain[names.MOVIE_IDS].numpy()[0][:4])
  # Fully diverse: after the best movie, each pick shares the least genre with what is listed.
  assert ids[1.0][0] == ids[0.0][0]
  assert _genre_diversity(ids[1.0], catalog) >= _genre_diversity(ids[0.5], catalog) >= _genre_diversity(ids[0.0],
                                                                                                        catalog)
  # Every movie keeps its own score, and none of the history comes back.
  scores = dict(zip(plain[names.MOVIE_IDS].numpy()[0], plain[names.SCORES].numpy()[0]))
  np.testing.assert_allclose(by_weight[1.0][names.SCORES].numpy()[0], [scores[m] for m in ids[1.0]], rtol=1e-5)
  assert b'1' not in ids[1.0]


def test_mmr_trades_score_for_genres_by_its_weight_and_puts_seen_movies_last():
  # Candidates by descending score: 0 and 1 are both Drama; 2 is Comedy; 3 was seen (-inf).
  genres = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
  indices = tf.constant([[0, 1, 2, 3]] * 3)
  values = tf.constant([[4.0, 3.9, 1.0, -np.inf]] * 3)
  order, scores = signatures._mmr(indices, values, tf.constant([0.0, 0.3, 0.9]), genres)
  assert order.numpy().tolist() == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 2, 1, 3]]
  np.testing.assert_allclose(scores.numpy()[2], [4.0, 1.0, 3.9, -np.inf], rtol=1e-6)


def test_recommend_answers_unknown_users_and_movies_and_pads_short_lists(exported, tiny_transform):
  loaded, output, _, _ = exported
  n_movies = len(signatures.read_catalog(output)[f.MOVIE_ID])
  unknown = loaded.signatures[names.RECOMMEND](
      **_user(loaded, [('no-such-movie', 5)], k=5, user_id='no-such-user', user_gender='X', user_occupation='?'))
  assert np.isfinite(unknown[names.SCORES].numpy()).all()
  assert all(m for m in unknown[names.MOVIE_IDS].numpy()[0])
  # Seen everything but one movie: one recommendation, the rest padded.
  catalog_ids = [m.decode() for m in signatures.read_catalog(output)[f.MOVIE_ID]]
  seen_all_but_one = [(m, 3) for m in catalog_ids[1:]]
  top = loaded.signatures[names.RECOMMEND](**_user(loaded, seen_all_but_one, k=n_movies))
  ids = [m.decode() for m in top[names.MOVIE_IDS].numpy()[0]]
  assert ids[0] == catalog_ids[0] and set(ids[1:]) == {''}
  assert (top[names.SCORES].numpy()[0][1:] == 0).all()


def test_recommend_batches_users_with_their_own_k(exported):
  loaded, _, _, _ = exported
  one = _user(loaded, k=2, user_id='1')
  two = _user(loaded, k=4, user_id='5', user_age=60)
  batch = {n: tf.concat([one[n], two[n]], 0) for n in one}
  top = loaded.signatures[names.RECOMMEND](**batch)
  ids = top[names.MOVIE_IDS].numpy()
  assert ids.shape == (2, 4)
  assert ids[0][2:].tolist() == [b'', b''] and all(ids[1])
  alone = loaded.signatures[names.RECOMMEND](**two)
  np.testing.assert_allclose(top[names.SCORES].numpy()[1], alone[names.SCORES].numpy()[0], rtol=1e-5)


def test_recommend_clips_k(exported, tiny_transform):
  loaded, output, _, _ = exported
  n_movies = len(signatures.read_catalog(output)[f.MOVIE_ID])
  top = loaded.signatures[names.RECOMMEND](**_user(loaded, k=10_000))
  assert top[names.MOVIE_IDS].shape[1] == min(n_movies, names.MAX_K)
  assert loaded.signatures[names.RECOMMEND](**_user(loaded, k=-3))[names.MOVIE_IDS].shape == (1, 0)


# One known user and movie; each case replaces one feature by its unknown value.
_KNOWN = {f.USER_ID: '3', f.USER_AGE: 27, f.USER_GENDER: 'F', f.USER_OCCUPATION: 'writer', f.USER_ZIP: '85711',
          f.TIMESTAMP: 880000000, f.MOVIE_RATING_COUNT: 12, f.MOVIE_RATING_MEAN: 3.5}
_HISTORY = [('1', 4.0), ('2', 2.0)]
_UNKNOWN_CASES = [None] + [x.name for x in f.FEATURES if x.role != f.LABEL]


def _example(values, history) -> bytes:
  """A serialized tf.Example of ``values``, unknowns written as a client writes them."""
  feature = {}
  for name, value in values.items():
    spec = f.BY_NAME[name]
    items = value if spec.shape == f.MULTI else ([] if spec.shape == f.OPTIONAL and value == spec.unknown
                                                 else [value])
    if spec.dtype == 'string':
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in items]))
    elif spec.dtype == 'float32':
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=items))
    else:
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=items))
  feature[f.HISTORY_MOVIE_IDS] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[m.encode() for m, _ in history]))
  feature[f.HISTORY_RATINGS] = tf.train.Feature(float_list=tf.train.FloatList(value=[r for _, r in history]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.mark.parametrize('unknown', _UNKNOWN_CASES, ids=lambda n: f'unknown_{n}' if n else 'all_known')
def test_the_signatures_agree_with_every_feature_known_and_with_each_unknown(exported, unknown):
  """serving_default, serving_tf_example and recommend score the same user and movies alike."""
  loaded, output, model, entry = exported
  catalog = signatures.read_catalog(output)
  # Movies outside the history (recommend leaves those out), one without a release year among them.
  unseen = [i for i, m in enumerate(catalog[f.MOVIE_ID]) if m.decode() not in dict(_HISTORY)]
  rows = unseen[:2] + [unseen[-1]]
  values = {**_KNOWN}
  history = [] if unknown in (f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS) else _HISTORY
  serve = loaded.signatures[names.SERVING_DEFAULT]
  inputs = serve.structured_input_signature[1]
  per_movie = []
  for row in rows:
    movie = {name: catalog[name][row] for name in catalog}
    movie = {k: (v.decode() if isinstance(v, bytes) else [g.decode() for g in v if g] if k == f.GENRES else int(v))
             for k, v in movie.items()}
    per_movie.append({**values, **movie})
  if unknown and unknown not in (f.HISTORY_MOVIE_IDS, f.HISTORY_RATINGS):
    for movie in per_movie:
      movie[unknown] = f.BY_NAME[unknown].unknown
  # serving_default: the JSON layout, lists padded at the end.
  raw = {}
  for name, spec in inputs.items():
    if name == f.HISTORY_MOVIE_IDS:
      raw[name] = tf.constant([[m for m, _ in history] + ['']] * len(rows))
    elif name == f.HISTORY_RATINGS:
      raw[name] = tf.constant([[r for _, r in history] + [0.0]] * len(rows))
    elif f.BY_NAME[name].shape == f.MULTI:
      width = max(len(m[name]) for m in per_movie) + 1
      raw[name] = tf.constant([m[name] + [''] * (width - len(m[name])) for m in per_movie])
    else:
      raw[name] = tf.constant([m[name] for m in per_movie], spec.dtype)
  by_default = serve(**raw)[names.PREDICTION_KEY].numpy()[:, 0]
  examples = [_example(m, history) for m in per_movie]
  by_example = loaded.signatures[names.SERVING_TF_EXAMPLE](
      examples=tf.constant(examples))[names.PREDICTION_KEY].numpy()[:, 0]
  np.testing.assert_allclose(by_example, by_default, rtol=1e-5, atol=1e-5)
  if entry.retrieves or (unknown and f.BY_NAME[unknown].role == f.MOVIE):
    return  # towers score by query . candidate, not by rating; recommend takes movie features from its catalog
  user = {n: per_movie[0][n] for n in (x.name for x in f.FEATURES) if n in per_movie[0]
          and f.BY_NAME[n].role in f.REQUEST_ROLES}
  top = loaded.signatures[names.RECOMMEND](**_user(loaded, history, k=names.MAX_K, **user))
  scores = dict(zip(top[names.MOVIE_IDS].numpy()[0], top[names.SCORES].numpy()[0]))
  # recommend has no live statistics: compare with serving_default given none.
  for name in (f.MOVIE_RATING_COUNT, f.MOVIE_RATING_MEAN):
    if name in raw:
      raw[name] = tf.zeros_like(raw[name])
  without_stats = serve(**raw)[names.PREDICTION_KEY].numpy()[:, 0]
  np.testing.assert_allclose([scores[catalog[f.MOVIE_ID][r]] for r in rows], without_stats, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name, value', [(f.USER_AGE, -5), (f.USER_AGE, 10**12), (f.TIMESTAMP, -1)])
def test_every_signature_refuses_out_of_range_values_and_states_the_range(exported, name, value):
  loaded, _, _, _ = exported
  request = _user(loaded, [('1', 4.0)], k=3)
  if name not in request:
    pytest.skip(f'this model does not read {name}')
  request[name] = tf.constant([value], request[name].dtype)
  with pytest.raises(tf.errors.InvalidArgumentError, match=f'{name} must be in'):
    loaded.signatures[names.RECOMMEND](**request)
  example = _example({**_KNOWN, f.MOVIE_ID: '1', f.MOVIE_TITLE: 'Movie 1 (1991)', f.GENRES: ['Drama'],
                      f.RELEASE_YEAR: 1991, name: value}, [])
  with pytest.raises(tf.errors.InvalidArgumentError, match=f'{name} must be in'):
    loaded.signatures[names.SERVING_TF_EXAMPLE](examples=tf.constant([example]))
