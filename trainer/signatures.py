"""Serving signatures; every one runs the Transform graph inside the model.

- ``serving_default``: raw feature values, one tensor per feature, as JSON
  gives them to TF Serving's REST API (``{"instances": [{"user_id": "196",
  "movie_id": "242"}]}``). Only the raw features the model reads are asked for.
  Lists (genres, the user's history) come padded at the end with "";
  ``history_ratings`` pairs up with ``history_movie_ids``; an unknown
  ``release_year`` is 0.
- ``serving_tf_example``: serialized ``tf.Example`` protos (``examples``).
- ``transform_features``: serialized examples to transformed features, for
  the Evaluator and for debugging skew.
"""
from typing import Dict, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from trainer.models import PREDICTION_KEY
from transforms import features as f


def raw_spec_without_label(tf_transform_output: tft.TFTransformOutput):
  """The raw feature spec a request or a tf.Example at serving time has: no label."""
  spec = tf_transform_output.raw_feature_spec()
  spec.pop(f.LABEL_KEY, None)
  return spec


def _raw_tensor_spec(name: str, feature_spec) -> tf.TensorSpec:
  """The JSON-friendly input of one raw feature.

  One value per instance for scalar features; a list padded at the end with
  '' (or, for a list aligned with an id list, anything) for multi-valued
  ones; a single int, 0 for unknown, for optional ints (release_year).
  """
  if isinstance(feature_spec, tf.io.VarLenFeature) and feature_spec.dtype != tf.int64:
    return tf.TensorSpec(shape=[None, None], dtype=feature_spec.dtype, name=name)
  return tf.TensorSpec(shape=[None], dtype=feature_spec.dtype, name=name)


def _to_parsed(inputs: Dict[str, tf.Tensor], raw_spec) -> Dict[str, tf.Tensor]:
  """Turns raw-signature inputs into what tf.io.parse_example would give Transform."""
  lengths = {}
  for name, value in inputs.items():
    if isinstance(raw_spec[name], tf.io.VarLenFeature) and value.dtype == tf.string:
      lengths[name] = tf.reduce_sum(tf.cast(tf.not_equal(value, ''), tf.int64), axis=1)
  parsed = {}
  for name, value in inputs.items():
    spec = raw_spec[name]
    if not isinstance(spec, tf.io.VarLenFeature):
      parsed[name] = tf.expand_dims(value, -1)
    elif value.shape.rank == 1:  # optional int: 0 is unknown
      parsed[name] = tf.RaggedTensor.from_tensor(value[:, None], lengths=tf.cast(value > 0, tf.int64)).to_sparse()
    else:
      row_lengths = lengths.get(name, lengths.get(f.ALIGNED_WITH.get(name)))
      parsed[name] = tf.RaggedTensor.from_tensor(value, lengths=row_lengths).to_sparse()
  return parsed


def make_serving_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                            raw_features: Sequence[str]) -> Dict[str, tf.types.experimental.ConcreteFunction]:
  """Builds the three signatures for ``model``.

  Args:
    model: a model whose call takes transformed features and returns [B, 1].
    tf_transform_output: the Transform output the model was trained on.
    raw_features: raw feature names ``serving_default`` takes; Transform
      outputs that need other raw features are pruned, so the model must only
      read outputs derived from these.

  Returns:
    Signature name to concrete function, for ``tf.saved_model.save``.
  """
  # Tracked as an attribute so the Transform assets are saved with the model.
  model.tft_layer = tf_transform_output.transform_features_layer()
  raw_spec = raw_spec_without_label(tf_transform_output)

  def predict(raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    transformed = model.tft_layer(raw)
    return {PREDICTION_KEY: model(transformed)}

  @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name='examples')])
  def serve_tf_examples(serialized):
    return predict(tf.io.parse_example(serialized, raw_spec))

  @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name='examples')])
  def transform_features(serialized):
    return model.tft_layer(tf.io.parse_example(serialized, tf_transform_output.raw_feature_spec()))

  raw_inputs = {name: _raw_tensor_spec(name, raw_spec[name]) for name in raw_features}

  @tf.function(input_signature=[raw_inputs])
  def serve_raw(inputs):
    return predict(_to_parsed(inputs, raw_spec))

  return {
      'serving_default': serve_raw.get_concrete_function(),
      'serving_tf_example': serve_tf_examples.get_concrete_function(),
      'transform_features': transform_features.get_concrete_function(),
  }
