"""The Pusher executor recognises a model already pushed by its fingerprint."""
import pytest

from components.idempotent_pusher import find_pushed_version

pytestmark = pytest.mark.unit


def _model(path, fingerprint: bytes):
  path.mkdir(parents=True)
  (path / 'fingerprint.pb').write_bytes(fingerprint)
  return str(path)


def test_finds_the_version_with_the_same_fingerprint(tmp_path):
  serving = tmp_path / 'serving'
  _model(serving / '100', b'old')
  _model(serving / '200', b'same')
  candidate = _model(tmp_path / 'candidate', b'same')
  assert find_pushed_version(candidate, str(serving)) == '200'


def test_a_new_model_or_an_empty_destination_is_pushed(tmp_path):
  serving = tmp_path / 'serving'
  candidate = _model(tmp_path / 'candidate', b'new')
  assert find_pushed_version(candidate, str(serving)) is None
  _model(serving / '100', b'old')
  assert find_pushed_version(candidate, str(serving)) is None
  # Without a fingerprint there is nothing to compare: push.
  assert find_pushed_version(str(tmp_path), str(serving)) is None
