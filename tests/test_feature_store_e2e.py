"""The offline/online consistency check against a real MovieLensExampleGen executor run on MovieLens 100K.

tests/test_feature_store.py runs the same check in seconds against
ExampleGen's functions on the same files; this one reads what the executor's
Beam pipeline wrote to the test split.
"""
import random

import pytest

from components.movielens_example_gen import split
from test_example_gen import _read_split, _run_executor
from test_feature_store import _as_written, _assert_store_serves, ml100k_stores  # noqa: F401 (a fixture)


@pytest.mark.e2e
def test_store_serves_what_the_exampleGen_executor_wrote(ml100k_dir, ml100k_stores, tmp_path):  # noqa: F811
  examples, _, error = _run_executor(str(ml100k_dir), str(tmp_path), max_bad_fraction=0.01)
  assert error is None
  written = random.Random(1).sample(_read_split(examples, split.TEST), 500)
  for s in ml100k_stores.values():
    _assert_store_serves(s, [_as_written(e) for e in written])
