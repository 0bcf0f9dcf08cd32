"""Shared fixtures. TF_USE_LEGACY_KERAS must be set before TensorFlow loads."""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ML100K_DIR = pathlib.Path(os.environ.get('MOVIELENS_DATA_DIR', REPO_ROOT.parent / 'shared' / 'data' / 'ml-100k'))


@pytest.fixture(scope='session')
def ml100k_dir() -> pathlib.Path:
  if not (ML100K_DIR / 'u.data').exists():
    pytest.fail(f'MovieLens 100K not found at {ML100K_DIR}; set MOVIELENS_DATA_DIR to a GroupLens ml-100k directory.')
  return ML100K_DIR
