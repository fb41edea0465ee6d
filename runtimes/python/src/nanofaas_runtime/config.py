"""Runtime configuration, read from the environment once at startup.

Owns parsing and validation of every environment variable the runtime understands (the
README's configuration table lists them). It must not import Flask or gunicorn: a bad value is
reported before anything heavy is loaded. Empty values count as unset.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

SERVERS = ("gunicorn", "werkzeug")

DEFAULT_MAX_REQUEST_BYTES = 6 * 1024 * 1024


class ConfigError(ValueError):
    """An environment variable has a value the runtime cannot use."""


@dataclass(frozen=True)
class Settings:
    handler_module: str = "handler"
    handler_function: str = "handle"
    handler_path: str = "."
    execution_id: str | None = None
    trace_id: str | None = None
    traceparent: str | None = None
    callback_url: str | None = None
    callback_token: str | None = None
    callback_attempts: int = 3
    callback_timeout_s: float = 2.0
    callback_backoff_s: float = 0.1
    host: str = "127.0.0.1"
    port: int = 8080
    server: str = "werkzeug"
    workers: int = 1
    threads: int = 1
    graceful_timeout_s: int = 10
    worker_timeout_s: int = 0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    log_level: str = "INFO"
    # NANOFAAS_RUNTIME_SOCKET: a Unix socket the watchdog offers (a path, or ``@name`` in
    # Linux's abstract namespace); served besides the port when it can be bound.
    runtime_socket: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Builds settings from ``env`` (default ``os.environ``); raises ConfigError."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None:
                return None
            value = value.strip()
            return value or None

        def integer(name: str, default: int, lo: int, hi: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not an integer") from None
            if not lo <= value <= hi:
                raise ConfigError(f"{name}={value} is out of range [{lo}, {hi}]")
            return value

        def millis(name: str, default_s: float, lo: int, hi: int) -> float:
            return integer(name, int(default_s * 1000), lo, hi) / 1000.0

        server = get("NANOFAAS_PY_SERVER")
        if server is None:
            server = "gunicorn" if importlib.util.find_spec("gunicorn") else "werkzeug"
        else:
            server = server.lower()
            if server not in SERVERS:
                raise ConfigError(
                    f"NANOFAAS_PY_SERVER={server!r} is not one of {', '.join(SERVERS)}"
                )
            if server == "gunicorn" and importlib.util.find_spec("gunicorn") is None:
                raise ConfigError("NANOFAAS_PY_SERVER=gunicorn but gunicorn is not installed")

        log_level = (get("LOG_LEVEL") or "INFO").upper()
        if log_level == "WARN":
            log_level = "WARNING"
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"LOG_LEVEL={log_level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
            )

        callback_url = get("CALLBACK_URL")
        if callback_url is not None:
            problem = callback_url_problem(callback_url)
            if problem:
                raise ConfigError(f"CALLBACK_URL={callback_url!r}: {problem}")

        for name in ("EXECUTION_ID", "TRACE_ID", "TRACEPARENT", "CALLBACK_TOKEN"):
            value = get(name)
            if value is not None and not value.isprintable():
                raise ConfigError(f"{name} contains control characters")

        handler_path = os.path.abspath(get("HANDLER_PATH") or os.getcwd())
        if not os.path.isdir(handler_path):
            raise ConfigError(f"HANDLER_PATH={handler_path!r} is not a directory")

        return cls(
            handler_module=get("HANDLER_MODULE") or "handler",
            handler_function=get("HANDLER_FUNCTION") or "handle",
            handler_path=handler_path,
            execution_id=get("EXECUTION_ID"),
            trace_id=get("TRACE_ID"),
            traceparent=get("TRACEPARENT"),
            callback_url=callback_url,
            callback_token=get("CALLBACK_TOKEN"),
            callback_attempts=integer("CALLBACK_ATTEMPTS", 3, 1, 10),
            callback_timeout_s=millis("CALLBACK_TIMEOUT_MS", 2.0, 1, 60_000),
            callback_backoff_s=millis("CALLBACK_BACKOFF_MS", 0.1, 0, 10_000),
            host=get("HOST") or "127.0.0.1",
            port=integer("PORT", 8080, 0, 65535),
            server=server,
            workers=integer("WORKERS", 1, 1, 64),
            threads=integer("THREADS", 1, 1, 256),
            graceful_timeout_s=integer("GRACEFUL_TIMEOUT_S", 10, 0, 3600),
            worker_timeout_s=integer("WORKER_TIMEOUT_S", 0, 0, 86400),
            max_request_bytes=integer(
                "MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES, 1, 1024 * 1024 * 1024
            ),
            log_level=log_level,
            runtime_socket=get("NANOFAAS_RUNTIME_SOCKET"),
        )


def callback_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be used as a callback base URL, or None when it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        return f"not a valid URL ({e})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    if not url.isprintable() or " " in url:
        return "contains spaces or control characters"
    return None
