"""The original nanofaas's Python SDK surface (``nanofaas.sdk``): functions written against it
run unchanged, get the input only, see their execution and trace ids, and log lines tagged
with the execution id."""

from __future__ import annotations

import json
import logging

import pytest
from test_process import request, wait_healthy

from nanofaas_runtime import context as rt_context
from nanofaas_runtime.logs import JsonFormatter

TEXT = "the cat and the hat and the bat"


def test_the_surface_the_original_documents():
    import nanofaas.sdk as sdk
    from nanofaas.sdk import context, nanofaas_function
    from nanofaas.sdk.decorator import get_registered_handler

    assert set(sdk.__all__) == {"nanofaas_function", "context", "logging"}
    assert callable(sdk.logging.configure_logging)

    def f(x):
        return x

    assert nanofaas_function(f) is f, "the decorator returns the function unchanged"
    assert get_registered_handler() is f
    assert context.get_execution_id() is None and context.get_trace_id() is None
    logger = context.get_logger("nf.sdk.test")
    assert logger is logging.getLogger("nf.sdk.test")
    with pytest.raises(TypeError):
        nanofaas_function("not a function")


def test_word_count_gets_the_input_and_its_ids(make_client):
    client = make_client(HANDLER_MODULE="sdk_word_count")
    resp = client.post(
        "/invoke",
        json={"input": {"text": TEXT, "top": 2}, "metadata": {"k": "v"}},
        headers={"X-Execution-Id": "e-wc-1", "X-Trace-Id": "t-wc-1", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    assert resp.status_code == 200, resp.json
    out = resp.json
    assert (out["words"], out["distinct"]) == (8, 5)
    assert out["top"] == [["the", 3], ["and", 2]]
    assert (out["executionId"], out["traceId"]) == ("e-wc-1", "t-wc-1")
    assert out["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    # A bare string input works too, and the ids follow each call.
    resp = client.post("/invoke", json={"input": "a a b"}, headers={"X-Execution-Id": "e-wc-2"})
    assert resp.json["words"] == 3 and resp.json["executionId"] == "e-wc-2"
    assert resp.json["traceId"] is None
    assert resp.json["traceparent"] is None
    # Outside an invocation the context is empty again.
    assert rt_context.execution_id.get() is None


def test_an_sdk_function_that_raises_is_a_handler_error(make_client):
    client = make_client(HANDLER_MODULE="sdk_word_count")
    resp = client.post("/invoke", json={"input": {"text": 42}}, headers={"X-Execution-Id": "e"})
    assert resp.status_code == 500
    assert resp.json["error"] == {
        "code": "HANDLER_ERROR",
        "message": "text must be a string, got int",
    }
    assert rt_context.execution_id.get() is None


def test_json_transform_is_found_by_its_decorator_and_runs_async(make_client):
    client = make_client(HANDLER_MODULE="sdk_json_transform")  # HANDLER_FUNCTION: handle
    records = [{"n": "b", "v": 2, "x": 0}, {"n": "a", "v": 1, "x": 0}, {"n": "c", "x": 0}]
    resp = client.post(
        "/invoke",
        json={
            "input": {
                "records": records,
                "select": ["n", "v"],
                "rename": {"n": "name"},
                "sortBy": "v",
            }
        },
        headers={"X-Execution-Id": "e-jt"},
    )
    assert resp.status_code == 200, resp.json
    assert resp.json["records"] == [
        {"name": "a", "v": 1},
        {"name": "b", "v": 2},
        {"name": "c", "v": None},
    ]
    assert (resp.json["count"], resp.json["executionId"]) == (3, "e-jt")


def test_a_module_without_the_function_or_a_decorator_still_fails_clearly(tmp_path):
    from nanofaas_runtime.handler import HandlerLoadError, load_handler

    (tmp_path / "nf_plain_mod.py").write_text(
        "import nanofaas.sdk\n\ndef other(r):\n    return r\n"
    )
    with pytest.raises(HandlerLoadError, match="no attribute 'handle' .and no @nanofaas_function"):
        load_handler("nf_plain_mod", "handle", str(tmp_path))


def test_log_lines_carry_the_ids_of_the_invocation_being_served():
    def line():
        rec = logging.LogRecord("fn", logging.INFO, "", 0, "working", None, None)
        return json.loads(JsonFormatter().format(rec))

    assert "execution_id" not in line()
    tokens = rt_context.enter("e-log", "t-log")
    try:
        entry = line()
        assert (entry["execution_id"], entry["trace_id"]) == ("e-log", "t-log")
    finally:
        rt_context.leave(tokens)
    assert "execution_id" not in line()


@pytest.mark.parametrize("backend", ["gunicorn", "werkzeug"])
def test_a_word_count_process_is_warm_and_logs_with_the_execution_id(runtime, backend):
    p = runtime({"HANDLER_MODULE": "sdk_word_count", "PORT": "0", "NANOFAAS_PY_SERVER": backend})
    port = p.wait_for_log("listening")["port"]
    wait_healthy(port)
    outs = []
    for n in (1, 2):
        status, out = request(
            port, "POST", "/invoke", {"input": {"text": TEXT}}, {"X-Execution-Id": f"e-p{n}"}
        )
        assert status == 200, out
        outs.append(out)
    assert outs[0]["pid"] == outs[1]["pid"] and [o["calls"] for o in outs] == [1, 2]
    for n in (1, 2):
        entry = p.wait_for_line(
            lambda line, n=n: '"counted 8 words"' in line and f'"e-p{n}"' in line
        )
        assert entry["logger"] == "sdk_word_count" and entry["level"] == "INFO"
        assert entry["execution_id"] == f"e-p{n}"
