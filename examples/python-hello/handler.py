"""hello-python: the Python example function for nanofaas.

Input ``{"name": "Ada"}`` (optional) answers
``{"greeting": "Hello, Ada!", "runtime": "python", "pid": <pid of the process that ran it>}``.
Input ``{"fail": "why"}`` raises, which the runtime answers ``500 HANDLER_ERROR`` with ``why``.
"""

import os


def handle(request: dict):
    data = request.get("input") or {}
    if not isinstance(data, dict):
        raise ValueError(f"input must be an object like {{'name': 'Ada'}}, got {type(data).__name__}")
    if "fail" in data:
        raise RuntimeError(f"failing on purpose: {data['fail']}")
    name = data.get("name") or "world"
    return {"greeting": f"Hello, {name}!", "runtime": "python", "pid": os.getpid()}
