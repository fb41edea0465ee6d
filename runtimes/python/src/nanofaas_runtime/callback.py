"""The completion callback: ``POST {url}/{executionId}:complete``.

Owns building the target URL, the headers (``Content-Type``, ``X-Trace-Id``,
``X-Callback-Token``) and a short bounded retry. It uses ``http.client`` from the standard
library: importing ``requests`` would add tens of milliseconds to every cold start. A callback
that cannot be delivered is logged (rate-limited) and reported as False; it never raises.
"""

from __future__ import annotations

import http.client
import logging
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from .config import callback_url_problem
from .logs import RateLimiter

log = logging.getLogger("nanofaas_runtime.callback")
_failures_logged = RateLimiter(burst=10, window_s=10.0)


@dataclass(frozen=True)
class CallbackPolicy:
    attempts: int = 3
    timeout_s: float = 2.0
    backoff_s: float = 0.1


def target(base: str, execution_id: str) -> str:
    """``{base}/{executionId}:complete``, with trailing slashes of ``base`` ignored and the
    execution id percent-encoded (ids made of letters, digits and ``-._~`` are unchanged)."""
    return f"{base.rstrip('/')}/{quote(execution_id, safe='-._~')}:complete"


class _Retryable(Exception):
    pass


def _post_once(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    parts = urlsplit(url)
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    # The URL was checked when configured (callback_url_problem): it has a host.
    conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        path = parts.path or "/"
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def send(
    base_url: str,
    execution_id: str,
    body: bytes,
    *,
    trace_id: str | None = None,
    token: str | None = None,
    policy: CallbackPolicy = CallbackPolicy(),
    traceparent: str | None = None,
    sleep=time.sleep,
) -> bool:
    """Posts ``body`` (already JSON) to the callback URL; True when it was accepted (2xx).

    Connection errors, timeouts, 429 and 5xx are retried up to ``policy.attempts`` times in all,
    waiting ``backoff_s``, then twice that, and so on. Other 4xx answers are final.
    """
    problem = callback_url_problem(base_url)
    if problem:
        _warn("callback URL unusable: " + problem, execution_id, trace_id, url=base_url)
        return False
    url = target(base_url, execution_id)
    headers = {"Content-Type": "application/json"}
    if trace_id:
        headers["X-Trace-Id"] = trace_id
    if traceparent:
        headers["traceparent"] = traceparent
    if token:
        headers["X-Callback-Token"] = token

    last = "no attempt made"
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1 and policy.backoff_s > 0:
            sleep(policy.backoff_s * (2 ** (attempt - 2)))
        try:
            status = _post_once(url, body, headers, policy.timeout_s)
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
            continue
        except ValueError as e:  # e.g. a header value http.client refuses
            last = f"invalid request: {e}"
            break
        if 200 <= status < 300:
            return True
        last = f"HTTP {status}"
        if status != 429 and status < 500:
            break
    _warn(f"callback failed after {attempt} attempt(s): {last}", execution_id, trace_id, url=url)
    return False


def _warn(message: str, execution_id: str, trace_id: str | None, **extra) -> None:
    allowed, dropped = _failures_logged.allow()
    if not allowed:
        return
    fields = {"execution_id": execution_id, "trace_id": trace_id, **extra}
    if dropped:
        fields["suppressed"] = dropped
    log.warning(message, extra=fields)
