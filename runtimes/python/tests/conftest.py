"""Shared fixtures: an in-process app factory, a real callback sink, and runtime processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nanofaas_runtime.app import create_app
from nanofaas_runtime.config import Settings
from nanofaas_runtime.handler import load_handler

TESTS = Path(__file__).resolve().parent
HANDLERS = TESTS / "handlers"
SRC = TESTS.parent / "src"

# Every variable the runtime reads: cleared for each test so the caller's environment never
# leaks in, and restored by monkeypatch afterwards.
RUNTIME_ENV = (
    "HANDLER_MODULE HANDLER_FUNCTION HANDLER_PATH EXECUTION_ID TRACE_ID TRACEPARENT CALLBACK_URL "
    "CALLBACK_TOKEN CALLBACK_ATTEMPTS CALLBACK_TIMEOUT_MS CALLBACK_BACKOFF_MS HOST PORT "
    "NANOFAAS_PY_SERVER WORKERS THREADS GRACEFUL_TIMEOUT_S WORKER_TIMEOUT_S MAX_REQUEST_BYTES "
    "LOG_LEVEL NANOFAAS_RUNTIME_SOCKET NANOFAAS_PREWARM NANOFAAS_PREWARM_IMPORTS PREWARM_MARK"
).split()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in RUNTIME_ENV:
        monkeypatch.delenv(name, raising=False)
    # load_handler puts HANDLER_PATH on sys.path: give each test its own copy of the list.
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def make_client(monkeypatch):
    """``make_client(**env)`` sets the environment (monkeypatched), builds the app the way the
    entry point does and returns a Flask test client."""

    def make(**env):
        monkeypatch.setenv("HANDLER_PATH", str(HANDLERS))
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        settings = Settings.from_env()
        handler = load_handler(
            settings.handler_module, settings.handler_function, settings.handler_path
        )
        app = create_app(settings, handler)
        app.config["TESTING"] = True
        return app.test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


# --- callback sink ---------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Sink:
    """A real HTTP server on 127.0.0.1 that records every POST and answers with the next
    status from ``statuses`` (then ``default_status``)."""

    url: str
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    default_status: int = 204
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def record(self, r: Received) -> int:
        with self._arrived:
            self.requests.append(r)
            self._arrived.notify_all()
            return self.statuses.pop(0) if self.statuses else self.default_status

    def wait_for(self, n: int, timeout_s: float = 5.0) -> list[Received]:
        with self._arrived:
            ok = self._arrived.wait_for(lambda: len(self.requests) >= n, timeout=timeout_s)
        assert ok, f"expected {n} callback(s) within {timeout_s}s, got {len(self.requests)}"
        return list(self.requests)


def _start_sink() -> tuple[Sink, ThreadingHTTPServer, threading.Thread]:
    sink_ref: list[Sink] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status = sink_ref[0].record(
                Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink = Sink(url=f"http://127.0.0.1:{server.server_address[1]}/v1/internal/executions")
    sink_ref.append(sink)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return sink, server, thread


@pytest.fixture
def sink():
    s, server, thread = _start_sink()
    yield s
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def other_sink():
    s, server, thread = _start_sink()
    yield s
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port():
    """A loopback port with nothing listening on it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- runtime processes -----------------------------------------------------------------------


class RuntimeProcess:
    """``python -m nanofaas_runtime`` as a child process, with its stderr lines collected."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None, cwd: Path = HANDLERS):
        full = {k: v for k, v in os.environ.items() if k not in RUNTIME_ENV}
        full["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p
        )
        full.update(env)
        self.lines: list[str] = []
        self._arrived = threading.Condition()
        self._ended = False
        self.proc = subprocess.Popen(
            args or [sys.executable, "-m", "nanofaas_runtime"],
            env=full,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: gunicorn workers included
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._arrived:
                self.lines.append(line.rstrip("\n"))
                self._arrived.notify_all()
        with self._arrived:
            self._ended = True
            self._arrived.notify_all()

    def wait_for_log(self, msg: str, timeout_s: float = 15.0) -> dict:
        """The first JSON log line whose ``msg`` is ``msg``; fails after ``timeout_s``."""
        return self.wait_for_line(
            lambda line: (_json_or_none(line) or {}).get("msg") == msg, timeout_s, what=repr(msg)
        )

    def wait_for_line(self, pred, timeout_s: float = 15.0, n: int = 1, what: str = "") -> dict:
        """The ``n``-th stderr line that ``pred`` accepts (parsed JSON, or ``{"line": ...}`` when
        it is not JSON); fails after ``timeout_s`` or when the process ends first."""
        what = what or "matching"

        def nth():
            found = [line for line in self.lines if pred(line)]
            return found[n - 1] if len(found) >= n else None

        with self._arrived:
            ok = self._arrived.wait_for(lambda: nth() is not None or self._ended, timeout_s)
            line = nth()
        assert line is not None, (
            f"no {what} line (#{n}) "
            + ("before the process ended" if ok else f"within {timeout_s}s")
            + f": {self.lines}"
        )
        return _json_or_none(line) or {"line": line}

    def wait(self, timeout_s: float) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        return rc

    def stop(self) -> None:
        """Stops the process and its group: SIGTERM, then SIGKILL after 5 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the group, if any
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _json_or_none(line: str):
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@pytest.fixture
def runtime():
    """``runtime(env, args=None, cwd=HANDLERS)`` starts a runtime process; all are stopped at
    teardown, by PID and process group."""
    started: list[RuntimeProcess] = []

    def start(env: dict[str, str], args: list[str] | None = None, cwd: Path = HANDLERS):
        p = RuntimeProcess(env, args, cwd)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
