"""callback.send / callback.target without the app."""

from __future__ import annotations

from nanofaas_runtime import callback
from nanofaas_runtime.callback import CallbackPolicy


def test_target_strips_trailing_slashes_and_encodes_id():
    assert callback.target("http://h/cb/", "e-1") == "http://h/cb/e-1:complete"
    assert callback.target("http://h/cb", "e-1") == "http://h/cb/e-1:complete"
    assert callback.target("http://h/cb//", "e-1") == "http://h/cb/e-1:complete"
    assert callback.target("http://h/cb", "a/b c") == "http://h/cb/a%2Fb%20c:complete"


def test_backoff_doubles_between_attempts(sink):
    sink.default_status = 502
    slept: list[float] = []
    ok = callback.send(
        sink.url,
        "e1",
        b"{}",
        policy=CallbackPolicy(attempts=3, timeout_s=2.0, backoff_s=0.5),
        sleep=slept.append,
    )
    assert ok is False
    assert len(sink.requests) == 3
    assert slept == [0.5, 1.0]


def test_429_is_retried(sink):
    sink.statuses = [429]
    ok = callback.send(sink.url, "e2", b"{}", sleep=lambda s: None)
    assert ok is True
    assert len(sink.requests) == 2


def test_body_sent_verbatim(sink):
    assert callback.send(sink.url, "e3", b'{"success":true,"output":1,"error":null}')
    assert sink.requests[0].body == b'{"success":true,"output":1,"error":null}'


def test_unreachable_is_false_not_an_exception(closed_port):
    ok = callback.send(
        f"http://127.0.0.1:{closed_port}",
        "e4",
        b"{}",
        policy=CallbackPolicy(attempts=2, timeout_s=0.5, backoff_s=0),
    )
    assert ok is False
