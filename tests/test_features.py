"""The feature contract: the tables in transforms/features.py agree with the schema, Transform and the docs."""
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from trainer import signatures
from transforms import features as f

from conftest import raw_feature_spec, serialize_row

pytestmark = pytest.mark.unit

# A feature a test adds: nothing but the tables knows about it.
_HEIGHT = f.Feature('user_height', 'int64', f.SCALAR, f.USER, 'height in cm', valid_range=(50, 250), unknown=0,
                    becomes='the train mean height')
_TABLE = f.FEATURES + (_HEIGHT,)
_OUTPUTS = f.OUTPUTS + (f.Output('user_height_xf', (_HEIGHT.name,), 'height, z-scored'),)


def test_table_shapes_and_dtypes_match_the_schema():
  spec = raw_feature_spec()
  assert set(spec) == {x.name for x in f.FEATURES}
  for feature in f.FEATURES:
    parsed = spec[feature.name]
    assert parsed.dtype.name == feature.dtype, feature.name
    # A scalar is required (FixedLen); an optional or multi-valued feature is VarLen.
    assert isinstance(parsed, tf.io.FixedLenFeature) == (feature.shape == f.SCALAR), feature.name


def test_every_transform_output_is_in_the_table_with_the_raw_features_it_reads(tiny_transform):
  out_dir, rows, transformed = tiny_transform
  assert set(transformed[0]) == {o.name for o in f.OUTPUTS}
  layer = tft.TFTransformOutput(out_dir).transform_features_layer()
  parsed = tf.io.parse_example(tf.constant([serialize_row(r, with_label=True) for r in rows[:4]]), raw_feature_spec())
  for output in f.OUTPUTS:
    # Its inputs alone compute it; without any one of them Transform prunes it.
    assert output.name in layer({n: parsed[n] for n in output.inputs}), output.name
    for missing in output.inputs:
      assert output.name not in layer({n: parsed[n] for n in output.inputs if n != missing}), (output.name, missing)


def test_a_new_feature_reaches_the_signature_inputs_and_the_range_checks_from_the_table_alone():
  read = (f.transformed_name(f.MOVIE_ID), 'user_height_xf')
  raw = f.raw_inputs(read, _TABLE, _OUTPUTS)
  assert raw == (f.MOVIE_ID, _HEIGHT.name)  # table order: the test's row comes last
  specs = signatures.signature_inputs(raw, _TABLE)
  assert specs[_HEIGHT.name].dtype == tf.int64 and specs[_HEIGHT.name].shape.as_list() == [None]
  assert _HEIGHT.name in signatures.recommend_input_names(raw, _TABLE)
  assert f.check_columns({_HEIGHT.name: np.array([180, 0])}, _TABLE) is None
  assert f.check_columns({_HEIGHT.name: np.array([180, 300])}, _TABLE) == (
      '"user_height" must be in 50..250, or 0 for unknown; got 300.')
  # In the model too: the parsed value fails the signature's assertion.
  @tf.function
  def check(height):
    signatures.check_ranges(signatures.to_parsed({_HEIGHT.name: height}, _TABLE), _TABLE)

  check(tf.constant([180, 0], tf.int64))
  with pytest.raises(tf.errors.InvalidArgumentError, match='user_height must be in 50..250'):
    check(tf.constant([300], tf.int64))


def test_ranges_skip_unknowns_and_list_padding():
  ids = np.array([[b'1', b'']], dtype=object)
  assert f.check_columns({f.USER_AGE: np.array([0, 30]), f.HISTORY_MOVIE_IDS: ids,
                          f.HISTORY_RATINGS: np.array([[4.0, 0.0]])}) is None
  assert 'history_ratings' in f.check_columns({f.HISTORY_MOVIE_IDS: np.array([[b'1', b'2']], dtype=object),
                                               f.HISTORY_RATINGS: np.array([[4.0, 0.0]])})
  assert '1..120' in f.check_columns({f.USER_AGE: np.array([10**12])})
  assert '788918400..4102444800' in f.check_columns({f.TIMESTAMP: np.array([-1])})


def test_raw_inputs_refuses_an_output_missing_from_the_table():
  with pytest.raises(ValueError, match='not in the OUTPUTS table'):
    f.raw_inputs(['no_such_xf'])


def test_docs_show_the_table_the_code_has():
  docs = (pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'features.md').read_text()
  assert f.markdown() in docs, 'docs/features.md is stale: paste `python -m transforms.features` into it.'
