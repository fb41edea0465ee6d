"""Logging: one JSON object per line on stderr.

Owns the formatter, the one-time ``configure()`` and a small rate limiter for messages that user
code can trigger (a handler failing on every call must not flood the log). Nothing here runs per
request on the success path: the runtime writes no per-request line at INFO.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

from . import context

# Set by nanofaas's providers: the watchdog then reads this runtime's output and files each line
# under the execution it belongs to; a line prefixed ``@exec:<id> `` belongs to ``<id>`` even
# when the instance serves several invocations at once (WARM_CONCURRENCY > 1).
TAGS = os.environ.get("NANOFAAS_LOG_TAGS") == "1"
TAG_PREFIX = "@exec:"


def tag(line: str, execution_id: str | None) -> str:
    """``@exec:<id> <line>`` when tagging is on and ``execution_id`` is known, else ``line``."""
    if TAGS and execution_id and " " not in execution_id:
        return f"{TAG_PREFIX}{execution_id} {line}"
    return line

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is emitted.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """``{"ts","level","logger","msg","pid", ...extra, "execution_id"?, "trace_id"?, "exc"?}``
    on one line; the ids are those of the invocation being served, when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        # A line written while an invocation runs (by the handler, through logging) carries
        # its ids, unless the record names them itself.
        execution_id = context.execution_id.get()
        if execution_id is not None:
            entry.setdefault("execution_id", execution_id)
            trace_id = context.trace_id.get()
            if trace_id is not None:
                entry.setdefault("trace_id", trace_id)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return tag(json.dumps(entry, default=str, ensure_ascii=False), execution_id)


def configure(level: str = "INFO") -> None:
    """Sends every log record to stderr as JSON lines. Safe to call more than once."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_nanofaas", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._nanofaas = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # What a handler prints reaches the watchdog line by line, before the invocation's answer
    # (so that it is filed under that invocation), not when a block buffer fills.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass
    # Werkzeug logs one INFO line per request; the runtime keeps the request path silent.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def startup_failure(message: str, exit_code: int, code: str) -> None:
    """Writes the one line a failed start leaves on stderr (JSON, like every other line)."""
    record = logging.LogRecord("nanofaas_runtime", logging.ERROR, "", 0, message, None, None)
    record.code = code
    record.exit_code = exit_code
    sys.stderr.write(JsonFormatter().format(record) + "\n")
    sys.stderr.flush()


class RateLimiter:
    """Allows ``burst`` events per ``window_s`` seconds and counts the ones it drops."""

    def __init__(self, burst: int = 10, window_s: float = 10.0, clock=time.monotonic):
        self._burst = burst
        self._window = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._used = 0
        self._dropped = 0

    def allow(self) -> tuple[bool, int]:
        """Returns (allowed, number dropped since the last allowed event)."""
        with self._lock:
            now = self._clock()
            if now - self._start >= self._window:
                self._start = now
                self._used = 0
            if self._used < self._burst:
                self._used += 1
                dropped, self._dropped = self._dropped, 0
                return True, dropped
            self._dropped += 1
            return False, 0
