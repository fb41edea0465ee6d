#!/usr/bin/env python3
"""hello-stdio: a STDIO-mode function. The watchdog runs this script once per invocation with the
request ({"input": ..., "metadata": {...}}) on stdin; what it prints on stdout is the output.

{"name": "Ada"} prints {"greeting": "Hello, Ada!", "runtime": "stdio", "pid": <this process>}.
{"fail": "why"} prints the reason on stderr and exits 1: the caller gets FUNCTION_ERROR with the
exit code and the end of stderr. Only the standard library: no venv needed.
"""

import json
import os
import sys


def main() -> int:
    try:
        request = json.load(sys.stdin)
    except ValueError as e:
        print(f"hello-stdio: the request on stdin is not JSON: {e}", file=sys.stderr)
        return 2
    data = request.get("input") if isinstance(request, dict) else None
    data = data or {}
    if not isinstance(data, dict):
        print(f"hello-stdio: input must be an object, got {type(data).__name__}", file=sys.stderr)
        return 2
    if "fail" in data:
        print(f"hello-stdio: failing on purpose: {data['fail']}", file=sys.stderr)
        return 1
    name = data.get("name") or "world"
    json.dump({"greeting": f"Hello, {name}!", "runtime": "stdio", "pid": os.getpid()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
