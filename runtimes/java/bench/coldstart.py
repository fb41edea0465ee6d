#!/usr/bin/env python3
"""Cold start of the Java runtime under several JVM flag sets.

For each run: spawn the JVM, poll GET /health until the first 200 ("health"), send one
POST /invoke ("first invoke", measured from the spawn), read VmRSS, SIGTERM, wait for the exit.
Flag sets are interleaved run by run so that machine noise spreads evenly; medians are printed.

Usage: runtimes/java/bench/coldstart.py [--runs N] [--json]
Needs runtimes/java/build.sh to have run (the jar and the AppCDS archive).
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
JAVA_DIR = os.path.dirname(HERE)
BUILD = os.path.join(JAVA_DIR, "build")
JAR = os.path.join(BUILD, "nanofaas-runtime.jar")
JSA = os.path.join(BUILD, "nanofaas-runtime.jsa")
LAUNCHER = os.path.join(JAVA_DIR, "bin", "nanofaas-java-runtime")

HANDLER = """
package bench;
import dev.nanofaas.runtime.FunctionHandler;
import dev.nanofaas.runtime.InvocationRequest;
import java.util.Map;
public class Echo implements FunctionHandler {
    public Object handle(InvocationRequest r) { return Map.of("echo", r.input()); }
}
"""

BASE = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData"]
CONFIGS = [
    ("JDK defaults", []),
    ("-Xshare:off (no CDS at all)", ["-Xshare:off"]),
    ("TieredStopAtLevel=1", ["-XX:TieredStopAtLevel=1"]),
    ("+ UseSerialGC", ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]),
    ("+ -UsePerfData", BASE),
    ("AppCDS only", ["-XX:SharedArchiveFile=" + JSA]),
    ("all (recommended)", BASE + ["-XX:SharedArchiveFile=" + JSA]),
    ("launcher script", None),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("runtime exited with %s: %s" % (
                proc.returncode, proc.stderr.read().decode(errors="replace").strip()))
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return c
            c.close()
        except OSError:
            time.sleep(0.001)
    raise RuntimeError("not healthy in time")


def cpu_ms(pid):
    """User + system CPU time the process used so far: less sensitive to a busy machine."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_run(java, flags, deps, handler_cp):
    port = free_port()
    env = dict(os.environ, PORT=str(port), FUNCTION_HANDLER="bench.Echo", LOG_LEVEL="warn")
    if flags is None:
        env["HANDLER_CLASSPATH"] = handler_cp
        argv = [LAUNCHER]
    else:
        # The launcher's classpath: runtime jar, its dependencies, then the handler (the order the
        # AppCDS archive was made with).
        argv = [java] + flags + ["-cp", ":".join([JAR, deps, handler_cp]), "dev.nanofaas.runtime.Main"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        conn = wait_healthy(port, proc, t0 + 30)
        t_health = time.monotonic() - t0
        conn.request("POST", "/invoke", body=b'{"input":{"hello":"world"}}',
                     headers={"X-Execution-Id": "e1", "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError("invoke answered %d" % resp.status)
        t_invoke = time.monotonic() - t0
        rss = rss_kib(proc.pid)
        cpu = cpu_ms(proc.pid)
        conn.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        err = proc.stderr.read().decode(errors="replace").strip()
        if err:
            raise RuntimeError("unexpected stderr: " + err)
        return t_health * 1000, t_invoke * 1000, rss / 1024, cpu
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--flags", action="append", metavar="NAME=FLAGS",
                    help="measure this flag set instead of the built-in ones (repeatable); "
                         "FLAGS is split on spaces, 'launcher' means the launcher script")
    args = ap.parse_args()
    configs = CONFIGS
    if args.flags:
        configs = []
        for spec in args.flags:
            name, _, flags = spec.partition("=")
            configs.append((name, None if flags.strip() == "launcher" else flags.split()))
    if not (os.path.exists(JAR) and os.path.exists(JSA)):
        sys.exit("coldstart: run runtimes/java/build.sh first")
    with open(os.path.join(BUILD, "java")) as f:
        java = f.read().strip()
    with open(os.path.join(BUILD, "classpath")) as f:
        deps = f.read().strip()
    tmp = tempfile.mkdtemp(prefix="nanofaas-coldstart-")
    try:
        src = os.path.join(tmp, "src", "bench")
        os.makedirs(src)
        with open(os.path.join(src, "Echo.java"), "w") as f:
            f.write(HANDLER)
        classes = os.path.join(tmp, "classes")
        javac = os.path.join(os.path.dirname(java), "javac")
        subprocess.run([javac, "-d", classes, "-cp", JAR + ":" + deps, os.path.join(src, "Echo.java")],
                       check=True)
        results = {name: [] for name, _ in configs}
        for _ in range(args.runs):
            for name, flags in configs:
                results[name].append(one_run(java, flags, deps, classes))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for name, flags in configs:
        runs = results[name]
        rows.append({
            "config": name,
            "health_ms_p50": round(statistics.median(r[0] for r in runs), 1),
            "first_invoke_ms_p50": round(statistics.median(r[1] for r in runs), 1),
            "first_invoke_ms_min": round(min(r[1] for r in runs), 1),
            "rss_mib_p50": round(statistics.median(r[2] for r in runs), 1),
            "cpu_ms_p50": round(statistics.median(r[3] for r in runs), 1),
        })
    if args.json:
        print(json.dumps({"runs": args.runs, "cores": os.cpu_count(), "rows": rows}, indent=2))
        return
    print("cold start, %d runs each, interleaved, %d cores; medians" % (args.runs, os.cpu_count()))
    print("| flags | spawn → first 200 /health | spawn → first /invoke answered (min) | CPU used by then | RSS then |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print("| %s | %.0f ms | %.0f ms (%.0f) | %.0f ms | %.0f MiB |" % (
            r["config"], r["health_ms_p50"], r["first_invoke_ms_p50"], r["first_invoke_ms_min"],
            r["cpu_ms_p50"], r["rss_mib_p50"]))


if __name__ == "__main__":
    main()
