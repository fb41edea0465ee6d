"""The Flask app: ``GET /health`` and ``POST /invoke``.

Owns the request path: where the execution id, trace id and callback settings come from,
parsing the body, calling the handler, turning its result or failure into the response and the
callback body. Two ways to get an app:

- ``create_app(settings, handler)``: what ``python -m nanofaas_runtime`` serves. The handler is
  loaded before the app is built (see ``handler``), so a broken one stops the runtime before it
  listens; nothing on the request path imports, reads the environment or logs on success.
- the module-level ``app`` (``nanofaas_runtime.app:app``), the seed's entry point for
  ``gunicorn ... nanofaas_runtime.app:app`` and ``from nanofaas_runtime.app import app``.
  It is built on first access and reads the environment when a request comes: the settings
  are parsed again whenever a variable they come from changed (so values set after import
  count), and the handler is imported on first use. As it cannot refuse to start, a handler
  that cannot be loaded (or a bad setting) answers ``503 STARTUP_ERROR`` naming the cause.

Error bodies are ``{"error": {"code", "message"}}`` with the codes of the shared API crate:
``INVALID_REQUEST`` (400), ``PAYLOAD_TOO_LARGE`` (413), ``HANDLER_ERROR`` (500, the handler
raised), ``FUNCTION_ERROR`` (500, the handler's output is not JSON).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import callback, context
from .config import ConfigError, Settings
from .handler import Handler, HandlerLoadError, load_handler
from .logs import RateLimiter

log = logging.getLogger("nanofaas_runtime")
_handler_errors_logged = RateLimiter(burst=10, window_s=10.0)

_JSON = "application/json"
_HEALTH = b'{"status":"ok"}'

# Sends (base_url, execution_id, body, trace_id=, token=) -> bool; replaceable in tests.
CallbackSender = Callable[..., bool]

_HTTP_CODES = {
    400: "INVALID_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
}


class _Reject(Exception):
    """A request the runtime refuses before or instead of calling the handler."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error_body(code: str, message: str) -> bytes:
    body = {"error": {"code": code, "message": message}}
    return json.dumps(body, separators=(",", ":")).encode()


def _callback_body_error(code: str, message: str) -> bytes:
    return json.dumps(
        {"success": False, "output": None, "error": {"code": code, "message": message}},
        separators=(",", ":"),
    ).encode()


def _parse(raw: bytes) -> dict:
    if not raw.strip():
        raise _Reject(
            400,
            "INVALID_REQUEST",
            'request body is empty: expected a JSON object {"input": ..., "metadata": {...}}',
        )
    try:
        body = json.loads(raw)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise _Reject(400, "INVALID_REQUEST", f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise _Reject(400, "INVALID_REQUEST", "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise _Reject(
            400,
            "INVALID_REQUEST",
            "request body must be a JSON object "
            f'{{"input": ..., "metadata": {{...}}}}, got {type(body).__name__}',
        )
    body.setdefault("input", None)
    metadata = body.setdefault("metadata", {})
    if metadata is None:
        body["metadata"] = {}
    elif not isinstance(metadata, dict):
        raise _Reject(
            400,
            "INVALID_REQUEST",
            f'"metadata" must be a JSON object of strings, got {type(metadata).__name__}',
        )
    return body


class _Current(NamedTuple):
    """What one request needs: the settings it is served with and the handler, or why the
    handler cannot be called (``problem``: the code and message of the answer)."""

    settings: Settings | None
    handler: Handler | None
    send_callback: CallbackSender | None
    problem: tuple[str, str] | None = None


def _sender(settings: Settings) -> CallbackSender:
    policy = callback.CallbackPolicy(
        attempts=settings.callback_attempts,
        timeout_s=settings.callback_timeout_s,
        backoff_s=settings.callback_backoff_s,
    )

    def send(base, execution_id, body, *, trace_id=None, token=None, traceparent=None):
        return callback.send(
            base,
            execution_id,
            body,
            trace_id=trace_id,
            token=token,
            policy=policy,
            traceparent=traceparent,
        )

    return send


def create_app(
    settings: Settings,
    handler: Handler,
    send_callback: CallbackSender | None = None,
) -> Flask:
    """Builds the app around an already loaded ``handler``."""
    fixed = _Current(settings, handler, send_callback or _sender(settings))
    return _build(lambda: fixed, settings.max_request_bytes)


def create_unbound_app() -> tuple[Flask, Callable[..., None]]:
    """An app built before its settings and handler are known (a prewarmed runtime builds it
    while it waits), and ``bind(settings, handler, send_callback=None)``, which makes it serve
    them from the next request on. Until bound, ``/invoke`` answers ``503 STARTUP_ERROR``."""
    unbound = _Current(None, None, None, ("STARTUP_ERROR", "not specialized"))
    current = [unbound]
    app = _build(lambda: current[0], Settings.max_request_bytes)

    def bind(
        settings: Settings | None,
        handler: Handler | None,
        send_callback: CallbackSender | None = None,
    ) -> None:
        if settings is None:
            current[0] = unbound
            return
        app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes + 1
        current[0] = _Current(settings, handler, send_callback or _sender(settings))

    return app, bind


# The variables the module-level app reads (the server's own, HOST, PORT, WORKERS, ..., belong to
# whoever runs it, e.g. gunicorn's command line).
_APP_ENV = (
    "HANDLER_MODULE",
    "HANDLER_FUNCTION",
    "HANDLER_PATH",
    "EXECUTION_ID",
    "TRACE_ID",
    "TRACEPARENT",
    "CALLBACK_URL",
    "CALLBACK_TOKEN",
    "CALLBACK_ATTEMPTS",
    "CALLBACK_TIMEOUT_MS",
    "CALLBACK_BACKOFF_MS",
    "MAX_REQUEST_BYTES",
    "LOG_LEVEL",
)


class _FromEnv:
    """The module-level app's settings and handler, following the environment.

    Each request compares the values of ``_APP_ENV`` with the last ones (a few dictionary
    look-ups); only when one changed are the settings parsed again. Handlers are imported on
    first use and kept per ``HANDLER_MODULE:HANDLER_FUNCTION`` and path; a failed import is
    tried again on the next request (the seed did the same), its cause logged rate-limited.
    """

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        # os.environ's own dict of encoded names and values: looking a missing name up there
        # costs a dictionary probe, where os.environ.get raises and catches a KeyError (about
        # 50 times as long). Any other mapping is read through its public get.
        data = getattr(environ, "_data", None) if isinstance(environ, os._Environ) else None
        encode = getattr(environ, "encodekey", None)
        if isinstance(data, dict) and callable(encode):
            keys = tuple(encode(name) for name in _APP_ENV)
            self._snapshot = lambda: tuple(map(data.get, keys))
        else:
            self._snapshot = lambda: tuple(map(environ.get, _APP_ENV))
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._current: _Current | None = None
        self._handlers: dict[tuple[str, str, str], Handler] = {}
        self._load_errors_logged = RateLimiter(burst=10, window_s=10.0)
        self.app: Flask | None = None

    def current(self) -> _Current:
        key = self._snapshot()
        cur = self._current
        if key == self._key and cur is not None and cur.handler is not None:
            return cur
        with self._lock:
            if key != self._key or self._current is None:
                # Read after the snapshot: a change in between is seen by the next request.
                self._current = self._settings(tuple(map(self._environ.get, _APP_ENV)))
                self._key = key
            if self._current.settings is not None and self._current.handler is None:
                self._current = self._load(self._current)
            return self._current

    def _settings(self, key: tuple) -> _Current:
        env = {name: value for name, value in zip(_APP_ENV, key, strict=False) if value is not None}
        env["NANOFAAS_PY_SERVER"] = "werkzeug"  # not used here; skips looking for gunicorn
        try:
            settings = Settings.from_env(env)
        except ConfigError as e:
            message = f"invalid configuration: {e}"
            self._log_problem(message)
            return _Current(None, None, None, ("STARTUP_ERROR", message))
        if self.app is not None:
            self.app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes + 1
        return _Current(settings, None, _sender(settings))

    def _load(self, cur: _Current) -> _Current:
        s = cur.settings
        assert s is not None  # only called with settings
        spec = (s.handler_module, s.handler_function, s.handler_path)
        handler = self._handlers.get(spec)
        if handler is None:
            try:
                handler = load_handler(*spec)
            except HandlerLoadError as e:
                self._log_problem(str(e))
                return cur._replace(problem=("STARTUP_ERROR", str(e)))
            self._handlers[spec] = handler
            log.info("handler loaded", extra={"handler": f"{spec[0]}:{spec[1]}"})
        return cur._replace(handler=handler, problem=None)

    def _log_problem(self, message: str) -> None:
        allowed, dropped = self._load_errors_logged.allow()
        if allowed:
            extra: dict[str, Any] = {"code": "STARTUP_ERROR"}
            if dropped:
                extra["suppressed"] = dropped
            log.error(message, extra=extra)


def create_env_app(environ: Mapping[str, str] | None = None) -> Flask:
    """The app behind the module-level ``app``: settings from ``environ`` (default
    ``os.environ``) at request time, the handler imported on first use."""
    live = _FromEnv(os.environ if environ is None else environ)
    app = _build(live.current, Settings.max_request_bytes)
    live.app = app
    return app


# The module-level app: not a global until __getattr__ below builds it on first access.
app: Flask


def __getattr__(name: str):
    # ``nanofaas_runtime.app:app`` is built on first access only: ``python -m nanofaas_runtime``
    # imports this module for ``create_app`` and never pays for a second app.
    if name == "app":
        global app
        with _module_app_lock:
            if "app" not in globals():
                if not logging.getLogger().handlers:
                    from . import logs

                    level = (os.environ.get("LOG_LEVEL") or "INFO").strip().upper()
                    logs.configure(level if level in logging.getLevelNamesMapping() else "INFO")
                app = create_env_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_module_app_lock = threading.Lock()


def _build(current: Callable[[], _Current], max_request_bytes: int) -> Flask:
    app = Flask("nanofaas_runtime")
    # One byte over the limit lets a body without Content-Length (chunked) that is longer
    # than the limit be told apart from one that is exactly as long: Werkzeug stops reading
    # at MAX_CONTENT_LENGTH without raising.
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes + 1

    @app.get("/health")
    def health() -> Response:
        return Response(_HEALTH, 200, mimetype=_JSON)

    @app.post("/_nanofaas/specialize")
    def specialize_again() -> Response:
        # A prewarmed runtime is specialized once (prewarm.py); a running app already is.
        return Response(
            _error_body("INVALID_REQUEST", "this runtime already serves a function"),
            409,
            mimetype=_JSON,
        )

    @app.post("/invoke")
    def invoke() -> Response:
        cur = current()
        settings = cur.settings
        if settings is None:  # the module-level app with a bad setting
            code, message = cur.problem or ("STARTUP_ERROR", "no settings")
            return Response(_error_body(code, message), 503, mimetype=_JSON)
        headers = request.headers
        execution_id = headers.get("X-Execution-Id") or settings.execution_id
        if not execution_id:
            return Response(
                _error_body(
                    "INVALID_REQUEST",
                    "no execution id: send the X-Execution-Id header or set the "
                    "EXECUTION_ID environment variable",
                ),
                400,
                mimetype=_JSON,
            )
        trace_id = headers.get("X-Trace-Id") or settings.trace_id
        # W3C trace context (docs/observability.md#traces): sent on with the callback, and
        # given to the handler by nanofaas.sdk.context.get_traceparent().
        traceparent = headers.get("traceparent") or settings.traceparent
        trace_kw = {"traceparent": traceparent} if traceparent else {}
        callback_url = headers.get("X-Callback-Url") or settings.callback_url
        token = headers.get("X-Callback-Token") or settings.callback_token
        limit = settings.max_request_bytes

        def finish(status: int, body: bytes, callback_body: bytes) -> Response:
            if callback_url and cur.send_callback is not None:
                cur.send_callback(
                    callback_url,
                    execution_id,
                    callback_body,
                    trace_id=trace_id,
                    token=token,
                    **trace_kw,
                )
            return Response(body, status, mimetype=_JSON)

        if cur.handler is None:  # the module-level app, and the handler cannot be loaded
            code, message = cur.problem or ("STARTUP_ERROR", "no handler")
            return finish(503, _error_body(code, message), _callback_body_error(code, message))

        try:
            try:
                raw = request.get_data(cache=False)
            except RequestEntityTooLarge:
                raw = None
            if raw is None or len(raw) > limit:
                raise _Reject(
                    413,
                    "PAYLOAD_TOO_LARGE",
                    f"request body is larger than MAX_REQUEST_BYTES={limit}",
                )
            payload = _parse(raw)
        except _Reject as r:
            return finish(
                r.status,
                _error_body(r.code, r.message),
                _callback_body_error(r.code, r.message),
            )

        # The ids tag what the handler logs, and answer nanofaas.sdk.context's accessors.
        ids = context.enter(execution_id, trace_id)
        tp_token = context.traceparent.set(traceparent)
        try:
            output = cur.handler(payload)
        except (Exception, SystemExit) as e:
            message = str(e) or type(e).__name__
            _log_handler_error(e, execution_id, trace_id)
            return finish(
                500,
                _error_body("HANDLER_ERROR", message),
                _callback_body_error("HANDLER_ERROR", message),
            )
        finally:
            context.traceparent.reset(tp_token)
            context.leave(ids)
        try:
            out = json.dumps(output, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError, RecursionError) as e:
            message = f"handler output is not JSON-serialisable: {e}"
            return finish(
                500,
                _error_body("FUNCTION_ERROR", message),
                _callback_body_error("FUNCTION_ERROR", message),
            )
        return finish(200, out, b'{"success":true,"output":' + out + b',"error":null}')

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        status = e.code or 500
        code = _HTTP_CODES.get(status, "INVALID_REQUEST" if status < 500 else "INTERNAL")
        resp = Response(_error_body(code, e.description or e.name), status, mimetype=_JSON)
        if status == 405 and e.get_response().headers.get("Allow"):
            resp.headers["Allow"] = e.get_response().headers["Allow"]
        return resp

    @app.errorhandler(Exception)
    def internal_error(e: Exception) -> Response:
        log.error("internal error in the runtime", exc_info=e)
        return Response(
            _error_body("INTERNAL", f"internal error in the runtime: {type(e).__name__}"),
            500,
            mimetype=_JSON,
        )

    return app


def _log_handler_error(e: BaseException, execution_id: str, trace_id: str | None) -> None:
    allowed, dropped = _handler_errors_logged.allow()
    if not allowed:
        return
    extra: dict[str, Any] = {"execution_id": execution_id, "trace_id": trace_id}
    if dropped:
        extra["suppressed"] = dropped
    log.error("handler raised %s", type(e).__name__, exc_info=e, extra=extra)


if __name__ == "__main__":
    # ``python -m nanofaas_runtime.app`` (the seed's "run locally") is ``python -m
    # nanofaas_runtime``: the handler loads before anything listens.
    from nanofaas_runtime.__main__ import run

    run()
