"""nanofaas Python function runtime.

Loads a user handler (``HANDLER_MODULE:HANDLER_FUNCTION``) once at startup and serves the
nanofaas runtime contract over HTTP: ``GET /health`` and ``POST /invoke``, with an optional
completion callback to the control plane.

Layout:

- ``config``   reads and validates the environment once, into an immutable ``Settings``.
- ``handler``  imports and checks the user's handler; every failure is a ``HandlerLoadError``.
- ``app``      the Flask app: request parsing, handler call, error bodies. No I/O besides the
               callback it delegates to ``callback``. Also the seed's module-level ``app``.
- ``context``  the execution and trace ids of the invocation being served (contextvars), for
               the logs and for ``nanofaas.sdk.context``.
- ``callback`` posts the result to ``{url}/{executionId}:complete`` with a short bounded retry.
- ``logs``     JSON-lines logging on stderr and a rate limiter for logs user code can trigger.
- ``server``   binds the socket and runs gunicorn or Werkzeug; owns signals and shutdown.
- ``__main__`` the entry point: config, handler, app, server, and the documented exit codes.

The ``nanofaas`` package next to this one (``nanofaas.sdk``) is the original nanofaas's Python
SDK surface, for functions written against it.
"""

__version__ = "0.1.0"
