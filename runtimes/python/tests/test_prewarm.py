"""Prewarmed runtimes (``NANOFAAS_PREWARM=1``) as real processes: they wait without a handler,
are specialized once (environment and working directory in force before the handler's import),
fail visibly when the handler cannot be imported, and, with gunicorn, fork workers that share
no state with the zygote or with each other."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import time

import pytest

from conftest import HANDLERS

BACKENDS = ["gunicorn", "werkzeug"]


def request(port, method, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def invoke(port, payload=None):
    return request(port, "POST", "/invoke", {"input": payload}, {"X-Execution-Id": "e1"})


def start_prewarmed(runtime, tmp_path, backend, **env):
    proc = runtime(
        {"NANOFAAS_PREWARM": "1", "NANOFAAS_PY_SERVER": backend, "PORT": "0", **env},
        cwd=tmp_path,
    )
    line = proc.wait_for_log("prewarmed: waiting for a specialization")
    port = line["port"]
    assert request(port, "GET", "/health") == (200, {"status": "ok", "prewarmed": True})
    return proc, port


def specialize(port, module, **extra_env):
    return request(
        port,
        "POST",
        "/_nanofaas/specialize",
        {
            "function": "f",
            "env": {"HANDLER_MODULE": module, **extra_env},
            "workingDir": str(HANDLERS),
            "timeoutMs": 10000,
        },
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_env_and_working_dir_are_in_force_at_import_and_only_once(runtime, tmp_path, backend):
    proc, port = start_prewarmed(runtime, tmp_path, backend)
    status, body = invoke(port)
    assert (status, body["error"]["code"]) == (503, "STARTUP_ERROR"), body
    assert body["error"]["message"] == "not specialized"
    # Bad bodies leave it generic.
    for bad in (b"nope", {"function": ""}, {"function": "f", "workingDir": "relative"},
                {"function": "f", "env": {"A=B": "1"}}, {"function": "f", "x": 1}):
        status, body = request(port, "POST", "/_nanofaas/specialize", bad)
        assert status == 400, (bad, body)
    status, body = specialize(port, "prewarm_state", PREWARM_MARK="mine")
    assert status == 200 and body["specialized"] is True, body
    assert body["loadMs"] >= 0
    status, out = invoke(port)
    assert status == 200, out
    at = out["atImport"]
    assert at["env"] == {"PREWARM_MARK": "mine", "HANDLER_MODULE": "prewarm_state",
                         "NANOFAAS_PREWARM": "1"}, at
    assert at["cwd"] == str(HANDLERS), "the working directory changed before the import"
    assert out["mark"] == "mine"
    status, body = specialize(port, "prewarm_state")
    assert status == 409, body


def test_an_import_error_is_startup_error_and_the_process_exits(runtime, tmp_path):
    proc, port = start_prewarmed(runtime, tmp_path, "gunicorn")
    status, body = specialize(port, "raises_on_import")
    assert status == 500, body
    assert body["error"]["code"] == "STARTUP_ERROR"
    assert "database not reachable" in body["error"]["message"], body
    assert proc.wait(timeout_s=10) == 3


def _wait_gone(pid, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError:
            return
        assert time.monotonic() < deadline, f"pid {pid} still runs"
        time.sleep(0.02)


def test_zygote_children_share_no_state(runtime, tmp_path):
    proc, port = start_prewarmed(runtime, tmp_path, "gunicorn")
    assert specialize(port, "prewarm_state")[0] == 200
    first = [invoke(port)[1] for _ in range(2)]
    zygote = proc.proc.pid
    worker = first[0]["pid"]
    assert worker != zygote, "the worker is a child forked from the zygote"
    assert first[0]["atImport"]["pid"] == zygote, "the handler was imported in the zygote"
    assert [o["counter"] for o in first] == [1, 2]
    os.kill(worker, signal.SIGKILL)
    _wait_gone(worker)
    # gunicorn forks a new worker from the same zygote.
    deadline = time.monotonic() + 15
    while True:
        try:
            status, again = invoke(port)
            if status == 200 and again["pid"] != worker:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "no new worker"
        time.sleep(0.05)
    assert again["counter"] == 1, "the counter starts from the zygote's, not the dead sibling's"
    assert again["atImport"] == first[0]["atImport"]
    assert again["random"] != first[0]["random"], (
        "a new child must not replay its sibling's random sequence (reseeded after the fork)"
    )


def test_extra_imports_are_checked(runtime, tmp_path):
    proc = runtime(
        {"NANOFAAS_PREWARM": "1", "PORT": "0", "NANOFAAS_PREWARM_IMPORTS": "json, no_such_mod_x"},
        cwd=tmp_path,
    )
    assert proc.wait(timeout_s=15) == 2
    assert any("no_such_mod_x" in line for line in proc.lines), proc.lines


def test_the_warm_up_runs_the_runtimes_own_code_only_and_leaves_nothing_behind(caplog):
    """The zygote's warm-up request goes through the app, bound to a handler of the runtime's
    own: no handler is imported, nothing is registered with the SDK, no invocation stays
    current, nothing is logged, and the app is left unbound ("not specialized")."""
    import sys

    from nanofaas.sdk import decorator

    from nanofaas_runtime import context, prewarm
    from nanofaas_runtime.config import Settings

    settings = Settings.from_env()
    before = set(sys.modules)
    prewarm.preload(settings)
    with caplog.at_level("DEBUG"):
        app, bind = prewarm.warm_up(settings)
    prewarm.freeze_heap()
    import gc

    gc.unfreeze()  # this test process is no zygote
    assert "handler" not in set(sys.modules) - before
    assert decorator.get_registered_handler() is None
    assert (context.execution_id.get(), context.trace_id.get()) == (None, None)
    assert context.traceparent.get() is None
    assert [r for r in caplog.records if r.name.startswith("nanofaas")] == []
    client = app.test_client()
    resp = client.post("/invoke", json={"input": 1}, headers={"X-Execution-Id": "e1"})
    assert resp.status_code == 503
    assert resp.get_json()["error"] == {"code": "STARTUP_ERROR", "message": "not specialized"}
    bind(dataclasses.replace(settings, max_request_bytes=16), lambda request: {"got": request})
    resp = client.post("/invoke", json={"input": 1}, headers={"X-Execution-Id": "e1"})
    assert resp.status_code == 200 and resp.get_json()["got"]["input"] == 1
    big = b'{"input": "0123456789abcdef"}'
    resp = client.post("/invoke", data=big, headers={"X-Execution-Id": "e1"})
    assert resp.status_code == 413, "the bound settings' MAX_REQUEST_BYTES is in force"
