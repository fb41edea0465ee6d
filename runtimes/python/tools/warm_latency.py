"""Measures warm invocation latency of the Python runtime; prints a Markdown table.

    <venv>/bin/python runtimes/python/tools/warm_latency.py [--calls N]

Starts ``python -m nanofaas_runtime`` with each backend on 127.0.0.1 (a trivial echo handler),
then sends N sequential ``POST /invoke`` (default 2000) from one client, as the watchdog does
(one invocation at a time), reusing the connection when the server keeps it open. Prints p50,
p99 and invocations per second. Every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import http.client
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

HANDLER = "def handle(request):\n    return request['input']\n"
BODY = json.dumps({"input": {"hello": "world", "n": 1}, "metadata": {}}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIGS = {
    "werkzeug": {"NANOFAAS_PY_SERVER": "werkzeug"},
    "gunicorn (1 sync worker, the default)": {"NANOFAAS_PY_SERVER": "gunicorn"},
    "gunicorn THREADS=2 (gthread, keep-alive)": {"NANOFAAS_PY_SERVER": "gunicorn", "THREADS": "2"},
}


def run(backend: str, config: dict[str, str], handler_dir: str, calls: int) -> dict:
    port = free_port()
    env = {
        **os.environ,
        **config,
        "PORT": str(port),
        "HANDLER_PATH": handler_dir,
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanofaas_runtime"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    c.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{backend}: not healthy")
            time.sleep(0.01)

        headers = {"Content-Type": "application/json", "X-Execution-Id": "bench"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        samples, reconnects = [], 0
        for i in range(calls + 100):
            t0 = time.perf_counter()
            conn.request("POST", "/invoke", body=BODY, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise SystemExit(f"{backend}: HTTP {resp.status}")
            if resp.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                reconnects += 1
            if i >= 100:  # the first 100 warm up
                samples.append((time.perf_counter() - t0) * 1e6)
        conn.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    samples.sort()
    total_s = sum(samples) / 1e6
    return {
        "p50": statistics.median(samples),
        "p99": samples[int(len(samples) * 0.99) - 1],
        "rps": len(samples) / total_s,
        "keepalive": reconnects == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    calls = parser.parse_args().calls
    with tempfile.TemporaryDirectory() as d:
        Path(d, "handler.py").write_text(HANDLER)
        results = {name: run(name, cfg, d, calls) for name, cfg in CONFIGS.items()}
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {calls} sequential calls after 100 warm-up\n"
    )
    print("| server | p50 µs | p99 µs | invocations/s | connection reused |")
    print("| --- | ---: | ---: | ---: | --- |")
    for b, r in results.items():
        print(
            f"| {b} | {r['p50']:.0f} | {r['p99']:.0f} | {r['rps']:.0f} | "
            f"{'yes' if r['keepalive'] else 'no (Connection: close)'} |"
        )


if __name__ == "__main__":
    main()
