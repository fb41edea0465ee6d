"""The runtime as a real process: startup failures, both server backends end to end, SIGTERM."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import HANDLERS

BACKENDS = ["gunicorn", "werkzeug"]


def request(port: int, method: str, path: str, body: dict | None = None, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def wait_healthy(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            status, body = request(port, "GET", "/health", timeout=2)
            if status == 200 and body == {"status": "ok"}:
                return
            last = (status, body)
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"/health not 200 within {timeout_s}s: {last}")


def one_failure_line(proc, timeout_s: float = 20.0) -> dict:
    rc = proc.wait(timeout_s)
    lines = [line for line in proc.lines if line.strip()]
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["level"] == "ERROR"
    assert entry["code"] == "STARTUP_ERROR"
    assert entry["exit_code"] == rc
    return entry


# --- startup failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "function", "needle"),
    [
        ("nf_absent_module", "handle", "module 'nf_absent_module' not found"),
        ("handler", "absent_function", "has no attribute 'absent_function'"),
        ("not_callable", "handle", "not a function"),
        ("raises_on_import", "handle", "database not reachable"),
    ],
)
def test_unloadable_handler_exits_3_before_listening(runtime, module, function, needle):
    proc = runtime({"HANDLER_MODULE": module, "HANDLER_FUNCTION": function, "PORT": "0"})
    entry = one_failure_line(proc)
    assert proc.proc.returncode == 3
    assert needle in entry["msg"]


def test_syntax_error_exits_3(runtime, tmp_path):
    shutil.copy(HANDLERS / "syntax_error.py.txt", tmp_path / "handler.py")
    proc = runtime({"PORT": "0"}, cwd=tmp_path)  # default module, found in the working dir
    entry = one_failure_line(proc)
    assert proc.proc.returncode == 3
    assert "syntax error in" in entry["msg"] and "handler.py, line 1" in entry["msg"]


def test_invalid_configuration_exits_2(runtime):
    proc = runtime({"PORT": "eighty"})
    entry = one_failure_line(proc)
    assert proc.proc.returncode == 2
    assert "PORT='eighty' is not an integer" in entry["msg"]


def test_unexpected_argument_exits_2(runtime):
    proc = runtime({}, args=[sys.executable, "-m", "nanofaas_runtime", "--port", "1"])
    entry = one_failure_line(proc)
    assert proc.proc.returncode == 2
    assert "--port" in entry["msg"]


def test_port_in_use_exits_4(runtime):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = runtime({"PORT": str(port), "HANDLER_PATH": str(HANDLERS)})
        entry = one_failure_line(proc)
    assert proc.proc.returncode == 4
    assert f"cannot listen on 127.0.0.1:{port}" in entry["msg"]


def test_console_script_version(runtime):
    script = Path(sys.executable).parent / "nanofaas-python-runtime"
    if not script.exists():
        pytest.skip(
            "package not installed in this interpreter's environment (run scripts/python-env.sh)"
        )
    proc = runtime({}, args=[str(script), "--version"])
    assert proc.wait(20) == 0
    assert proc.proc.stdout.read().startswith("nanofaas-python-runtime ")


# --- end to end --------------------------------------------------------------------------------


def start_runtime(runtime, backend: str, **env):
    proc = runtime({"NANOFAAS_PY_SERVER": backend, "PORT": "0", **env})
    listening = proc.wait_for_log("listening")
    assert listening["server"] == backend
    port = listening["port"]
    assert port > 0
    wait_healthy(port)
    return proc, port


@pytest.mark.parametrize("backend", BACKENDS)
def test_end_to_end_warm_process(runtime, sink, backend):
    proc, port = start_runtime(runtime, backend)

    pids = []
    for i in range(2):
        status, body = request(
            port,
            "POST",
            "/invoke",
            {"input": {"pid": True}},
            {"X-Execution-Id": f"e2e-{i}", "X-Callback-Url": sink.url, "X-Trace-Id": f"t{i}"},
        )
        assert status == 200, body
        pids.append(body["pid"])
    assert pids[0] == pids[1], "both invocations must be served by the same warm process"
    if backend == "werkzeug":
        assert pids[0] == proc.proc.pid
    else:
        assert pids[0] != proc.proc.pid  # a gunicorn worker, forked from the master

    callbacks = sink.wait_for(2)
    assert [c.path.rsplit("/", 1)[1] for c in callbacks] == ["e2e-0:complete", "e2e-1:complete"]
    assert [c.headers["x-trace-id"] for c in callbacks] == ["t0", "t1"]
    assert all(c.json()["output"] == {"pid": pids[0]} for c in callbacks)

    status, body = request(port, "POST", "/invoke", {"input": "x"})
    assert status == 400 and body["error"]["code"] == "INVALID_REQUEST"

    started = time.monotonic()
    proc.proc.terminate()  # SIGTERM
    assert proc.wait(timeout_s=5) == 0
    assert time.monotonic() - started < 5

    # Logs are JSON lines, and no line is written per request.
    entries = [json.loads(line) for line in proc.lines if line.strip()]
    assert all("/invoke" not in e["msg"] and "/health" not in e["msg"] for e in entries), entries
    with pytest.raises(OSError):
        request(port, "GET", "/health", timeout=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_lets_the_in_flight_invocation_finish(runtime, backend, tmp_path):
    proc, port = start_runtime(runtime, backend)
    result: dict = {}
    mark = tmp_path / "running"

    def call():
        result["answer"] = request(
            port,
            "POST",
            "/invoke",
            {"input": {"sleep": 0.8, "mark": str(mark)}},
            {"X-Execution-Id": "slow"},
        )

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while not mark.exists():
        assert time.monotonic() < deadline, "the invocation never started"
        time.sleep(0.01)
    proc.proc.terminate()
    caller.join(timeout=10)
    assert not caller.is_alive()
    status, body = result["answer"]
    assert status == 200 and body["slept"] == 0.8
    assert proc.wait(timeout_s=5) == 0


def test_gunicorn_workers_setting(runtime):
    proc, port = start_runtime(runtime, "gunicorn", WORKERS="2")
    booted = set()
    deadline = time.monotonic() + 15
    while len(booted) < 2 and time.monotonic() < deadline:
        booted = {
            json.loads(line)["pid"]
            for line in list(proc.lines)
            if line.startswith("{") and "Booting worker" in line
        }
        time.sleep(0.05)
    assert len(booted) == 2, proc.lines
    proc.proc.terminate()
    assert proc.wait(timeout_s=5) == 0


def test_gunicorn_threads_serve_concurrently_in_one_process(runtime, tmp_path):
    proc, port = start_runtime(runtime, "gunicorn", THREADS="2")
    results: dict = {}

    def call(me: str, other: str):
        body = {"rendezvous": str(tmp_path), "me": me, "other": other}
        results[me] = request(port, "POST", "/invoke", {"input": body}, {"X-Execution-Id": me})

    callers = [
        threading.Thread(target=call, args=("a", "b")),
        threading.Thread(target=call, args=("b", "a")),
    ]
    for c in callers:
        c.start()
    for c in callers:
        c.join(timeout=15)
    assert results["a"][0] == 200 and results["b"][0] == 200
    assert results["a"][1]["met"] and results["b"][1]["met"], results
    assert results["a"][1]["pid"] == results["b"][1]["pid"]
    proc.proc.terminate()
    assert proc.wait(timeout_s=5) == 0


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie waiting for its new parent counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("threads", ["1", "2"])
def test_gunicorn_worker_exits_when_its_master_is_killed(runtime, threads):
    proc, port = start_runtime(runtime, "gunicorn", THREADS=threads)
    status, body = request(
        port, "POST", "/invoke", {"input": {"pid": True}}, {"X-Execution-Id": "k"}
    )
    assert status == 200
    worker = body["pid"]
    assert worker != proc.proc.pid
    proc.proc.kill()  # SIGKILL to the master only: no graceful stop
    proc.wait(timeout_s=5)
    deadline = time.monotonic() + 10
    while not _gone(worker):
        assert time.monotonic() < deadline, "the orphaned worker kept running"
        time.sleep(0.05)


@pytest.mark.parametrize("backend", BACKENDS)
def test_body_limit_holds_for_chunked_bodies(runtime, backend):
    proc, port = start_runtime(runtime, backend, MAX_REQUEST_BYTES="100")

    def chunked(body: bytes):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(
                "POST",
                "/invoke",
                body=iter([body[:50], body[50:]]),
                headers={"X-Execution-Id": "c"},
                encode_chunked=True,
            )
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    exact = json.dumps({"input": "x" * 87}).encode()
    assert len(exact) == 100
    assert chunked(exact) == (200, {"echo": "X" * 87})
    status, body = chunked(json.dumps({"input": "x" * 88}).encode())
    assert status == 413 and body["error"]["code"] == "PAYLOAD_TOO_LARGE"
