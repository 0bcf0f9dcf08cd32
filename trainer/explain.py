"""The ``explain`` signature: why a rating model scores a (user, movie) pair as it does.

It takes ``serving_default``'s raw JSON inputs (one user and one movie per
row) and answers, in one call of plain TF ops (stock TF Serving runs it):

- ``predictions`` [B]: the score, as ``serving_default`` gives it;
- ``group_attributions`` [B, G] over ``group_names`` [B, G]: **exact Shapley
  values** of the raw feature groups (``Feature.group`` in
  ``transforms/features.py``: history, age, gender, occupation, the movie,
  genres, movie statistics, time; only groups of features the model reads).
  A group is "absent" when every feature in it takes the table's ``unknown``
  value, which Transform turns into what the table says it ``becomes``, so
  the baseline is the model's own cold-start answer. All 2^G coalitions are
  scored in one batch (256 rows for the history models' 8 groups) and
  combined with the Shapley weights; no sampling, so the values are exact and
  deterministic;
- ``baseline_score`` [B]: the score with every group absent. Completeness
  (Shapley's efficiency): the attributions sum to ``predictions`` minus
  ``baseline_score``, up to float32 rounding; ``names.EXPLAIN_TOLERANCE``
  states the bound and tests/test_explain.py checks it;
- ``history_contributions`` [B, T] (models that read a history): exact leave
  one out, the score minus the score with that one rating removed from the
  list (the rest keep their order, as if it never happened), T scored rows
  in the same call; 0 on padding. These do not sum to the history group's
  Shapley value: removing ratings one at a time is not additive.

Why Shapley over groups rather than integrated gradients: the models read
integer ids through embedding lookups and a kNN table, and they clip the
rating, so a path integral over ids needs a model that takes embeddings; with
eight groups the exact Shapley values cost one batch of 256 rows and satisfy
completeness without a step-count trade-off.
"""
import argparse
import math
import os
import shutil
from typing import Callable, Dict, Sequence

import numpy as np
import tensorflow as tf

from contract import names
from trainer import signatures
from transforms import features as f

# 2^G rows per explained pair: 12 groups would be 4,096.
MAX_GROUPS = 10
# Raw inputs by name to scores [B].
Scorer = Callable[[Dict[str, tf.Tensor]], tf.Tensor]


def coalitions(n_groups: int) -> np.ndarray:
  """bool [2^G, G]: row m holds the groups present in coalition m (bit i of m is group i)."""
  rows = np.arange(2 ** n_groups)[:, None]
  return ((rows >> np.arange(n_groups)[None, :]) & 1).astype(bool)


def shapley_weights(present: np.ndarray) -> np.ndarray:
  """float64 [2^G, G]: the matrix W with Shapley values = v @ W, for coalition values v [B, 2^G].

  phi_i = sum over coalitions S without i of |S|! (G - |S| - 1)! / G! (v(S + i) - v(S)); each
  coalition's value enters with + for the groups it holds and - for those it lacks.
  """
  n = present.shape[1]
  size = present.sum(1)[:, None]
  g = math.factorial(n)
  plus = np.vectorize(lambda s: math.factorial(s - 1) * math.factorial(n - s) / g if s > 0 else 0.0)(size)
  minus = np.vectorize(lambda s: math.factorial(s) * math.factorial(n - s - 1) / g if s < n else 0.0)(size)
  return np.where(present, plus, -minus)


def _absent(feature: f.Feature, value: tf.Tensor) -> tf.Tensor:
  """What the raw signature takes for ``feature`` when the caller knows nothing: its unknown value, or padding."""
  if feature.shape == f.MULTI:
    return tf.zeros_like(value) if value.dtype != tf.string else tf.fill(tf.shape(value), '')
  return tf.fill(tf.shape(value), tf.constant(feature.unknown, value.dtype))


def _without_each(values: tf.Tensor, pad) -> tf.Tensor:
  """[B, T] lists to [B, T, T]: row t is the list without entry t, padded at the end."""
  length = tf.shape(values)[1]
  padded = tf.concat([values, tf.fill([tf.shape(values)[0], 1], tf.constant(pad, values.dtype))], 1)
  column = tf.range(length)[None, :]
  index = column + tf.cast(column >= tf.range(length)[:, None], tf.int32)  # [T, T]
  return tf.gather(padded, index, axis=1)


def model_scorer(model: tf.keras.Model, table: Sequence[f.Feature] = f.FEATURES) -> Scorer:
  """raw inputs -> [B] scores, as ``serving_default`` computes them: range checks, Transform, the model.

  ``model`` must have ``tft_layer`` tracked (``make_serving_signatures`` does that).
  """
  def score(raw: Dict[str, tf.Tensor]) -> tf.Tensor:
    return tf.reshape(model(signatures._transform(model, signatures.to_parsed(raw, table), table)), [-1])
  return score


def make_explain_signature(score: Scorer, raw_features: Sequence[str],
                           table: Sequence[f.Feature] = f.FEATURES) -> tf.types.experimental.ConcreteFunction:
  """Builds ``explain`` for a rating model.

  Args:
    score: raw inputs (``serving_default``'s, by name) to scores [B]: ``model_scorer(model)``, or a
      loaded ``serving_default`` (``add_to_saved_model``).
    raw_features: the raw inputs of its ``serving_default``.
    table: the feature table; groups come from ``Feature.group``.

  Returns:
    A concrete function of ``serving_default``'s inputs; outputs as the module says.
  """
  by_name = {x.name: x for x in table}
  groups = f.groups(raw_features, table)
  group_names = list(groups)
  if len(group_names) > MAX_GROUPS:
    raise ValueError(f'{len(group_names)} feature groups would score 2^{len(group_names)} rows per explained pair; '
                     f'merge groups in transforms/features.py to at most {MAX_GROUPS}.')
  present = coalitions(len(group_names))
  weights = shapley_weights(present)
  group_of = {name: i for i, members in enumerate(groups.values()) for name in members}
  n_coalitions = len(present)
  history = f.HISTORY_MOVIE_IDS in raw_features

  @signatures.signature_function(input_signature=[signatures.signature_inputs(raw_features, table)])
  def explain(inputs):
    batch = tf.shape(inputs[raw_features[0]])[0]
    predictions = score(inputs)
    # Every coalition of every row: row b's coalitions are rows b * C .. b * C + C - 1.
    rows = {}
    for name, value in inputs.items():
      repeated = tf.repeat(value, n_coalitions, axis=0)
      if name not in group_of:
        rows[name] = repeated
        continue
      keep = tf.tile(tf.constant(present[:, group_of[name]]), [batch])
      keep = keep[:, None] if by_name[name].shape == f.MULTI else keep
      rows[name] = tf.where(keep, repeated, _absent(by_name[name], repeated))
    values = tf.reshape(score(rows), [batch, n_coalitions])
    attributions = tf.matmul(tf.cast(values, tf.float64), tf.constant(weights))
    outputs = {
        names.PREDICTION_KEY: predictions,
        names.BASELINE_SCORE: values[:, 0],
        names.GROUP_NAMES: tf.tile(tf.constant([group_names]), [batch, 1]),
        names.GROUP_ATTRIBUTIONS: tf.cast(attributions, tf.float32),
    }
    if history:
      ids, ratings = inputs[f.HISTORY_MOVIE_IDS], inputs[f.HISTORY_RATINGS]
      length = tf.shape(ids)[1]
      rows = {name: tf.repeat(value, length, axis=0) for name, value in inputs.items()}
      rows[f.HISTORY_MOVIE_IDS] = tf.reshape(_without_each(ids, ''), [-1, length])
      rows[f.HISTORY_RATINGS] = tf.reshape(_without_each(ratings, 0.0), [-1, length])
      without = tf.reshape(score(rows), [batch, length])
      outputs[names.HISTORY_CONTRIBUTIONS] = tf.where(tf.equal(ids, ''), 0.0, predictions[:, None] - without)
    return outputs

  return explain.get_concrete_function()



def add_to_saved_model(source: str, target: str) -> None:
  """Saves the SavedModel at ``source`` again at ``target``, with ``explain`` built on its ``serving_default``.

  For a model pushed before ``explain`` existed: the scores are its own
  ``serving_default``'s, so nothing is retrained. ``assets.extra`` is copied.
  """
  loaded = tf.saved_model.load(source)
  serve = loaded.signatures[names.SERVING_DEFAULT]
  taken = serve.structured_input_signature[1]
  raw_features = [x.name for x in f.FEATURES if x.name in taken]

  def score(raw: Dict[str, tf.Tensor]) -> tf.Tensor:
    return tf.reshape(serve(**raw)[names.PREDICTION_KEY], [-1])

  signatures_out = dict(loaded.signatures)
  signatures_out[names.EXPLAIN] = make_explain_signature(score, raw_features)
  tf.saved_model.save(loaded, target, signatures=signatures_out)
  extra = os.path.join(source, 'assets.extra')
  if tf.io.gfile.exists(extra):
    shutil.copytree(extra, os.path.join(target, 'assets.extra'), dirs_exist_ok=True)


if __name__ == '__main__':
  parser = argparse.ArgumentParser(prog='python -m trainer.explain', description=add_to_saved_model.__doc__)
  parser.add_argument('source', help='a SavedModel version folder')
  parser.add_argument('target', help='where to save it with explain (a new version folder)')
  args = parser.parse_args()
  add_to_saved_model(args.source, args.target)
