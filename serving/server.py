"""A local server for the pushed models with TF Serving's REST API.

    python -m serving.server --model-base-path outputs/serving/movielens_ranking

Routes (``[/versions/{v}]`` is optional; only the served version answers):

* ``GET  /v1/models/{name}[/versions/{v}]``: version status, as TF Serving;
* ``GET  /v1/models/{name}[/versions/{v}]/metadata``: signature defs;
* ``POST /v1/models/{name}[/versions/{v}]:predict``: ``instances`` or
  ``inputs``, any of ``serving_default``, ``serving_tf_example``, ``recommend``, ``recommend_diverse``,
  ``explain``;
* ``POST /v1/models/{name}[/versions/{v}]:recommend``: the convenience
  route, ``{"user_id": "196", "history_movie_ids": [...], "k": 10}``, every
  field optional; ``"diversity": 0.5`` (in ``names.DIVERSITY_RANGE``)
  re-ranks by genre variety through ``recommend_diverse``;
* ``POST /v1/models/{name}[/versions/{v}]:explain``: recommend's body plus a
  ``movie_id``: why the model rates that movie so for that user
  (serving/explain.py, docs/app.md);
* ``GET  /v1/models/{name}[/versions/{v}]/catalog``: the movies it recommends from;
* ``GET  /app/``: the model app, a page over these routes (serving/app/);
* ``POST /v1/users/{id}/ratings`` (with ``--feature-store``): one rating event
  or ``{"events": [...]}``; then ``:recommend`` and ``:predict`` take
  ``{"user_id": "196"}`` and the store fills what the caller leaves out
  (serving/feature_store/);
* ``GET /healthz`` (the process answers), ``GET /readyz`` (a version is
  loaded), ``GET /metrics`` (Prometheus).

``--processes N`` runs N server processes on one port (granian's workers),
each with its own copy of the model, its own batchers and its own hot swap;
the default is one a core, at most ``AUTO_PROCESSES_MAX`` (docs/serving.md
measured why). ``/metrics`` answers for all of them (serving/metrics.py) and
they share the request log.

Errors are TF Serving's shape, ``{"error": "..."}``, with a 4xx status for
anything the client can fix. Values outside the feature table's ranges
(``transforms/features.py``) are a 400 that names the range. The server
binds to 127.0.0.1 unless told otherwise. HTTP is granian's (RSGI: the
parser and the sockets are Rust, the handlers run on one asyncio loop);
docs/serving.md says why. See serving/README.md.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any, Awaitable, Callable, Dict, List, NamedTuple, Optional, Pattern, Sequence, Tuple  # noqa: E402

from absl import logging  # noqa: E402
from granian import Granian  # noqa: E402
from granian.constants import Interfaces, Loops  # noqa: E402
from granian.log import LogLevels  # noqa: E402
from granian.server.embed import Server as GranianServer  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import tensorflow as tf  # noqa: E402
import uvloop  # noqa: E402

from serving import codec, explain, feature_store, model_store, request_log as request_log_lib  # noqa: E402
from serving.metrics import CONTENT_TYPE, Metrics  # noqa: E402
from contract import names  # noqa: E402
from transforms import features as f  # noqa: E402

DEFAULT_MODEL_NAME = names.MODEL_NAME
_LOGGED_SIGNATURES = (names.SERVING_DEFAULT, names.SERVING_TF_EXAMPLE)
_JSON = 'application/json'
# --processes' default: one a core, up to this many. Two paid off on two
# cores (docs/serving.md); each process holds its own model (about 1 GB),
# so more is asked for, not assumed.
AUTO_PROCESSES_MAX = 2
# How long a process of several waits for its first version before it takes
# connections (its siblings take them meanwhile); then it serves, and
# /readyz says 503, as one process does from the start.
_WORKER_READY_WAIT_S = 120.0
# How the parent hands its settings to its processes (granian starts them).
_WORKER_ENV = 'MOVIELENS_SERVING_WORKER'


class Config:
  """What a server needs; ``parse_args`` fills it from the command line.

  Args:
    model_base_path: the Pusher's folder for this model (holds version folders).
    model_name: the name in URLs.
    host, port: where to listen; port 0 picks a free one.
    poll_s: seconds between looks for a new version.
    max_body_bytes: larger bodies get 413 (read to the end and dropped, so
      the client reads the answer rather than a reset connection).
    limits: rows per request and values per list.
    options: batching options.
    request_log, request_log_sample: CSV path for the request log (None: off),
      and the fraction of requests logged.
    request_timeout_s: a request the model has not answered by then gets a
      503 instead of waiting on (the model call itself is not interrupted).
    features: the feature table whose ranges every request is checked
      against (``transforms.features.FEATURES``).
    feature_store: a SQLite file or redis:// URL (None: no by-id requests).
    processes: server processes (``main`` runs them; ``Server`` and ``App``
      are one process).
    metrics_dir: the folder the processes of one server publish their
      metrics to (``main`` makes it; None: one process).
  """

  def __init__(self, model_base_path: str, model_name: str = DEFAULT_MODEL_NAME, host: str = '127.0.0.1',
               port: int = 8501, poll_s: float = 1.0, max_body_bytes: int = 1 << 20,
               limits: Optional[codec.Limits] = None, options: Optional[model_store.Options] = None,
               request_log: Optional[str] = None, request_log_sample: float = 1.0, request_timeout_s: float = 30.0,
               features: Sequence[f.Feature] = f.FEATURES, feature_store: Optional[str] = None,
               processes: int = 1, metrics_dir: Optional[str] = None):
    self.model_base_path, self.model_name, self.host, self.port = model_base_path, model_name, host, port
    self.poll_s, self.max_body_bytes = poll_s, max_body_bytes
    self.limits = limits or codec.Limits()
    self.options = options or model_store.Options()
    self.request_log, self.request_log_sample = request_log, request_log_sample
    self.request_timeout_s = request_timeout_s
    self.features = tuple(features)
    self.feature_store = feature_store
    self.processes, self.metrics_dir = processes, metrics_dir


class Response(NamedTuple):
  status: int
  body: bytes
  content_type: str = _JSON


def _dumps(payload: Any) -> bytes:
  return orjson.dumps(payload)


def _error(status: int, message: str) -> Response:
  return Response(status, _dumps({'error': message}))


def _finite(arrays) -> bool:
  return all(np.isfinite(a).all() for a in arrays if a.dtype.kind == 'f')


def _json_body(body: bytes) -> Dict[str, Any]:
  try:
    decoded = orjson.loads(body)
  except orjson.JSONDecodeError:
    # orjson refuses NaN, integers beyond 64 bits and lone surrogates; the
    # standard library reads them, so the checks can say what is wrong.
    try:
      decoded = json.loads(body)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
      raise codec.BadRequest(f'The body is not valid JSON: {str(error)[:200]}.') from None
  if not isinstance(decoded, dict):
    raise codec.BadRequest('The body must be a JSON object.')
  return decoded


def _tf_reason(message: str) -> str:
  """The line of a TensorFlow error that says what was wrong, without the graph's stack."""
  for line in message.splitlines():
    if line.strip() and not line[0].isspace() and not line.startswith(('Graph execution error', 'Detected at node')):
      return re.sub(r'\s*(\[\[.*\]\])?\s*(\[Op:.*\])?$', '', line)[:300]
  return message[:300]


def _version_status(version: int) -> Dict[str, Any]:
  return {'version': str(version), 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}


class Route(NamedTuple):
  """``handler(body, **groups)`` answers ``method`` on paths matching ``pattern``; ``label`` names it in /metrics."""
  method: str
  pattern: Pattern
  handler: Callable[..., Awaitable[Response]]
  label: str


_MODEL = r'/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?'


class App:
  """The routes, their handlers and what they share: the model store, metrics, limits and the request log.

  An RSGI application (granian calls ``__rsgi__``); ``handle`` is the part
  that knows no HTTP server.
  """

  def __init__(self, config: Config):
    self.config = config
    self.metrics = Metrics(config.metrics_dir)
    self.store = model_store.ModelStore(
        config.model_name, config.model_base_path, config.options, config.poll_s,
        on_batch=lambda signature, stats, outputs: self.metrics.on_batch(config.model_name, signature, stats, outputs),
        on_load=self._on_load, make_check=self._range_check)
    self.request_log = None
    if config.request_log:
      self.request_log = request_log_lib.RequestLog(config.request_log, config.request_log_sample,
                                                    on_drop=self.metrics.request_log_dropped.inc)
    self.feature_store = feature_store.open_store(config.feature_store) if config.feature_store else None
    # To add a route, add a line here (first match wins).
    self.routes: List[Route] = [
        self.route('POST', _MODEL + r':predict', self.predict, 'predict'),
        self.route('POST', _MODEL + r':recommend', self.recommend, 'recommend'),
        self.route('POST', _MODEL + r':explain', self.explain, 'explain'),
        self.route('POST', _MODEL + r':(?P<verb>[^/]*)', self.unknown_verb, 'other'),
        self.route('GET', _MODEL + r'/metadata', self.metadata, 'metadata'),
        self.route('GET', _MODEL + r'/catalog', self.catalog, 'catalog'),
        self.route('GET', _MODEL, self.status, 'status'),
        self.route('POST', r'/v1/users/(?P<user_id>[^/]+)/ratings', self.ratings, 'ratings'),
        self.route('GET', r'/healthz', self.healthz, 'healthz'),
        self.route('GET', r'/readyz', self.readyz, 'readyz'),
        self.route('GET', r'/metrics', self.prometheus, 'metrics'),
        self.route('GET', r'/app/?(?P<file>[^/]*)', self.app, 'app'),
    ]

  @staticmethod
  def route(method: str, pattern: str, handler: Callable[..., Awaitable[Response]], label: str) -> Route:
    return Route(method, re.compile(pattern), handler, label)

  def _on_load(self, version: int, ok: bool, seconds: float):
    self.metrics.model_loads.labels(self.config.model_name, 'ok' if ok else 'failed').inc()
    if ok:
      self.metrics.model_version.labels(self.config.model_name).set(version)

  # The HTTP side.

  async def __rsgi__(self, scope, proto):
    start = time.perf_counter()
    length = scope.headers.get('content-length')
    if length is not None and length.isdigit() and int(length) <= self.config.max_body_bytes:
      body = await proto()
    else:
      body = await self._read_limited(proto)
    if body is None:
      response, label, model = _error(413, f'The body is over {self.config.max_body_bytes} bytes, the limit '
                                      '(--max-body-bytes). Split the batch.'), 'other', ''
    else:
      response, label, model = await self.handle(scope.method, scope.path, body)
    proto.response_bytes(response.status, [('content-type', response.content_type)], response.body)
    self.metrics.observe_request(model, label, response.status, time.perf_counter() - start)

  async def _read_limited(self, proto) -> Optional[bytes]:
    """The body, or None once it passes the limit; the rest is read and dropped so the answer reaches the client."""
    chunks, size = [], 0
    async for chunk in proto:
      size += len(chunk)
      if size <= self.config.max_body_bytes:
        chunks.append(chunk)
      elif chunks:
        chunks = []
    return b''.join(chunks) if size <= self.config.max_body_bytes else None

  async def handle(self, method: str, path: str, body: bytes) -> Tuple[Response, str, str]:
    """(the response, the route's metrics label, the model name when it is the served one)."""
    for route in self.routes:
      match = route.pattern.fullmatch(path)
      if match is None:
        continue
      groups = match.groupdict()
      model = self.config.model_name if groups.get('name') == self.config.model_name else ''
      if method != route.method:
        if any(r.method == method and r.pattern.fullmatch(path) for r in self.routes):
          continue
        return _error(405, f'{method} is not allowed on {path}; use {route.method}.'), route.label, model
      try:
        return await route.handler(body, **groups), route.label, model
      except codec.BadRequest as error:
        return _error(error.status, str(error)), route.label, model
      except Exception as error:  # noqa: BLE001 -- logged with its stack; the client gets a 500, not a reset
        logging.exception('Internal error on %s %s', method, path)
        return _error(500, f'Internal error ({type(error).__name__}); the server logged it.'), route.label, model
    return _error(404, f'No route for {method} {path}; see /v1/models/<name>, /v1/models/<name>/metadata, '
                  '/v1/models/<name>:predict, /app/, /healthz, /readyz, /metrics.'), 'other', ''

  # Handlers.

  def _acquire(self, name: str, version: Optional[str]) -> model_store.Servable:
    if name != self.config.model_name:
      raise codec.BadRequest(f'Servable not found for request: Latest({name}); this server serves '
                             f'"{self.config.model_name}".', status=404)
    if version is not None and not version.isdigit():
      raise codec.BadRequest(f'The version must be a positive integer, got "{version}".')
    return self.store.acquire(None if version is None else int(version))

  async def status(self, body: bytes, name: str, version: Optional[str]) -> Response:
    servable = self._acquire(name, version)
    servable.release()
    return Response(200, _dumps({'model_version_status': [_version_status(servable.version)]}))

  async def metadata(self, body: bytes, name: str, version: Optional[str]) -> Response:
    servable = self._acquire(name, version)
    servable.release()
    return Response(200, _dumps({
        'model_spec': {'name': name, 'signature_name': '', 'version': str(servable.version)},
        'metadata': {'signature_def': {'signature_def': servable.signature_defs}}}))

  async def unknown_verb(self, body: bytes, name: str, version: Optional[str], verb: str) -> Response:
    raise codec.BadRequest(f'":{verb}" is not served here; use ":predict" (or ":recommend", ":explain").')

  async def predict(self, body: bytes, name: str, version: Optional[str]) -> Response:
    request = _json_body(body)
    servable = self._acquire(name, version)
    try:
      signature = _signature(servable, request.pop('signature_name', names.SERVING_DEFAULT))
      if self.feature_store and signature.name == names.SERVING_DEFAULT:
        request = feature_store.resolve_predict(self.feature_store, request, signature.inputs)
      arrays, row_format = codec.parse_predict(request, signature.inputs, self.config.limits)
      outputs = await self._run(signature, arrays)
    finally:
      servable.release()
    self._log(servable, signature.name, arrays, outputs)
    payload = codec.format_predict(outputs, row_format)
    # TF Serving writes NaN and Infinity (a model can produce them); orjson would write null.
    return Response(200, _dumps(payload) if _finite(outputs.values()) else json.dumps(payload).encode())

  async def recommend(self, body: bytes, name: str, version: Optional[str]) -> Response:
    request = _json_body(body)
    diverse = _diversity(request) > 0
    if not diverse:
      request.pop(names.DIVERSITY, None)
    servable = self._acquire(name, version)
    try:
      signature = _recommend_signature(servable, diverse)
      if self.feature_store:
        request = feature_store.resolve_recommend(self.feature_store, request, signature.inputs)
      arrays, _ = codec.parse_predict({'instances': [_recommend_instance(request, signature.inputs)]},
                                      signature.inputs, self.config.limits)
      outputs = await self._run(signature, arrays)
    finally:
      servable.release()
    ids, titles, scores = (outputs[n][0] for n in (names.MOVIE_IDS, names.TITLES, names.SCORES))
    recommendations = [{'movie_id': m.decode(), 'title': t.decode('utf-8', 'replace'), 'score': s}
                       for m, t, s in zip(ids, titles, scores.tolist()) if m]
    payload = {'model_version': str(servable.version), 'recommendations': recommendations}
    return Response(200, _dumps(payload) if _finite([scores]) else json.dumps(payload).encode())

  async def explain(self, body: bytes, name: str, version: Optional[str]) -> Response:
    request = _json_body(body)
    servable = self._acquire(name, version)
    try:
      signature = _signature(servable, names.EXPLAIN)
      movies = explain.load_catalog(servable.path)
      row = explain.explain_instance(request, signature.inputs, self.feature_store, movies)
      arrays, _ = codec.parse_predict({'instances': [row]}, signature.inputs, self.config.limits)
      outputs = await self._run(signature, arrays)
    finally:
      servable.release()
    return Response(200, _dumps(explain.format_explanation(outputs, row, movies, servable.version)))

  async def catalog(self, body: bytes, name: str, version: Optional[str]) -> Response:
    servable = self._acquire(name, version)
    servable.release()
    return Response(200, _dumps(explain.catalog(servable.path, servable.version)))

  async def app(self, body: bytes, file: str) -> Response:
    content, content_type = explain.app_file(file or 'index.html')
    return Response(200, content, content_type)

  async def ratings(self, body: bytes, user_id: str) -> Response:
    if self.feature_store is None:
      raise codec.BadRequest('This server has no feature store; start it with --feature-store.', status=404)
    return Response(200, _dumps(feature_store.apply_events(self.feature_store, user_id, _json_body(body))))

  async def healthz(self, body: bytes) -> Response:
    return Response(200, b'{"status":"ok"}')

  async def readyz(self, body: bytes) -> Response:
    servable = self.store.current()
    if servable is None:
      return _error(503, f'No version under {self.config.model_base_path} has loaded yet.')
    # With --processes N, this is the process the connection reached; /metrics'
    # serving_model_loads_total{result="ok"} counts the processes that have loaded.
    return Response(200, _dumps({'status': 'ready', 'model': servable.name, 'version': str(servable.version),
                                 'processes': self.config.processes}))

  async def prometheus(self, body: bytes) -> Response:
    return Response(200, self.metrics.exposition(), CONTENT_TYPE)

  # The hot path's parts.

  def _range_check(self, inputs: Dict[str, codec.InputSpec]):
    """A signature's range check from the feature table, for its batcher (None when no input has a range).

    The batcher checks each merged batch once, and each request alone only
    when the batch has a bad value, so one bad request fails alone.
    """
    table, columns = self.config.features, _ranged_inputs(inputs, self.config.features)
    if not columns:
      return None

    def check(arrays: Dict[str, np.ndarray]) -> Optional[codec.BadRequest]:
      message = f.check_columns({n: arrays[n] for n in columns}, table)
      return codec.BadRequest(message) if message else None
    return check

  async def _run(self, signature: model_store.Signature, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    rows = len(next(iter(arrays.values())))
    timeout_s = self.config.request_timeout_s
    future = signature.batcher.submit(arrays, rows)
    # A timer on the batcher's own future rather than wait_for's extra waiter
    # and callbacks; the batcher skips (or drops the answer of) a future that
    # is done.
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, future)
    try:
      return await future
    except asyncio.TimeoutError:
      raise codec.BadRequest(f'The model did not answer within {timeout_s:g} s (the server is overloaded); '
                             'retry later.', status=503) from None
    except tf.errors.InvalidArgumentError as error:
      raise codec.BadRequest(f'The model rejected the input: {_tf_reason(error.message)}') from None
    finally:
      timer.cancel()

  def _log(self, servable: model_store.Servable, signature: str, arrays, outputs):
    if self.request_log and signature in _LOGGED_SIGNATURES:
      self.request_log.log(servable.version, signature, arrays, outputs[names.PREDICTION_KEY])

  def close(self):
    self.store.stop()
    if self.request_log:
      self.request_log.close()
    if self.feature_store:
      self.feature_store.close()
    self.metrics.close()


class _Process(App):
  """The App of one of several server processes, which granian starts and stops."""

  def __rsgi_del__(self, loop):
    self.close()


def worker_app() -> App:
  """granian's factory in each process of ``--processes N``: the parent's settings, a model, then connections."""
  spec = json.loads(os.environ[_WORKER_ENV])
  threads = spec['tf_threads']
  # Before TensorFlow's first op: the processes split the cores instead of each sizing its pools to all of them.
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  config = parse_args(spec['argv'])
  config.metrics_dir = spec['metrics_dir']
  app = _Process(config)
  app.store.start(_WORKER_READY_WAIT_S)
  return app


def available_cores() -> int:
  """The cores this process may use: its CPU affinity, capped by a cgroup v2 quota (a Kubernetes CPU limit)."""
  cores = len(os.sched_getaffinity(0))
  try:
    with open('/sys/fs/cgroup/cpu.max') as fh:
      quota, period = fh.read().split()
    if quota != 'max':
      cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
  except (OSError, ValueError):
    pass
  return cores


def _expire(future: asyncio.Future):
  if not future.done():
    future.set_exception(asyncio.TimeoutError())


def _ranged_inputs(inputs: Sequence[str], table: Sequence[f.Feature]) -> Tuple[str, ...]:
  """The inputs the table gives a range, and those their values align with (to tell padding from values)."""
  by_name = {x.name: x for x in table}
  ranged = [n for n in inputs if n in by_name and by_name[n].valid_range is not None]
  aligned = [by_name[n].aligned_with for n in ranged if by_name[n].aligned_with in inputs]
  return tuple(dict.fromkeys(ranged + aligned))


def _signature(servable: model_store.Servable, name: Any) -> model_store.Signature:
  if not isinstance(name, str) or name not in servable.signatures:
    raise codec.BadRequest(f'Serving signature name: {json.dumps(name)} not found; this model serves '
                           f'{sorted(servable.signatures)}.')
  return servable.signatures[name]


def _diversity(body: Dict[str, Any]) -> float:
  """The body's optional variety weight (names.DIVERSITY_RANGE; absent is 0, the score order), checked."""
  value = body.get(names.DIVERSITY, names.DIVERSITY_RANGE[0])
  low, high = names.DIVERSITY_RANGE
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
    raise codec.BadRequest(f'"{names.DIVERSITY}" must be a number from {low:g} (by score) to {high:g} (the most '
                           f'varied genres), got {json.dumps(value)[:100]}; leave it out to rank by score.')
  return float(value)


def _recommend_signature(servable: model_store.Servable, diverse: bool) -> model_store.Signature:
  """recommend, or recommend_diverse for a request with a diversity weight above 0."""
  if diverse and names.RECOMMEND_DIVERSE not in servable.signatures:
    raise codec.BadRequest(f'"{names.DIVERSITY}" needs the {names.RECOMMEND_DIVERSE} signature, which version '
                           f'{servable.version} does not have; leave "{names.DIVERSITY}" out, or push a model '
                           'trained since it exists (make run).')
  return _signature(servable, names.RECOMMEND_DIVERSE if diverse else names.RECOMMEND)


def _recommend_instance(body: Dict[str, Any], inputs: Dict[str, codec.InputSpec]) -> Dict[str, Any]:
  """The convenience route's body as one recommend instance, defaults filled in.

  What the body leaves out is the feature table's ``unknown`` ("" for
  strings, 0 for user_age and timestamp: the signature's default age, and
  now), no history, and k = DEFAULT_K.
  """
  unknown = sorted(set(body) - set(inputs))
  if unknown:
    raise codec.BadRequest(f'Unknown fields {unknown}; this model\'s recommend takes {sorted(inputs)}, '
                           'each optional.')
  instance = {}
  for name, spec in inputs.items():
    if name in body:
      instance[name] = body[name]
    elif spec.rank == 2:
      instance[name] = []
    else:
      instance[name] = names.DEFAULT_K if name == names.K else ('' if spec.dtype == 'string' else 0)
  k = instance[names.K]
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= names.MAX_K:
    raise codec.BadRequest(f'"k" must be an integer from 1 to {names.MAX_K}, got {json.dumps(k)}.')
  ids, ratings = instance[f.HISTORY_MOVIE_IDS], instance[f.HISTORY_RATINGS]
  if not isinstance(ids, list) or not isinstance(ratings, list) or len(ids) != len(ratings):
    raise codec.BadRequest('"history_movie_ids" and "history_ratings" must be lists of the same length, '
                           'one rating per movie, oldest first.')
  # The signature's lists need one column even when the history is empty.
  instance[f.HISTORY_MOVIE_IDS], instance[f.HISTORY_RATINGS] = ids + [''], ratings + [0]
  return instance


def _free_port(host: str) -> int:
  with socket.socket() as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def _granian(app: App, host: str, port: int) -> GranianServer:
  # One Rust I/O thread: on two cores a second one only takes time from Python (docs/serving.md).
  return GranianServer(app, address=host, port=port, interface=Interfaces.RSGI, runtime_threads=1,
                       backlog=2048, websockets=False, log_enabled=True, log_level=LogLevels.warning)


def _wait_listening(host: str, port: int, deadline: float) -> bool:
  while time.monotonic() < deadline:
    try:
      with socket.create_connection((host, port), timeout=1):
        return True
    except OSError:
      time.sleep(0.02)
  return False


class Server:
  """The server on an event loop of its own thread: for tests and benchmarks.

  ``start()`` returns the port once a version is served (or ``wait_s`` ran
  out) and the socket accepts connections.
  """

  def __init__(self, config: Config):
    self.config = config
    self.app = App(config)
    self.port: Optional[int] = None
    self._loop: Optional[asyncio.AbstractEventLoop] = None
    self._http: Optional[GranianServer] = None
    self._thread: Optional[threading.Thread] = None

  def start(self, wait_s: float = 60.0) -> int:
    self.app.store.start(wait_s)
    self.port = self.config.port or _free_port(self.config.host)
    self._loop = uvloop.new_event_loop()
    self._http = _granian(self.app, self.config.host, self.port)

    def run():
      asyncio.set_event_loop(self._loop)
      self._loop.run_until_complete(self._http.serve())

    self._thread = threading.Thread(target=run, daemon=True, name='http')
    self._thread.start()
    if not _wait_listening(self.config.host, self.port, time.monotonic() + 30):
      raise RuntimeError(f'The server did not listen on {self.config.host}:{self.port}.')
    return self.port

  def stop(self):
    if self._thread:
      self._loop.call_soon_threadsafe(self._http.stop)
      self._thread.join()
      self._loop.close()
    self.app.close()


def parse_args(argv: Optional[List[str]] = None) -> Config:
  parser = argparse.ArgumentParser(prog='python -m serving.server', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model-base-path', required=True,
                      help="the Pusher's folder for the model, holding <version>/saved_model.pb")
  parser.add_argument('--model-name', default=DEFAULT_MODEL_NAME, help='the name in /v1/models/<name>')
  parser.add_argument('--host', default='127.0.0.1', help='0.0.0.0 to accept other machines')
  parser.add_argument('--port', type=int, default=8501, help="TF Serving's REST port by default")
  parser.add_argument('--poll-s', type=float, default=1.0, help='seconds between looks for a new version')
  parser.add_argument('--max-body-bytes', type=int, default=1 << 20)
  parser.add_argument('--max-instances', type=int, default=1000, help='examples in one request')
  parser.add_argument('--max-list', type=int, default=256, help='values in one list input of one example')
  defaults = model_store.Options()
  parser.add_argument('--max-batch-rows', type=int, default=defaults.max_batch_rows,
                      help='rows in one merged predict call')
  parser.add_argument('--max-recommend-rows', type=int, default=defaults.max_recommend_rows,
                      help='users in one merged recommend call')
  parser.add_argument('--workers', type=int, default=defaults.workers, help='threads calling each signature')
  parser.add_argument('--batch-wait-ms', type=float, default=defaults.batch_wait_s * 1000,
                      help='how long a free batcher waits for more requests before it runs what is queued')
  parser.add_argument('--processes', type=int, default=0,
                      help=f'server processes on the port, each with the model (0: one a core, at most '
                           f'{AUTO_PROCESSES_MAX})')
  parser.add_argument('--request-log', default=None,
                      help='CSV of served examples for `python -m pipeline.validate LOG --kind serving`')
  parser.add_argument('--request-log-sample', type=float, default=1.0, help='fraction of requests logged')
  parser.add_argument('--request-timeout-s', type=float, default=30.0,
                      help='answer 503 when the model has not answered by then')
  parser.add_argument('--feature-store', default=None,
                      help='SQLite file or redis://host:port/db for by-id requests (make feature-store seeds it)')
  args = parser.parse_args(argv)
  if args.batch_wait_ms < 0:
    parser.error(f'--batch-wait-ms must be 0 (run at once) or more, got {args.batch_wait_ms:g}.')
  if args.processes < 0:
    parser.error(f'--processes must be 0 (one a core) or more, got {args.processes}.')
  return Config(args.model_base_path, args.model_name, args.host, args.port, args.poll_s, args.max_body_bytes,
                codec.Limits(args.max_instances, args.max_list),
                model_store.Options(args.max_batch_rows, args.max_recommend_rows, args.workers,
                                    args.batch_wait_ms / 1000),
                args.request_log, args.request_log_sample, args.request_timeout_s,
                feature_store=args.feature_store,
                processes=args.processes or min(available_cores(), AUTO_PROCESSES_MAX))


async def _serve(config: Config):
  app = App(config)
  # Serve at once; /readyz says 503 until a version has loaded.
  app.store.start()
  http = _granian(app, config.host, config.port)
  loop = asyncio.get_running_loop()
  # Kubernetes sends SIGTERM: granian stops accepting and lets requests in flight finish.
  for signum in (signal.SIGINT, signal.SIGTERM):
    loop.add_signal_handler(signum, http.stop)
  logging.info('Serving %s from %s on http://%s:%d', config.model_name, config.model_base_path, config.host,
               config.port)
  await http.serve()
  app.close()


def _serve_processes(config: Config, argv: List[str]):
  """``config.processes`` processes on one port, started, watched and stopped by granian."""
  metrics_dir = tempfile.mkdtemp(prefix=f'serving-metrics-{os.getpid()}-')
  if config.request_log:
    request_log_lib.create(config.request_log)  # the header, once, before any process appends
  os.environ[_WORKER_ENV] = json.dumps({'argv': argv, 'metrics_dir': metrics_dir,
                                        'tf_threads': max(1, available_cores() // config.processes)})
  multiprocessing.set_start_method('spawn', force=True)  # a forked TensorFlow runtime is not safe to use
  logging.info('Serving %s from %s on http://%s:%d with %d processes', config.model_name, config.model_base_path,
               config.host, config.port, config.processes)
  try:
    # granian stops accepting on SIGTERM and lets requests in flight finish; a process that dies is restarted.
    Granian('serving.server:worker_app', factory=True, address=config.host, port=config.port,
            interface=Interfaces.RSGI, workers=config.processes, runtime_threads=1, loop=Loops.uvloop,
            backlog=2048, websockets=False, log_level=LogLevels.warning, respawn_failed_workers=True).serve()
  finally:
    shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
  logging.set_verbosity(logging.INFO)
  argv = sys.argv[1:] if argv is None else argv
  config = parse_args(argv)
  if config.processes == 1:
    uvloop.run(_serve(config))
  else:
    _serve_processes(config, argv)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
