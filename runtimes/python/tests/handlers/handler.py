"""The seed's test handler, plus a few behaviours the tests select through the input."""

import math
import os
import time


def handle(request):
    value = request["input"]
    if isinstance(value, str):
        return {"echo": value.upper()}
    if isinstance(value, dict):
        if "raise" in value:
            raise RuntimeError(value["raise"])
        if value.get("raise_empty"):
            raise KeyError()
        if value.get("exit"):
            raise SystemExit(3)
        if value.get("set"):
            return {1, 2}
        if value.get("nan"):
            return {"x": math.nan}
        if "sleep" in value:
            if "mark" in value:  # tells the test the invocation is running
                open(value["mark"], "w").close()
            time.sleep(float(value["sleep"]))
            return {"slept": value["sleep"], "pid": os.getpid()}
        if "rendezvous" in value:  # meet another invocation running at the same time
            here = os.path.join(value["rendezvous"], value["me"])
            there = os.path.join(value["rendezvous"], value["other"])
            open(here, "w").close()
            deadline = time.monotonic() + 5
            while not os.path.exists(there) and time.monotonic() < deadline:
                time.sleep(0.01)
            return {"met": os.path.exists(there), "pid": os.getpid()}
        if value.get("pid"):
            return {"pid": os.getpid()}
        if value.get("request"):
            return request
    return value
