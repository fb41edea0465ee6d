"""Measures where the Python runtime's cold start goes; prints a Markdown table.

    <venv>/bin/python runtimes/python/tools/coldstart.py [--runs N]

Run it with the interpreter of a venv where the runtime is installed (scripts/python-env.sh).
Every figure is the median wall time of N fresh processes (default 15) on this machine:

- interpreter start (``python -c pass``), and, timed inside fresh processes, importing Flask,
  then the runtime's modules, then the gunicorn modules it uses;
- from ``Popen`` to the first 200 on ``GET /health`` for each backend, with a trivial handler;
- the runtime's own ``startup_ms`` / ``handler_import_ms`` from its "listening" log line.

The runtime's modules are byte-compiled first, as an image build would (``compileall``), so
the figures do not include compiling them. It binds only 127.0.0.1 and stops every process it
starts.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nanofaas_runtime

HANDLER = "def handle(request):\n    return request['input']\n"


PHASES = """
import time
t = [time.perf_counter()]
import flask
t.append(time.perf_counter())
import nanofaas_runtime.app, nanofaas_runtime.server
t.append(time.perf_counter())
import gunicorn.app.base, gunicorn.arbiter, gunicorn.glogging, gunicorn.workers.sync
t.append(time.perf_counter())
print(" ".join(str((b - a) * 1000) for a, b in zip(t, t[1:])))
"""


def interpreter_start(runs: int) -> list[float]:
    """ms for ``python -c pass``: start and exit of a bare interpreter."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def import_phases(runs: int) -> list[list[float]]:
    """Per fresh process, ms spent importing Flask, then the runtime, then gunicorn."""
    out = []
    for _ in range(runs):
        line = subprocess.run(
            [sys.executable, "-c", PHASES], check=True, capture_output=True, text=True
        ).stdout
        out.append([float(x) for x in line.split()])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200") or False
    except OSError:
        return False


def first_200_once(backend: str, handler_dir: str) -> tuple[float, dict]:
    """ms from Popen to the first 200 on /health, and the runtime's "listening" log entry."""
    port = free_port()
    env = {
        **os.environ,
        "NANOFAAS_PY_SERVER": backend,
        "PORT": str(port),
        "HANDLER_PATH": handler_dir,
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanofaas_runtime"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = t0 + 30
        while not health_ok(port):
            if time.perf_counter() > deadline or proc.poll() is not None:
                raise SystemExit(f"{backend}: no 200 on /health (exit {proc.poll()})")
            time.sleep(0.001)
        elapsed = (time.perf_counter() - t0) * 1000
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    listening = next(json.loads(x) for x in err.splitlines() if '"listening"' in x)
    return elapsed, listening


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs

    compileall.compile_dir(Path(nanofaas_runtime.__file__).parent, quiet=1)

    base = interpreter_start(runs)
    phases = import_phases(runs)
    backends = ("werkzeug", "gunicorn")
    first: dict[str, list[float]] = {b: [] for b in backends}
    logged: dict[str, list[dict]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory() as d:
        Path(d, "handler.py").write_text(HANDLER)
        for _ in range(runs):
            for b in backends:
                ms, entry = first_200_once(b, d)
                first[b].append(ms)
                logged[b].append(entry)

    def row(label: str, med: float, lo: float) -> None:
        print(f"| {label} | {med:.0f} | {lo:.0f} |")

    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {runs} runs each\n"
    )
    print("| step | median ms | min ms |")
    print("| --- | ---: | ---: |")
    row("interpreter start and exit (`python -c pass`)", statistics.median(base), min(base))
    labels = [
        "import Flask (with Werkzeug, Jinja2, Click, ...)",
        "then import the runtime's own modules",
        "then import the gunicorn modules it uses",
    ]
    for i, label in enumerate(labels):
        column = [p[i] for p in phases]
        row(label, statistics.median(column), min(column))
    for b in backends:
        row(
            f"`python -m nanofaas_runtime` to first 200 on /health, {b}",
            statistics.median(first[b]),
            min(first[b]),
        )
        startup = [e["startup_ms"] for e in logged[b]]
        row(
            f"  of which `main()` until listening (startup_ms), {b}",
            statistics.median(startup),
            min(startup),
        )
    handler = [e["handler_import_ms"] for e in logged["werkzeug"]]
    print(
        f"| trivial handler import (handler_import_ms) | {statistics.median(handler):.1f} "
        f"| {min(handler):.1f} |"
    )


if __name__ == "__main__":
    main()
