"""The HTTP contract, in process through Flask's test client; callbacks go to a real sink."""

from __future__ import annotations

import time


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}
    assert response.mimetype == "application/json"


def test_invoke_with_header_execution_id(client):
    response = client.post(
        "/invoke", json={"input": "hello"}, headers={"X-Execution-Id": "exec-123"}
    )
    assert response.status_code == 200
    assert response.json["echo"] == "HELLO"


def test_invoke_without_execution_id_fails(client):
    response = client.post("/invoke", json={"input": "hello"})
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert "X-Execution-Id" in error["message"] and "EXECUTION_ID" in error["message"]


def test_empty_env_execution_id_counts_as_missing(make_client):
    client = make_client(EXECUTION_ID="")
    assert client.post("/invoke", json={"input": "x"}).status_code == 400


def test_invoke_with_env_execution_id(make_client, sink):
    client = make_client(EXECUTION_ID="env-exec-456", CALLBACK_URL=sink.url)
    response = client.post("/invoke", json={"input": "world"})
    assert response.status_code == 200
    assert response.json["echo"] == "WORLD"
    (cb,) = sink.wait_for(1)
    assert cb.path == "/v1/internal/executions/env-exec-456:complete"


def test_header_execution_id_beats_env(make_client, sink):
    client = make_client(EXECUTION_ID="from-env", CALLBACK_URL=sink.url)
    response = client.post("/invoke", json={"input": "a"}, headers={"X-Execution-Id": "from-hdr"})
    assert response.status_code == 200
    (cb,) = sink.wait_for(1)
    assert cb.path.endswith("/from-hdr:complete")


def test_handler_gets_request_dict_with_defaults(client):
    response = client.post(
        "/invoke", json={"input": {"request": True}}, headers={"X-Execution-Id": "e"}
    )
    assert response.json == {"input": {"request": True}, "metadata": {}}
    response = client.post(
        "/invoke",
        json={"input": {"request": True}, "metadata": {"k": "v"}},
        headers={"X-Execution-Id": "e"},
    )
    assert response.json == {"input": {"request": True}, "metadata": {"k": "v"}}


def test_handler_output_null_and_scalars(client):
    for value in (None, 3, [1, "x"], True):
        response = client.post("/invoke", json={"input": value}, headers={"X-Execution-Id": "e"})
        assert response.status_code == 200
        assert response.json == value


# --- callbacks -------------------------------------------------------------------------------


def test_success_callback_body_and_headers(client, sink):
    response = client.post(
        "/invoke",
        json={"input": "hi"},
        headers={
            "X-Execution-Id": "exec-1",
            "X-Trace-Id": "trace-9",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "X-Callback-Url": sink.url + "/",  # a trailing slash is not doubled
            "X-Callback-Token": "tok-abc",
        },
    )
    assert response.status_code == 200
    (cb,) = sink.wait_for(1)
    assert cb.path == "/v1/internal/executions/exec-1:complete"
    assert cb.headers["content-type"] == "application/json"
    assert cb.headers["x-trace-id"] == "trace-9"
    assert cb.headers["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert cb.headers["x-callback-token"] == "tok-abc"
    assert cb.json() == {"success": True, "output": {"echo": "HI"}, "error": None}


def test_callback_without_trace_or_token_sends_neither_header(client, sink):
    client.post(
        "/invoke",
        json={"input": "hi"},
        headers={"X-Execution-Id": "exec-2", "X-Callback-Url": sink.url},
    )
    (cb,) = sink.wait_for(1)
    assert "x-trace-id" not in cb.headers
    assert "traceparent" not in cb.headers
    assert "x-callback-token" not in cb.headers


def test_error_callback_body(client, sink):
    response = client.post(
        "/invoke",
        json={"input": {"raise": "boom"}},
        headers={"X-Execution-Id": "exec-3", "X-Callback-Url": sink.url, "X-Trace-Id": "t3"},
    )
    assert response.status_code == 500
    assert response.json == {"error": {"code": "HANDLER_ERROR", "message": "boom"}}
    (cb,) = sink.wait_for(1)
    assert cb.headers["x-trace-id"] == "t3"
    assert cb.json() == {
        "success": False,
        "output": None,
        "error": {"code": "HANDLER_ERROR", "message": "boom"},
    }


def test_callback_settings_from_env(make_client, sink):
    client = make_client(CALLBACK_URL=sink.url, CALLBACK_TOKEN="env-token", TRACE_ID="env-trace")
    client.post("/invoke", json={"input": "x"}, headers={"X-Execution-Id": "e4"})
    (cb,) = sink.wait_for(1)
    assert cb.path.endswith("/e4:complete")
    assert cb.headers["x-callback-token"] == "env-token"
    assert cb.headers["x-trace-id"] == "env-trace"


def test_callback_headers_beat_env(make_client, sink, other_sink):
    client = make_client(CALLBACK_URL=other_sink.url, CALLBACK_TOKEN="env-token")
    client.post(
        "/invoke",
        json={"input": "x"},
        headers={
            "X-Execution-Id": "e5",
            "X-Callback-Url": sink.url,
            "X-Callback-Token": "hdr-token",
        },
    )
    (cb,) = sink.wait_for(1)
    assert cb.headers["x-callback-token"] == "hdr-token"
    assert other_sink.requests == []


def test_no_callback_without_url(client, sink):
    response = client.post("/invoke", json={"input": "x"}, headers={"X-Execution-Id": "e6"})
    assert response.status_code == 200
    # The callback is sent before the response, so nothing can still be on its way.
    assert sink.requests == []


def test_callback_retried_on_5xx_then_accepted(make_client, sink):
    client = make_client(CALLBACK_BACKOFF_MS=1)
    sink.statuses = [503, 500]
    response = client.post(
        "/invoke", json={"input": "x"}, headers={"X-Execution-Id": "e7", "X-Callback-Url": sink.url}
    )
    assert response.status_code == 200
    received = sink.wait_for(3)
    assert len(received) == 3
    assert all(r.json()["output"] == {"echo": "X"} for r in received)


def test_callback_not_retried_on_4xx(make_client, sink):
    client = make_client(CALLBACK_BACKOFF_MS=1)
    sink.default_status = 403
    response = client.post(
        "/invoke", json={"input": "x"}, headers={"X-Execution-Id": "e8", "X-Callback-Url": sink.url}
    )
    assert response.status_code == 200
    assert len(sink.requests) == 1


def test_callback_gives_up_after_attempts(make_client, sink):
    client = make_client(CALLBACK_BACKOFF_MS=1, CALLBACK_ATTEMPTS=2)
    sink.default_status = 500
    response = client.post(
        "/invoke", json={"input": "x"}, headers={"X-Execution-Id": "e9", "X-Callback-Url": sink.url}
    )
    assert response.status_code == 200
    assert len(sink.requests) == 2


def test_unreachable_callback_does_not_fail_the_call(make_client, closed_port):
    client = make_client(CALLBACK_BACKOFF_MS=1, CALLBACK_TIMEOUT_MS=500)
    started = time.monotonic()
    response = client.post(
        "/invoke",
        json={"input": "x"},
        headers={"X-Execution-Id": "e10", "X-Callback-Url": f"http://127.0.0.1:{closed_port}/cb"},
    )
    assert response.status_code == 200
    assert response.json == {"echo": "X"}
    assert time.monotonic() - started < 5


def test_unusable_callback_url_header_does_not_fail_the_call(client):
    response = client.post(
        "/invoke",
        json={"input": "x"},
        headers={"X-Execution-Id": "e11", "X-Callback-Url": "ftp://nowhere"},
    )
    assert response.status_code == 200


# --- errors ------------------------------------------------------------------------------------


def test_handler_error_is_500_handler_error(client):
    response = client.post(
        "/invoke", json={"input": {"raise": "bad input"}}, headers={"X-Execution-Id": "e"}
    )
    assert response.status_code == 500
    assert response.json == {"error": {"code": "HANDLER_ERROR", "message": "bad input"}}


def test_handler_error_without_message_names_the_exception(client):
    response = client.post(
        "/invoke", json={"input": {"raise_empty": True}}, headers={"X-Execution-Id": "e"}
    )
    assert response.status_code == 500
    assert response.json["error"] == {"code": "HANDLER_ERROR", "message": "KeyError"}


def test_handler_calling_exit_is_a_handler_error(client):
    response = client.post(
        "/invoke", json={"input": {"exit": True}}, headers={"X-Execution-Id": "e"}
    )
    assert response.status_code == 500
    assert response.json["error"]["code"] == "HANDLER_ERROR"


def test_invalid_json_is_400(client):
    response = client.post(
        "/invoke",
        data=b'{"input": ',
        content_type="application/json",
        headers={"X-Execution-Id": "e"},
    )
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert "not valid JSON" in error["message"]


def test_invalid_json_reports_failure_to_callback(client, sink):
    response = client.post(
        "/invoke", data=b"nope", headers={"X-Execution-Id": "e12", "X-Callback-Url": sink.url}
    )
    assert response.status_code == 400
    (cb,) = sink.wait_for(1)
    assert cb.json()["success"] is False
    assert cb.json()["error"]["code"] == "INVALID_REQUEST"


def test_body_shapes_rejected(client):
    cases = {
        b"": "empty",
        b"   ": "empty",
        b"[1, 2]": "JSON object",
        b'"text"': "JSON object",
        b'{"input": 1, "metadata": [1]}': "metadata",
        b"\xff\xfe": "not valid JSON",
    }
    for body, needle in cases.items():
        response = client.post("/invoke", data=body, headers={"X-Execution-Id": "e"})
        assert response.status_code == 400, body
        assert needle in response.json["error"]["message"], (body, response.json)


def test_json_content_type_not_required(client):
    response = client.post("/invoke", data=b'{"input": "plain"}', headers={"X-Execution-Id": "e"})
    assert response.status_code == 200
    assert response.json == {"echo": "PLAIN"}


def test_unserialisable_output_is_function_error(client, sink):
    response = client.post(
        "/invoke",
        json={"input": {"set": True}},
        headers={"X-Execution-Id": "e13", "X-Callback-Url": sink.url},
    )
    assert response.status_code == 500
    error = response.json["error"]
    assert error["code"] == "FUNCTION_ERROR"
    assert "not JSON-serialisable" in error["message"] and "set" in error["message"]
    (cb,) = sink.wait_for(1)
    assert cb.json()["error"]["code"] == "FUNCTION_ERROR"


def test_nan_output_is_function_error(client):
    response = client.post(
        "/invoke", json={"input": {"nan": True}}, headers={"X-Execution-Id": "e"}
    )
    assert response.status_code == 500
    assert response.json["error"]["code"] == "FUNCTION_ERROR"


def test_body_over_limit_is_413(make_client):
    client = make_client(MAX_REQUEST_BYTES=64)
    response = client.post("/invoke", json={"input": "x" * 100}, headers={"X-Execution-Id": "e"})
    assert response.status_code == 413
    assert response.json["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "MAX_REQUEST_BYTES=64" in response.json["error"]["message"]


def test_body_exactly_at_limit_is_accepted(make_client):
    client = make_client(MAX_REQUEST_BYTES=20)
    body = b'{"input": "abcdefgh"}'
    assert len(body) == 21
    response = client.post("/invoke", data=body, headers={"X-Execution-Id": "e"})
    assert response.status_code == 413
    client = make_client(MAX_REQUEST_BYTES=21)
    response = client.post("/invoke", data=body, headers={"X-Execution-Id": "e"})
    assert response.status_code == 200


def test_unknown_route_and_method_are_json(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "NOT_FOUND"
    response = client.get("/invoke")
    assert response.status_code == 405
    assert response.json["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in response.headers["Allow"]


def test_async_handler(make_client):
    client = make_client(HANDLER_MODULE="async_handler")
    response = client.post("/invoke", json={"input": 5}, headers={"X-Execution-Id": "e"})
    assert response.status_code == 200
    assert response.json == {"async": 5}


def test_handler_loaded_once_not_per_call(make_client, monkeypatch):
    import importlib

    client = make_client()
    calls = []
    real = importlib.import_module
    monkeypatch.setattr(
        importlib, "import_module", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    for _ in range(3):
        assert (
            client.post("/invoke", json={"input": "a"}, headers={"X-Execution-Id": "e"}).status_code
            == 200
        )
    assert calls == []
