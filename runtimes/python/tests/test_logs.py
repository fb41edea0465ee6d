"""JSON log lines and the rate limiter."""

from __future__ import annotations

import json
import logging

from nanofaas_runtime.logs import JsonFormatter, RateLimiter


def test_json_line_has_message_level_and_extra():
    record = logging.LogRecord("x", logging.WARNING, "f.py", 1, "hello %s", ("there",), None)
    record.execution_id = "e1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "hello there"
    assert entry["level"] == "WARNING"
    assert entry["execution_id"] == "e1"
    assert entry["ts"].endswith("Z")


def test_exception_is_kept_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, "f.py", 1, "m", None, sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: bad" in json.loads(line)["exc"]


def test_rate_limiter_counts_dropped_and_refills():
    now = [0.0]
    limiter = RateLimiter(burst=2, window_s=10.0, clock=lambda: now[0])
    assert limiter.allow() == (True, 0)
    assert limiter.allow() == (True, 0)
    assert limiter.allow() == (False, 0)
    assert limiter.allow() == (False, 0)
    now[0] = 10.0
    assert limiter.allow() == (True, 2)
    assert limiter.allow() == (True, 0)


def test_lines_of_an_invocation_are_tagged_when_asked(monkeypatch):
    from nanofaas_runtime import context, logs

    record = logging.LogRecord("x", logging.INFO, "f.py", 1, "working", None, None)
    monkeypatch.setattr(logs, "TAGS", False)
    ids = context.enter("e42", "t1")
    try:
        assert JsonFormatter().format(record).startswith("{")
        monkeypatch.setattr(logs, "TAGS", True)
        line = JsonFormatter().format(record)
    finally:
        context.leave(ids)
    assert line.startswith("@exec:e42 {")
    assert json.loads(line[len("@exec:e42 ") :])["msg"] == "working"
    # Outside an invocation, nothing to tag.
    assert JsonFormatter().format(record).startswith("{")
    assert logs.tag("x", None) == "x"
