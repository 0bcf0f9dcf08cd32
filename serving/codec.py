"""TF Serving's REST request and response formats, checked against a signature.

Requests come as the row format (``{"instances": [...]}``) or the columnar
one (``{"inputs": ...}``), as in
https://www.tensorflow.org/tfx/serving/api_rest#request_format_2. Every
problem with a request raises ``BadRequest`` with a message that says what
to send instead; nothing here lets a malformed request reach TensorFlow.
"""
import base64
import itertools
import math
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

_INT_RANGES = {'int32': (-2**31, 2**31 - 1), 'int64': (-2**63, 2**63 - 1)}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class BadRequest(ValueError):
  """A request the server will not answer with a result: the HTTP status and a message for the client.

  4xx for what the client can fix; also the 503 of an overloaded server.
  """

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


class InputSpec:
  """What one signature input accepts: a name, a dtype name and a rank (batch included)."""

  def __init__(self, name: str, dtype: str, rank: int):
    self.name, self.dtype, self.rank = name, dtype, rank

  def describe(self) -> str:
    kind = {'string': 'a string', 'int32': 'an integer', 'int64': 'an integer', 'float32': 'a number'}[self.dtype]
    return kind if self.rank == 1 else f'a list of {kind.split(" ", 1)[1]}s'


class Limits:
  """Bounds on one request, so no request can take the server's memory.

  Args:
    max_rows: instances in one request.
    max_width: values in one list-valued input of one instance.
  """

  def __init__(self, max_rows: int = 1000, max_width: int = 256):
    self.max_rows, self.max_width = max_rows, max_width


def _scalar(spec: InputSpec, value: Any, where: str):
  if spec.dtype == 'string':
    if isinstance(value, str):
      try:
        return value.encode('utf-8')
      except UnicodeEncodeError:
        raise BadRequest(f'{where}: the string is not valid UTF-8 (lone surrogate); send UTF-8 text.') from None
    if isinstance(value, dict) and set(value) == {'b64'} and isinstance(value['b64'], str):
      try:
        return base64.b64decode(value['b64'], validate=True)
      except ValueError:
        raise BadRequest(f'{where}: "b64" is not valid base64.') from None
    raise BadRequest(f'{where}: expected a string (or {{"b64": "..."}}), got {_kind(value)}.')
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise BadRequest(f'{where}: expected a number, got {_kind(value)}.')
  if spec.dtype in _INT_RANGES:
    if isinstance(value, float):
      raise BadRequest(f'{where}: expected an integer, got {_short(value)}.')
    low, high = _INT_RANGES[spec.dtype]
    if not low <= value <= high:
      raise BadRequest(f'{where}: {_short(value)} is outside the {spec.dtype} range.')
    return value
  # abs() first: an integer too large for a float compares fine but cannot become one.
  if abs(value) > _FLOAT32_MAX or not math.isfinite(value):
    raise BadRequest(f'{where}: expected a finite number, got {_short(value)}.')
  return value


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 40 else text[:37] + '...'


def _kind(value: Any) -> str:
  if value is None:
    return 'null'
  return {dict: 'an object', list: 'a list', str: 'a string', bool: 'a boolean'}.get(type(value), 'a number')


# Lists up to this long are checked in Python (min, max, one comparison a
# value): for a request's few values that is cheaper than numpy's
# reductions and casts, which cost microseconds each however small the array.
_SMALL = 64
_NUMPY = {'int32': np.int32, 'int64': np.int64, 'float32': np.float32}


def _fast(spec: InputSpec, values: List[Any]):
  """``values`` as the signature's dtype when all are of the plain JSON type, else None.

  A batch of 100 instances has about 10,000 values, so each list is checked
  in passes that run in C (``set(map(type, ...))``, numpy), not a Python
  test per value; a short list is checked with builtins (``_SMALL``).
  Anything unusual (base64 objects, a wrong type, a value out of range) goes
  to the per-value path, which accepts it or says exactly what is wrong.
  """
  types = set(map(type, values))
  if spec.dtype == 'string':
    if not types <= {str}:
      return None
    try:
      # One encode and one split in C instead of an encode a value.
      parts = '\x00'.join(values).encode('utf-8').split(b'\x00')
    except UnicodeEncodeError:  # a lone surrogate: the per-value path says where
      return None
    if len(parts) != len(values):  # a value holds a NUL (or there are none): one at a time
      parts = [v.encode('utf-8') for v in values]
    return np.array(parts, dtype=object)
  if spec.dtype in _INT_RANGES:
    if not types <= {int}:
      return None
    low, high = _INT_RANGES[spec.dtype]
    if len(values) <= _SMALL:
      # Python's ints compare exactly at any size, so nothing overflows here.
      return np.array(values, _NUMPY[spec.dtype]) if not values or low <= min(values) <= max(values) <= high else None
    try:
      array = np.array(values, dtype=np.int64)
    except OverflowError:  # beyond int64
      return None
    if spec.dtype != 'int64' and array.size and not (low <= array.min() and array.max() <= high):
      return None
    return array.astype(spec.dtype, copy=False)
  if not types <= {int, float}:  # bool is a type of its own here, so true and false are refused
    return None
  if len(values) <= _SMALL:
    # NaN fails every comparison, and an integer compares exactly, so this refuses NaN, inf and overflow.
    return np.array(values, np.float32) if all(-_FLOAT32_MAX <= v <= _FLOAT32_MAX for v in values) else None
  try:
    array = np.array(values, dtype=np.float64)
  except OverflowError:  # an integer beyond float64
    return None
  if array.size and not np.abs(array).max() <= _FLOAT32_MAX:  # NaN fails this too
    return None
  return array.astype(np.float32)


def _column(spec: InputSpec, values: List[Any], limits: Limits) -> np.ndarray:
  """One input's values, one per instance, as the array the signature takes."""
  if spec.rank == 1:
    fast = _fast(spec, values)
    if fast is not None:
      return fast
    items = [_scalar(spec, v, f'input "{spec.name}", instance {i}') for i, v in enumerate(values)]
    return np.array(items, dtype=object if spec.dtype == 'string' else spec.dtype)
  if not set(map(type, values)) <= {list}:
    i, row = next((i, row) for i, row in enumerate(values) if not isinstance(row, list))
    raise BadRequest(f'input "{spec.name}", instance {i}: expected a list, got {_kind(row)}.')
  widths = set(map(len, values))
  if widths and max(widths) > limits.max_width:
    i, row = next((i, row) for i, row in enumerate(values) if len(row) > limits.max_width)
    raise BadRequest(f'input "{spec.name}", instance {i}: {len(row)} values; at most {limits.max_width}.')
  if len(widths) > 1:
    raise BadRequest(f'input "{spec.name}": instances have lists of different lengths ({min(widths)} and '
                     f'{max(widths)}); pad each list at the end ("" for strings, 0 for numbers) to one length.')
  width = widths.pop() if widths else 0
  flat = list(itertools.chain.from_iterable(values))
  array = _fast(spec, flat)
  if array is None:
    items = [_scalar(spec, v, f'input "{spec.name}", instance {i}') for i, row in enumerate(values) for v in row]
    array = np.array(items, dtype=object if spec.dtype == 'string' else spec.dtype)
  return array.reshape(len(values), width)


def parse_predict(body: Any, specs: Mapping[str, InputSpec], limits: Limits) -> Tuple[Dict[str, np.ndarray], bool]:
  """Checks a :predict body against a signature's inputs.

  Args:
    body: the decoded JSON body, without ``signature_name``.
    specs: the signature's inputs by name.
    limits: request bounds.

  Returns:
    (arrays by input name, each with one row per instance; True for the
    row format, False for the columnar one).

  Raises:
    BadRequest: with what is wrong and what to send.
  """
  has_instances, has_inputs = 'instances' in body, 'inputs' in body
  if has_instances == has_inputs:
    raise BadRequest('Send exactly one of "instances" (row format) or "inputs" (columnar format).')
  unknown = set(body) - {'instances', 'inputs'}
  if unknown:
    raise BadRequest(f'Unknown top-level keys {sorted(unknown)}; a predict body has "signature_name" and '
                     '"instances" or "inputs".')
  names = sorted(specs)
  if has_instances:
    instances = body['instances']
    if not isinstance(instances, list) or not instances:
      raise BadRequest('"instances" must be a non-empty list, one element per example.')
    _check_rows(len(instances), limits)
    named = all(isinstance(x, dict) and set(x) != {'b64'} for x in instances)
    if len(names) == 1 and not named:
      columns = {names[0]: instances}
    else:
      wanted = set(names)
      for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
          raise BadRequest(f'instance {i}: expected an object with the inputs {names}, got {_kind(instance)}.')
        if instance.keys() != wanted:
          _check_names(instance, specs, f'instance {i}')
      columns = {n: [instance[n] for instance in instances] for n in names}
    return {n: _column(specs[n], columns[n], limits) for n in names}, True

  inputs = body['inputs']
  if len(names) == 1 and not isinstance(inputs, dict):
    inputs = {names[0]: inputs}
  if not isinstance(inputs, dict):
    raise BadRequest(f'"inputs" must be an object with the inputs {names}, got {_kind(inputs)}.')
  _check_names(inputs, specs, '"inputs"')
  sizes = {}
  for n in names:
    if not isinstance(inputs[n], list) or not inputs[n]:
      raise BadRequest(f'"inputs"."{n}" must be a non-empty list, one element per example.')
    sizes[n] = len(inputs[n])
  if len(set(sizes.values())) > 1:
    raise BadRequest(f'"inputs" lists have different lengths {sizes}; each needs one element per example.')
  _check_rows(len(inputs[names[0]]), limits)
  return {n: _column(specs[n], inputs[n], limits) for n in names}, False


def _check_rows(rows: int, limits: Limits):
  if rows > limits.max_rows:
    raise BadRequest(f'{rows} examples in one request; at most {limits.max_rows}. Split the batch.', status=413)


def _check_names(given: Mapping[str, Any], specs: Mapping[str, InputSpec], where: str):
  missing = sorted(set(specs) - set(given))
  extra = sorted(set(given) - set(specs))
  if missing:
    raise BadRequest(f'{where}: missing inputs {missing}; this signature takes ' + ', '.join(
        f'"{n}" ({specs[n].describe()})' for n in sorted(specs)) + '.')
  if extra:
    raise BadRequest(f'{where}: unknown inputs {extra}; this signature takes {sorted(specs)}.')


def _jsonable(array: np.ndarray, name: str):
  if array.dtype == object:
    if name.endswith('_bytes'):
      return _map(array, lambda b: {'b64': base64.b64encode(b).decode('ascii')})
    return _texts(np.asarray(array))
  return array.tolist()


def _texts(array: np.ndarray):
  """A bytes array as nested lists of text: one join, decode and split in C (as ``_fast`` encodes)."""
  if array.size == 0:
    return array.tolist()  # nested empty lists, nothing to decode
  flat = array.ravel().tolist()
  texts = b'\x00'.join(flat).decode('utf-8', 'replace').split('\x00')
  if len(texts) != len(flat):  # an output holds a NUL (or there are none): one at a time
    texts = [b.decode('utf-8', 'replace') for b in flat]
  for size in reversed(array.shape[1:]):
    texts = [texts[i:i + size] for i in range(0, len(texts), size)]
  return texts[0] if array.ndim == 0 else texts


def _map(array, fn):
  """``fn`` of every element of an array of any rank (or of a scalar), as nested lists."""
  def walk(value):
    return [walk(v) for v in value] if isinstance(value, list) else fn(value)
  return walk(array.tolist() if isinstance(array, np.ndarray) else array)


def format_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> Dict[str, Any]:
  """TF Serving's response: ``predictions`` for rows, ``outputs`` for columns.

  With one output its values stand alone; with several, each row (or the
  whole ``outputs``) is an object keyed by output name. Strings are UTF-8
  text, and base64 objects for outputs whose name ends in ``_bytes``, as in
  TF Serving.
  """
  names = sorted(outputs)
  columns = {n: _jsonable(outputs[n], n) for n in names}
  if not row_format:
    return {'outputs': columns[names[0]] if len(names) == 1 else columns}
  if len(names) == 1:
    return {'predictions': columns[names[0]]}
  rows = len(columns[names[0]])
  return {'predictions': [{n: columns[n][i] for n in names} for i in range(rows)]}
