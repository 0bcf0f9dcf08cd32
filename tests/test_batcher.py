"""The batcher merges concurrent requests, pads their lists and gives each its own rows back."""
import asyncio
import time

import numpy as np
import pytest
import tensorflow as tf

from serving import batcher as batcher_lib, server


@tf.function
def _row_sums(ids, values):
  """Per row: how many ids are not padding, and the sum of the values."""
  return {'present': tf.reduce_sum(tf.cast(tf.not_equal(ids, b''), tf.int32), axis=1),
          'total': tf.reduce_sum(values, axis=1)}


def _request(width: int, value: float):
  return {'ids': np.array([[b'm%d' % i for i in range(width)]], dtype=object),
          'values': np.full((1, width), value, np.float32)}


def _settled(batches, requests: int, timeout_s: float = 10.0):
  """The batch stats once every request is counted: on_batch runs on the worker after the answers go out."""
  deadline = time.monotonic() + timeout_s
  while sum(b.requests for b in batches) < requests and time.monotonic() < deadline:
    time.sleep(0.01)
  return batches


def _serve(batcher, *bursts):
  """Each burst's requests submitted in one loop turn, a burst once the one before is answered."""
  async def run():
    answers = []
    for requests in bursts:
      answers.append(await asyncio.gather(*[batcher.submit(r, 1) for r in requests]))
    return answers
  try:
    return asyncio.run(run())
  finally:
    batcher.close()


@pytest.mark.parametrize('wait_s', [0.0, 0.05])
def test_merged_requests_of_different_widths_each_get_their_own_answer(wait_s):
  batches = []
  batcher = batcher_lib.Batcher(_row_sums, max_rows=64, wait_s=wait_s,
                                on_batch=lambda stats, outputs: batches.append(stats))
  widths = [1, 5, 3, 7, 2, 6]
  requests = [_request(w, float(i)) for i, w in enumerate(widths)]
  for answers in _serve(batcher, *[requests + requests, requests]):
    assert [int(a['present'][0]) for a in answers[-len(widths):]] == widths  # padding "" and 0 counts for nothing
    assert [float(a['total'][0]) for a in answers[-len(widths):]] == [w * float(i) for i, w in enumerate(widths)]
  sizes = [b.requests for b in _settled(batches, 3 * len(widths))]
  # The first request of all comes after a quiet spell and runs at once; the
  # rest of its burst queue behind it.
  assert sizes[:2] == [1, 2 * len(widths) - 1]
  if wait_s:
    # By the next burst requests are arriving fast: its first waits for the
    # rest, and all run as one call.
    assert sizes[2:] == [len(widths)]
  else:
    assert sizes[2:] == [1, len(widths) - 1]


def test_a_request_after_a_quiet_spell_does_not_wait():
  batcher = batcher_lib.Batcher(_row_sums, max_rows=64, wait_s=30.0)
  start = time.monotonic()
  (answer,), = _serve(batcher, [_request(2, 1.0)])
  # A 30 s wait would show: no company is expected, so it ran at once.
  assert float(answer['total'][0]) == 2.0 and time.monotonic() - start < 10.0


def test_a_full_batch_does_not_wait_and_the_limit_splits_batches():
  batches = []
  batcher = batcher_lib.Batcher(_row_sums, max_rows=3, wait_s=10.0,
                                on_batch=lambda stats, outputs: batches.append(stats))
  # The first burst teaches the batcher that requests come fast, so a free
  # worker then waits for company.
  _, answers = _serve(batcher, [_request(2, 1.0) for _ in range(15)], [_request(2, 1.0) for _ in range(6)])
  # A 10 s wait would time the test out: three rows reach the limit and run at once.
  assert [float(a['total'][0]) for a in answers] == [2.0] * 6
  assert [b.rows for b in _settled(batches, 21)][-2:] == [3, 3]


def test_pad_fills_lists_to_the_widest_with_padding():
  blocks = [np.array([[b'a']], dtype=object), np.array([[b'b', b'c', b'd']], dtype=object)]
  assert batcher_lib._pad(blocks).tolist() == [[b'a', b'', b''], [b'b', b'c', b'd']]
  numbers = [np.array([[1, 2]], np.int64), np.array([[3]], np.int64)]
  merged = batcher_lib._pad(numbers)
  assert merged.dtype == np.int64 and merged.tolist() == [[1, 2], [3, 0]]
  assert batcher_lib._pad([np.array([1.0], np.float32), np.array([2.0, 3.0], np.float32)]).tolist() == [1, 2, 3]


def test_the_server_flag_sets_the_wait_and_refuses_a_negative_one(capsys):
  assert server.parse_args(['--model-base-path', 'x', '--batch-wait-ms', '3']).options.batch_wait_s == 0.003
  with pytest.raises(SystemExit):
    server.parse_args(['--model-base-path', 'x', '--batch-wait-ms', '-1'])
  assert '--batch-wait-ms must be 0 (run at once) or more, got -1.' in capsys.readouterr().err
