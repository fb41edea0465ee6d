"""hello-python: the Python example function for nanofaas.

Input ``{"name": "Ada"}`` (optional) answers
``{"greeting": "Hello, Ada!", "runtime": "python", "pid": <pid of the process that ran it>}``.
Input ``{"fail": "why"}`` raises, which the runtime answers ``500 HANDLER_ERROR`` with ``why``.
``{"print": ["a"]}`` prints each text on stdout; ``{"log": ["b"]}`` logs each through ``logging``
(tagged with the execution, so kept with it even when the instance serves several at once);
``{"spam": N}`` prints N long lines (at most a million: to see a chatty function's logs cut);
``{"trace": true}`` adds the W3C ``traceparent`` the invocation came with to the answer.
"""

import logging
import os
import time

from nanofaas.sdk import context

log = logging.getLogger("hello")


def handle(request: dict):
    data = request.get("input") or {}
    if not isinstance(data, dict):
        raise ValueError(f"input must be an object like {{'name': 'Ada'}}, got {type(data).__name__}")
    if data.get("sleepMs"):
        time.sleep(min(float(data["sleepMs"]), 60_000) / 1000)
    for text in data.get("print") or []:
        print(text)
    for i in range(min(int(data.get("spam") or 0), 1_000_000)):
        print(f"spam line {i} " + "x" * 90)
    for text in data.get("log") or []:
        log.info(text)
    if "fail" in data:
        raise RuntimeError(f"failing on purpose: {data['fail']}")
    name = data.get("name") or "world"
    out = {"greeting": f"Hello, {name}!", "runtime": "python", "pid": os.getpid()}
    if data.get("trace"):
        out["traceparent"] = context.get_traceparent()
    return out
