"""The base of every model the Trainer builds: a ``tfrs.Model`` whose steps AutoGraph leaves alone.

Keras traces ``train_step`` and ``test_step`` inside a ``tf.function``, and by
default AutoGraph first rewrites their source and that of every layer they
call (the models, the TFRS tasks and metrics) to turn Python control flow on
tensors into graph ops. The models here have none (their branches are on
Python values: shapes, settings, ``training``), so that rewrite, about a fifth
of the Trainer's time and of every Tuner trial's first epoch, bought nothing.
``do_not_convert`` traces the steps as written; code that did branch on a
tensor would fail at trace time with TensorFlow's "using a tf.Tensor as a
Python bool" error, not silently change.
"""
import tensorflow as tf
import tensorflow_recommenders as tfrs


class Model(tfrs.Model):
  """``tfrs.Model`` with its training and evaluation steps traced without AutoGraph."""

  @tf.autograph.experimental.do_not_convert
  def train_step(self, inputs):
    return super().train_step(inputs)

  @tf.autograph.experimental.do_not_convert
  def test_step(self, inputs):
    return super().test_step(inputs)
