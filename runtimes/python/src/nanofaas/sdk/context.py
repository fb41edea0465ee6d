"""The invocation context of the original SDK: ids of the invocation being served, a logger.

The ids live in ``contextvars`` that the runtime sets around each call, so threads and asyncio
tasks each see their own. Outside an invocation both are ``None``.
"""

from __future__ import annotations

import logging

from nanofaas_runtime import context as _ctx


def get_execution_id() -> str | None:
    """The execution id of the invocation being served (``X-Execution-Id``), or None."""
    return _ctx.execution_id.get()


def get_trace_id() -> str | None:
    """The trace id of the invocation being served (``X-Trace-Id``), or None."""
    return _ctx.trace_id.get()


def get_traceparent() -> str | None:
    """The W3C ``traceparent`` of the invocation being served, or None: pass it on to outgoing
    calls to continue the trace."""
    return _ctx.traceparent.get()


def set_context(execution_id: str | None, trace_id: str | None) -> None:
    """Sets both ids for the current thread or task (the runtime does this for each call)."""
    _ctx.execution_id.set(execution_id)
    _ctx.trace_id.set(trace_id)


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``. Its lines go out as the runtime's JSON lines, tagged with
    the current ``execution_id`` and ``trace_id``."""
    return logging.getLogger(name)
