"""``@nanofaas_function``: marks the function the runtime calls with the request's ``input``.

The decorator returns the function unchanged and remembers it (the last one decorated wins, as
in the original). ``nanofaas_runtime.handler`` asks ``sdk_function`` whether the handler it
found is one of these, and if ``HANDLER_FUNCTION`` names nothing in the module, it takes the
function decorated in that module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_MARK = "__nanofaas_sdk_function__"
_registered: Callable[[Any], Any] | None = None
_by_module: dict[str, Callable[[Any], Any]] = {}


def nanofaas_function(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Registers ``func`` as the function handler; returns it unchanged."""
    global _registered
    if not callable(func):
        raise TypeError(f"@nanofaas_function decorates a function, not a {type(func).__name__}")
    try:
        setattr(func, _MARK, True)
    except (AttributeError, TypeError):
        pass  # a builtin or slotted callable: still registered below
    _registered = func
    module = getattr(func, "__module__", None)
    if isinstance(module, str):
        _by_module[module] = func
    return func


def get_registered_handler() -> Callable[[Any], Any] | None:
    """The function decorated last, or None."""
    return _registered


def registered_in(module: str) -> Callable[[Any], Any] | None:
    """The function decorated last in the module named ``module``, or None."""
    return _by_module.get(module)


def sdk_function(func: object) -> bool:
    """Whether ``func`` was decorated with ``@nanofaas_function`` (it takes the input only)."""
    return func is not None and (func is _registered or getattr(func, _MARK, False) is True)
