"""A/B of the Python example's first call through the chain when a prewarmed instance is ready
(process provider), the narrow driver of the runtimes suite's "prewarmed" column.

    python3 bench/prewarm_ab.py ROUNDS LABEL=NANOFAAS_BIN,WATCHDOG_BIN,PYTHON ...

One control plane per label (`nanofaas serve`, provider.process.prewarm=1, that watchdog), each
keeping one prewarmed instance of `PYTHON -m nanofaas_runtime`; in every round, each label in
turn (the order flipped every other round): wait until its prewarmed instance is ready and
settled, register a fresh copy of examples/python-hello, time its first invocation (must be
answered `X-Start: prewarmed`), then the median of 200 warm calls on one connection, delete it.
Prints one JSON line per call and the medians (with the ratio of the second label to the first).
PYTHON is a venv with the runtime installed (scripts/python-env.sh); e.g. the old tree's
runtime in a venv of its own (`git archive` of runtimes/python, then scripts/python-env.sh).
Take bench.lock around it like any bench (other work on the machine skews every number)."""
import http.client, json, os, re, statistics, subprocess, sys, time, urllib.parse
rounds = int(sys.argv[1]); confs = []
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ex = os.path.join(root, "examples", "python-hello")
out = os.environ.get("OUT", os.path.join(root, "bench", "out", "prewarm-ab")); os.makedirs(out, exist_ok=True)
procs = []
def call(base, method, path, body=None):
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request(method, path, body=body, headers={"content-type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, r.getheader("x-start"), data
def spec(name, py):
    return json.dumps({"name": name, "command": [py, "-m", "nanofaas_runtime"], "workingDir": ex,
                       "env": {"HANDLER_MODULE": "handler", "HANDLER_FUNCTION": "handle"}, "timeoutMs": 10000})
try:
    for a in sys.argv[2:]:
        label, rest = a.split("=", 1); cp, wd, py = rest.split(",")
        log = open(f"{out}/cp-{label}.log", "w")
        p = subprocess.Popen([cp, "serve", "--listen", "127.0.0.1:0", "--state-dir", "", "--set", f"provider.process.watchdog={wd}", "--set", "provider.process.prewarm=1"], stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        for _ in range(400):
            m = re.search(r"^nanofaas listening on (\S+)", open(f"{out}/cp-{label}.log").read(), re.M)
            if m: break
            time.sleep(0.05)
        base = m.group(1)
        st, _, d = call(base, "POST", "/v1/functions", spec(f"keep-{label}", py)); assert st == 201, d
        confs.append((label, base, py))
    def ready(base, py):
        for _ in range(1200):
            st, _, data = call(base, "GET", "/v1/prewarmed")
            for k in json.loads(data):
                if k["command"] == f"{py} -m nanofaas_runtime" and k["ready"] and not k["starting"]:
                    return
            time.sleep(0.05)
        raise SystemExit(f"no prewarmed {py}")
    res = {c[0]: [] for c in confs}; warm = {c[0]: [] for c in confs}
    for r in range(rounds):
        order = confs if r % 2 == 0 else confs[::-1]
        for label, base, py in order:
            ready(base, py); time.sleep(0.3)
            name = f"pw-{label}-{r}"
            st, _, d = call(base, "POST", "/v1/functions", spec(name, py)); assert st == 201, d
            body = json.dumps({"input": {"name": "bench"}})
            t0 = time.perf_counter(); st, start, data = call(base, "POST", f"/v1/functions/{name}:invoke", body); t1 = time.perf_counter()
            assert st == 200 and start == "prewarmed", (st, start, data)
            res[label].append((t1 - t0) * 1000)
            u = urllib.parse.urlparse(base); c = http.client.HTTPConnection(u.hostname, u.port, timeout=60); ws = []
            for _ in range(200):
                a = time.perf_counter(); c.request("POST", f"/v1/functions/{name}:invoke", body=body, headers={"content-type": "application/json"}); rr = c.getresponse(); rr.read(); ws.append((time.perf_counter() - a) * 1000)
            warm[label].append(statistics.median(ws))
            call(base, "DELETE", f"/v1/functions/{name}")
            print(json.dumps({"round": r, "label": label, "pw_ms": round(res[label][-1], 2), "warm_p50_ms": round(warm[label][-1], 3), "load": open("/proc/loadavg").read().split()[:3]}), flush=True)
    meds = {}
    for label, _, _ in confs:
        v = res[label]; meds[label] = statistics.median(v)
        print(f"{label}: prewarmed first call median {meds[label]:.1f} ms (min {min(v):.1f}, max {max(v):.1f}), n={len(v)}; warm p50 median {statistics.median(warm[label]):.3f} ms")
    if len(confs) == 2:
        a, b = confs[0][0], confs[1][0]
        print(f"ratio {b}/{a}: {meds[b]/meds[a]:.2f}")
    print("load average:", open("/proc/loadavg").read().strip())
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try: p.wait(timeout=20)
        except Exception: p.kill()
