"""A handler that records, at its top level, what it was imported with: the environment, the
working directory, its user and cgroup, and module state (a counter, a random value)."""

import os
import random

AT_IMPORT = {
    "pid": os.getpid(),
    "env": {k: os.environ.get(k) for k in ("PREWARM_MARK", "HANDLER_MODULE", "NANOFAAS_PREWARM")},
    "cwd": os.getcwd(),
    "uid": os.getuid(),
    "cgroup": open("/proc/self/cgroup").read(),
    "random": random.random(),
}
COUNTER = 0


def handle(request):
    global COUNTER
    COUNTER += 1
    return {
        "atImport": AT_IMPORT,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "cgroup": open("/proc/self/cgroup").read(),
        "counter": COUNTER,
        "random": random.random(),
        "mark": os.environ.get("PREWARM_MARK"),
    }
