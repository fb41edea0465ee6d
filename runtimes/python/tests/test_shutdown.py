"""A clean stop logs nothing at ERROR: SIGTERM to the runtime's process group, as the watchdog
sends it, ends gunicorn and its workers with exit 0 and no ERROR record on stderr."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest
from test_process import request, wait_healthy

from nanofaas_runtime import server

# Several runtimes at once: the worker dying of the master's second SIGTERM was a race that a
# single stop hit about one time in three.
ROUNDS = 6


def _errors(lines: list[str]) -> list[str]:
    bad = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            bad.append(line)  # not one of our JSON lines: a traceback or a raw write
            continue
        if entry.get("level") in ("ERROR", "CRITICAL"):
            bad.append(line)
    return bad


@pytest.mark.parametrize(
    "extra",
    [{}, {"THREADS": "2"}, {"WORKERS": "2"}],
    ids=["sync", "gthread", "two-workers"],
)
def test_sigterm_to_the_group_logs_no_error(runtime, extra):
    procs = [
        runtime({"PORT": "0", "NANOFAAS_PY_SERVER": "gunicorn", **extra}) for _ in range(ROUNDS)
    ]
    for i, p in enumerate(procs):
        port = p.wait_for_log("listening")["port"]
        wait_healthy(port)
        status, body = request(port, "POST", "/invoke", {"input": "x"}, {"X-Execution-Id": f"e{i}"})
        assert (status, body) == (200, {"echo": "X"})
    workers = int(extra.get("WORKERS", "1"))
    for p in procs:
        # Every worker has booted before the stop (a stop during boot is another matter).
        p.wait_for_line(lambda line: "Booting worker with pid" in line, n=workers)
    for p in procs:
        os.killpg(p.proc.pid, signal.SIGTERM)
    for p in procs:
        assert p.wait(15) == 0, p.lines
    for p in procs:
        assert _errors(p.lines) == [], "\n".join(p.lines)
        assert any('"Shutting down: Master"' in line for line in p.lines), p.lines


def test_a_worker_killed_outside_a_stop_is_still_an_error():
    f = server._StopIsNotAnError()
    server._stopping.clear()
    try:
        rec = logging.LogRecord(
            "gunicorn.error", logging.ERROR, "", 0, "Worker (pid:42) was sent SIGTERM!", None, None
        )
        assert f.filter(rec) and rec.levelname == "ERROR", "not stopping: unchanged"
        server._stopping.set()
        rec = logging.LogRecord(
            "gunicorn.error", logging.ERROR, "", 0, "Worker (pid:42) was sent SIGTERM!", None, None
        )
        assert f.filter(rec) and (rec.levelno, rec.levelname) == (logging.INFO, "INFO")
        for msg in (
            "Worker (pid:42) was sent SIGKILL! Perhaps out of memory?",
            "Worker (pid:42) exited with code 1.",
        ):
            rec = logging.LogRecord("gunicorn.error", logging.ERROR, "", 0, msg, None, None)
            assert f.filter(rec) and rec.levelname == "ERROR", msg
    finally:
        server._stopping.clear()
