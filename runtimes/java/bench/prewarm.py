#!/usr/bin/env python3
"""First invocation of the Java runtime alone: a prewarmed instance specialized vs a cold start.

Cases, interleaved run by run so that machine noise spreads evenly:
  cold          spawn the launcher with the handler (HANDLER_CLASSPATH, cwd = the function's
                folder), poll GET /health every ms until 200, send POST /invoke: spawn → answer
  prewarm N     spawn the launcher with NANOFAAS_PREWARM=1 (warm-up of N invocations,
                NANOFAAS_PREWARM_WARMUP), wait until healthy and idle, then on one kept-alive
                connection POST /_nanofaas/specialize and POST /invoke: specialize sent → answer

Also reported: the loadMs the runtime answers, the CPU the runtime's threads spent from the
specialize request to the answer (or from the spawn, cold), the RSS of the idle prewarmed
instance, and the prewarmed instance's own start (spawn → healthy, and the CPU it took: in the
background on the platform).

Usage: runtimes/java/bench/prewarm.py [--runs N] [--warmup N ...] [--handler-jar JAR] [--json]
Default handler: examples/java-hello/build/hello.jar (build it with examples/java-hello/build.sh).
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
JAVA_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(JAVA_DIR))
LAUNCHER = os.path.join(JAVA_DIR, "bin", "nanofaas-java-runtime")
HELLO = os.path.join(REPO, "examples", "java-hello", "build", "hello.jar")
INVOKE = b'{"input":{"name":"Ada"}}'


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
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
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
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def cpu_ns_threads(pid):
    """CPU time of all the process's threads so far, in ns (schedstat: precise, unlike ticks)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # the thread ended meanwhile
    return total


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def wait_idle(pid, deadline):
    """Until the process used no CPU for 100 ms (the JIT's queue drained), bounded."""
    last = cpu_ms(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_ms(pid)
        if now - last < 1.0:
            return
        last = now


def post(conn, path, body, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request("POST", path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def base_env(port):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FUNCTION_HANDLER", "HANDLER_CLASSPATH", "JAVA_OPTS", "NANOFAAS_PREWARM",
                        "NANOFAAS_PREWARM_WARMUP", "THREADS", "HOST")}
    env.update(PORT=str(port), LOG_LEVEL="warn")
    return env


def cold(jar):
    port = free_port()
    env = base_env(port)
    env["HANDLER_CLASSPATH"] = os.path.basename(jar)
    t0 = time.monotonic()
    proc = subprocess.Popen([LAUNCHER], env=env, cwd=os.path.dirname(jar),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        conn = wait_healthy(port, proc, t0 + 30)
        status, data = post(conn, "/invoke", INVOKE, {"X-Execution-Id": "e1"})
        t1 = time.monotonic()
        if status != 200:
            raise RuntimeError("invoke answered %d %s" % (status, data))
        cpu = cpu_ms(proc.pid)
        conn.close()
        return {"first_ms": (t1 - t0) * 1000, "cpu_ms": cpu}
    finally:
        stop(proc)


def prewarmed(jar, warmup):
    port = free_port()
    env = base_env(port)
    env.update(NANOFAAS_PREWARM="1", NANOFAAS_PREWARM_WARMUP=str(warmup))
    empty = os.path.join("/tmp", "nanofaas-prewarm-bench-%d" % os.getpid())
    os.makedirs(empty, exist_ok=True)
    t0 = time.monotonic()
    proc = subprocess.Popen([LAUNCHER], env=env, cwd=empty,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        conn = wait_healthy(port, proc, t0 + 60)
        ready_ms = (time.monotonic() - t0) * 1000
        wait_idle(proc.pid, time.monotonic() + 10)
        idle_rss = rss_mib(proc.pid)
        ready_cpu = cpu_ns_threads(proc.pid) / 1e6
        body = json.dumps({"function": "hello-java",
                           "env": {"HANDLER_CLASSPATH": os.path.basename(jar), "GREETING": "hi"},
                           "workingDir": os.path.dirname(jar), "timeoutMs": 10000}).encode()
        cpu0 = cpu_ns_threads(proc.pid)
        t1 = time.monotonic()
        status, data = post(conn, "/_nanofaas/specialize", body)
        t2 = time.monotonic()
        if status != 200:
            raise RuntimeError("specialize answered %d %s" % (status, data))
        status, out = post(conn, "/invoke", INVOKE, {"X-Execution-Id": "e1"})
        t3 = time.monotonic()
        if status != 200:
            raise RuntimeError("invoke answered %d %s" % (status, out))
        cpu = (cpu_ns_threads(proc.pid) - cpu0) / 1e6
        conn.close()
        return {"first_ms": (t3 - t1) * 1000, "specialize_ms": (t2 - t1) * 1000,
                "invoke_ms": (t3 - t2) * 1000, "load_ms": json.loads(data)["loadMs"],
                "cpu_ms": cpu, "ready_ms": ready_ms, "ready_cpu_ms": ready_cpu,
                "idle_rss_mib": idle_rss}
    finally:
        stop(proc)


def summary(values):
    values = sorted(values)
    return {"p50": round(statistics.median(values), 2), "min": round(values[0], 2),
            "max": round(values[-1], 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--warmup", type=int, action="append",
                    help="warm-up invocations of a prewarmed case (repeatable; default 0 and 2000)")
    ap.add_argument("--handler-jar", default=HELLO)
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(args.handler_jar):
        sys.exit("prewarm: %s not found: run examples/java-hello/build.sh" % args.handler_jar)
    jar = os.path.abspath(args.handler_jar)
    warmups = args.warmup or [0, 2000]
    cases = ([] if args.no_cold else [("cold", lambda: cold(jar))]) + [
        ("prewarm warm-up=%d" % w, (lambda w=w: prewarmed(jar, w))) for w in warmups]
    results = {name: [] for name, _ in cases}
    load_before = os.getloadavg()
    for _ in range(args.runs):
        for name, fn in cases:
            results[name].append(fn())
    load_after = os.getloadavg()
    rows = []
    for name, _ in cases:
        runs = results[name]
        row = {"case": name}
        for key in runs[0]:
            row[key] = summary([r[key] for r in runs])
        rows.append(row)
    if args.json:
        print(json.dumps({"runs": args.runs, "cores": os.cpu_count(),
                          "loadavg_before": load_before, "loadavg_after": load_after,
                          "rows": rows}, indent=2))
        return
    print("java-hello, first invocation through the runtime alone; %d runs each, interleaved, "
          "%d cores, load average %.2f before, %.2f after; median [min-max]" % (
              args.runs, os.cpu_count(), load_before[0], load_after[0]))
    print("| case | to the first answer | specialize | its loadMs | then /invoke | runtime CPU "
          "| instance ready | its CPU | idle RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def f(row, key, unit="ms"):
        if key not in row:
            return "—"
        s = row[key]
        return "%.1f %s [%.1f-%.1f]" % (s["p50"], unit, s["min"], s["max"])

    for r in rows:
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["case"], f(r, "first_ms"), f(r, "specialize_ms"), f(r, "load_ms"),
            f(r, "invoke_ms"), f(r, "cpu_ms"), f(r, "ready_ms"), f(r, "ready_cpu_ms"),
            f(r, "idle_rss_mib", "MiB")))


if __name__ == "__main__":
    main()
