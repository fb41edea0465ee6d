"""The Flask app: ``GET /health`` and ``POST /invoke``.

Owns the request path: where the execution id, trace id and callback settings come from,
parsing the body, calling the handler, turning its result or failure into the response and the
callback body. The handler is loaded before the app is built (see ``handler``); nothing on this
path imports, reads the environment or logs on success.

Error bodies are ``{"error": {"code", "message"}}`` with the codes of the shared API crate:
``INVALID_REQUEST`` (400), ``PAYLOAD_TOO_LARGE`` (413), ``HANDLER_ERROR`` (500, the handler
raised), ``FUNCTION_ERROR`` (500, the handler's output is not JSON).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import callback
from .config import Settings
from .handler import Handler
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


def create_app(
    settings: Settings,
    handler: Handler,
    send_callback: CallbackSender | None = None,
) -> Flask:
    """Builds the app around an already loaded ``handler``."""
    app = Flask("nanofaas_runtime")
    # One byte over the limit lets a body without Content-Length (chunked) that is longer
    # than the limit be told apart from one that is exactly as long: Werkzeug stops reading
    # at MAX_CONTENT_LENGTH without raising.
    limit = settings.max_request_bytes
    app.config["MAX_CONTENT_LENGTH"] = limit + 1

    if send_callback is None:
        policy = callback.CallbackPolicy(
            attempts=settings.callback_attempts,
            timeout_s=settings.callback_timeout_s,
            backoff_s=settings.callback_backoff_s,
        )

        def send_callback(base, execution_id, body, *, trace_id=None, token=None):
            return callback.send(
                base, execution_id, body, trace_id=trace_id, token=token, policy=policy
            )

    env_execution_id = settings.execution_id
    env_trace_id = settings.trace_id
    env_callback_url = settings.callback_url
    env_callback_token = settings.callback_token

    @app.get("/health")
    def health() -> Response:
        return Response(_HEALTH, 200, mimetype=_JSON)

    @app.post("/invoke")
    def invoke() -> Response:
        headers = request.headers
        execution_id = headers.get("X-Execution-Id") or env_execution_id
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
        trace_id = headers.get("X-Trace-Id") or env_trace_id
        callback_url = headers.get("X-Callback-Url") or env_callback_url
        token = headers.get("X-Callback-Token") or env_callback_token

        def finish(status: int, body: bytes, callback_body: bytes) -> Response:
            if callback_url:
                send_callback(
                    callback_url, execution_id, callback_body, trace_id=trace_id, token=token
                )
            return Response(body, status, mimetype=_JSON)

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

        try:
            output = handler(payload)
        except (Exception, SystemExit) as e:
            message = str(e) or type(e).__name__
            _log_handler_error(e, execution_id, trace_id)
            return finish(
                500,
                _error_body("HANDLER_ERROR", message),
                _callback_body_error("HANDLER_ERROR", message),
            )

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
