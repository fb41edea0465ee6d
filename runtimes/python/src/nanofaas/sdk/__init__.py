"""Compatibility with the original nanofaas's Python SDK surface.

A function written for the original runs unchanged on ``nanofaas_runtime``::

    from nanofaas.sdk import nanofaas_function, context

    logger = context.get_logger(__name__)

    @nanofaas_function
    def handle(input_data):
        logger.info("working on %s", context.get_execution_id())
        return {"echo": input_data}

- ``@nanofaas_function`` registers the function; the runtime calls it with the request's
  ``input`` only (not the whole request dict), as the original did. ``async def`` works too.
- ``context.get_execution_id()`` / ``context.get_trace_id()`` give the ids of the invocation
  being served (``None`` outside one).
- ``context.get_logger(name)`` is ``logging.getLogger(name)``: its lines are the runtime's JSON
  lines on stderr, tagged with ``execution_id`` (and ``trace_id``) while an invocation runs.
- ``logging.configure_logging(level)`` sets the root logger's level and JSON output.

This is our own small module with the original's names, not the original's code: its web
server (FastAPI) is not part of it; ``nanofaas_runtime`` serves the function.
"""

from . import context, logging
from .decorator import nanofaas_function

__all__ = ["nanofaas_function", "context", "logging"]
