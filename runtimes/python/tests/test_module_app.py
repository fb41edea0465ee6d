"""The seed's entry points: the module-level ``nanofaas_runtime.app:app`` (settings from the
environment at request time, handler loaded on first use, a clear answer when it cannot be),
``gunicorn ... nanofaas_runtime.app:app`` and ``python -m nanofaas_runtime.app`` as processes."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest
from test_process import request, wait_healthy

from conftest import HANDLERS, RuntimeProcess
from nanofaas_runtime.app import create_env_app


@pytest.fixture
def env_client(monkeypatch):
    """The app behind the module-level ``app``, built before any setting is made."""
    monkeypatch.chdir(HANDLERS)  # HANDLER_PATH defaults to the working directory
    app = create_env_app()
    app.config["TESTING"] = True
    return app.test_client()


def invoke(client, body=None, **headers):
    return client.post("/invoke", json={"input": "hi"} if body is None else body, headers=headers)


def test_the_module_level_app_is_one_flask_app():
    import nanofaas_runtime.app as module
    from nanofaas_runtime.app import app

    assert module.app is app
    assert app.name == "nanofaas_runtime"
    resp = app.test_client().get("/health")
    assert (resp.status_code, resp.json) == (200, {"status": "ok"})


def test_settings_made_after_the_app_is_built_count(env_client, monkeypatch, sink):
    monkeypatch.setenv("EXECUTION_ID", "")
    resp = invoke(env_client)
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "INVALID_REQUEST"

    monkeypatch.setenv("EXECUTION_ID", "env-1")
    resp = invoke(env_client, {"input": "world"})
    assert (resp.status_code, resp.json) == (200, {"echo": "WORLD"})
    # The header still wins over the environment.
    monkeypatch.setenv("CALLBACK_URL", sink.url)
    monkeypatch.setenv("TRACE_ID", "tr-env")
    resp = invoke(env_client, {"input": "x"}, **{"X-Execution-Id": "hdr-1"})
    assert resp.status_code == 200
    got = sink.wait_for(1)[0]
    assert got.path == "/v1/internal/executions/hdr-1:complete"
    assert got.headers["x-trace-id"] == "tr-env"
    assert got.json() == {"success": True, "output": {"echo": "X"}, "error": None}

    monkeypatch.setenv("MAX_REQUEST_BYTES", "10")
    resp = invoke(env_client, {"input": "a much longer input"})
    assert resp.status_code == 413


def test_handler_module_and_function_are_read_on_first_use(env_client, monkeypatch, tmp_path):
    (tmp_path / "nf_lazy_probe.py").write_text(
        "def handle(request):\n    return 'first'\n\ndef other(request):\n    return 'second'\n"
    )
    monkeypatch.setenv("HANDLER_PATH", str(tmp_path))
    monkeypatch.setenv("HANDLER_MODULE", "nf_lazy_probe")
    assert env_client.get("/health").status_code == 200
    assert "nf_lazy_probe" not in sys.modules, "imported before the first invocation"
    resp = invoke(env_client, **{"X-Execution-Id": "e1"})
    assert (resp.status_code, resp.json) == (200, "first")
    monkeypatch.setenv("HANDLER_FUNCTION", "other")
    resp = invoke(env_client, **{"X-Execution-Id": "e2"})
    assert (resp.status_code, resp.json) == (200, "second")


@pytest.mark.parametrize(
    "module, needle",
    [
        ("nf_not_there", "module 'nf_not_there' not found"),
        ("raises_on_import", "RuntimeError: database not reachable"),
        ("not_callable", "not a function"),
    ],
)
def test_a_handler_that_cannot_load_answers_503_naming_the_cause(
    env_client, monkeypatch, sink, module, needle
):
    monkeypatch.setenv("HANDLER_MODULE", module)
    if module == "not_callable":
        monkeypatch.setenv("HANDLER_FUNCTION", "handle")
    monkeypatch.setenv("CALLBACK_URL", sink.url)
    assert env_client.get("/health").status_code == 200
    resp = invoke(env_client, **{"X-Execution-Id": "e-broken"})
    assert resp.status_code == 503
    err = resp.json["error"]
    assert err["code"] == "STARTUP_ERROR"
    assert needle in err["message"] and module in err["message"], err
    # A callback-only caller learns it too.
    cb = sink.wait_for(1)[0]
    assert cb.path.endswith("/e-broken:complete")
    assert cb.json()["error"] == err and cb.json()["success"] is False
    # Fixing the setting is enough: the next request loads the handler.
    monkeypatch.setenv("HANDLER_MODULE", "handler")
    resp = invoke(env_client, **{"X-Execution-Id": "e-fixed"})
    assert (resp.status_code, resp.json) == (200, {"echo": "HI"})


def test_a_bad_setting_answers_503_naming_the_variable(env_client, monkeypatch):
    monkeypatch.setenv("CALLBACK_ATTEMPTS", "lots")
    resp = invoke(env_client, **{"X-Execution-Id": "e1"})
    assert resp.status_code == 503
    assert resp.json["error"]["code"] == "STARTUP_ERROR"
    assert "CALLBACK_ATTEMPTS" in resp.json["error"]["message"]
    monkeypatch.delenv("CALLBACK_ATTEMPTS")
    assert invoke(env_client, **{"X-Execution-Id": "e1"}).status_code == 200


# --- as processes ------------------------------------------------------------------------------


def _gunicorn() -> list[str]:
    script = Path(sys.executable).with_name("gunicorn")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]


def _listening_port(p: RuntimeProcess) -> int:
    entry = p.wait_for_line(lambda line: "Listening at: http://127.0.0.1:" in line)
    text = entry.get("msg") or entry.get("line")
    return int(re.search(r"http://127\.0\.0\.1:(\d+)", text).group(1))


def _serves_the_seed_contract(port: int, sink) -> None:
    wait_healthy(port)
    pids = set()
    for n in (1, 2):
        status, body = request(
            port,
            "POST",
            "/invoke",
            {"input": {"pid": True}},
            {
                "X-Execution-Id": f"exec-{n}",
                "X-Trace-Id": f"trace-{n}",
                "X-Callback-Url": sink.url,
            },
        )
        assert status == 200, body
        pids.add(body["pid"])
    assert len(pids) == 1, "both calls in the one warm worker"
    calls = sink.wait_for(2)
    assert [c.path for c in calls] == [
        "/v1/internal/executions/exec-1:complete",
        "/v1/internal/executions/exec-2:complete",
    ]
    assert [c.headers["x-trace-id"] for c in calls] == ["trace-1", "trace-2"]
    assert calls[0].json()["success"] is True
    status, body = request(port, "POST", "/invoke", {"input": "x"})
    assert status == 400, "no execution id"


def test_gunicorn_serves_nanofaas_runtime_app_app(runtime, sink):
    # The seed's Dockerfile CMD, on loopback and a free port.
    p = runtime(
        {"HANDLER_MODULE": "handler"},
        args=[*_gunicorn(), "-b", "127.0.0.1:0", "-w", "1", "nanofaas_runtime.app:app"],
    )
    _serves_the_seed_contract(_listening_port(p), sink)
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_gunicorn_answers_a_missing_handler_with_its_cause(runtime):
    p = runtime(
        {"HANDLER_MODULE": "nf_no_such_module"},
        args=[*_gunicorn(), "-b", "127.0.0.1:0", "-w", "1", "nanofaas_runtime.app:app"],
    )
    port = _listening_port(p)
    wait_healthy(port)
    status, body = request(port, "POST", "/invoke", {"input": 1}, {"X-Execution-Id": "e1"})
    assert status == 503
    assert body["error"]["code"] == "STARTUP_ERROR"
    assert "module 'nf_no_such_module' not found" in body["error"]["message"]
    # The cause is in the log too, as a JSON line.
    p.wait_for_line(lambda line: "nf_no_such_module" in line and '"STARTUP_ERROR"' in line)


def test_python_m_nanofaas_runtime_app_serves_like_the_package(runtime, sink, tmp_path):
    # The seed's "run locally": HANDLER_MODULE=tests.fixtures.handler from the runtime's folder.
    fixtures = tmp_path / "tests" / "fixtures"
    fixtures.mkdir(parents=True)
    (fixtures / "handler.py").write_text((HANDLERS / "handler.py").read_text())
    p = runtime(
        {"HANDLER_MODULE": "tests.fixtures.handler", "PORT": "0"},
        args=[sys.executable, "-m", "nanofaas_runtime.app"],
        cwd=tmp_path,
    )
    listening = p.wait_for_log("listening")
    assert listening["handler"] == "tests.fixtures.handler:handle"
    _serves_the_seed_contract(listening["port"], sink)
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_python_m_nanofaas_runtime_app_still_fails_before_listening(runtime):
    p = runtime(
        {"HANDLER_MODULE": "nf_no_such_module", "PORT": "0"},
        args=[sys.executable, "-m", "nanofaas_runtime.app"],
    )
    assert p.wait(20) == 3
    lines = [line for line in p.lines if line.strip()]
    assert len(lines) == 1 and "nf_no_such_module" in lines[0], lines
