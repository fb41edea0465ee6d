"""Prewarmed (generic) runtimes: ``NANOFAAS_PREWARM=1``.

The runtime starts without a handler: it imports itself, its SDK, Flask and the chosen server
(and the modules named in ``NANOFAAS_PREWARM_IMPORTS``), binds its port (and the offered Unix
socket), answers ``GET /health`` and waits. Before it waits it also pays what the first request
of a specialized function would otherwise pay, with no user code: the app it will serve, built
unbound and warmed with one request to a handler of the runtime's own (``warm_up``), gunicorn's
configuration built (``prepare_gunicorn``), and a collection after which the heap is frozen
(``freeze_heap``). The specialization binds the app to the function's settings and handler.

``POST /_nanofaas/specialize`` with ``{"function", "env", "workingDir", "timeoutMs"}`` makes it
one function's, exactly once:

1. every ``env`` entry is set in ``os.environ``,
2. the working directory becomes ``workingDir``,
3. the handler is imported (``HANDLER_MODULE`` / ``HANDLER_FUNCTION`` / ``HANDLER_PATH`` as the
   function's environment now says), so its top level already sees 1 and 2,
4. the answer is ``200 {"specialized": true, "loadMs": ...}``, or, if the handler cannot be
   loaded, ``500 {"error": {"code": "STARTUP_ERROR", "message": ...}}`` and the process exits 3.

Then the app is served on the same sockets as a normal start would. With gunicorn this process
is a zygote: it holds the runtime, the web stack and the handler, imported once, and gunicorn
forks the serving worker from it; with Werkzeug it serves in this process (the plain prewarmed
instance). Until the specialization ``/invoke`` answers ``503 STARTUP_ERROR "not specialized"``.

Fork safety: the waiting loop here is one thread with no thread pool, and every connection is
closed before serving starts (the answer to the specialization says ``Connection: close``), so
the zygote forks with no threads and no open connections; the worker reseeds ``random`` after
the fork (``server``'s ``post_fork``). Settings of the server itself (``NANOFAAS_PY_SERVER``,
``HOST``, ``PORT``, the socket) are those of the generic start; ``WORKERS``, ``THREADS`` and the
handler's settings come from the function's environment.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import selectors
import socket
import sys
import time
from typing import Any

from .config import ConfigError, Settings

log = logging.getLogger("nanofaas_runtime")

ENV_PREWARM = "NANOFAAS_PREWARM"
ENV_IMPORTS = "NANOFAAS_PREWARM_IMPORTS"
SPECIALIZE_PATH = "/_nanofaas/specialize"

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
# A connection that sends nothing for this long is closed (it holds no place in the zygote).
IDLE_S = 75.0


def enabled(environ=None) -> bool:
    value = (os.environ if environ is None else environ).get(ENV_PREWARM, "").strip().lower()
    return value in ("1", "true", "yes", "on")


class SpecializeError(Exception):
    """The specialization cannot proceed; ``status`` and ``code`` go to the answer."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclasses.dataclass
class Request:
    method: str
    path: str
    body: bytes
    keep_alive: bool


def _reason(status: int) -> str:
    return {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        413: "Payload Too Large",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Status")


def response(status: int, body: bytes, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_reason(status)}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("ascii") + body


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()


class _Conn:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.last = time.monotonic()


def parse_request(buf: bytes) -> tuple[Request, int] | None:
    """One request from ``buf``: (request, bytes used), or None when more is needed. Raises
    SpecializeError for what cannot be a request."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise SpecializeError(400, "INVALID_REQUEST", "request head too large")
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise SpecializeError(400, "INVALID_REQUEST", "not an HTTP/1.x request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise SpecializeError(400, "INVALID_REQUEST", "malformed header line")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise SpecializeError(400, "INVALID_REQUEST", "chunked bodies are not accepted here")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise SpecializeError(400, "INVALID_REQUEST", "bad Content-Length") from None
    if length < 0 or length > MAX_BODY:
        raise SpecializeError(413, "PAYLOAD_TOO_LARGE", f"body over {MAX_BODY} bytes")
    total = end + 4 + length
    if len(buf) < total:
        return None
    conn = headers.get("connection", "").lower()
    keep = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
    path = target.split("?", 1)[0]
    return Request(method, path, buf[end + 4 : total], keep), total


def parse_specialization(body: bytes) -> tuple[str, dict[str, str], str | None]:
    """(function, env, workingDir) from the specialization body; raises SpecializeError."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise SpecializeError(400, "INVALID_REQUEST", f"body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise SpecializeError(400, "INVALID_REQUEST", "body must be a JSON object")
    unknown = set(data) - {"function", "env", "workingDir", "timeoutMs"}
    if unknown:
        raise SpecializeError(400, "INVALID_REQUEST", f"unknown fields {sorted(unknown)}")
    function = data.get("function")
    if not isinstance(function, str) or not function:
        raise SpecializeError(400, "INVALID_REQUEST", "function must be a non-empty string")
    env = data.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise SpecializeError(400, "INVALID_REQUEST", "env must be an object of strings")
    for k, v in env.items():
        if not k or "=" in k or "\0" in k or "\0" in v:
            raise SpecializeError(400, "INVALID_REQUEST", f"env: {k!r} cannot be set")
    wd = data.get("workingDir")
    if wd is not None and not isinstance(wd, str):
        raise SpecializeError(400, "INVALID_REQUEST", "workingDir must be a string")
    if wd and not (os.path.isabs(wd) and os.path.isdir(wd)):
        raise SpecializeError(400, "INVALID_REQUEST", f"workingDir {wd!r} is not a folder")
    return function, env, wd or None


def preload(settings: Settings, environ=None) -> None:
    """What the zygote imports before it waits: the app and the server, then the extra
    modules of ``NANOFAAS_PREWARM_IMPORTS`` (comma-separated); raises ConfigError naming a
    module that cannot be imported."""
    from . import app, server  # noqa: F401 - imported for their cost, now

    # The runtime's own SDK, which handlers import (``from nanofaas.sdk import context``): its
    # registry of decorated functions is empty until a handler's import decorates one.
    import nanofaas.sdk  # noqa: F401

    if settings.server == "gunicorn":
        # Everything serve() imports once the function is known: gunicorn's arbiter, worker
        # and logger (with logging.config, the bulk of it), and the worker's thread pool.
        import concurrent.futures.thread  # noqa: F401
        import gunicorn.app.base  # noqa: F401
        import gunicorn.arbiter  # noqa: F401
        import gunicorn.glogging  # noqa: F401
        import gunicorn.workers.gthread  # noqa: F401
    raw = (os.environ if environ is None else environ).get(ENV_IMPORTS, "")
    for name in (n.strip() for n in raw.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported as a configuration error
            raise ConfigError(f"{ENV_IMPORTS}: cannot import {name!r}: {e}") from None


def _wsgi_call(app, method: str, path: str, body: bytes) -> None:
    """One request through ``app`` in this process, by WSGI alone (no socket)."""
    import io

    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "HTTP_X_EXECUTION_ID": "prewarm",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    result = app(environ, lambda status, headers, exc_info=None: None)
    try:
        for _ in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def warm_up(settings: Settings):
    """Builds the app the function will be served with, still unbound (``create_unbound_app``),
    and runs ``POST /invoke`` and ``GET /health`` through it with a handler of the runtime's own
    (it returns its input; no callback, nothing logged), in this process, by WSGI: what Flask
    and Werkzeug build or import on an app's first request is then built here, once, and the
    specialized function's first request does not pay for it (about 3 ms of CPU with the app's
    construction). No user code runs. Returns the app, unbound again, and its ``bind``."""
    from .app import create_unbound_app

    app, bind = create_unbound_app()
    bind(settings, lambda request: request.get("input"), lambda *a, **k: True)
    try:
        _wsgi_call(app, "POST", "/invoke", b'{"input":{"warm":true}}')
        _wsgi_call(app, "GET", "/health", b"")
    finally:
        bind(None, None)
    return app, bind


def freeze_heap() -> None:
    """Collects, then moves every object the zygote holds now (the runtime, the web stack, the
    server) to the collector's permanent generation: later collections, in the zygote and in
    the forked worker, do not walk them again (nor write to their pages, which the worker
    shares with the zygote until either writes). What the function creates is collected as
    usual."""
    import gc

    gc.collect()
    gc.freeze()


class Zygote:
    """The waiting loop: one thread, the listening sockets, a few connections."""

    def __init__(self, socks: list[socket.socket]):
        self.socks = socks
        self.sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, None)
        self.conns: dict[int, _Conn] = {}

    def close_connections(self) -> None:
        for c in list(self.conns.values()):
            self._drop(c)
        self.sel.close()
        for s in self.socks:
            s.setblocking(True)

    def _drop(self, c: _Conn) -> None:
        self.conns.pop(c.sock.fileno(), None)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def wait(self, specialize) -> Any:
        """Serves until ``specialize(body)`` returns a value (answered 200); returns it."""
        while True:
            events = self.sel.select(timeout=5.0)
            now = time.monotonic()
            for key, _ in events:
                if key.data is None:
                    self._accept(key.fileobj)
                    continue
                c: _Conn = key.data
                try:
                    chunk = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    self._drop(c)
                    continue
                if not chunk:
                    self._drop(c)
                    continue
                c.buf += chunk
                c.last = now
                result = self._serve(c, specialize)
                if result is not None:
                    return result
            for c in [c for c in self.conns.values() if now - c.last > IDLE_S]:
                self._drop(c)

    def _accept(self, listener) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError, OSError):
            return
        sock.setblocking(True)
        sock.settimeout(5.0)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = _Conn(sock)
        self.conns[sock.fileno()] = c
        self.sel.register(sock, selectors.EVENT_READ, c)

    def _send(self, c: _Conn, data: bytes) -> bool:
        try:
            c.sock.sendall(data)
            return True
        except OSError:
            self._drop(c)
            return False

    def _serve(self, c: _Conn, specialize):
        while True:
            try:
                parsed = parse_request(c.buf)
            except SpecializeError as e:
                self._send(c, response(e.status, error_body(e.code, e.message), True))
                self._drop(c)
                return None
            if parsed is None:
                return None
            req, used = parsed
            c.buf = c.buf[used:]
            if req.path == "/health" and req.method == "GET":
                body = b'{"status":"ok","prewarmed":true}'
                status = 200
            elif req.path == "/invoke" and req.method == "POST":
                status, body = 503, error_body("STARTUP_ERROR", "not specialized")
            elif req.path == SPECIALIZE_PATH and req.method == "POST":
                try:
                    value, answer = specialize(req.body)
                except SpecializeError as e:
                    self._send(c, response(e.status, error_body(e.code, e.message), True))
                    if e.status == 500:
                        raise SystemExit(3) from None
                    self._drop(c)
                    return None
                # Every connection closes: the zygote forks with none open.
                self._send(c, response(200, answer, True))
                return value
            elif req.path in ("/health", "/invoke", SPECIALIZE_PATH):
                status = 405
                body = error_body("METHOD_NOT_ALLOWED", f"{req.method} not allowed")
            else:
                status, body = 404, error_body("NOT_FOUND", f"no route {req.path}")
            if not self._send(c, response(status, body, not req.keep_alive)):
                return None
            if not req.keep_alive:
                self._drop(c)
                return None


def main(started: float) -> int:
    """``python -m nanofaas_runtime`` with ``NANOFAAS_PREWARM=1``; returns the exit status."""
    from . import logs
    from .__main__ import ExitCode

    try:
        generic = Settings.from_env()
        preload(generic)
    except ConfigError as e:
        logs.startup_failure(f"invalid configuration: {e}", ExitCode.CONFIG, "STARTUP_ERROR")
        return ExitCode.CONFIG
    logs.configure(generic.log_level)
    try:
        app, bind_app = warm_up(generic)
    except Exception as e:  # noqa: BLE001 - only a cost: the first request pays it instead
        log.warning("prewarmed: the warm-up request failed", extra={"reason": repr(e)})
        from .app import create_unbound_app

        app, bind_app = create_unbound_app()

    from .server import BindError, bind, bind_offered

    try:
        sock = bind(generic.host, generic.port)
    except BindError as e:
        logs.startup_failure(str(e), ExitCode.BIND, "STARTUP_ERROR")
        return ExitCode.BIND
    unix = bind_offered(generic)
    zygote = Zygote([s for s in (sock, unix) if s is not None])
    if generic.server == "gunicorn":
        from .server import prepare_gunicorn

        prepare_gunicorn()
    freeze_heap()
    log.info(
        "prewarmed: waiting for a specialization",
        extra={
            "port": sock.getsockname()[1],
            "server": generic.server,
            "socket": generic.runtime_socket if unix is not None else None,
            "startup_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    state: dict = {"done": False}

    def specialize(body: bytes):
        if state["done"]:
            raise SpecializeError(409, "INVALID_REQUEST", "already specialized")
        function, env, wd = parse_specialization(body)
        state["done"] = True
        t0 = time.perf_counter()
        os.environ.update(env)
        if wd:
            os.chdir(wd)
        try:
            settings = Settings.from_env()
        except ConfigError as e:
            raise SpecializeError(500, "STARTUP_ERROR", f"invalid configuration: {e}") from None
        # The server, its address and socket stay as they were bound.
        settings = dataclasses.replace(
            settings,
            server=generic.server,
            host=generic.host,
            port=generic.port,
            runtime_socket=generic.runtime_socket,
        )
        logs.configure(settings.log_level)
        from .handler import HandlerLoadError, load_handler

        try:
            handler = load_handler(
                settings.handler_module, settings.handler_function, settings.handler_path
            )
        except HandlerLoadError as e:
            log.error(str(e), extra={"code": "STARTUP_ERROR", "function": function})
            raise SpecializeError(500, "STARTUP_ERROR", str(e)) from None
        load_ms = round((time.perf_counter() - t0) * 1000, 2)
        log.info(
            "specialized",
            extra={
                "function": function,
                "handler": f"{settings.handler_module}:{settings.handler_function}",
                "load_ms": load_ms,
            },
        )
        answer = json.dumps({"specialized": True, "loadMs": load_ms}).encode()
        return (settings, handler), answer

    try:
        specialized = zygote.wait(specialize)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else ExitCode.HANDLER
    zygote.close_connections()
    sys.stdout.flush()
    settings, handler = specialized

    from .server import serve

    bind_app(settings, handler)
    return serve(app, sock, settings, unix)
