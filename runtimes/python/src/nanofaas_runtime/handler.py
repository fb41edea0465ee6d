"""Loading the user's handler.

Owns turning ``HANDLER_MODULE`` / ``HANDLER_FUNCTION`` / ``HANDLER_PATH`` into one callable that
takes the request dict, and explaining in one sentence why that failed. It runs once, before the
server listens: an unloadable handler is a startup error, never a 500 on every call.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # asyncio is imported only when an async handler runs (cold start)
    import asyncio

Handler = Callable[[dict], Any]


class HandlerLoadError(Exception):
    """The handler could not be imported or is not usable; the message says why."""


def _is_dotted_name(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def load_handler(module_name: str, function_name: str, handler_path: str) -> Handler:
    """Imports ``module_name`` with ``handler_path`` first on ``sys.path`` and returns the
    callable ``function_name`` from it. Raises HandlerLoadError with a clear message."""
    spec = f"{module_name}:{function_name}"
    if not _is_dotted_name(module_name):
        raise HandlerLoadError(
            f"HANDLER_MODULE={module_name!r} is not a Python module name "
            "(like 'handler' or 'pkg.mod')"
        )
    if not function_name.isidentifier():
        raise HandlerLoadError(f"HANDLER_FUNCTION={function_name!r} is not a Python identifier")

    if handler_path not in sys.path:
        sys.path.insert(0, handler_path)

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise HandlerLoadError(
                f"cannot load handler {spec}: module {missing!r} not found "
                f"(HANDLER_PATH={handler_path})"
            ) from None
        raise HandlerLoadError(
            f"cannot load handler {spec}: importing {module_name!r} failed: {e}"
        ) from None
    except SyntaxError as e:
        where = f"{e.filename}, line {e.lineno}" if e.filename else "unknown file"
        raise HandlerLoadError(
            f"cannot load handler {spec}: syntax error in {where}: {e.msg}"
        ) from None
    except (Exception, SystemExit) as e:
        raise HandlerLoadError(
            f"cannot load handler {spec}: importing {module_name!r} raised {type(e).__name__}: {e}"
        ) from None

    sdk = _sdk_decorator()
    try:
        fn = getattr(module, function_name)
    except AttributeError:
        # A module written for the original SDK names its function by decorating it.
        fn = sdk.registered_in(module.__name__) if sdk else None
        if fn is None:
            where = getattr(module, "__file__", None) or module_name
            raise HandlerLoadError(
                f"cannot load handler {spec}: module {module_name!r} ({where}) has no "
                f"attribute {function_name!r} (and no @nanofaas_function in it)"
            ) from None

    if not callable(fn):
        raise HandlerLoadError(
            f"cannot load handler {spec}: {function_name!r} is a {type(fn).__name__}, "
            "not a function"
        )

    try:
        inspect.signature(fn).bind({})
    except TypeError:
        raise HandlerLoadError(
            f"cannot load handler {spec}: it must accept one positional argument "
            "(the request dict), e.g. def handle(request): ..."
        ) from None
    except ValueError:
        pass  # no signature available (some builtins): nothing to check

    if sdk is not None and sdk.sdk_function(fn):
        return _input_only(fn)
    if inspect.iscoroutinefunction(fn):
        return _run_coroutine(fn)
    return fn


def _sdk_decorator():
    """``nanofaas.sdk.decorator`` if the handler's import loaded it (never imported here)."""
    return sys.modules.get("nanofaas.sdk.decorator")


def _input_only(fn: Callable[[Any], Any]) -> Handler:
    """Adapts a ``@nanofaas_function`` function: the original SDK called it with the request's
    ``input`` only, and so does this."""
    if inspect.iscoroutinefunction(fn):

        def call(request: dict) -> Any:
            return EVENT_LOOP.run(fn(request.get("input")))

    else:

        def call(request: dict) -> Any:
            return fn(request.get("input"))

    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call


def _run_coroutine(fn: Callable[[dict], Any]) -> Handler:
    """Adapts an ``async def`` handler: each call runs it to completion on the process's one
    long-lived event loop (``EVENT_LOOP``)."""

    def call(request: dict) -> Any:
        return EVENT_LOOP.run(fn(request))

    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call


class LoopThread:
    """One asyncio event loop for the whole process, run by a daemon thread of its own.

    ``async def`` handlers run on it, so what they keep between calls (an ``aiohttp`` session,
    a connection pool, a task) stays bound to a loop that is still running, and no call pays
    for creating and closing a loop. The thread starts on the first call, not at import: under
    gunicorn the app is loaded in the master and the workers are forked from it, and a thread
    does not survive ``fork()``; a forked child that calls starts its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop of this process, started if needed."""
        import asyncio

        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                started = threading.Event()
                new = asyncio.new_event_loop()

                def run() -> None:
                    asyncio.set_event_loop(new)
                    new.call_soon(started.set)
                    new.run_forever()

                threading.Thread(target=run, name="nanofaas-asyncio", daemon=True).start()
                started.wait()
                self._loop = new
                self._pid = os.getpid()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Runs ``coro`` on the loop and waits for its result (or exception)."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop()).result()


EVENT_LOOP = LoopThread()
