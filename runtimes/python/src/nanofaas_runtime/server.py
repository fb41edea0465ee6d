"""Serving the app: binding the socket, running gunicorn or Werkzeug, stopping on SIGTERM.

Owns the listening socket (bound here for both backends, so a bad HOST/PORT is one clear error
with its own exit code, and ``PORT=0`` works) and process lifecycle. It must not know anything
about requests; the app is built before it is called.

- ``gunicorn``: pre-fork, ``WORKERS`` gthread workers (default 1) of ``THREADS`` threads each
  (default 1), keeping connections alive between requests, serving the port and the Unix
  socket the watchdog offers (``NANOFAAS_RUNTIME_SOCKET``), app preloaded in the master,
  no access log, worker timeout ``WORKER_TIMEOUT_S`` (0 = none; the watchdog enforces
  invocation timeouts). SIGTERM is gunicorn's graceful stop: stop accepting, let the in-flight
  request finish within ``GRACEFUL_TIMEOUT_S``, exit 0.
- ``werkzeug``: Flask's threaded development server in this process. SIGTERM or SIGINT stops
  accepting, waits up to ``GRACEFUL_TIMEOUT_S`` for in-flight requests, exits 0.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import stat
import sys
import threading

from .config import Settings

log = logging.getLogger("nanofaas_runtime")

LISTEN_BACKLOG = 1024


class BindError(OSError):
    """The runtime cannot listen on HOST:PORT; the message says why."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise BindError(f"cannot listen on {host}:{port}: cannot resolve host ({e})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(LISTEN_BACKLOG)
    except OSError as e:
        sock.close()
        reason = e.strerror or str(e)
        raise BindError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def unix_address(name: str) -> str | bytes:
    """The address of ``NANOFAAS_RUNTIME_SOCKET``: ``@name`` is ``name`` in Linux's abstract
    namespace (no file), anything else a path."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def bind_unix(name: str) -> socket.socket | None:
    """A listening Unix socket on the watchdog's offered ``name``, or None (with a warning)
    when it cannot be bound: the runtime then serves its port only, which the watchdog falls
    back to. A stale socket file at a path is replaced."""
    address = unix_address(name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if isinstance(address, str):
            try:
                if stat.S_ISSOCK(os.lstat(address).st_mode):
                    os.unlink(address)
            except FileNotFoundError:
                pass
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except (OSError, ValueError) as e:
        sock.close()
        log.warning(
            "cannot listen on NANOFAAS_RUNTIME_SOCKET; serving on the port only",
            extra={"socket": name, "reason": getattr(e, "strerror", None) or str(e)},
        )
        return None
    return sock


def bind_offered(settings: Settings) -> socket.socket | None:
    """The Unix socket the watchdog offered, bound, when the backend serves one (gunicorn);
    None when none was offered, it cannot be bound, or the backend is Werkzeug (port only)."""
    if not settings.runtime_socket:
        return None
    if settings.server != "gunicorn":
        log.info(
            "NANOFAAS_PY_SERVER=werkzeug serves the port only, not NANOFAAS_RUNTIME_SOCKET",
            extra={"socket": settings.runtime_socket},
        )
        return None
    return bind_unix(settings.runtime_socket)


def serve(
    app, sock: socket.socket, settings: Settings, unix: socket.socket | None = None
) -> int:
    """Runs the chosen backend on ``sock``, and on ``unix`` (gunicorn only), until it is told
    to stop; returns the exit status."""
    if settings.server == "gunicorn":
        return _serve_gunicorn(app, sock, settings, unix)
    if unix is not None:
        unix.close()
    return _serve_werkzeug(app, sock, settings)


# --- werkzeug ------------------------------------------------------------------------------


class _InFlight:
    """WSGI middleware counting requests whose response is not fully written yet, so that a
    stop can wait for them (Werkzeug's handler threads are daemons and die with the process)."""

    def __init__(self, app):
        self._app = app
        self._cond = threading.Condition()
        self._active = 0

    def __call__(self, environ, start_response):
        from werkzeug.wsgi import ClosingIterator

        with self._cond:
            self._active += 1
        try:
            body = self._app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return ClosingIterator(body, self._done)

    def _done(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._active == 0, timeout=timeout_s)


def _serve_werkzeug(app, sock: socket.socket, settings: Settings) -> int:
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code="-", size="-"):  # no per-request line
            pass

    tracked = _InFlight(app)
    host, port = sock.getsockname()[:2]
    server = make_server(
        host, port, tracked, threaded=True, request_handler=QuietHandler, fd=sock.fileno()
    )
    sock.close()  # make_server duplicated the descriptor

    # Signal handlers only write to a pipe: taking a lock inside one could deadlock with the
    # main thread, and the main thread blocks on the pipe until a signal or the server ends.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        try:
            os.write(wake_w, b"s")
        except OSError:
            pass

    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.serve_forever(poll_interval=0.1)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failure.append(e)
        finally:
            try:
                os.write(wake_w, b"x")
            except OSError:
                pass

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=run, name="werkzeug-server", daemon=True)
    thread.start()
    try:
        os.read(wake_r, 1)
        if received:
            log.info("stopping", extra={"signal": signal.Signals(received[0]).name})
        server.shutdown()  # no new connections are accepted after this returns
        thread.join(timeout=5)
        server.server_close()
        if not tracked.wait_idle(settings.graceful_timeout_s):
            log.warning(
                "in-flight requests did not finish within GRACEFUL_TIMEOUT_S",
                extra={"graceful_timeout_s": settings.graceful_timeout_s},
            )
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        os.close(wake_r)
        os.close(wake_w)
    if failure:
        log.error("server failed", exc_info=failure[0])
        return 5
    log.info("stopped")
    return 0


# --- gunicorn ------------------------------------------------------------------------------


# Set in the master once it stops as asked (SIGTERM, SIGINT, SIGQUIT): from then on a worker
# that ends by one of the stop signals is part of that stop, not a failure.
_stopping = threading.Event()
_STOP_KILL = re.compile(r"Worker \(pid:\d+\) was sent (SIGTERM|SIGINT|SIGQUIT)!")


class _StopIsNotAnError(logging.Filter):
    """Demotes gunicorn's "Worker (pid:N) was sent SIGTERM!" to INFO during a requested stop.

    gunicorn logs it at ERROR whenever a worker's exit status is a signal. On a stop the worker
    gets SIGTERM twice when the whole process group is signalled (the watchdog does that): once
    from the sender, once from the master. The second can land while the worker's interpreter is
    finalising, when Python has put the default action back, and kills it. The worker ignores
    the stop signals once it exits (``_worker_exit``), which closes that window; this filter is
    for what remains (a stop signal before a new worker installed its handlers). A worker killed
    by another signal (SIGKILL: out of memory, a timeout) stays an ERROR.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno >= logging.ERROR
            and _stopping.is_set()
            and _STOP_KILL.fullmatch(record.getMessage())
        ):
            record.levelno = logging.INFO
            record.levelname = "INFO"
        return True


def _worker_exit(_arbiter, worker) -> None:
    """gunicorn's ``worker_exit`` hook, run in the worker as it ends: a stop signal that
    arrives now has nothing left to stop, so it must not kill the process mid-exit. (The master
    runs the hook too, for a worker that was already gone: it keeps its handlers.)"""
    if os.getpid() != worker.pid:
        return
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)


def _post_fork(_arbiter, _worker) -> None:
    """gunicorn's ``post_fork`` hook, run in each new worker: its ``random`` must not replay the
    sequence of the process it was forked from (the zygote of a prewarmed runtime, or the
    master that preloaded the app) nor of its sibling workers."""
    import random

    random.seed()


# A gunicorn configuration made ahead by ``prepare_gunicorn`` (a prewarmed zygote, while it
# waits), taken by the next ``_serve_gunicorn`` instead of building one then.
_prepared: list = []


def prepare_gunicorn() -> None:
    """Builds gunicorn's configuration object now (its ~90 settings, about 1 ms), for the
    serve() that follows. Nothing in it depends on the function: serve() sets every option it
    uses, and the environment gunicorn keeps for a re-exec is read again then."""
    from gunicorn.config import Config

    _prepared[:] = [Config()]


def _serve_gunicorn(
    app, sock: socket.socket, settings: Settings, unix: socket.socket | None = None
) -> int:
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter
    from gunicorn.glogging import Logger

    class JsonLogger(Logger):
        """gunicorn's logger, but its records go to the root JSON handler, and a requested
        stop logs nothing at ERROR."""

        def setup(self, cfg):
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                for h in list(logger.handlers):
                    logger.removeHandler(h)
                logger.propagate = True
            if not any(isinstance(f, _StopIsNotAnError) for f in self.error_log.filters):
                self.error_log.addFilter(_StopIsNotAnError())

    class StoppingArbiter(Arbiter):
        LISTENERS: list  # gunicorn's listening sockets (its own class attribute)

        # Marked in the signal handler itself, not later in the main loop: when the whole group
        # is signalled, the worker can die and be reaped (SIGCHLD is handled at once) before the
        # loop gets to the queued SIGTERM.
        def signal(self, sig, frame):
            if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                _stopping.set()
            super().signal(sig, frame)

        def stop(self, graceful=True):
            _stopping.set()
            # gunicorn unlinks a Unix listener's path on stop, which fails for an abstract name
            # (no file; its name starts with a NUL byte): close those here, unlink nothing.
            keep = []
            for listener in self.LISTENERS:
                name = listener.getsockname()
                if isinstance(name, bytes) and name[:1] == b"\0":
                    listener.close()
                else:
                    keep.append(listener)
            self.LISTENERS = keep
            super().stop(graceful)

    from concurrent.futures import Future

    from gunicorn.workers.gthread import ThreadWorker

    class Worker(ThreadWorker):
        """gunicorn's gthread worker (connections kept alive, several listeners), except that with
        one thread (``THREADS=1``, the default) each request is served on the worker's main
        thread itself, as the sync worker did, instead of being handed to its one pool thread and
        back: that hand-off costs two thread wake-ups and the GIL passed between them for every
        request. The main loop is blocked meanwhile, as a sync worker's is; idle kept-alive
        connections wait in its poller."""

        def enqueue_req(self, conn):
            if self.cfg.threads > 1:
                return super().enqueue_req(conn)
            conn.init()
            done: Future = Future()
            try:
                done.set_result(self.handle(conn))  # handle() answers what a request raises
            except Exception as e:  # noqa: BLE001 - finish_request closes the connection
                done.set_exception(e)
            done.conn = conn  # type: ignore[attr-defined]
            self.finish_request(done)

    # gunicorn adopts the descriptor and closes it after duplicating it: detach so the
    # Python socket object does not close a number that may be reused.
    binds = [f"fd://{sock.detach()}"]
    if unix is not None:
        binds.append(f"fd://{unix.detach()}")
    options = {
        "bind": binds,
        "workers": settings.workers,
        # gthread: THREADS concurrent requests per worker, and connections kept alive between
        # requests (gunicorn's sync worker closes each connection after its response, so the
        # watchdog would connect anew for every invocation).
        "worker_class": Worker,
        "threads": settings.threads,
        # An idle kept-alive connection (the watchdog's pool) stays open this long; well above
        # any client's idle timeout, so the client closes first.
        "keepalive": 75,
        "preload_app": True,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "logger_class": JsonLogger,
        "timeout": settings.worker_timeout_s,
        "graceful_timeout": settings.graceful_timeout_s,
        "backlog": LISTEN_BACKLOG,
        "proc_name": "nanofaas-python-runtime",
        "worker_exit": _worker_exit,
        "post_fork": _post_fork,
    }

    class Embedded(BaseApplication):
        def load_default_config(self):
            if not _prepared:
                return super().load_default_config()
            self.cfg = _prepared.pop()
            # As a Config made now would have it: the environment at serve() (the function's).
            self.cfg.env_orig = os.environ.copy()

        def load_config(self):
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

        def run(self):  # BaseApplication.run, with the arbiter that notes a stop
            try:
                StoppingArbiter(self).run()
            except RuntimeError as e:
                log.error("gunicorn could not start: %s", e)
                sys.exit(1)

    try:
        Embedded().run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == 0:
            return 0
        log.error("gunicorn stopped with an error", extra={"gunicorn_exit": code})
        return 5
    return 0
