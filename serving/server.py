"""A local server for the pushed models with TF Serving's REST API.

    python -m serving.server --model-base-path outputs/serving/movielens_ranking

Routes (``[/versions/{v}]`` is optional; only the served version answers):

* ``GET  /v1/models/{name}[/versions/{v}]``: version status, as TF Serving;
* ``GET  /v1/models/{name}[/versions/{v}]/metadata``: signature defs;
* ``POST /v1/models/{name}[/versions/{v}]:predict``: ``instances`` or
  ``inputs``, any of ``serving_default``, ``serving_tf_example``, ``recommend``;
* ``POST /v1/models/{name}[/versions/{v}]:recommend``: the convenience
  route, ``{"user_id": "196", "history_movie_ids": [...], "k": 10}``, every
  field optional;
* ``POST /v1/models/{name}[/versions/{v}]:explain``: recommend's body plus a
  ``movie_id``: why the model scores that movie so for that user
  (serving/explain.py, docs/app.md);
* ``GET  /v1/models/{name}[/versions/{v}]/catalog``: the movies it recommends from;
* ``GET  /app/``: the model app, a page over these routes (serving/app/);
* ``POST /v1/users/{id}/ratings`` (with ``--feature-store``): one rating event
  or ``{"events": [...]}``; then ``:recommend`` and ``:predict`` take
  ``{"user_id": "196"}`` and the store fills what the caller leaves out
  (serving/feature_store/);
* ``GET /healthz`` (the process answers), ``GET /readyz`` (a version is
  loaded), ``GET /metrics`` (Prometheus).

Errors are TF Serving's shape, ``{"error": "..."}``, with a 4xx status for
anything the client can fix. The server binds to 127.0.0.1 unless told
otherwise. See serving/README.md.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

from absl import logging  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tornado.httpserver  # noqa: E402
import tornado.netutil  # noqa: E402
import tornado.web  # noqa: E402

from serving import codec, explain, feature_store, model_store  # noqa: E402
from serving.metrics import CONTENT_TYPE, Metrics  # noqa: E402
from serving.request_log import RequestLog  # noqa: E402
from contract import names  # noqa: E402
from transforms import features as f  # noqa: E402

DEFAULT_MODEL_NAME = names.MODEL_NAME
_LOGGED_SIGNATURES = (names.SERVING_DEFAULT, names.SERVING_TF_EXAMPLE)
# The model app's static files (no build step), served at /app/.
APP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'app')


class Config:
  """What a server needs; ``parse_args`` fills it from the command line.

  Args:
    model_base_path: the Pusher's folder for this model (holds version folders).
    model_name: the name in URLs.
    host, port: where to listen; port 0 picks a free one.
    poll_s: seconds between looks for a new version.
    max_body_bytes: larger bodies get 413.
    limits: rows per request and values per list.
    options: batching options.
    request_log, request_log_sample: CSV path for the request log (None: off),
      and the fraction of requests logged.
    request_timeout_s: a request the model has not answered by then gets a
      503 instead of waiting on (the model call itself is not interrupted).
    feature_store: a SQLite file or redis:// URL (None: no by-id requests).
  """

  def __init__(self, model_base_path: str, model_name: str = DEFAULT_MODEL_NAME, host: str = '127.0.0.1',
               port: int = 8501, poll_s: float = 1.0, max_body_bytes: int = 1 << 20,
               limits: Optional[codec.Limits] = None, options: Optional[model_store.Options] = None,
               request_log: Optional[str] = None, request_log_sample: float = 1.0, request_timeout_s: float = 30.0,
               feature_store: Optional[str] = None):
    self.model_base_path, self.model_name, self.host, self.port = model_base_path, model_name, host, port
    self.poll_s, self.max_body_bytes = poll_s, max_body_bytes
    self.limits = limits or codec.Limits()
    self.options = options or model_store.Options()
    self.request_log, self.request_log_sample = request_log, request_log_sample
    self.request_timeout_s = request_timeout_s
    self.feature_store = feature_store


class _State:
  """Shared by every handler: the model store, metrics, limits and the request log."""

  def __init__(self, config: Config):
    self.config = config
    self.metrics = Metrics()
    self.store = model_store.ModelStore(
        config.model_name, config.model_base_path, config.options, config.poll_s,
        on_batch=self.metrics.on_batch, on_load=self._on_load)
    self.request_log = None
    if config.request_log:
      self.request_log = RequestLog(config.request_log, config.request_log_sample,
                                    on_drop=self.metrics.request_log_dropped.inc)
    self.feature_store = feature_store.open_store(config.feature_store) if config.feature_store else None

  def _on_load(self, version: int, ok: bool, seconds: float):
    self.metrics.model_loads.labels(self.config.model_name, 'ok' if ok else 'failed').inc()
    if ok:
      self.metrics.model_version.labels(self.config.model_name).set(version)


class _Handler(tornado.web.RequestHandler):
  """JSON in and out, errors as ``{"error": ...}``, a metric per request."""

  ROUTE = 'other'

  def initialize(self, state: _State):
    self.state = state
    self._start = time.perf_counter()

  def set_default_headers(self):
    self.set_header('Content-Type', 'application/json')

  def prepare(self):
    length = self.request.headers.get('Content-Length')
    if length and length.isdigit() and int(length) > self.state.config.max_body_bytes:
      raise codec.BadRequest(f'The body is {length} bytes; at most {self.state.config.max_body_bytes}. '
                             'Split the batch.', status=413)

  def write_json(self, status: int, payload: Any):
    self.set_status(status)
    # NaN and Infinity are written as TF Serving writes them (a model fed
    # extreme values can produce them); strict JSON has no spelling for them.
    self.finish(json.dumps(payload, ensure_ascii=False))

  def write_error(self, status_code: int, **kwargs):
    error = kwargs.get('exc_info', (None, None, None))[1]
    if isinstance(error, codec.BadRequest):
      self.set_status(error.status)
      message = str(error)
    elif isinstance(error, tornado.web.HTTPError):
      message = error.log_message or self._reason
    else:
      message = f'Internal error ({type(error).__name__}); the server logged it.' if error else self._reason
    self.finish(json.dumps({'error': message}))

  def log_exception(self, typ, value, tb):
    if not isinstance(value, codec.BadRequest):  # a client error is not the server's to log
      super().log_exception(typ, value, tb)

  def on_finish(self):
    name = self.path_kwargs.get('name') or (self.path_args[0] if self.path_args else '')
    model = name if name == self.state.config.model_name else ''
    self.state.metrics.requests.labels(model, self.ROUTE, str(self.get_status())).inc()
    self.state.metrics.latency.labels(model, self.ROUTE).observe(time.perf_counter() - self._start)

  def json_body(self) -> Dict[str, Any]:
    try:
      body = json.loads(self.request.body)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
      raise codec.BadRequest(f'The body is not valid JSON: {str(error)[:200]}.') from None
    if not isinstance(body, dict):
      raise codec.BadRequest('The body must be a JSON object.')
    return body

  def check_model(self, name: str, version: Optional[str]) -> Optional[int]:
    if name != self.state.config.model_name:
      raise codec.BadRequest(f'Servable not found for request: Latest({name}); this server serves '
                             f'"{self.state.config.model_name}".', status=404)
    if version is None:
      return None
    if not version.isdigit():
      raise codec.BadRequest(f'The version must be a positive integer, got "{version}".')
    return int(version)


def _version_status(version: int) -> Dict[str, Any]:
  return {'version': str(version), 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}


class StatusHandler(_Handler):
  ROUTE = 'status'

  def get(self, name: str, version: Optional[str] = None):
    servable = self.state.store.acquire(self.check_model(name, version))
    try:
      self.write_json(200, {'model_version_status': [_version_status(servable.version)]})
    finally:
      servable.release()


class MetadataHandler(_Handler):
  ROUTE = 'metadata'

  def get(self, name: str, version: Optional[str] = None):
    servable = self.state.store.acquire(self.check_model(name, version))
    try:
      self.write_json(200, {
          'model_spec': {'name': name, 'signature_name': '', 'version': str(servable.version)},
          'metadata': {'signature_def': {'signature_def': servable.signature_defs}}})
    finally:
      servable.release()


def _tf_reason(message: str) -> str:
  """The line of a TensorFlow error that says what was wrong, without the graph's stack."""
  for line in message.splitlines():
    if line.strip() and not line[0].isspace() and not line.startswith(('Graph execution error', 'Detected at node')):
      return re.sub(r'\s*(\[\[.*\]\])?\s*(\[Op:.*\])?$', '', line)[:300]
  return message[:300]


async def _run(signature: model_store.Signature, arrays: Dict[str, np.ndarray],
               timeout_s: float) -> Dict[str, np.ndarray]:
  rows = len(next(iter(arrays.values())))
  try:
    return await asyncio.wait_for(asyncio.wrap_future(signature.batcher.submit(arrays, rows)), timeout_s)
  except asyncio.TimeoutError:
    raise codec.BadRequest(f'The model did not answer within {timeout_s:g} s (the server is overloaded); '
                           'retry later.', status=503) from None
  except tf.errors.InvalidArgumentError as error:
    raise codec.BadRequest(f'The model rejected the input: {_tf_reason(error.message)}') from None


class PredictHandler(_Handler):
  ROUTE = 'predict'

  async def post(self, name: str, version: Optional[str], verb: str):
    if verb not in ('predict', 'recommend', 'explain'):
      raise codec.BadRequest(f'":{verb}" is not served here; use ":predict" (or ":recommend", ":explain").')
    self.ROUTE = verb  # only known verbs: a label per made-up verb would grow /metrics without bound
    wanted = self.check_model(name, version)
    body = self.json_body()
    servable = self.state.store.acquire(wanted)
    try:
      if verb == 'predict':
        self.write_json(200, await self._predict(servable, body))
      elif verb == 'explain':
        self.write_json(200, await self._explain(servable, body))
      else:
        self.write_json(200, await self._recommend(servable, body))
    finally:
      servable.release()

  def _signature(self, servable: model_store.Servable, name: Any) -> model_store.Signature:
    if not isinstance(name, str) or name not in servable.signatures:
      raise codec.BadRequest(f'Serving signature name: {json.dumps(name)} not found; this model serves '
                             f'{sorted(servable.signatures)}.')
    return servable.signatures[name]

  async def _predict(self, servable: model_store.Servable, body: Dict[str, Any]) -> Dict[str, Any]:
    body = dict(body)
    signature = self._signature(servable, body.pop('signature_name', names.SERVING_DEFAULT))
    if self.state.feature_store and signature.name == names.SERVING_DEFAULT:
      body = feature_store.resolve_predict(self.state.feature_store, body, signature.inputs)
    arrays, row_format = codec.parse_predict(body, signature.inputs, self.state.config.limits)
    outputs = await _run(signature, arrays, self.state.config.request_timeout_s)
    self._observe(servable, signature.name, arrays, outputs)
    return codec.format_predict(outputs, row_format)

  def _observe(self, servable, signature: str, arrays, outputs):
    metrics = self.state.metrics
    if names.SCORES in outputs:
      metrics.observe_predictions(servable.name, signature, outputs[names.SCORES][outputs[names.MOVIE_IDS] != b''])
    elif 'predictions' in outputs:
      metrics.observe_predictions(servable.name, signature, np.ravel(outputs['predictions']))
      if self.state.request_log and signature in _LOGGED_SIGNATURES:
        self.state.request_log.log(servable.version, signature, arrays, outputs['predictions'])

  async def _recommend(self, servable: model_store.Servable, body: Dict[str, Any]) -> Dict[str, Any]:
    signature = self._signature(servable, names.RECOMMEND)
    if self.state.feature_store:
      body = feature_store.resolve_recommend(self.state.feature_store, body, signature.inputs)
    arrays, _ = codec.parse_predict({'instances': [_recommend_instance(body, signature.inputs)]},
                                    signature.inputs, self.state.config.limits)
    outputs = await _run(signature, arrays, self.state.config.request_timeout_s)
    self._observe(servable, names.RECOMMEND, arrays, outputs)
    ids, titles, scores = (outputs[n][0] for n in (names.MOVIE_IDS, names.TITLES, names.SCORES))
    return {'model_version': str(servable.version), 'recommendations': [
        {'movie_id': m.decode(), 'title': t.decode('utf-8', 'replace'), 'score': float(s)}
        for m, t, s in zip(ids, titles, scores) if m]}


  async def _explain(self, servable: model_store.Servable, body: Dict[str, Any]) -> Dict[str, Any]:
    signature = self._signature(servable, names.EXPLAIN)
    movies = explain.load_catalog(servable.path)
    row = explain.explain_instance(body, signature.inputs, self.state.feature_store, movies)
    arrays, _ = codec.parse_predict({'instances': [row]}, signature.inputs, self.state.config.limits)
    outputs = await _run(signature, arrays, self.state.config.request_timeout_s)
    return explain.format_explanation(outputs, row, movies, servable.version)


def _recommend_instance(body: Dict[str, Any], inputs: Dict[str, codec.InputSpec]) -> Dict[str, Any]:
  """The convenience route's body as one recommend instance, defaults filled in.

  Unknown strings are "" (out of vocabulary), user_age and timestamp 0 (the
  signature's default age, and now), no history, k = DEFAULT_K.
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


class RatingsHandler(_Handler):
  ROUTE = 'ratings'

  def post(self, user_id: str):
    if self.state.feature_store is None:
      raise codec.BadRequest('This server has no feature store; start it with --feature-store.', status=404)
    self.write_json(200, feature_store.apply_events(self.state.feature_store, user_id, self.json_body()))


class CatalogHandler(_Handler):
  ROUTE = 'catalog'

  def get(self, name: str, version: Optional[str] = None):
    servable = self.state.store.acquire(self.check_model(name, version))
    try:
      self.write_json(200, explain.catalog(servable.path, servable.version))
    finally:
      servable.release()


class HealthHandler(_Handler):
  ROUTE = 'healthz'

  def get(self):
    self.write_json(200, {'status': 'ok'})


class ReadyHandler(_Handler):
  ROUTE = 'readyz'

  def get(self):
    servable = self.state.store.current()
    if servable is None:
      self.write_json(503, {'error': f'No version under {self.state.config.model_base_path} has loaded yet.'})
    else:
      self.write_json(200, {'status': 'ready', 'model': servable.name, 'version': str(servable.version)})


class MetricsHandler(_Handler):
  ROUTE = 'metrics'

  def get(self):
    self.set_header('Content-Type', CONTENT_TYPE)
    self.finish(self.state.metrics.exposition())


class NotFoundHandler(_Handler):
  def prepare(self):
    raise codec.BadRequest(f'No route for {self.request.method} {self.request.path}; see /v1/models/<name>, '
                           '/v1/models/<name>/metadata, /v1/models/<name>:predict, /app/, /healthz, /readyz, /metrics.',
                           status=404)


def make_app(state: _State) -> tornado.web.Application:
  model = r'/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?'
  routes = [
      (model + r'/metadata', MetadataHandler),
      (model + r'/catalog', CatalogHandler),
      (model + r':(?P<verb>[A-Za-z]+)', PredictHandler),
      (model, StatusHandler),
      (r'/v1/users/(?P<user_id>[^/]+)/ratings', RatingsHandler),
      (r'/healthz', HealthHandler),
      (r'/readyz', ReadyHandler),
      (r'/metrics', MetricsHandler),
  ]
  app = [(r'/app', tornado.web.RedirectHandler, {'url': '/app/'}),
         (r'/app/(.*)', tornado.web.StaticFileHandler, {'path': APP_DIR, 'default_filename': 'index.html'})]
  return tornado.web.Application([(p, h, {'state': state}) for p, h in routes] + app,
                                 default_handler_class=NotFoundHandler, default_handler_args={'state': state})


class Server:
  """The server on an event loop of its own thread: for tests and benchmarks.

  ``start()`` returns the port once a version is served (or ``wait_s`` ran out).
  """

  def __init__(self, config: Config):
    self.config = config
    self.state = _State(config)
    self.port: Optional[int] = None
    self._loop: Optional[asyncio.AbstractEventLoop] = None
    self._http: Optional[tornado.httpserver.HTTPServer] = None
    self._thread: Optional[threading.Thread] = None

  def _listen(self) -> int:
    sockets = tornado.netutil.bind_sockets(self.config.port, self.config.host)
    # Bodies up to twice the limit are read and answered 413 with a message;
    # beyond that tornado drops the connection after a bare 400.
    self._http = tornado.httpserver.HTTPServer(make_app(self.state), max_body_size=2 * self.config.max_body_bytes)
    self._http.add_sockets(sockets)
    return sockets[0].getsockname()[1]

  def start(self, wait_s: float = 60.0) -> int:
    self.state.store.start(wait_s)
    ready = threading.Event()

    def run():
      self._loop = asyncio.new_event_loop()
      asyncio.set_event_loop(self._loop)
      self.port = self._listen()
      ready.set()
      self._loop.run_forever()

    self._thread = threading.Thread(target=run, daemon=True, name='http')
    self._thread.start()
    ready.wait()
    return self.port

  def stop(self):
    if self._loop:
      self._loop.call_soon_threadsafe(self._http.stop)
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._thread.join()
    self.state.store.stop()
    if self.state.request_log:
      self.state.request_log.close()
    if self.state.feature_store:
      self.state.feature_store.close()


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
  parser.add_argument('--max-batch-rows', type=int, default=512, help='rows in one merged predict call')
  parser.add_argument('--max-recommend-rows', type=int, default=16, help='users in one merged recommend call')
  parser.add_argument('--workers', type=int, default=1, help='threads calling each signature')
  parser.add_argument('--request-log', default=None,
                      help='CSV of served examples for `python -m pipeline.validate LOG --kind serving`')
  parser.add_argument('--request-log-sample', type=float, default=1.0, help='fraction of requests logged')
  parser.add_argument('--request-timeout-s', type=float, default=30.0,
                      help='answer 503 when the model has not answered by then')
  parser.add_argument('--feature-store', default=None,
                      help='SQLite file or redis://host:port/db for by-id requests (make feature-store seeds it)')
  args = parser.parse_args(argv)
  return Config(args.model_base_path, args.model_name, args.host, args.port, args.poll_s, args.max_body_bytes,
                codec.Limits(args.max_instances, args.max_list),
                model_store.Options(args.max_batch_rows, args.max_recommend_rows, args.workers),
                args.request_log, args.request_log_sample, args.request_timeout_s, args.feature_store)


async def _serve(config: Config):
  server = Server(config)
  state = server.state
  # Serve at once; /readyz says 503 until a version has loaded.
  state.store.start()
  port = server._listen()
  logging.info('Serving %s from %s on http://%s:%d', config.model_name, config.model_base_path, config.host, port)
  stopped = asyncio.Event()
  loop = asyncio.get_running_loop()
  for signum in (signal.SIGINT, signal.SIGTERM):
    loop.add_signal_handler(signum, stopped.set)
  await stopped.wait()
  # Kubernetes sends SIGTERM: stop accepting, let requests in flight finish.
  server._http.stop()
  await server._http.close_all_connections()
  state.store.stop()
  if state.request_log:
    state.request_log.close()


def main(argv: Optional[List[str]] = None) -> int:
  logging.set_verbosity(logging.INFO)
  asyncio.run(_serve(parse_args(argv)))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
