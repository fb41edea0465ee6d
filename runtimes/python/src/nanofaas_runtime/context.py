"""The invocation being served: its execution id and trace id, per thread and task.

Owns two ``contextvars`` that ``app`` sets around each handler call and resets after it. The
log formatter reads them to tag every line the handler writes (through ``logging``) with the
execution id; ``nanofaas.sdk.context`` reads them for the original SDK's accessors. Nothing here
imports Flask: the SDK and the logs use it without the web stack.
"""

from __future__ import annotations

import contextvars

execution_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nanofaas_execution_id", default=None
)
trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nanofaas_trace_id", default=None
)

# The W3C traceparent of the invocation (its parent is the platform's dispatch span).
traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nanofaas_traceparent", default=None
)


def enter(exec_id: str | None, trace: str | None) -> tuple[contextvars.Token, contextvars.Token]:
    """Sets both ids for the current thread or task; pass the result to ``leave``."""
    return execution_id.set(exec_id), trace_id.set(trace)


def leave(tokens: tuple[contextvars.Token, contextvars.Token]) -> None:
    """Restores the ids that were current before ``enter``."""
    execution_id.reset(tokens[0])
    trace_id.reset(tokens[1])
