"""A handler that records, at its top level, what it was imported with: the environment, the
working directory, its user and cgroup, and module state (a counter, a random value)."""

import os
import random


def _memory_limit():
    """The memory limit of this process's cgroup, as the kernel enforces it (None if unknown)."""
    for line in open("/proc/self/cgroup").read().splitlines():
        _, controllers, path = line.split(":", 2)
        for f in (
            f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"
            if "memory" in controllers.split(",")
            else None,
            f"/sys/fs/cgroup{path}/memory.max" if controllers == "" else None,
        ):
            if f and os.path.exists(f):
                return open(f).read().strip()
    return None


AT_IMPORT = {
    "pid": os.getpid(),
    "env": {k: os.environ.get(k) for k in ("PREWARM_MARK", "HANDLER_MODULE", "NANOFAAS_PREWARM")},
    "cwd": os.getcwd(),
    "uid": os.getuid(),
    "cgroup": open("/proc/self/cgroup").read(),
    "random": random.random(),
    "memoryLimit": _memory_limit(),
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
