"""JSON logging as the original SDK offered it: ``configure_logging(level)``.

The runtime already sends every record to stderr as one JSON line tagged with the invocation's
ids; calling this is only needed outside the runtime (a script, a test).
"""

from __future__ import annotations

import logging as _logging

from nanofaas_runtime.logs import JsonFormatter, configure

__all__ = ["JsonFormatter", "configure_logging"]


def configure_logging(level: int | str = _logging.INFO) -> None:
    """Root logger to stderr as JSON lines at ``level`` (a number or a name)."""
    configure(_logging.getLevelName(level) if isinstance(level, int) else str(level).upper())
