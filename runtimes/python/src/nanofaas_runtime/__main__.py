"""Entry point: ``python -m nanofaas_runtime`` and the ``nanofaas-python-runtime`` script.

Reads the configuration, loads the handler, builds the app, binds the socket and runs the
server, in that order, so every startup failure happens before anything listens. Configuration
is by environment only (see the README); the only arguments are ``--help`` and ``--version``.

Exit codes:
  0  stopped by SIGTERM or SIGINT
  1  unexpected internal error
  2  invalid configuration (an environment variable or an argument)
  3  the handler cannot be loaded (module missing, syntax error, function missing, ...)
  4  cannot listen on HOST:PORT
  5  the server failed while running (e.g. a gunicorn worker failed to boot)
"""

from __future__ import annotations

import sys
from enum import IntEnum

USAGE = """\
usage: python -m nanofaas_runtime   (or: nanofaas-python-runtime)

Serves a Python handler over the nanofaas runtime contract (GET /health, POST /invoke).
Configured by environment variables: HANDLER_MODULE, HANDLER_FUNCTION, HANDLER_PATH,
HOST, PORT, NANOFAAS_PY_SERVER, WORKERS, THREADS, EXECUTION_ID, TRACE_ID, CALLBACK_URL,
CALLBACK_TOKEN, CALLBACK_ATTEMPTS, CALLBACK_TIMEOUT_MS, CALLBACK_BACKOFF_MS,
MAX_REQUEST_BYTES, GRACEFUL_TIMEOUT_S, WORKER_TIMEOUT_S, LOG_LEVEL, NANOFAAS_RUNTIME_SOCKET,
NANOFAAS_PREWARM, NANOFAAS_PREWARM_IMPORTS.
See the package README for defaults.

Exit codes: 0 stopped by a signal, 1 internal error, 2 invalid configuration,
3 handler cannot be loaded, 4 cannot listen, 5 server failed while running.
"""


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    CONFIG = 2
    HANDLER = 3
    BIND = 4
    SERVER = 5


def main(argv: list[str] | None = None) -> int:
    import time

    started = time.perf_counter()
    from . import __version__, logs
    from .config import ConfigError, Settings

    args = sys.argv[1:] if argv is None else argv
    if args:
        if args[0] in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return ExitCode.OK
        if args[0] in ("-V", "--version"):
            sys.stdout.write(f"nanofaas-python-runtime {__version__}\n")
            return ExitCode.OK
        logs.startup_failure(
            f"unexpected argument {args[0]!r}: configure the runtime with environment "
            "variables (see --help)",
            ExitCode.CONFIG,
            "STARTUP_ERROR",
        )
        return ExitCode.CONFIG

    from . import prewarm

    if prewarm.enabled():
        # A generic runtime: no handler until POST /_nanofaas/specialize (see prewarm).
        return prewarm.main(started)

    try:
        settings = Settings.from_env()
    except ConfigError as e:
        logs.startup_failure(f"invalid configuration: {e}", ExitCode.CONFIG, "STARTUP_ERROR")
        return ExitCode.CONFIG
    logs.configure(settings.log_level)

    from .handler import HandlerLoadError, load_handler

    handler_started = time.perf_counter()
    try:
        handler = load_handler(
            settings.handler_module, settings.handler_function, settings.handler_path
        )
    except HandlerLoadError as e:
        logs.startup_failure(str(e), ExitCode.HANDLER, "STARTUP_ERROR")
        return ExitCode.HANDLER
    handler_ms = (time.perf_counter() - handler_started) * 1000

    from .app import create_app
    from .server import BindError, bind, bind_offered, serve

    app = create_app(settings, handler)
    try:
        sock = bind(settings.host, settings.port)
    except BindError as e:
        logs.startup_failure(str(e), ExitCode.BIND, "STARTUP_ERROR")
        return ExitCode.BIND

    unix = bind_offered(settings)

    import logging

    host, port = sock.getsockname()[:2]
    logging.getLogger("nanofaas_runtime").info(
        "listening",
        extra={
            "host": host,
            "port": port,
            "server": settings.server,
            "workers": settings.workers if settings.server == "gunicorn" else 1,
            "threads": settings.threads if settings.server == "gunicorn" else None,
            "socket": settings.runtime_socket if unix is not None else None,
            "handler": f"{settings.handler_module}:{settings.handler_function}",
            # Time spent in this process before listening: the handler's own import, and
            # everything since main() started (config, handler, Flask import, app, bind).
            "handler_import_ms": round(handler_ms, 1),
            "startup_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return serve(app, sock, settings, unix)


def run() -> None:
    try:
        code = main()
    except KeyboardInterrupt:
        code = ExitCode.OK
    sys.exit(int(code))


if __name__ == "__main__":
    run()
