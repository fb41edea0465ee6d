#!/usr/bin/env python3
"""Warm throughput and latency of the Java runtime, one connection, sequential invocations.

Starts the runtime through the launcher with each JVM variant (the launcher's flags, then
JAVA_OPTS), drives it with LoadGen.java (keep-alive, warm-up then measurement), for two handlers:
"echo" (returns its small JSON input) and "cpu" (counts primes below 30000: pure computation,
where C1-only compilation shows). Runs are interleaved; medians are printed.

Usage: runtimes/java/bench/warm.py [--runs N] [--seconds S]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
JAVA_DIR = os.path.dirname(HERE)
BUILD = os.path.join(JAVA_DIR, "build")
LAUNCHER = os.path.join(JAVA_DIR, "bin", "nanofaas-java-runtime")

HANDLERS = """
package bench;
import dev.nanofaas.runtime.FunctionHandler;
import dev.nanofaas.runtime.InvocationRequest;
import java.util.Map;
public class Handlers {
    public static class Echo implements FunctionHandler {
        public Object handle(InvocationRequest r) { return Map.of("echo", r.input()); }
    }
    public static class Cpu implements FunctionHandler {
        public Object handle(InvocationRequest r) {
            int limit = r.input().path("limit").asInt(30000), count = 0;
            for (int n = 2; n < limit; n++) {
                boolean prime = true;
                for (int d = 2; (long) d * d <= n; d++) { if (n % d == 0) { prime = false; break; } }
                if (prime) count++;
            }
            return Map.of("primes", count);
        }
    }
}
"""

VARIANTS = [
    ("launcher (C1 only, Serial GC)", ""),
    ("launcher + -XX:TieredStopAtLevel=4 (C1+C2)", "-XX:TieredStopAtLevel=4"),
]
WORKLOADS = [
    ("echo", "bench.Handlers$Echo", '{"input": {"user": "u-42", "items": [1, 2, 3], "flag": true}}'),
    ("cpu", "bench.Handlers$Cpu", '{"input": {"limit": 30000}}'),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("runtime exited with %s" % proc.returncode)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError("not healthy in time")


def one(java, handler_cp, loadgen_dir, opts, handler, body, seconds):
    port = free_port()
    env = dict(os.environ, PORT=str(port), FUNCTION_HANDLER=handler, HANDLER_CLASSPATH=handler_cp,
               JAVA_OPTS=opts, LOG_LEVEL="warn")
    proc = subprocess.Popen([LAUNCHER], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_healthy(port, proc)
        out = subprocess.run([java, "-cp", loadgen_dir, "LoadGen", str(port), str(seconds), "2", body],
                             check=True, capture_output=True, text=True, timeout=seconds + 60)
        return json.loads(out.stdout)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    with open(os.path.join(BUILD, "java")) as f:
        java = f.read().strip()
    with open(os.path.join(BUILD, "classpath")) as f:
        deps = f.read().strip()
    javac = os.path.join(os.path.dirname(java), "javac")
    jar = os.path.join(BUILD, "nanofaas-runtime.jar")
    tmp = tempfile.mkdtemp(prefix="nanofaas-warm-")
    try:
        src = os.path.join(tmp, "Handlers.java")
        with open(src, "w") as f:
            f.write(HANDLERS)
        handler_cp = os.path.join(tmp, "handlers")
        subprocess.run([javac, "-d", handler_cp, "-cp", jar + ":" + deps, src], check=True)
        loadgen_dir = os.path.join(tmp, "loadgen")
        subprocess.run([javac, "-d", loadgen_dir, os.path.join(HERE, "LoadGen.java")], check=True)
        results = {}
        for _ in range(args.runs):
            for wname, handler, body in WORKLOADS:
                for vname, opts in VARIANTS:
                    r = one(java, handler_cp, loadgen_dir, opts, handler, body, args.seconds)
                    results.setdefault((wname, vname), []).append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("warm invocations, 1 connection, sequential; %d runs of %.0f s (after 2 s warm-up), %d cores; medians"
          % (args.runs, args.seconds, os.cpu_count()))
    print("| handler | JVM | requests/s | p50 | p99 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (wname, vname), rs in results.items():
        print("| %s | %s | %.0f | %.0f µs | %.0f µs |" % (
            wname, vname, statistics.median(r["rps"] for r in rs),
            statistics.median(r["p50_us"] for r in rs), statistics.median(r["p99_us"] for r in rs)))


if __name__ == "__main__":
    main()
