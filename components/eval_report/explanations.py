"""Why the candidate recommends what it does, for a few users of the evaluated split.

For each chosen user the request is the user as ExampleGen wrote them at
their last rating of the split: profile, time and the history strictly before
that rating (what the model would have been asked just before it). The
candidate's own ``recommend`` signature gives the top movies, and its
``explain`` signature (trainer/explain.py) says why each one scores as it
does, both called on the loaded SavedModel as TF Serving would call them. The
explain row and the JSON come from serving/explain.py, so the report shows
what the server's ``:explain`` route answers: each movie's features from the
model's catalog, its live statistics at their unknown value, as ``recommend``
scores them.

Users are chosen to span history lengths: sorted by (history length, user
id), evenly spaced, so a user with no history (the cold-start answer) and one
with a full history are among them.
"""
import dataclasses
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from components.common import splits
from contract import names
from serving import codec
from serving import explain as serving_explain
from transforms import features as f

# How many users the report explains, and how many of each one's top
# recommendations.
USERS = 3
MOVIES = 3


@dataclasses.dataclass
class ExplainedMovie:
  """One recommendation and the ``:explain`` route's JSON for it (serving/explain.py::format_explanation)."""
  rank: int
  movie_id: str
  title: str
  recommend_score: float                   # recommend's ranking score (a predicted rating for rating models)
  explanation: Dict[str, Any]


@dataclasses.dataclass
class ExplainedUser:
  user_id: str
  timestamp: int                           # the request's second: the user's last rating of the split
  history_length: int
  profile: Dict[str, Any]                  # the user's scalar features the request sent
  next_rating: Dict[str, Any]              # that last rating: movie_id, title, rating
  recommendations: List[ExplainedMovie]


@dataclasses.dataclass
class Explanations:
  """Explanations for ``users``, or ``reason`` why there are none."""
  users: List[ExplainedUser]
  reason: Optional[str]
  split: str
  candidates: int                          # users of the split the few were chosen from
  max_completeness_error: Optional[float]  # over every explained pair; below ``tolerance``
  tolerance: float
  seconds: float


def _json_values(example: tf.train.Example) -> Dict[str, Any]:
  """An example's features as JSON values, by the feature table's shapes."""
  out = {}
  for name, feature in example.features.feature.items():
    if name not in f.BY_NAME:
      continue
    kind = feature.WhichOneof('kind')
    if kind is None:
      continue
    values = [v.decode('utf-8') if kind == 'bytes_list' else v for v in getattr(feature, kind).value]
    if f.BY_NAME[name].shape == f.MULTI:
      out[name] = values
    elif values:
      out[name] = values[0]
  return out


def _last_examples(examples_uri: str, split: str, batch_size: int = 4096) -> Dict[bytes, tuple]:
  """user id -> (timestamp, history length, serialized example) of the user's last example in the split."""
  files = splits.split_files(examples_uri, split)
  spec = {f.USER_ID: tf.io.FixedLenFeature([], tf.string, default_value=b''),
          f.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64, default_value=0),
          f.HISTORY_MOVIE_IDS: tf.io.VarLenFeature(tf.string)}
  last: Dict[bytes, tuple] = {}
  if not files:
    return last
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP' if files[0].endswith('.gz') else '')
  for batch in dataset.batch(batch_size):
    parsed = tf.io.parse_example(batch, spec)
    counts = tf.RaggedTensor.from_sparse(parsed[f.HISTORY_MOVIE_IDS]).row_lengths().numpy()
    for user, ts, count, serialized in zip(parsed[f.USER_ID].numpy(), parsed[f.TIMESTAMP].numpy(), counts,
                                           batch.numpy()):
      # Ties in time go to the later example, as ExampleGen orders them.
      if user not in last or ts >= last[user][0]:
        last[user] = (int(ts), int(count), serialized)
  return last


def _choose(last: Mapping[bytes, tuple], n: int) -> List[bytes]:
  """``n`` users spread over history length: sorted by (length, id), evenly spaced."""
  ordered = sorted(last, key=lambda u: (last[u][1], u))
  if len(ordered) <= n:
    return ordered
  return [ordered[i] for i in sorted(set(np.linspace(0, len(ordered) - 1, n).round().astype(int).tolist()))]


def _specs(signature) -> Dict[str, codec.InputSpec]:
  return {n: codec.InputSpec(n, s.dtype.name, s.shape.rank) for n, s in signature.structured_input_signature[1].items()}


def _call(signature, rows: Sequence[Dict[str, Any]]) -> Dict[str, np.ndarray]:
  """The signature on JSON-valued rows, lists padded at the end to the longest (as codec does for the server)."""
  tensors = {}
  for name, spec in signature.structured_input_signature[1].items():
    values = [row[name] for row in rows]
    if spec.shape.rank == 2:
      pad = '' if spec.dtype == tf.string else 0
      width = max(len(v) for v in values)
      values = [list(v) + [pad] * (width - len(v)) for v in values]
    tensors[name] = tf.constant(values, spec.dtype)
  return {k: v.numpy() for k, v in signature(**tensors).items()}


def _recommend_row(user: Dict[str, Any], specs: Mapping[str, codec.InputSpec], k: int) -> Dict[str, Any]:
  row = {}
  for name, spec in specs.items():
    if name == names.K:
      row[name] = k
      continue
    value = user.get(name, f.BY_NAME[name].unknown if f.BY_NAME[name].shape != f.MULTI else [])
    # One padding column, so an empty history still has a shape.
    row[name] = list(value) + ['' if spec.dtype == 'string' else 0] if spec.rank == 2 else value
  return row


def explain_users(model: Any, examples_uri: str, split: str, model_path: str, n_users: int = USERS,
                  k: int = MOVIES) -> Explanations:
  """Top ``k`` recommendations of ``n_users`` users of ``split`` and why, through the model's own signatures.

  Args:
    model: the loaded candidate SavedModel.
    examples_uri: ExampleGen's ``examples``.
    split: the evaluated split.
    model_path: the SavedModel's folder (its catalog asset gives titles and movie features).
    n_users, k: how many users, and recommendations of each.
  """
  start = time.perf_counter()
  missing = [s for s in (names.RECOMMEND, names.EXPLAIN) if s not in model.signatures]
  if missing:
    return Explanations([], f'the candidate has no {" or ".join(missing)} signature (trainer/task.py::'
                        'serving_signatures adds them to rating models; `python -m trainer.explain` adds explain '
                        'to an older SavedModel)', split, 0, None, names.EXPLAIN_TOLERANCE, 0.0)
  last = _last_examples(examples_uri, split)
  chosen = _choose(last, n_users)
  if not chosen:
    return Explanations([], f'the {split} split has no examples', split, 0, None, names.EXPLAIN_TOLERANCE, 0.0)
  movies = serving_explain.load_catalog(model_path)
  recommend, explain = model.signatures[names.RECOMMEND], model.signatures[names.EXPLAIN]
  recommend_specs, explain_specs = _specs(recommend), _specs(explain)
  written = [_json_values(tf.train.Example.FromString(last[u][2])) for u in chosen]
  requests = [{n: v for n, v in x.items() if f.BY_NAME[n].role in f.REQUEST_ROLES} for x in written]
  top = _call(recommend, [_recommend_row(r, recommend_specs, k) for r in requests])
  pairs, rows = [], []
  for i, request in enumerate(requests):
    for rank, (movie_id, score) in enumerate(zip(top[names.MOVIE_IDS][i], top[names.SCORES][i]), 1):
      if movie_id:
        body = {n: v for n, v in request.items() if n in explain_specs or n == f.USER_ID}
        rows.append(serving_explain.explain_instance({**body, f.MOVIE_ID: movie_id.decode()}, explain_specs, None,
                                                     movies))
        pairs.append((i, rank, movie_id.decode(), float(score)))
  outputs = _call(explain, rows) if rows else {}
  users = [ExplainedUser(
      user_id=u.decode(), timestamp=last[u][0], history_length=last[u][1],
      profile={n: v for n, v in requests[i].items() if f.BY_NAME[n].shape != f.MULTI and n != f.TIMESTAMP},
      next_rating={'movie_id': written[i].get(f.MOVIE_ID, ''), 'rating': written[i].get(f.LABEL_KEY),
                   'title': movies.by_id.get(written[i].get(f.MOVIE_ID, ''), {}).get('title',
                                                                                    written[i].get(f.MOVIE_TITLE, ''))},
      recommendations=[]) for i, u in enumerate(chosen)]
  errors = []
  for j, (i, rank, movie_id, score) in enumerate(pairs):
    explanation = serving_explain.format_explanation({n: v[j:j + 1] for n, v in outputs.items()}, rows[j], movies, 0)
    explanation.pop('model_version')
    errors.append(explanation['completeness_error'])
    users[i].recommendations.append(ExplainedMovie(rank, movie_id, explanation['title'], score, explanation))
  return Explanations(users, None, split, len(last), max(errors) if errors else None, names.EXPLAIN_TOLERANCE,
                      round(time.perf_counter() - start, 2))
