#!/usr/bin/env bash
# nanofaas benchmarks. One subcommand per suite:
#
#   bench/run.sh watchdog       the warm watchdog vs calling the echo runtime directly
#   bench/run.sh control-plane  a sync invoke through the control plane (POOL) vs the echo runtime
#                               directly; RSS after a million invocations
#   bench/run.sh chain          control plane -> watchdog -> runtime (process provider) vs direct;
#                               cold start of a Rust function
#   bench/run.sh chain-cpu      CPU per invocation of each process of the chain at 32 connections,
#                               hops over Unix sockets (the default) vs loopback TCP
#   bench/run.sh docker         the docker provider beside the process provider: warm latency and
#                               throughput, cold start (container create to first response)
#   bench/run.sh auth           CPU per request of the API's access checks with a bearer token vs
#                               the same checks with no tokens configured (target: < 2 us added)
#   bench/run.sh runtimes       the Python, Java and Rust examples through the full chain vs the
#                               runtime alone: warm latency, cold start, where Python's goes;
#                               Python on Docker cold, prewarmed and warm where an engine answers
#   bench/run.sh kubernetes     the kubernetes provider against nanofaas-kube-fake with K8S_PODS
#                               (default 1,000) fake pods: its watch's lag behind a reference
#                               watcher, RSS per watched pod, the API request rate during
#                               K8S_BURST_STARTS (200) cold starts against api_qps/api_burst,
#                               and the provider's own cost of a cold start beside the Docker
#                               provider's (needs root: it runs in a network namespace of its own)
#   bench/run.sh python-warm    the Python example warm on kept-alive connections, through the
#                               chain vs called directly, at 1 connection (BASE_REF: A/B of the
#                               Python runtime)
#   bench/run.sh soak           up to SOAK_COUNT (default a million) sync, async and failing calls;
#                               control-plane RSS, open descriptors and journal size at the start,
#                               middle and end
#
# A/B: with BASE_REF=<git ref> (e.g. BASE_REF=main), `control-plane` and `chain` also build that
# ref (into $TARGET_DIR/ab/, sources from `git archive`, so the work tree is untouched), run it
# beside this tree's build, interleaved run by run, and print both, their ratio, and the CPU
# each side spent per invocation.
#
# Knobs (environment): CP_FILL (invocations before the control plane's RSS is read, default
# 1000000), COLD_RUNS (cold starts measured, default 15), RUNS (repetitions, default 5), DURATION (measured seconds per run,
# default 3), WARMUP (seconds, default 1), CONNECTIONS_HIGH (default 32), WD_CONCURRENCY
# (WARM_CONCURRENCY of the high-concurrency watchdog, default 32), WD_THREADS (WATCHDOG_THREADS,
# default: the watchdog's own default).
# Output goes to the terminal and to bench/out/<suite>-<timestamp>.txt; raw loadgen results
# are kept as JSON lines next to it. See bench/README.md for how to read the tables.
#
# Adding a suite: write suite_<name>() using the helpers below (build_release, start_bg,
# wait_http, wait_line, free_port, wait_quiet, loadgen_json, stats, row), and add it to the
# dispatch at the bottom.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
REL="$TARGET_DIR/release"
OUT="$ROOT/bench/out"
RUNS="${RUNS:-5}"
DURATION="${DURATION:-3}"
WARMUP="${WARMUP:-1}"
mkdir -p "$OUT"

# ---------------------------------------------------------------- shared helpers

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

log() { printf '%s\n' "$*" | tee -a "$REPORT" >&2; }

# build_release <package>...: release build of workspace packages.
build_release() {
  # SKIP_BUILD=1: measure the binaries already in $REL (say so in the report).
  if [[ -n "${SKIP_BUILD:-}" ]]; then log "SKIP_BUILD: using the binaries in $REL as they are"; return 0; fi
  local args=()
  for p in "$@"; do args+=(-p "$p"); done
  cargo build --release "${args[@]}" >&2
}

# free_port: a TCP port free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_bg <name> <env...> -- <command...>: starts a process in the background with extra
# environment; its output goes to bench/out/<name>.log; its pid is recorded for cleanup and left
# in LAST_PID. (Do not call it inside $(...): a subshell would lose the pid.)
LAST_PID=
start_bg() {
  local name="$1"; shift
  local envs=()
  while [[ "$1" != "--" ]]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" "$@" >"$OUT/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# wait_http <url> <seconds>: waits until the URL answers 2xx.
wait_http() {
  local url="$1" deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if (( SECONDS >= deadline )); then echo "no answer from $url" >&2; return 1; fi
    sleep 0.05
  done
}

# wait_line <file> <regex> <seconds>: waits until a line matching the regex appears; prints it.
wait_line() {
  local file="$1" re="$2" deadline=$((SECONDS + $3)) line
  while true; do
    line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
    if [[ -n "$line" ]]; then echo "$line"; return 0; fi
    if (( SECONDS >= deadline )); then echo "no line /$re/ in $file" >&2; return 1; fi
    sleep 0.02
  done
}

# loadgen_json <label> <loadgen args...>: one measurement; appends {"label":..., ...} to $RAW.
loadgen_json() {
  local label="$1"; shift
  local json
  json=$("$REL/loadgen" --json -d "$DURATION" -w "$WARMUP" "$@")
  printf '{"label":"%s","result":%s}\n' "$label" "$json" >>"$RAW"
}

# cpu_idle_pct: idle share of all CPUs over the next 0.5 s, in percent.
cpu_idle_pct() {
  python3 - <<'PY'
import time
def snap():
    f = open("/proc/stat").readline().split()[1:]
    v = list(map(int, f))
    return v[3] + v[4], sum(v)
i0, t0 = snap(); time.sleep(0.5); i1, t1 = snap()
print(int(100 * (i1 - i0) / max(1, t1 - t0)))
PY
}

# wait_quiet: waits (at most QUIET_MAX_WAIT s, default 120) until at least QUIET_IDLE % (default
# 85) of the CPU is idle, so that other work on a shared machine does not land in a measurement;
# prints the idle share it started with.
wait_quiet() {
  local deadline=$((SECONDS + ${QUIET_MAX_WAIT:-120})) idle
  while true; do
    idle=$(cpu_idle_pct)
    if (( idle >= ${QUIET_IDLE:-85} || SECONDS >= deadline )); then echo "$idle"; return; fi
  done
}

# rss_kb <pid>: resident set size in KiB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# stats <python expression over R>: evaluates with R = {label: [results...]} loaded from $RAW
# and helpers med(list), pick(label, key). Prints the value.
stats() {
  python3 - "$RAW" "$1" <<'PY'
import json, statistics, sys
R = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    R.setdefault(d["label"], []).append(d["result"])
def med(xs): return statistics.median(xs)
def pick(label, key): return [r[key] for r in R[label]]
def paired(a, b, key, f): return [f(x[key], y[key]) for x, y in zip(R[a], R[b])]
def perrun(): return "; ".join(l + ": " + " ".join("%d/%.0f" % (r["p50_us"], r["rps"]) for r in R[l]) for l in R if "p50_us" in R[l][0])
v = eval(sys.argv[2])
print(f"{v:.3f}" if isinstance(v, float) else v)
PY
}

# row <metric> <ours> <baseline> <ratio or delta> <target> <verdict>: one table line.
row() { printf '%-34s %14s %14s %16s %16s  %s\n' "$@" | tee -a "$REPORT"; }

# verdict <python boolean expression>: "met" or "MISSED".
verdict() { python3 -c "print('met' if ($1) else 'MISSED')"; }

# cpu_ticks <pids...>: user+system CPU ticks spent so far by these processes (all threads).
cpu_ticks() {
  local total=0 p t
  for p in "$@"; do
    t=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null) || continue
    total=$(( total + ${t:-0} ))
  done
  echo "$total"
}

# loadgen_cpu <label> <"pids"> <loadgen args...>: loadgen_json, plus the CPU the given processes
# spent per invocation during the measured window (cpu_us in the result; includes the warm-up).
loadgen_cpu() {
  local label="$1" pids="$2"; shift 2
  local t0 t1 json
  # shellcheck disable=SC2086
  t0=$(cpu_ticks $pids)
  json=$("$REL/loadgen" --json -d "$DURATION" -w "$WARMUP" "$@")
  # shellcheck disable=SC2086
  t1=$(cpu_ticks $pids)
  json=$(python3 -c 'import json,os,sys; d=json.loads(sys.argv[1]); t=int(sys.argv[2]); w=float(sys.argv[3]); s=float(sys.argv[4]); n=max(1, d["requests"] * (w + s) / s); d["cpu_us"]=round(t * 1e6 / os.sysconf("SC_CLK_TCK") / n, 1); print(json.dumps(d))' "$json" "$(( t1 - t0 ))" "$WARMUP" "$DURATION")
  printf '{"label":"%s","result":%s}\n' "$label" "$json" >>"$RAW"
}

# ab_prepare: with BASE_REF set, builds that ref's release binaries (nanofaas, echo-runtime,
# loadgen, static watchdog) into $TARGET_DIR/ab/target from a `git archive` of it, and sets
# BASE_REL and BASE_WD. Without BASE_REF, does nothing.
BASE_REL=
BASE_WD=
ab_prepare() {
  [[ -n "${BASE_REF:-}" ]] || return 0
  # BASE_BIN=<dir>: the base's binaries already built there (nanofaas, nanofaas-watchdog);
  # BASE_REF then only names them in the report.
  if [[ -n "${BASE_BIN:-}" ]]; then
    log "A/B: base $BASE_REF = the binaries in $BASE_BIN, as they are (BASE_BIN)"
    BASE_REL="$BASE_BIN"; BASE_WD="$BASE_BIN/nanofaas-watchdog"
    return 0
  fi
  local sha; sha=$(git -C "$ROOT" rev-parse --verify "$BASE_REF^{commit}")
  local src="$TARGET_DIR/ab/src-$sha" tgt="$TARGET_DIR/ab/target"
  if [[ ! -f "$src/Cargo.toml" ]]; then
    rm -rf "$src"; mkdir -p "$src"
    git -C "$ROOT" archive "$sha" | tar -x -C "$src"
  fi
  log "A/B: base $BASE_REF = $sha, built in $tgt"
  (cd "$src" && CARGO_TARGET_DIR="$tgt" cargo build --release -p nanofaas-cli -p nanofaas-echo-runtime -p nanofaas-loadgen >&2)
  BASE_WD=$(cd "$src" && CARGO_TARGET_DIR="$tgt" ./scripts/build-static.sh)
  BASE_REL="$tgt/release"
}

# chain_watchdog: the watchdog the chain suites start: $WATCHDOG when set (a binary built
# elsewhere, e.g. with debug info for a profiler), else this tree's static build.
chain_watchdog() {
  if [[ -n "${WATCHDOG:-}" ]]; then
    log "WATCHDOG: using $WATCHDOG as it is"
    echo "$WATCHDOG"
  else
    "$ROOT/scripts/build-static.sh"
  fi
}

# ab_rows <ours label> <base label> <what>: the A/B lines of one measurement (p50, req/s, CPU per
# invocation), if the base was measured.
ab_rows() {
  local o="$1" b="$2" what="$3"
  [[ -n "$(stats "'$b' in R or ''")" ]] || return 0
  row "p50, $what (us)" "$(stats "med(pick('$o','p50_us'))")" "$(stats "med(pick('$b','p50_us'))")" "x$(stats "med(paired('$o','$b','p50_us',lambda a,b:a/b))")" "(A/B)" ""
  row "req/s, $what" "$(stats "med(pick('$o','rps'))")" "$(stats "med(pick('$b','rps'))")" "x$(stats "med(paired('$o','$b','rps',lambda a,b:a/b))")" "(A/B)" ""
  row "CPU per call, $what (us)" "$(stats "med(pick('$o','cpu_us'))")" "$(stats "med(pick('$b','cpu_us'))")" "x$(stats "med(paired('$o','$b','cpu_us',lambda a,b:a/b))")" "(A/B)" ""
}

# ---------------------------------------------------------------- suites

suite_watchdog() {
  local high="${CONNECTIONS_HIGH:-32}" wd_conc="${WD_CONCURRENCY:-32}"
  log "== watchdog suite: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, RUNS=$RUNS DURATION=${DURATION}s WARMUP=${WARMUP}s"
  log "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every number)"
  build_release nanofaas-echo-runtime nanofaas-loadgen
  local wd
  wd=$("$ROOT/scripts/build-static.sh")
  local size; size=$(stat -c %s "$wd")

  local body='{"input":{"message":"hello","n":42},"metadata":{"k":"v"}}'
  local hdr=(-H "X-Execution-Id: bench-1" -H "X-Trace-Id: trace-1")
  local extra=()
  [[ -n "${WD_THREADS:-}" ]] && extra+=("WATCHDOG_THREADS=$WD_THREADS")

  # The direct baseline: the echo runtime on its own.
  local direct_port; direct_port=$(free_port)
  start_bg echo-direct "PORT=$direct_port" -- "$REL/echo-runtime"
  local direct_pid=$LAST_PID
  wait_http "http://127.0.0.1:$direct_port/health" 10

  # Two warm watchdogs, each with its own echo runtime: default concurrency (1) for latency,
  # WARM_CONCURRENCY=$wd_conc for throughput.
  local p1 r1 pN rN line
  r1=$(free_port); rN=$(free_port)
  local wd1_pid wdN_pid
  start_bg watchdog-c1 EXECUTION_MODE=WARM WARM_PORT=0 WARM_BIND=127.0.0.1 \
    "PORT=$r1" "RUNTIME_URL=http://127.0.0.1:$r1/invoke" "WATCHDOG_CMD=$REL/echo-runtime" \
    WARM_IDLE_TIMEOUT_MS=0 "${extra[@]}" -- "$wd"
  wd1_pid=$LAST_PID
  start_bg watchdog-cN EXECUTION_MODE=WARM WARM_PORT=0 WARM_BIND=127.0.0.1 \
    "PORT=$rN" "RUNTIME_URL=http://127.0.0.1:$rN/invoke" "WATCHDOG_CMD=$REL/echo-runtime" \
    WARM_IDLE_TIMEOUT_MS=0 "WARM_CONCURRENCY=$wd_conc" "${extra[@]}" -- "$wd"
  wdN_pid=$LAST_PID
  line=$(wait_line "$OUT/watchdog-c1.log" '^NANOFAAS_READY ' 10); p1=${line#*port=}; p1=${p1%% *}
  line=$(wait_line "$OUT/watchdog-cN.log" '^NANOFAAS_READY ' 10); pN=${line#*port=}; pN=${pN%% *}
  sleep 0.5
  local rss_fresh; rss_fresh=$(rss_kb "$wd1_pid")

  # Interleaved repetitions so that drift hits both sides alike.
  local idles=()
  for run in $(seq "$RUNS"); do
    local idle; idle=$(wait_quiet); idles+=("$idle")
    log "run $run/$RUNS (cpu idle before: $idle%)"
    loadgen_json direct-1 -c 1 -b "$body" "${hdr[@]}" "http://127.0.0.1:$direct_port/invoke"
    loadgen_json watchdog-1 -c 1 -b "$body" "${hdr[@]}" "http://127.0.0.1:$p1/invoke"
    idle=$(wait_quiet); idles+=("$idle")
    log "          (cpu idle before the $high-connection pair: $idle%)"
    loadgen_json direct-N -c "$high" -b "$body" "${hdr[@]}" "http://127.0.0.1:$direct_port/invoke"
    loadgen_json watchdog-N -c "$high" -b "$body" "${hdr[@]}" "http://127.0.0.1:$pN/invoke"
  done
  # The same 1-connection comparison with every process pinned to CPU 0: on a VM, where the
  # scheduler places three processes decides between fast same-CPU and slow cross-CPU wake-ups,
  # which makes unpinned latencies bimodal; pinned, the watchdog's own cost is what remains.
  local pinned_runs="${PINNED_RUNS:-3}" rt1
  rt1=$(wait_line "$OUT/watchdog-c1.log" '^NANOFAAS_READY ' 1); rt1=${rt1##*runtime_pid=}
  if command -v taskset >/dev/null && (( pinned_runs > 0 )); then
    local cpu_pids=("$wd1_pid" "$rt1" "$direct_pid")
    for pid in "${cpu_pids[@]}"; do taskset -a -p -c 0 "$pid" >/dev/null; done
    for run in $(seq "$pinned_runs"); do
      local idle; idle=$(wait_quiet)
      log "pinned run $run/$pinned_runs (cpu idle before: $idle%)"
      taskset -c 0 "$REL/loadgen" --json -d "$DURATION" -w "$WARMUP" -c 1 -b "$body" "${hdr[@]}" \
        "http://127.0.0.1:$direct_port/invoke" | sed 's/^/{"label":"pinned-direct-1","result":/; s/$/}/' >>"$RAW"
      taskset -c 0 "$REL/loadgen" --json -d "$DURATION" -w "$WARMUP" -c 1 -b "$body" "${hdr[@]}" \
        "http://127.0.0.1:$p1/invoke" | sed 's/^/{"label":"pinned-watchdog-1","result":/; s/$/}/' >>"$RAW"
    done
    for pid in "${cpu_pids[@]}"; do taskset -a -p -c "0-$(( $(nproc) - 1 ))" "$pid" >/dev/null; done
  fi
  sleep 1
  local rss_after; rss_after=$(rss_kb "$wd1_pid")
  local rss_afterN; rss_afterN=$(rss_kb "$wdN_pid")
  local errors; errors=$(stats 'sum(sum(pick(l, "errors")) for l in R)')
  log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

  log ""
  log "medians of $RUNS interleaved runs (${DURATION}s each after ${WARMUP}s warm-up); body ${#body} bytes"
  log "cpu idle before each pair (%): ${idles[*]} (each pair waits up to ${QUIET_MAX_WAIT:-120}s for >= ${QUIET_IDLE:-85}%)"
  row "metric" "watchdog" "direct" "ratio/added" "target" "verdict"
  local d1 w1 added
  d1=$(stats 'med(pick("direct-1","p50_us"))'); w1=$(stats 'med(pick("watchdog-1","p50_us"))')
  added=$(stats 'med(paired("watchdog-1","direct-1","p50_us",lambda a,b:a-b))')
  row "p50 latency, 1 conn (us)" "$w1" "$d1" "+$added us" "<= +60 us" "$(verdict "$added <= 60")"
  if [[ -n "$(stats '"pinned-watchdog-1" in R or ""')" ]]; then
    row "p50, 1 conn, all on CPU 0 (us)" "$(stats 'med(pick("pinned-watchdog-1","p50_us"))')" \
      "$(stats 'med(pick("pinned-direct-1","p50_us"))')" \
      "+$(stats 'med(paired("pinned-watchdog-1","pinned-direct-1","p50_us",lambda a,b:a-b))') us" "(diagnostic)" ""
  fi
  row "p99 latency, 1 conn (us)" "$(stats 'med(pick("watchdog-1","p99_us"))')" "$(stats 'med(pick("direct-1","p99_us"))')" "" "" ""
  row "throughput, 1 conn (req/s)" "$(stats 'med(pick("watchdog-1","rps"))')" "$(stats 'med(pick("direct-1","rps"))')" "$(stats 'med(paired("watchdog-1","direct-1","rps",lambda a,b:a/b))')" "" ""
  local ratio
  ratio=$(stats 'med(paired("watchdog-N","direct-N","rps",lambda a,b:a/b))')
  row "throughput, $high conns (req/s)" "$(stats 'med(pick("watchdog-N","rps"))')" "$(stats 'med(pick("direct-N","rps"))')" "x$ratio" ">= x0.40" "$(verdict "$ratio >= 0.40")"
  row "p50 latency, $high conns (us)" "$(stats 'med(pick("watchdog-N","p50_us"))')" "$(stats 'med(pick("direct-N","p50_us"))')" "" "" ""
  row "p99 latency, $high conns (us)" "$(stats 'med(pick("watchdog-N","p99_us"))')" "$(stats 'med(pick("direct-N","p99_us"))')" "" "" ""
  row "idle RSS, fresh (KiB)" "$rss_fresh" "" "" "<= 3906 (4 MB)" "$(verdict "$rss_fresh * 1024 <= 4000000")"
  row "idle RSS, after load, c=1 (KiB)" "$rss_after" "" "" "<= 3906 (4 MB)" "$(verdict "$rss_after * 1024 <= 4000000")"
  row "idle RSS, after load, c=$wd_conc (KiB)" "$rss_afterN" "" "" "" ""
  row "static binary (bytes)" "$size" "" "" "<= 3000000" "$(verdict "$size <= 3000000")"
  row "errors (all runs)" "$errors" "" "" "0" "$(verdict "$errors == 0")"
  log ""
  log "per run (p50 us / req/s): $(stats 'perrun()')"
}

# pinned_pairs <runs> <pids "a b c"> <label-direct> <url-direct> <label-ours> <url-ours> [loadgen args...]:
# the 1-connection comparison with every given process (all threads) and the load generator
# pinned to CPU 0. On this VM a wake-up across vCPUs costs ~40 us against ~14 us on one, so
# unpinned latencies depend on where the scheduler puts each process; pinned, what remains is
# the cost of the hops themselves. Restores the processes' affinity afterwards.
pinned_pairs() {
  local runs="$1" pids="$2" ld="$3" ud="$4" lo="$5" uo="$6"; shift 6
  command -v taskset >/dev/null && (( runs > 0 )) || return 0
  local pid
  for pid in $pids; do taskset -a -p -c 0 "$pid" >/dev/null; done
  for run in $(seq "$runs"); do
    log "pinned run $run/$runs (cpu idle before: $(wait_quiet)%)"
    taskset -c 0 "$REL/loadgen" --json -t 1 -d "$DURATION" -w "$WARMUP" -c 1 "$@" "$ud" \
      | sed "s/^/{\"label\":\"$ld\",\"result\":/; s/\$/}/" >>"$RAW"
    taskset -c 0 "$REL/loadgen" --json -t 1 -d "$DURATION" -w "$WARMUP" -c 1 "$@" "$uo" \
      | sed "s/^/{\"label\":\"$lo\",\"result\":/; s/\$/}/" >>"$RAW"
  done
  for pid in $pids; do taskset -a -p -c "0-$(( $(nproc) - 1 ))" "$pid" >/dev/null; done
}

# start_cp <name> [serve args...]: starts `nanofaas serve` ($CP_BIN if set) on a free port with no
# state; sets CP_URL and LAST_PID.
start_cp() {
  local name="$1"; shift
  start_bg "$name" -- "${CP_BIN:-$REL/nanofaas}" serve --listen 127.0.0.1:0 --state-dir "" "$@"
  local line; line=$(wait_line "$OUT/$name.log" '^nanofaas listening on ' 20)
  CP_URL=${line#nanofaas listening on }
}

# register <cp url> <json spec>: registers a function or fails loudly.
register() {
  curl -fsS -XPOST "$1/v1/functions" -H 'content-type: application/json' -d "$2" >/dev/null
}

suite_control_plane() {
  local high="${CONNECTIONS_HIGH:-32}"
  log "== control-plane suite: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, RUNS=$RUNS DURATION=${DURATION}s WARMUP=${WARMUP}s"
  build_release nanofaas-cli nanofaas-echo-runtime nanofaas-loadgen
  ab_prepare
  local body='{"input":{"message":"hello","n":42},"metadata":{"k":"v"}}'
  local echo_port; echo_port=$(free_port)
  start_bg echo-cp "PORT=$echo_port" -- "$REL/echo-runtime"
  ECHO_PID=$LAST_PID
  wait_http "http://127.0.0.1:$echo_port/health" 10
  local spec="{\"name\":\"echo\",\"executionMode\":\"POOL\",\"endpointUrl\":\"http://127.0.0.1:$echo_port/invoke\",\"concurrency\":256,\"queueSize\":1000}"
  # Default settings, except that no instance provider is needed: a POOL function.
  start_cp cp-bench --set provider.type=none
  local cp_pid=$LAST_PID
  register "$CP_URL" "$spec"
  local inv="$CP_URL/v1/functions/echo:invoke"
  local base_pid="" base_inv=""
  if [[ -n "$BASE_REL" ]]; then
    CP_BIN="$BASE_REL/nanofaas" start_cp cp-bench-base --set provider.type=none
    base_pid=$LAST_PID
    register "$CP_URL" "$spec"
    base_inv="$CP_URL/v1/functions/echo:invoke"
  fi
  for run in $(seq "$RUNS"); do
    log "run $run/$RUNS (cpu idle before: $(wait_quiet)%)"
    loadgen_json direct-1 -c 1 -b "$body" -H "X-Execution-Id: bench" "http://127.0.0.1:$echo_port/invoke"
    loadgen_cpu cp-1 "$cp_pid" -c 1 -b "$body" "$inv"
    if [[ -n "$base_pid" ]]; then loadgen_cpu base-1 "$base_pid" -c 1 -b "$body" "$base_inv"; fi
    log "          (cpu idle before the $high-connection pair: $(wait_quiet)%)"
    loadgen_json direct-N -c "$high" -b "$body" -H "X-Execution-Id: bench" "http://127.0.0.1:$echo_port/invoke"
    loadgen_cpu cp-N "$cp_pid" -c "$high" -b "$body" "$inv"
    if [[ -n "$base_pid" ]]; then loadgen_cpu base-N "$base_pid" -c "$high" -b "$body" "$base_inv"; fi
  done
  if [[ -n "$base_pid" ]]; then kill -TERM "$base_pid"; wait "$base_pid" 2>/dev/null || true; fi
  pinned_pairs "${PINNED_RUNS:-3}" "$cp_pid $ECHO_PID" pinned-direct-1 "http://127.0.0.1:$echo_port/invoke" \
    pinned-cp-1 "$inv" -b "$body" -H "X-Execution-Id: bench"
  # Memory after a million invocations with default settings (records kept for the TTL, capped).
  local total; total=$(stats 'int(sum(sum(pick(l, "requests")) for l in ("cp-1", "cp-N")))')
  local d
  local fill="${CP_FILL:-1000000}"
  while (( total < fill )); do
    d=$(( (fill - total) / 15000 + 2 ))
    (( d > 30 )) && d=30
    local json; json=$("$REL/loadgen" --json -d "$d" -w 0 -c "$high" -b "$body" "$inv")
    printf '{"label":"fill","result":%s}\n' "$json" >>"$RAW"
    total=$(( total + $(python3 -c "import json,sys; print(json.loads(sys.argv[1])['requests'])" "$json") ))
  done
  sleep 1
  local rss; rss=$(rss_kb "$cp_pid")
  local errors; errors=$(stats 'sum(sum(pick(l, "errors")) for l in R)')

  log ""
  log "medians of $RUNS interleaved runs (${DURATION}s each after ${WARMUP}s warm-up); body ${#body} bytes"
  row "metric" "control plane" "direct" "ratio/added" "target" "verdict"
  local added ratio
  added=$(stats 'med(paired("cp-1","direct-1","p50_us",lambda a,b:a-b))')
  row "p50 latency, 1 conn (us)" "$(stats 'med(pick("cp-1","p50_us"))')" "$(stats 'med(pick("direct-1","p50_us"))')" "+$added us" "<= +80 us" "$(verdict "$added <= 80")"
  if [[ -n "$(stats '"pinned-cp-1" in R or ""')" ]]; then
    row "p50, 1 conn, all on CPU 0 (us)" "$(stats 'med(pick("pinned-cp-1","p50_us"))')" "$(stats 'med(pick("pinned-direct-1","p50_us"))')" \
      "+$(stats 'med(paired("pinned-cp-1","pinned-direct-1","p50_us",lambda a,b:a-b))') us" "(diagnostic)" ""
  fi
  row "p99 latency, 1 conn (us)" "$(stats 'med(pick("cp-1","p99_us"))')" "$(stats 'med(pick("direct-1","p99_us"))')" "" "" ""
  row "throughput, 1 conn (req/s)" "$(stats 'med(pick("cp-1","rps"))')" "$(stats 'med(pick("direct-1","rps"))')" "$(stats 'med(paired("cp-1","direct-1","rps",lambda a,b:a/b))')" "" ""
  ratio=$(stats 'med(paired("cp-N","direct-N","rps",lambda a,b:a/b))')
  row "throughput, $high conns (req/s)" "$(stats 'med(pick("cp-N","rps"))')" "$(stats 'med(pick("direct-N","rps"))')" "x$ratio" ">= x0.35" "$(verdict "$ratio >= 0.35")"
  row "p50 latency, $high conns (us)" "$(stats 'med(pick("cp-N","p50_us"))')" "$(stats 'med(pick("direct-N","p50_us"))')" "" "" ""
  row "p99 latency, $high conns (us)" "$(stats 'med(pick("cp-N","p99_us"))')" "$(stats 'med(pick("direct-N","p99_us"))')" "" "" ""
  row "RSS after $total invocations (KiB)" "$rss" "" "" "<= 146484 (150 MB)" "$(verdict "$rss * 1024 <= 150000000")"
  row "errors (all runs)" "$errors" "" "" "0" "$(verdict "$errors == 0")"
  if [[ -n "$BASE_REL" ]]; then
    log ""
    log "A/B against $BASE_REF (control plane process only for CPU; same echo runtime, interleaved):"
    row "metric" "this tree" "$BASE_REF" "ratio" "" ""
    row "added p50, 1 conn (us)" "+$(stats 'med(paired("cp-1","direct-1","p50_us",lambda a,b:a-b))')" "+$(stats 'med(paired("base-1","direct-1","p50_us",lambda a,b:a-b))')" "" "" ""
    ab_rows cp-1 base-1 "1 conn"
    row "of direct, $high conns" "x$(stats 'med(paired("cp-N","direct-N","rps",lambda a,b:a/b))')" "x$(stats 'med(paired("base-N","direct-N","rps",lambda a,b:a/b))')" "" "" ""
    ab_rows cp-N base-N "$high conns"
  fi
  log ""
  log "per run (p50 us / req/s): $(stats 'perrun()')"
}

# cold_starts <cp url> <spec json with NAME placeholder> <n>: registers a fresh function n times,
# times its first (cold) invocation from request to response, deletes it; prints the times in ms
# as JSON, then the warm median of 200 calls on the last one.
cold_starts() {
  python3 - "$1" "$2" "$3" <<'PY'
import http.client, json, statistics, sys, time, urllib.parse
base, spec_tpl, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlparse(base)
def call(method, path, body=None):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request(method, path, body=body, headers={"content-type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, r.getheader("x-cold-start"), data
colds, warm = [], []
for i in range(n):
    name = f"cold{i}"
    st, _, data = call("POST", "/v1/functions", spec_tpl.replace("NAME", name))
    assert st == 201, data
    body = json.dumps({"input": {"i": i}})
    t0 = time.perf_counter(); st, cold, data = call("POST", f"/v1/functions/{name}:invoke", body); t1 = time.perf_counter()
    assert st == 200 and cold == "true", (st, cold, data)
    colds.append((t1 - t0) * 1000)
    if i == n - 1:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        for _ in range(200):
            t0 = time.perf_counter(); c.request("POST", f"/v1/functions/{name}:invoke", body=body, headers={"content-type": "application/json"})
            r = c.getresponse(); r.read(); t1 = time.perf_counter()
            assert r.status == 200 and r.getheader("x-cold-start") == "false"
            warm.append((t1 - t0) * 1000)
    call("DELETE", f"/v1/functions/{name}")
print(json.dumps({"cold_ms": colds, "cold_p50_ms": statistics.median(colds), "warm_p50_ms": statistics.median(warm)}))
PY
}

# provider_cold_starts <cp url> <spec json with NAME> <n> <backend>: like cold_starts, and
# subtracts from each first call (request to answer, seen by the client) the backend's own start
# of that instance, as the backend recorded it, so what is left is the provider's own cost
# (the control plane's create call, watching or probing for readiness, lease, dispatch, answer).
#   backend "kubernetes=<fake url>": the simulated kubelet's start, from the pod's creation to
#     its first Ready, from the fake's /_fake/stats (its own clock);
#   backend "docker": the engine's, from the container's Created time to the line the watchdog in
#     it prints once it answers (NANOFAAS_READY, timestamped by the engine: docker logs -t).
# Functions are named <prefix>0, <prefix>1, ... (default pcold).
# Prints {"total_ms": [...], "start_ms": [...], "own_ms": [...]}.
provider_cold_starts() {
  python3 - "$1" "$2" "$3" "$4" "${5:-pcold}" <<'PY'
import datetime, http.client, json, subprocess, sys, time, urllib.parse
base, spec_tpl, n, backend, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
u = urllib.parse.urlparse(base)
def call(method, url, body=None):
    p = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(p.hostname, p.port, timeout=60)
    c.request(method, p.path or "/", body=body, headers={"content-type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, r.getheader("x-cold-start"), data
def ts(s):
    # RFC 3339 with up to nanoseconds: keep microseconds for fromisoformat.
    s = s.strip().replace("Z", "+00:00")
    if "." in s:
        head, rest = s.split(".", 1)
        frac = "".join(ch for ch in rest if ch.isdigit()); tz = rest[len(frac):]
        s = head + "." + (frac + "000000")[:6] + tz
    return datetime.datetime.fromisoformat(s).timestamp()
def docker(*a):
    return subprocess.run(["docker", *a], check=True, capture_output=True, text=True).stdout
total, start = [], []
for i in range(n):
    name = f"{prefix}{i}"
    st, _, data = call("POST", base + "/v1/functions", spec_tpl.replace("NAME", name))
    assert st == 201, data
    t0 = time.perf_counter()
    st, cold, data = call("POST", base + f"/v1/functions/{name}:invoke", json.dumps({"input": {"i": i}}))
    t1 = time.perf_counter()
    assert st == 200 and cold == "true", (st, cold, data)
    total.append((t1 - t0) * 1000)
    if backend == "docker":
        ids = docker("ps", "-aq", "--filter", f"label=dev.nanofaas.function={name}").split()
        assert len(ids) == 1, f"{name}: containers {ids}"
        created = ts(docker("inspect", "-f", "{{.Created}}", ids[0]))
        out = subprocess.run(["docker", "logs", "-t", ids[0]], capture_output=True, text=True)
        ready = [l.split(" ", 1)[0] for l in (out.stdout + out.stderr).splitlines() if "NANOFAAS_READY " in l]
        assert ready, f"{name}: no NANOFAAS_READY line in the container's log"
        start.append((ts(ready[0]) - created) * 1000)
    call("DELETE", base + f"/v1/functions/{name}")
if backend.startswith("kubernetes="):
    st, _, data = call("GET", backend.split("=", 1)[1] + "/_fake/stats")
    pods = json.loads(data)["pods"]
    for i in range(n):
        mine = [p for p in pods if p["labels"].get("nanofaas.dev/function") == f"{prefix}{i}"]
        assert len(mine) == 1 and mine[0]["readyMs"] is not None, (i, mine)
        start.append(mine[0]["readyMs"] - mine[0]["createdMs"])
own = [t - s for t, s in zip(total, start)]
print(json.dumps({"total_ms": total, "start_ms": start, "own_ms": own}))
PY
}

# prewarmed_starts <cp url> <spec json with NAME> <n>: like cold_starts, but each copy's first
# call is made once a prewarmed instance of its kind is ready (GET /v1/prewarmed), and must be
# answered X-Start: prewarmed. Prints {"pw_ms": [...], "memory_bytes": <idle prewarmed>}.
prewarmed_starts() {
  python3 - "$1" "$2" "$3" <<'PY'
import http.client, json, sys, time, urllib.parse
base, spec_tpl, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlparse(base)
def call(method, path, body=None):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request(method, path, body=body, headers={"content-type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, r.getheader("x-start"), data
spec = json.loads(spec_tpl)
# The process provider's kinds are commands; the docker provider's are images.
image = spec.get("image") if "command" not in spec else None
cmd = None if image else (" ".join(spec["command"]) if isinstance(spec["command"], list) else spec["command"])
def ready_kind():
    for _ in range(600):
        st, _, data = call("GET", "/v1/prewarmed")
        for k in json.loads(data):
            if (k.get("image") == image if image else k["command"] == cmd) and k["ready"]:
                return k
        time.sleep(0.05)
    raise SystemExit(f"no prewarmed instance of {image or cmd!r} within 30 s")
pws, mem = [], []
for i in range(n):
    name = f"pw{i}"
    mem.append(ready_kind().get("memoryBytes"))
    st, _, data = call("POST", "/v1/functions", spec_tpl.replace("NAME", name))
    assert st == 201, data
    body = json.dumps({"input": {"i": i}})
    t0 = time.perf_counter(); st, start, data = call("POST", f"/v1/functions/{name}:invoke", body); t1 = time.perf_counter()
    assert st == 200 and start == "prewarmed", (st, start, data)
    pws.append((t1 - t0) * 1000)
    call("DELETE", f"/v1/functions/{name}")
print(json.dumps({"pw_ms": pws, "memory_bytes": mem[-1]}))
PY
}

suite_chain() {
  local high="${CONNECTIONS_HIGH:-32}"
  log "== chain suite (control plane -> watchdog -> runtime, process provider): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, RUNS=$RUNS DURATION=${DURATION}s WARMUP=${WARMUP}s"
  build_release nanofaas-cli nanofaas-echo-runtime nanofaas-loadgen
  local wd; wd=$(chain_watchdog)
  ab_prepare
  local body='{"input":{"message":"hello","n":42},"metadata":{"k":"v"}}'
  local echo_port; echo_port=$(free_port)
  start_bg echo-chain "PORT=$echo_port" -- "$REL/echo-runtime"
  local echo_pid=$LAST_PID
  wait_http "http://127.0.0.1:$echo_port/health" 10
  # One instance serving one call at a time (latency), one serving many (throughput); both warm.
  local spec1="{\"name\":\"chain1\",\"command\":\"$REL/echo-runtime\",\"minInstances\":1,\"maxInstances\":1,\"concurrency\":1,\"queueSize\":1000}"
  local specN="{\"name\":\"chainN\",\"command\":\"$REL/echo-runtime\",\"minInstances\":1,\"maxInstances\":1,\"instanceConcurrency\":$high,\"concurrency\":256,\"queueSize\":1000}"
  # The same two, printing two lines per invocation (logging functions; LOG_VARIANT=0 skips).
  local logv=${LOG_VARIANT:-1}
  local specL1="{\"name\":\"chainL1\",\"command\":\"$REL/echo-runtime\",\"env\":{\"ECHO_LOG_LINES\":\"2\"},\"minInstances\":1,\"maxInstances\":1,\"concurrency\":1,\"queueSize\":1000}"
  local specLN="{\"name\":\"chainLN\",\"command\":\"$REL/echo-runtime\",\"env\":{\"ECHO_LOG_LINES\":\"2\"},\"minInstances\":1,\"maxInstances\":1,\"instanceConcurrency\":$high,\"concurrency\":256,\"queueSize\":1000}"
  start_cp cp-chain --set "provider.process.watchdog=$wd"
  local cp_pid=$LAST_PID
  register "$CP_URL" "$spec1"
  register "$CP_URL" "$specN"
  if [[ $logv == 1 ]]; then register "$CP_URL" "$specL1"; register "$CP_URL" "$specLN"; fi
  local base_url=""
  if [[ -n "$BASE_REL" ]]; then
    local our_url=$CP_URL
    # The base chain: its control plane and its static watchdog, the same echo runtime.
    CP_BIN="$BASE_REL/nanofaas" start_cp cp-chain-base --set "provider.process.watchdog=$BASE_WD"
    base_url=$CP_URL; local base_cp=$LAST_PID
    register "$base_url" "$spec1"
    register "$base_url" "$specN"
    if [[ $logv == 1 ]]; then register "$base_url" "$specL1"; register "$base_url" "$specLN"; fi
    CP_URL=$our_url
    wait_ready "$base_url" chain1 20; wait_ready "$base_url" chainN 20
    if [[ $logv == 1 ]]; then wait_ready "$base_url" chainL1 20; wait_ready "$base_url" chainLN 20; fi
  fi
  wait_ready "$CP_URL" chain1 20; wait_ready "$CP_URL" chainN 20
  if [[ $logv == 1 ]]; then wait_ready "$CP_URL" chainL1 20; wait_ready "$CP_URL" chainLN 20; fi
  # chain_pids <cp url> <cp pid> <function>: the control plane, watchdog and runtime of a chain.
  chain_pids() {
    echo "$2 $(curl -fsS "$1/v1/functions/$3/instances" | python3 -c 'import json,sys; print(" ".join(str(i[k]) for i in json.load(sys.stdin) for k in ("pid","runtimePid") if k in i))')"
  }
  local p1 pN b1="" bN="" pL1="" pLN="" bL1="" bLN=""
  p1=$(chain_pids "$CP_URL" "$cp_pid" chain1); pN=$(chain_pids "$CP_URL" "$cp_pid" chainN)
  if [[ -n "$base_url" ]]; then
    b1=$(chain_pids "$base_url" "$base_cp" chain1); bN=$(chain_pids "$base_url" "$base_cp" chainN)
  fi
  if [[ $logv == 1 ]]; then
    pL1=$(chain_pids "$CP_URL" "$cp_pid" chainL1); pLN=$(chain_pids "$CP_URL" "$cp_pid" chainLN)
    if [[ -n "$base_url" ]]; then
      bL1=$(chain_pids "$base_url" "$base_cp" chainL1); bLN=$(chain_pids "$base_url" "$base_cp" chainLN)
    fi
  fi
  for run in $(seq "$RUNS"); do
    log "run $run/$RUNS (cpu idle before: $(wait_quiet)%)"
    loadgen_json direct-1 -c 1 -b "$body" -H "X-Execution-Id: bench" "http://127.0.0.1:$echo_port/invoke"
    loadgen_cpu chain-1 "$p1" -c 1 -b "$body" "$CP_URL/v1/functions/chain1:invoke"
    if [[ -n "$base_url" ]]; then loadgen_cpu base-1 "$b1" -c 1 -b "$body" "$base_url/v1/functions/chain1:invoke"; fi
    log "          (cpu idle before the $high-connection pair: $(wait_quiet)%)"
    loadgen_json direct-N -c "$high" -b "$body" -H "X-Execution-Id: bench" "http://127.0.0.1:$echo_port/invoke"
    loadgen_cpu chain-N "$pN" -c "$high" -b "$body" "$CP_URL/v1/functions/chainN:invoke"
    if [[ -n "$base_url" ]]; then loadgen_cpu base-N "$bN" -c "$high" -b "$body" "$base_url/v1/functions/chainN:invoke"; fi
    if [[ $logv == 1 ]]; then
      log "          (cpu idle before the logging functions: $(wait_quiet)%)"
      loadgen_cpu log-1 "$pL1" -c 1 -b "$body" "$CP_URL/v1/functions/chainL1:invoke"
      if [[ -n "$base_url" ]]; then loadgen_cpu base-log-1 "$bL1" -c 1 -b "$body" "$base_url/v1/functions/chainL1:invoke"; fi
      loadgen_cpu log-N "$pLN" -c "$high" -b "$body" "$CP_URL/v1/functions/chainLN:invoke"
      if [[ -n "$base_url" ]]; then loadgen_cpu base-log-N "$bLN" -c "$high" -b "$body" "$base_url/v1/functions/chainLN:invoke"; fi
    fi
  done
  if [[ -n "$base_url" ]]; then kill -TERM "$base_cp"; wait "$base_cp" 2>/dev/null || true; fi
  local inst_pids
  inst_pids=$(curl -fsS "$CP_URL/v1/functions/chain1/instances" | python3 -c 'import json,sys; print(" ".join(str(i[k]) for i in json.load(sys.stdin) for k in ("pid","runtimePid") if k in i))')
  pinned_pairs "${PINNED_RUNS:-3}" "$cp_pid $echo_pid $inst_pids" pinned-direct-1 "http://127.0.0.1:$echo_port/invoke" \
    pinned-chain-1 "$CP_URL/v1/functions/chain1:invoke" -b "$body" -H "X-Execution-Id: bench"
  local rust; rust=$(cold_starts "$CP_URL" "{\"name\":\"NAME\",\"command\":\"$REL/echo-runtime\"}" "${COLD_RUNS:-15}")
  printf '{"label":"cold-rust","result":%s}\n' "$rust" >>"$RAW"
  local errors; errors=$(stats 'sum(sum(pick(l, "errors")) for l in R if "errors" in R[l][0])')

  log ""
  log "medians of $RUNS interleaved runs (${DURATION}s each after ${WARMUP}s warm-up); body ${#body} bytes"
  row "metric" "full chain" "direct" "ratio/added" "target" "verdict"
  local added ratio cold warm
  added=$(stats 'med(paired("chain-1","direct-1","p50_us",lambda a,b:a-b))')
  row "p50 latency, 1 conn (us)" "$(stats 'med(pick("chain-1","p50_us"))')" "$(stats 'med(pick("direct-1","p50_us"))')" "+$added us" "<= +150 us" "$(verdict "$added <= 150")"
  if [[ -n "$(stats '"pinned-chain-1" in R or ""')" ]]; then
    row "p50, 1 conn, all on CPU 0 (us)" "$(stats 'med(pick("pinned-chain-1","p50_us"))')" "$(stats 'med(pick("pinned-direct-1","p50_us"))')" \
      "+$(stats 'med(paired("pinned-chain-1","pinned-direct-1","p50_us",lambda a,b:a-b))') us" "(diagnostic)" ""
  fi
  row "p99 latency, 1 conn (us)" "$(stats 'med(pick("chain-1","p99_us"))')" "$(stats 'med(pick("direct-1","p99_us"))')" "" "" ""
  ratio=$(stats 'med(paired("chain-N","direct-N","rps",lambda a,b:a/b))')
  row "throughput, $high conns (req/s)" "$(stats 'med(pick("chain-N","rps"))')" "$(stats 'med(pick("direct-N","rps"))')" "x$ratio" ">= x0.25" "$(verdict "$ratio >= 0.25")"
  row "p50 latency, $high conns (us)" "$(stats 'med(pick("chain-N","p50_us"))')" "$(stats 'med(pick("direct-N","p50_us"))')" "" "" ""
  cold=$(stats 'R["cold-rust"][0]["cold_p50_ms"]'); warm=$(stats 'R["cold-rust"][0]["warm_p50_ms"]')
  row "Rust cold start, request->response (ms)" "$cold" "" "" "<= 15 ms" "$(verdict "$cold <= 15")"
  row "Rust warm call, same path (ms)" "$warm" "" "cold/warm x$(stats 'R["cold-rust"][0]["cold_p50_ms"] / R["cold-rust"][0]["warm_p50_ms"]')" "" ""
  row "errors (all runs)" "$errors" "" "" "0" "$(verdict "$errors == 0")"
  log ""
  if [[ -n "$BASE_REL" ]]; then
    log ""
    log "A/B against $BASE_REF (CPU: control plane + watchdog + runtime; same echo runtime binary, interleaved):"
    row "metric" "this tree" "$BASE_REF" "ratio" "target" "verdict"
    local a b
    a=$(stats 'med(paired("chain-1","direct-1","p50_us",lambda a,b:a-b))'); b=$(stats 'med(paired("base-1","direct-1","p50_us",lambda a,b:a-b))')
    row "added p50, 1 conn (us)" "+$a" "+$b" "" "<= +150 us" "$(verdict "$a <= 150")"
    ab_rows chain-1 base-1 "1 conn"
    a=$(stats 'med(paired("chain-N","direct-N","rps",lambda a,b:a/b))'); b=$(stats 'med(paired("base-N","direct-N","rps",lambda a,b:a/b))')
    row "of direct, $high conns" "x$a" "x$b" "" ">= x0.25" "$(verdict "$a >= 0.25")"
    ab_rows chain-N base-N "$high conns"
    if [[ $logv == 1 ]]; then
      log ""
      log "logging functions (2 lines per invocation on stdout), this tree vs $BASE_REF:"
      row "metric" "this tree" "$BASE_REF" "ratio" "target" "verdict"
      ab_rows log-1 base-log-1 "1 conn, logging"
      ab_rows log-N base-log-N "$high conns, logging"
    fi
  fi
  log ""
  log "cold starts (ms): $(stats 'sorted(round(x, 2) for x in R["cold-rust"][0]["cold_ms"])')"
  log "per run (p50 us / req/s): $(stats 'perrun()')"
}

# --- docker suite (docker provider beside the process provider) ------------------------------

# wait_ready <cp url> <function> <seconds>: waits until the function has a ready instance.
wait_ready() {
  local deadline=$((SECONDS + $3))
  until curl -fsS "$1/v1/functions/$2/instances" 2>/dev/null | grep -q '"state":"ready"'; do
    if (( SECONDS >= deadline )); then echo "no ready instance of $2 at $1" >&2; return 1; fi
    sleep 0.1
  done
}

# docker_echo_image: builds nanofaas/bench-echo:latest, the echo runtime as a function image (the
# same binary the process provider runs, on the Python runtime image with its static watchdog).
docker_echo_image() {
  local ctx="$OUT/docker-echo-context"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$REL/echo-runtime" "$ctx/"
  printf 'FROM nanofaas/python-runtime:latest\nCOPY echo-runtime /usr/local/bin/echo-runtime\nENV WATCHDOG_CMD=/usr/local/bin/echo-runtime\n' >"$ctx/Dockerfile"
  docker build -q -t nanofaas/bench-echo:latest "$ctx" >/dev/null 2>"$OUT/docker-echo-build.log" \
    || { cat "$OUT/docker-echo-build.log" >&2; return 1; }
}

suite_docker() {
  local high="${CONNECTIONS_HIGH:-32}"
  log "== docker suite (docker provider beside the process provider): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, RUNS=$RUNS DURATION=${DURATION}s WARMUP=${WARMUP}s"
  docker version >/dev/null 2>&1 || { log "no container engine answers ('docker version' failed)"; return 1; }
  log "engine: $(docker version -f '{{.Server.Version}}' 2>/dev/null), storage driver $(docker info -f '{{.Driver}}' 2>/dev/null)"
  log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  build_release nanofaas-cli nanofaas-echo-runtime nanofaas-loadgen
  local wd; wd=$("$ROOT/scripts/build-static.sh")
  "$ROOT/scripts/docker-images.sh" python examples >&2
  local venv="${NANOFAAS_VENV:-$ROOT/.venv}"
  "$ROOT/scripts/python-env.sh" "$venv" >&2
  docker_echo_image || return 1

  local body='{"input":{"message":"hello","n":42},"metadata":{"k":"v"}}'
  # Three control planes: process provider; docker, published port; docker, container address.
  local proc_url pub_url ip_url
  start_cp cp-dk-proc --set "provider.process.watchdog=$wd"; proc_url=$CP_URL
  # Cold starts here are full starts (container create and start): no prewarmed containers.
  start_cp cp-dk-pub --set provider.type=docker --set provider.docker.address=published --set provider.docker.prewarm=0; pub_url=$CP_URL
  start_cp cp-dk-ip --set provider.type=docker --set provider.docker.address=container --set provider.docker.prewarm=0; ip_url=$CP_URL
  local u spec
  for u in "$proc_url" "$pub_url" "$ip_url"; do
    if [[ $u == "$proc_url" ]]; then spec="\"command\":\"$REL/echo-runtime\""; else spec='"image":"nanofaas/bench-echo:latest"'; fi
    register "$u" "{\"name\":\"echo1\",$spec,\"minInstances\":1,\"maxInstances\":1,\"concurrency\":1,\"queueSize\":1000}"
    register "$u" "{\"name\":\"echoN\",$spec,\"minInstances\":1,\"maxInstances\":1,\"instanceConcurrency\":$high,\"concurrency\":256,\"queueSize\":1000}"
  done
  for u in "$proc_url" "$pub_url" "$ip_url"; do
    wait_ready "$u" echo1 60; wait_ready "$u" echoN 60
  done
  for run in $(seq "$RUNS"); do
    log "run $run/$RUNS"
    loadgen_json proc-1 -c 1 -b "$body" "$proc_url/v1/functions/echo1:invoke"
    loadgen_json pub-1 -c 1 -b "$body" "$pub_url/v1/functions/echo1:invoke"
    loadgen_json ip-1 -c 1 -b "$body" "$ip_url/v1/functions/echo1:invoke"
    loadgen_json proc-N -c "$high" -b "$body" "$proc_url/v1/functions/echoN:invoke"
    loadgen_json pub-N -c "$high" -b "$body" "$pub_url/v1/functions/echoN:invoke"
    loadgen_json ip-N -c "$high" -b "$body" "$ip_url/v1/functions/echoN:invoke"
  done
  # Cold starts, each a freshly registered function's first call: the echo runtime, then the
  # Python example (examples/python-hello) as a process and as an image.
  local n="${COLD_RUNS:-15}" r
  r=$(cold_starts "$proc_url" "{\"name\":\"NAME\",\"command\":\"$REL/echo-runtime\"}" "$n")
  printf '{"label":"cold-echo-proc","result":%s}\n' "$r" >>"$RAW"
  r=$(cold_starts "$pub_url" '{"name":"NAME","image":"nanofaas/bench-echo:latest"}' "$n")
  printf '{"label":"cold-echo-docker","result":%s}\n' "$r" >>"$RAW"
  r=$(cold_starts "$proc_url" "{\"name\":\"NAME\",\"command\":\"$venv/bin/python -m nanofaas_runtime\",\"workingDir\":\"$ROOT/examples/python-hello\"}" "$n")
  printf '{"label":"cold-py-proc","result":%s}\n' "$r" >>"$RAW"
  r=$(cold_starts "$pub_url" '{"name":"NAME","image":"nanofaas/example-python-hello:latest"}' "$n")
  printf '{"label":"cold-py-docker","result":%s}\n' "$r" >>"$RAW"
  local errors; errors=$(stats 'sum(sum(pick(l, "errors")) for l in R if "errors" in R[l][0])')
  log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

  log ""
  log "medians of $RUNS interleaved runs (${DURATION}s each after ${WARMUP}s warm-up); body ${#body} bytes"
  log "docker = published port (provider.docker.address=published; the default, auto, picks the container address where this host reaches it); docker/ip = provider.docker.address=container"
  row "metric" "docker" "process" "ratio/added" "target" "verdict"
  local x
  for x in pub ip; do
    local label="docker"; [[ $x == ip ]] && label="docker/ip"
    row "warm p50, 1 conn, $label (us)" "$(stats "med(pick('$x-1','p50_us'))")" "$(stats 'med(pick("proc-1","p50_us"))')" "$(stats "'%+d us' % med(paired('$x-1','proc-1','p50_us',lambda a,b:a-b))")" "" ""
    row "warm p99, 1 conn, $label (us)" "$(stats "med(pick('$x-1','p99_us'))")" "$(stats 'med(pick("proc-1","p99_us"))')" "x$(stats "med(paired('$x-1','proc-1','p99_us',lambda a,b:a/b))")" "" ""
    row "throughput, $high conns, $label (req/s)" "$(stats "med(pick('$x-N','rps'))")" "$(stats 'med(pick("proc-N","rps"))')" "x$(stats "med(paired('$x-N','proc-N','rps',lambda a,b:a/b))")" "" ""
  done
  local kind
  for kind in echo py; do
    local what="echo runtime"; [[ $kind == py ]] && what="Python example"
    row "cold start, $what (ms)" "$(stats "R['cold-$kind-docker'][0]['cold_p50_ms']")" "$(stats "R['cold-$kind-proc'][0]['cold_p50_ms']")" "x$(stats "R['cold-$kind-docker'][0]['cold_p50_ms'] / R['cold-$kind-proc'][0]['cold_p50_ms']")" "" ""
    row "warm call after it, $what (ms)" "$(stats "R['cold-$kind-docker'][0]['warm_p50_ms']")" "$(stats "R['cold-$kind-proc'][0]['warm_p50_ms']")" "x$(stats "R['cold-$kind-docker'][0]['warm_p50_ms'] / R['cold-$kind-proc'][0]['warm_p50_ms']")" "" ""
  done
  row "errors (all runs)" "$errors" "" "" "0" "$(verdict "$errors == 0")"
  log ""
  for kind in echo-docker echo-proc py-docker py-proc; do
    log "cold starts $kind (ms): $(stats "sorted(round(x, 1) for x in R['cold-$kind'][0]['cold_ms'])")"
  done
  log "per run (p50 us / req/s): $(stats 'perrun()')"
}

# --- end docker suite ---------------------------------------------------------------------------

# --- runtimes suite (examples: Python, Java, Rust) ------------------------------------------------

# start_to_health <dir> <n> <env...> -- <command...>: starts the command n times in <dir> with a
# free PORT, polls GET /health every millisecond until 200, then stops it (SIGTERM, then SIGKILL
# to its process group); prints the times from spawn to the first 200, in ms, as a JSON list.
start_to_health() {
  local dir="$1" n="$2"; shift 2
  local envs=()
  while [[ "$1" != "--" ]]; do envs+=("$1"); shift; done
  shift
  python3 - "$dir" "$n" "${#envs[@]}" "${envs[@]}" "$@" <<'PY'
import http.client, json, os, signal, socket, subprocess, sys, time
d, n, ne = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
envs = dict(e.split("=", 1) for e in sys.argv[4:4 + ne])
cmd = sys.argv[4 + ne:]
out = []
for _ in range(n):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, **envs, PORT=str(port))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ok = False
    while time.perf_counter() - t0 < 30 and p.poll() is None:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/health"); r = c.getresponse(); r.read(); c.close()
            if r.status == 200:
                ok = True
                break
        except OSError:
            time.sleep(0.001)
    t1 = time.perf_counter()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
            p.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
    p.wait()
    assert ok, f"{cmd} never answered /health"
    out.append((t1 - t0) * 1000)
print(json.dumps(out))
PY
}

# tree_rss_kb <pid>: VmRSS of a process and its children, in KiB.
tree_rss_kb() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" 2>/dev/null || true); do
    total=$(( total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0) ))
  done
  echo "$total"
}

# runtime_alone <lang> <n>: start_to_health for the example of that runtime, run as its manifest
# runs it but without watchdog or control plane.
runtime_alone() {
  local ex="$ROOT/examples"
  case "$1" in
    python) start_to_health "$ex/python-hello" "$2" HANDLER_MODULE=handler -- "$ROOT/.nanofaas/python/bin/python" -m nanofaas_runtime ;;
    java) start_to_health "$ex/java-hello" "$2" "HANDLER_CLASSPATH=$ex/java-hello/build/hello.jar" -- "$ROOT/runtimes/java/bin/nanofaas-java-runtime" ;;
    rust) start_to_health "$ex/rust-hello" "$2" -- "$ROOT/.nanofaas/bin/rust-hello" ;;
  esac
}

suite_runtimes() {
  local cold_runs="${COLD_RUNS:-15}"
  log "== runtimes suite (the Python, Java and Rust examples through control plane -> watchdog -> runtime, process provider): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, RUNS=$RUNS DURATION=${DURATION}s WARMUP=${WARMUP}s COLD_RUNS=$cold_runs"
  log "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every number)"
  build_release nanofaas-cli nanofaas-loadgen
  local wd; wd=$("$ROOT/scripts/build-static.sh")
  # Cold starts here are full starts: no prewarmed instances (a second control plane below
  # keeps them, for the prewarmed column).
  start_cp cp-runtimes --set "provider.process.watchdog=$wd" --set provider.process.prewarm=0
  local cp_plain=$CP_URL
  # The examples exactly as `nanofaas up` deploys them: the manifest's setup steps (Python venv,
  # Java runtime and handler jar, release build of rust-hello), then every function.
  "$REL/nanofaas" --endpoint "$CP_URL" fn apply --setup -f "$ROOT/examples/manifest.yaml" >&2

  local body='{"input":{"name":"bench"}}'
  local langs=(python java rust) ports=() i l p
  # The same runtimes started directly (no control plane, no watchdog): the baseline.
  local ex="$ROOT/examples" py="$ROOT/.nanofaas/python/bin/python"
  p=$(free_port); ports+=("$p")
  start_bg direct-python "PORT=$p" HANDLER_MODULE=handler -- sh -c "cd '$ex/python-hello' && exec '$py' -m nanofaas_runtime"
  p=$(free_port); ports+=("$p")
  start_bg direct-java "PORT=$p" "HANDLER_CLASSPATH=$ex/java-hello/build/hello.jar" -- "$ROOT/runtimes/java/bin/nanofaas-java-runtime"
  p=$(free_port); ports+=("$p")
  start_bg direct-rust "PORT=$p" -- "$ROOT/.nanofaas/bin/rust-hello"
  for i in 0 1 2; do
    wait_http "http://127.0.0.1:${ports[$i]}/health" 30
    # The first call through the chain starts the warm instance (cold starts are measured below).
    curl -fsS -o /dev/null -XPOST "$CP_URL/v1/functions/hello-${langs[$i]}:invoke" -H "content-type: application/json" -d "$body"
  done

  # Warm: one connection, interleaved runs, direct and through the chain.
  for run in $(seq "$RUNS"); do
    log "warm run $run/$RUNS"
    for i in 0 1 2; do
      loadgen_json "direct-${langs[$i]}" -c 1 -b "$body" -H "X-Execution-Id: bench" "http://127.0.0.1:${ports[$i]}/invoke"
      loadgen_json "chain-${langs[$i]}" -c 1 -b "$body" "$CP_URL/v1/functions/hello-${langs[$i]}:invoke"
    done
  done
  # Memory of each warm instance's runtime process (with its children: gunicorn's worker).
  local rss=() rpid
  for l in "${langs[@]}"; do
    rpid=$(curl -fsS "$CP_URL/v1/functions/hello-$l/instances" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["runtimePid"])')
    rss+=("$(tree_rss_kb "$rpid")")
  done

  # Cold: a fresh copy of each function invoked once, request to response, then deleted; and the
  # runtime alone, spawn to first 200 on /health. Interleaved, one of each per round.
  declare -A specs
  for l in "${langs[@]}"; do
    specs[$l]=$("$REL/nanofaas" --endpoint "$CP_URL" -o json fn get "hello-$l" \
      | python3 -c 'import json,sys; s=json.load(sys.stdin); s["name"]="NAME"; print(json.dumps(s))')
  done
  # Prewarmed (Python): the same spec on a control plane that keeps one prewarmed instance per
  # kind; `python3 -c pass` in the same rounds, the floor of starting any Python at all.
  start_cp cp-runtimes-pw --set "provider.process.watchdog=$wd" --set provider.process.prewarm=1
  local cp_pw=$CP_URL
  CP_URL=$cp_plain
  # The Java example prewarmed too (a generic JVM specialized with the handler's jar).
  local pw_langs=(python java)
  for l in "${pw_langs[@]}"; do
    curl -fsS -o /dev/null -XPOST "$cp_pw/v1/functions" -H "content-type: application/json" \
      -d "${specs[$l]//NAME/keep-$l-kind}"
  done
  # Python on Docker (the example's image), where an engine answers: cold (create and start a
  # container) on a control plane without prewarmed containers, prewarmed on one with one per
  # image (a function of the image registered throughout keeps its kind).
  local dk_cold="" dk_pw="" dk_spec='{"name":"NAME","image":"nanofaas/example-python-hello:latest","timeoutMs":30000}'
  if docker version >/dev/null 2>&1; then
    "$ROOT/scripts/docker-images.sh" python examples >&2
    start_cp cp-runtimes-dk --set provider.type=docker --set provider.docker.prewarm=0; dk_cold=$CP_URL
    start_cp cp-runtimes-dk-pw --set provider.type=docker --set provider.docker.prewarm=1; dk_pw=$CP_URL
    CP_URL=$cp_plain
    curl -fsS -o /dev/null -XPOST "$dk_pw/v1/functions" -H "content-type: application/json" \
      -d "${dk_spec//NAME/keep-docker-kind}"
  else
    log "no container engine answers ('docker version' failed): the Python-on-Docker row is skipped"
  fi
  for run in $(seq "$cold_runs"); do
    log "cold round $run/$cold_runs"
    for l in "${langs[@]}"; do
      printf '{"label":"cold-%s","result":%s}\n' "$l" "$(cold_starts "$CP_URL" "${specs[$l]}" 1)" >>"$RAW"
      printf '{"label":"alone-%s","result":{"ms":%s}}\n' "$l" "$(runtime_alone "$l" 1)" >>"$RAW"
    done
    for l in "${pw_langs[@]}"; do
      printf '{"label":"pw-%s","result":%s}\n' "$l" "$(prewarmed_starts "$cp_pw" "${specs[$l]}" 1)" >>"$RAW"
    done
    if [[ -n "$dk_cold" ]]; then
      printf '{"label":"cold-python-docker","result":%s}\n' "$(cold_starts "$dk_cold" "$dk_spec" 1)" >>"$RAW"
      printf '{"label":"pw-python-docker","result":%s}\n' "$(prewarmed_starts "$dk_pw" "$dk_spec" 1)" >>"$RAW"
    fi
    printf '{"label":"pypass","result":{"ms":%s}}\n' "$(python3 -c 'import subprocess,time,json,sys; t=time.perf_counter(); subprocess.run([sys.argv[1],"-c","pass"]); print(json.dumps([(time.perf_counter()-t)*1000]))' "$py")" >>"$RAW"
  done
  local errors; errors=$(stats 'sum(sum(pick(l, "errors")) for l in R if "errors" in R[l][0])')
  log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

  log ""
  log "warm, 1 connection: medians of $RUNS interleaved runs (${DURATION}s each after ${WARMUP}s warm-up); body ${#body} bytes"
  row "warm (1 conn)" "chain p50 us" "direct p50 us" "chain added us" "chain p99 us" "chain req/s"
  for l in "${langs[@]}"; do
    row "$l" "$(stats "med(pick('chain-$l','p50_us'))")" "$(stats "med(pick('direct-$l','p50_us'))")" \
      "+$(stats "med(paired('chain-$l','direct-$l','p50_us',lambda a,b:a-b))")" \
      "$(stats "med(pick('chain-$l','p99_us'))")" "$(stats "med(pick('chain-$l','rps'))")"
  done
  log ""
  log "cold start, $cold_runs rounds: medians (min in brackets), ms; RSS of the warm runtime"
  row "cold start" "chain req->resp" "alone ->health" "chain - alone" "warm req->resp" "runtime RSS KiB"
  local c a
  for i in 0 1 2; do
    l=${langs[$i]}
    c="[x for r in R['cold-$l'] for x in r['cold_ms']]"
    a="[x for r in R['alone-$l'] for x in r['ms']]"
    row "$l" "$(stats "round(med($c), 1)") ($(stats "round(min($c), 1)"))" \
      "$(stats "round(med($a), 1)") ($(stats "round(min($a), 1)"))" \
      "$(stats "round(med($c) - med($a), 1)")" \
      "$(stats "round(med([r['warm_p50_ms'] for r in R['cold-$l']]), 2)")" "${rss[$i]}"
  done
  row "errors (all warm runs)" "$errors" "" "" "" ""
  log ""
  local pw="[x for r in R['pw-python'] for x in r['pw_ms']]" pp="[x for r in R['pypass'] for x in r['ms']]"
  c="[x for r in R['cold-python'] for x in r['cold_ms']]"
  log "Python and Java first invocation through the chain, $cold_runs rounds: median (min-max), ms"
  row "python first call" "cold" "prewarmed" "warm p50" "python3 -c pass" "idle prewarmed MiB"
  row "python" "$(stats "round(med($c), 1)") ($(stats "round(min($c), 1)")-$(stats "round(max($c), 1)"))" \
    "$(stats "round(med($pw), 1)") ($(stats "round(min($pw), 1)")-$(stats "round(max($pw), 1)"))" \
    "$(stats "round(med([r['warm_p50_ms'] for r in R['cold-python']]), 2)")" \
    "$(stats "round(med($pp), 1)") ($(stats "round(min($pp), 1)")-$(stats "round(max($pp), 1)"))" \
    "$(stats "round(R['pw-python'][-1]['memory_bytes'] / 1048576, 1)")"
  # Java: the same columns (its cold start's floor is the JVM's own start, runtimes/java/README.md).
  pw="[x for r in R['pw-java'] for x in r['pw_ms']]"
  c="[x for r in R['cold-java'] for x in r['cold_ms']]"
  row "java" "$(stats "round(med($c), 1)") ($(stats "round(min($c), 1)")-$(stats "round(max($c), 1)"))" \
    "$(stats "round(med($pw), 1)") ($(stats "round(min($pw), 1)")-$(stats "round(max($pw), 1)"))" \
    "$(stats "round(med([r['warm_p50_ms'] for r in R['cold-java']]), 2)")" "" \
    "$(stats "round((R['pw-java'][-1]['memory_bytes'] or 0) / 1048576, 1)")"
  if [[ -n "$dk_cold" ]]; then
    # Python on Docker: the example's image; idle MiB is the waiting container's init, watchdog
    # and runtime (read where the engine runs on this machine).
    pw="[x for r in R['pw-python-docker'] for x in r['pw_ms']]"
    c="[x for r in R['cold-python-docker'] for x in r['cold_ms']]"
    row "python (docker)" "$(stats "round(med($c), 1)") ($(stats "round(min($c), 1)")-$(stats "round(max($c), 1)"))" \
      "$(stats "round(med($pw), 1)") ($(stats "round(min($pw), 1)")-$(stats "round(max($pw), 1)"))" \
      "$(stats "round(med([r['warm_p50_ms'] for r in R['cold-python-docker']]), 2)")" "" \
      "$(stats "round((R['pw-python-docker'][-1]['memory_bytes'] or 0) / 1048576, 1)")"
  fi
  log ""
  log "per run (p50 us / req/s): $(stats 'perrun()')"
  for l in "${langs[@]}"; do
    log "cold $l (ms): $(stats "sorted(round(x, 1) for r in R['cold-$l'] for x in r['cold_ms'])")"
    log "alone $l (ms): $(stats "sorted(round(x, 1) for r in R['alone-$l'] for x in r['ms'])")"
  done
  log ""
  log "where Python's cold start goes (runtimes/python/tools/coldstart.py --runs $cold_runs):"
  "$py" "$ROOT/runtimes/python/tools/coldstart.py" --runs "$cold_runs" 2>&1 | tee -a "$REPORT" >&2
}

# --- end runtimes suite --------------------------------------------------------------------------

# --- python-warm suite (the Python runtime warm, through the chain vs called directly) ----------

# The Python example's warm invocations on kept-alive connections, at 1 connection: called
# directly (loadgen -> the runtime's port) and through the chain (loadgen -> control plane ->
# watchdog -> runtime, process provider, Unix-socket hops where offered). The figure is the
# chain's added p50 latency, paired run by run. With BASE_REF, the Python runtime of that ref
# (its runtimes/python/src from `git archive`, run by the same venv through PYTHONPATH) is
# measured beside this tree's, interleaved, on this tree's control plane and watchdog.
suite_python_warm() {
  log "== python-warm suite (the Python example warm, direct vs control plane -> watchdog -> runtime, 1 connection): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, RUNS=$RUNS DURATION=${DURATION}s WARMUP=${WARMUP}s"
  log "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every number)"
  build_release nanofaas-cli nanofaas-loadgen
  local wd; wd=$(chain_watchdog)
  local venv="$ROOT/.nanofaas/python"
  "$ROOT/scripts/python-env.sh" "$venv" >&2
  local sides=(this) srcs=("$ROOT/runtimes/python/src")
  if [[ -n "${BASE_REF:-}" ]]; then
    local sha; sha=$(git -C "$ROOT" rev-parse --verify "$BASE_REF^{commit}")
    local bsrc="$TARGET_DIR/ab/py-$sha"
    if [[ ! -d "$bsrc/runtimes/python/src" ]]; then
      rm -rf "$bsrc"; mkdir -p "$bsrc"
      git -C "$ROOT" archive "$sha" runtimes/python/src | tar -x -C "$bsrc"
    fi
    # Functions run as users of their own when the control plane is root: let them read it.
    chmod -R a+rX "$bsrc"
    log "A/B: base $BASE_REF = $sha (its Python runtime only; the Rust side is this tree's)"
    sides+=(base); srcs+=("$bsrc/runtimes/python/src")
  fi
  start_cp cp-python-warm --set "provider.process.watchdog=$wd"
  local body='{"input":{"name":"bench"}}' ex="$ROOT/examples/python-hello" i ports=() p
  for i in "${!sides[@]}"; do
    p=$(free_port); ports+=("$p")
    start_bg "direct-py-${sides[$i]}" "PORT=$p" HANDLER_MODULE=handler "PYTHONPATH=${srcs[$i]}" -- \
      sh -c "cd '$ex' && exec '$venv/bin/python' -m nanofaas_runtime"
    register "$CP_URL" "{\"name\":\"pywarm-${sides[$i]}\",\"command\":\"$venv/bin/python -m nanofaas_runtime\",\"workingDir\":\"$ex\",\"env\":{\"HANDLER_MODULE\":\"handler\",\"PYTHONPATH\":\"${srcs[$i]}\"},\"timeoutMs\":10000}"
    wait_http "http://127.0.0.1:$p/health" 30
    # The first call starts the warm instance.
    curl -fsS -o /dev/null -XPOST "$CP_URL/v1/functions/pywarm-${sides[$i]}:invoke" -H "content-type: application/json" -d "$body"
  done
  local idle
  for run in $(seq "$RUNS"); do
    idle=$(wait_quiet)
    log "run $run/$RUNS (CPU idle before: ${idle}%)"
    for i in "${!sides[@]}"; do
      loadgen_json "direct-${sides[$i]}" -c 1 -b "$body" -H "X-Execution-Id: bench" "http://127.0.0.1:${ports[$i]}/invoke"
      loadgen_json "chain-${sides[$i]}" -c 1 -b "$body" "$CP_URL/v1/functions/pywarm-${sides[$i]}:invoke"
    done
  done
  local errors; errors=$(stats 'sum(sum(pick(l, "errors")) for l in R)')
  log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  log ""
  log "warm, 1 connection: medians of $RUNS interleaved runs (${DURATION}s each after ${WARMUP}s warm-up); body ${#body} bytes"
  row "side" "chain p50 us" "direct p50 us" "chain added us" "added min..max" "target"
  local s
  for s in "${sides[@]}"; do
    row "$s" "$(stats "med(pick('chain-$s','p50_us'))")" "$(stats "med(pick('direct-$s','p50_us'))")" \
      "+$(stats "med(paired('chain-$s','direct-$s','p50_us',lambda a,b:a-b))")" \
      "$(stats "'%d..%d' % (min(paired('chain-$s','direct-$s','p50_us',lambda a,b:a-b)), max(paired('chain-$s','direct-$s','p50_us',lambda a,b:a-b)))")" \
      "<= +100 us: $(verdict "$(stats "med(paired('chain-$s','direct-$s','p50_us',lambda a,b:a-b))")<=100")"
  done
  row "errors (all runs)" "$errors" "" "" "" ""
  log ""
  log "per run (p50 us / req/s): $(stats 'perrun()')"
}

# --- end python-warm suite -------------------------------------------------------------------------

# --- chain-cpu suite (CPU per invocation of each process, Unix-socket hops vs TCP) --------------

# chain_cpu_once <unix_socket true|false> <label>: one control plane with one warm instance at 32
# connections; appends the CPU each process spent per invocation to $RAW.
chain_cpu_once() {
  local uds="$1" label="$2" wd="$3" body="$4" high="$5"
  start_cp "cp-cpu-$label" --set "provider.process.watchdog=$wd" --set "provider.process.unix_socket=$uds"
  local cp_pid=$LAST_PID
  register "$CP_URL" "{\"name\":\"cpu\",\"command\":\"$REL/echo-runtime\",\"minInstances\":1,\"maxInstances\":1,\"instanceConcurrency\":$high,\"concurrency\":256,\"queueSize\":1000}"
  wait_ready "$CP_URL" cpu 20
  python3 - "$RAW" "$label" "$cp_pid" "$CP_URL" "$REL/loadgen" "$high" "$DURATION" "$WARMUP" "$body" <<'PY'
import json, os, resource, subprocess, sys, urllib.request
raw, label, cp, url, loadgen, conns, dur, warm, body = sys.argv[1:]
inst = json.load(urllib.request.urlopen(f"{url}/v1/functions/cpu/instances"))[0]
pids = {"control plane": int(cp), "watchdog": inst["pid"], "runtime": inst["runtimePid"]}
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
inv = f"{url}/v1/functions/cpu:invoke"
subprocess.run([loadgen, "-c", conns, "-d", warm, "-b", body, inv], check=True, capture_output=True)
before = {k: cpu(p) for k, p in pids.items()}
r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
out = subprocess.run([loadgen, "--json", "-c", conns, "-d", dur, "-w", "0", "-b", body, inv], check=True, capture_output=True, text=True).stdout
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
after = {k: cpu(p) for k, p in pids.items()}
res = json.loads(out)
n = max(res["requests"], 1)
us = {k: round((after[k] - before[k]) * 1e6 / n, 1) for k in pids}
us["load generator"] = round((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e6 / n, 1)
us["total"] = round(sum(us.values()), 1)
res["cpu_us"] = us
open(raw, "a").write(json.dumps({"label": label, "result": res}) + "\n")
PY
  kill -TERM "$cp_pid"; wait "$cp_pid" 2>/dev/null || true
}

suite_chain_cpu() {
  local high="${CONNECTIONS_HIGH:-32}"
  log "== chain-cpu suite (CPU per invocation, Unix-socket hops vs loopback TCP): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, RUNS=$RUNS DURATION=${DURATION}s WARMUP=${WARMUP}s"
  build_release nanofaas-cli nanofaas-echo-runtime nanofaas-loadgen
  local wd; wd=$(chain_watchdog)
  local body='{"input":{"message":"hello","n":42},"metadata":{"k":"v"}}'
  for run in $(seq "$RUNS"); do
    log "run $run/$RUNS (cpu idle before: $(wait_quiet)%)"
    chain_cpu_once true unix "$wd" "$body" "$high"
    log "          (cpu idle before the tcp run: $(wait_quiet)%)"
    chain_cpu_once false tcp "$wd" "$body" "$high"
  done
  log ""
  log "medians of $RUNS interleaved runs at $high connections (${DURATION}s each); CPU is utime+stime per invocation"
  printf '%-18s %14s %10s %10s %10s %10s %10s\n' "hops" "req/s" "cp us" "wd us" "rt us" "lg us" "total us" | tee -a "$REPORT"
  local t
  for t in unix tcp; do
    printf '%-18s %14s %10s %10s %10s %10s %10s\n' "$t" "$(stats "med(pick('$t','rps'))")" \
      "$(stats "med([r['cpu_us']['control plane'] for r in R['$t']])")" \
      "$(stats "med([r['cpu_us']['watchdog'] for r in R['$t']])")" \
      "$(stats "med([r['cpu_us']['runtime'] for r in R['$t']])")" \
      "$(stats "med([r['cpu_us']['load generator'] for r in R['$t']])")" \
      "$(stats "med([r['cpu_us']['total'] for r in R['$t']])")" | tee -a "$REPORT"
  done
  log "per run (req/s, total us): unix: $(stats "[(round(r['rps']), r['cpu_us']['total']) for r in R['unix']]"); tcp: $(stats "[(round(r['rps']), r['cpu_us']['total']) for r in R['tcp']]")"
}

# --- end chain-cpu suite ---------------------------------------------------------------------------

# --- auth suite (crates/control-plane/examples/auth_cost.rs) --------------------------------------

suite_auth() {
  local n="${AUTH_ITERATIONS:-2000000}" tokens="${AUTH_TOKENS:-8}"
  log "== auth suite (CPU per request of the access checks): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, RUNS=$RUNS, $n requests per round, $tokens tokens configured"
  cargo build --release -p nanofaas-control-plane --example auth_cost >&2
  local run json
  for run in $(seq "$RUNS"); do
    log "run $run/$RUNS (cpu idle before: $(wait_quiet)%)"
    json=$("$REL/examples/auth_cost" "$n" "$tokens")
    printf '{"label":"auth","result":%s}\n' "$json" >>"$RAW"
    log "  $json"
  done
  log ""
  log "medians of $RUNS runs (each the median of 5 interleaved rounds); CPU time of the process per request"
  row "metric" "with token" "no tokens" "ratio/added" "target" "verdict"
  local added; added=$(stats 'med(pick("auth","added_ns"))')
  row "access checks per request (ns)" "$(stats 'med(pick("auth","with_token_ns"))')" "$(stats 'med(pick("auth","baseline_ns"))')" \
    "+$added ns (x$(stats 'med(pick("auth","ratio"))'))" "< +2000 ns" "$(verdict "$added < 2000")"
}

# --- end auth suite --------------------------------------------------------------------------------

# --- soak suite ------------------------------------------------------------------------------------

# soak_sample <label> <cp pid> <journal> <invocations so far>: one line of RSS, descriptors and
# journal size, kept in $RAW as {"label":"sample",...}.
soak_sample() {
  local rss fds jb
  rss=$(rss_kb "$2")
  fds=$(ls "/proc/$2/fd" | wc -l)
  jb=$(stat -c %s "$3" 2>/dev/null || echo 0)
  printf '{"label":"sample","result":{"at":"%s","invocations":%s,"rss_kib":%s,"fds":%s,"journal_bytes":%s}}\n' \
    "$1" "$4" "$rss" "$fds" "$jb" >>"$RAW"
  log "$(printf '%-8s %12s invocations  RSS %8s KiB  fds %5s  journal %10s bytes' "$1" "$4" "$rss" "$fds" "$jb")"
}

# soak: SOAK_COUNT invocations (default 1000000) mixing sync, async and failing calls through a
# control plane with a state folder; prints RSS, open descriptors and journal size at the start,
# the middle and the end. Knobs: SOAK_COUNT, SOAK_ROUND (seconds per phase, default 5),
# SOAK_MAX_SECONDS (bound on the whole run, default 900), SOAK_MAX_RECORDS (executions.max_records,
# default 100000: records, and so the journal, grow until this many are kept, then stay flat),
# SOAK_CONNECTIONS (default 16), SOAK_DEBUG=1 (use debug binaries: a quick proof, not a figure).
suite_soak() {
  local count="${SOAK_COUNT:-1000000}" round="${SOAK_ROUND:-5}" cap="${SOAK_MAX_RECORDS:-100000}"
  local conns="${SOAK_CONNECTIONS:-16}" bound="${SOAK_MAX_SECONDS:-900}"
  log "== soak suite: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, SOAK_COUNT=$count SOAK_ROUND=${round}s SOAK_MAX_RECORDS=$cap"
  if [[ "${SOAK_DEBUG:-0}" == 1 ]]; then
    REL="$TARGET_DIR/debug"
    cargo build -p nanofaas-cli -p nanofaas-echo-runtime -p nanofaas-loadgen >&2
    log "(debug binaries: proves the suite works; figures need a release build)"
  else
    build_release nanofaas-cli nanofaas-echo-runtime nanofaas-loadgen
  fi
  local body='{"input":{"message":"hello","n":42}}'
  local echo_port; echo_port=$(free_port)
  start_bg echo-soak "PORT=$echo_port" -- "$REL/echo-runtime"
  wait_http "http://127.0.0.1:$echo_port/health" 10
  local state; state=$(mktemp -d)
  start_bg cp-soak -- "$REL/nanofaas" serve --listen 127.0.0.1:0 --state-dir "$state" \
    --set provider.type=none --set "executions.max_records=$cap" --set admission.retry_backoff_ms=1
  local cp_pid=$LAST_PID
  local line; line=$(wait_line "$OUT/cp-soak.log" '^nanofaas listening on ' 20)
  CP_URL=${line#nanofaas listening on }
  register "$CP_URL" "{\"name\":\"echo\",\"executionMode\":\"POOL\",\"endpointUrl\":\"http://127.0.0.1:$echo_port/invoke\",\"concurrency\":64,\"queueSize\":100000}"
  # Fails every call: the endpoint answers 404 (a function error; async ones are retried).
  register "$CP_URL" "{\"name\":\"broken\",\"executionMode\":\"POOL\",\"endpointUrl\":\"http://127.0.0.1:$echo_port/missing\",\"concurrency\":64,\"queueSize\":100000}"
  local journal="$state/journal.jsonl" total=0 started=$SECONDS mid_done=0
  soak_sample start "$cp_pid" "$journal" 0
  local phase url c json n
  while (( total < count && SECONDS - started < bound )); do
    for phase in sync async failing-sync failing-async; do
      case "$phase" in
        sync) url="$CP_URL/v1/functions/echo:invoke"; c=$conns ;;
        async) url="$CP_URL/v1/functions/echo:enqueue"; c=$conns ;;
        failing-sync) url="$CP_URL/v1/functions/broken:invoke"; c=$(( conns / 4 + 1 )) ;;
        failing-async) url="$CP_URL/v1/functions/broken:enqueue"; c=$(( conns / 4 + 1 )) ;;
      esac
      # A phase of failing calls has no success: loadgen then exits 1 after printing its figures.
      json=$("$REL/loadgen" --json -d "$round" -w 0 -c "$c" -b "$body" "$url" || true)
      [[ -n "$json" ]] || { log "loadgen printed nothing for $phase"; return 1; }
      printf '{"label":"%s","result":%s}\n' "$phase" "$json" >>"$RAW"
      n=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(d['requests']+d['errors'])" "$json")
      total=$(( total + n ))
    done
    log "$(printf '         %12s invocations  RSS %8s KiB  fds %5s  journal %10s bytes' "$total" "$(rss_kb "$cp_pid")" "$(ls "/proc/$cp_pid/fd" | wc -l)" "$(stat -c %s "$journal")")"
    if (( mid_done == 0 && total * 2 >= count )); then
      soak_sample middle "$cp_pid" "$journal" "$total"
      mid_done=1
    fi
  done
  # Let queued async work finish, so the end is a steady state.
  sleep 2
  soak_sample end "$cp_pid" "$journal" "$total"
  (( total >= count )) || log "stopped by SOAK_MAX_SECONDS=$bound before SOAK_COUNT=$count"
  log ""
  row "metric" "start" "middle" "end" "target" "verdict"
  local k
  for k in rss_kib fds journal_bytes; do
    row "$k" "$(stats "[r['$k'] for r in R['sample'] if r['at']=='start'][0]")" \
      "$(stats "([r['$k'] for r in R['sample'] if r['at']=='middle'] or ['-'])[0]")" \
      "$(stats "[r['$k'] for r in R['sample'] if r['at']=='end'][0]")" "flat after the caps" ""
  done
  row "invocations (ok + failed)" "$total" "" "" "$count" ""
  row "sync ok / async accepted" "$(stats 'sum(pick("sync","requests"))')" "$(stats 'sum(pick("async","requests"))')" "" "" ""
  row "failing calls answered non-2xx" "$(stats 'sum(pick("failing-sync","errors"))+sum(pick("failing-async","errors"))')" "" "" "" ""
  rm -rf "$state"
}

# --- end soak suite --------------------------------------------------------------------------------

# --- kubernetes suite ------------------------------------------------------------------------------

# The kubernetes provider at scale against nanofaas-kube-fake with fake containers (no engine, no
# cluster). Fake pods get IPs in 10.244.0.0/16, which the suite makes local inside a network
# namespace of its own (root: `unshare --net`, `ip route add local`), where one real warm
# watchdog on 0.0.0.0:8080 answers for every pod. So the control plane runs its unchanged path:
# create, watch, readiness, the probe of the pod's address, the lease, invocations.
suite_kubernetes() {
  local pods="${K8S_PODS:-1000}" burst_n="${K8S_BURST_STARTS:-200}"
  local qps="${K8S_API_QPS:-20}" burst="${K8S_API_BURST:-40}" scale_qps="${K8S_SCALE_QPS:-200}"
  if [[ -z "${NANOFAAS_BENCH_NETNS:-}" ]]; then
    log "== kubernetes suite: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
    if [[ $(id -u) != 0 ]] || ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
      log "needs root, unshare and ip (iproute2) for its network namespace; not run"
      return 1
    fi
    if [[ "${K8S_DEBUG:-0}" == 1 ]]; then
      [[ -n "${SKIP_BUILD:-}" ]] || cargo build -p nanofaas-cli -p nanofaas-echo-runtime -p nanofaas-kube-fake -p nanofaas-watchdog >&2
    else
      build_release nanofaas-cli nanofaas-echo-runtime nanofaas-kube-fake
      "$ROOT/scripts/build-static.sh" >/dev/null
    fi
    # The Docker provider's cold starts, measured here: its containers are not reachable from
    # the network namespace the rest runs in. The result goes to the next file's report.
    local dk="$OUT/k8s-docker-cold.json"
    rm -f "$dk" "$dk.base"
    if [[ "${K8S_DOCKER:-1}" == 0 ]]; then
      log "K8S_DOCKER=0: the Docker provider's cold starts are not measured"
    elif ! docker version >/dev/null 2>&1; then
      log "no container engine answers ('docker version' failed): the Docker provider's cold starts are not measured"
    else
      "$ROOT/scripts/docker-images.sh" python >&2
      docker_echo_image
      local n_dk="${K8S_COLD_STARTS:-15}" spec='{"name":"NAME","image":"nanofaas/bench-echo:latest","maxInstances":1}'
      log "Docker provider: $n_dk cold starts of the echo image (provider.docker.prewarm=0, container address)"
      local dk_args=(--set provider.type=docker --set provider.docker.address=container --set provider.docker.prewarm=0)
      start_cp cold-cp-docker "${dk_args[@]}"
      local dk_pid=$LAST_PID dk_url=$CP_URL base_pid="" base_url=""
      # K8S_DOCKER_BASE=<a nanofaas binary>: that control plane's Docker cold starts too, in
      # alternating rounds with this tree's (same images, same engine): an A/B of the provider.
      if [[ -n "${K8S_DOCKER_BASE:-}" ]]; then
        CP_BIN="$K8S_DOCKER_BASE" start_cp cold-cp-docker-base "${dk_args[@]}"
        base_pid=$LAST_PID base_url=$CP_URL
        log "  and the same with the control plane K8S_DOCKER_BASE=$K8S_DOCKER_BASE, in alternating rounds"
      fi
      python3 - "$dk" <<'PY' >/dev/null
import json, sys; json.dump({"total_ms": [], "start_ms": [], "own_ms": []}, open(sys.argv[1], "w"))
PY
      [[ -n "$base_pid" ]] && cp "$dk" "$dk.base"
      local round per=$(( (n_dk + 2) / 3 )) r
      for round in 1 2 3; do
        r=$(provider_cold_starts "$dk_url" "$spec" "$per" docker "dk${round}x")
        python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.loads(sys.argv[2]); json.dump({k: a[k]+b[k] for k in a}, open(sys.argv[1], "w"))' "$dk" "$r"
        if [[ -n "$base_pid" ]]; then
          r=$(provider_cold_starts "$base_url" "$spec" "$per" docker "db${round}x")
          python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.loads(sys.argv[2]); json.dump({k: a[k]+b[k] for k in a}, open(sys.argv[1], "w"))' "$dk.base" "$r"
        fi
      done
      local p
      for p in $dk_pid $base_pid; do
        kill -TERM "$p"
        for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      done
    fi
    log "(continuing in a network namespace of its own: the report is the next file)"
    rm -f "$REPORT" "$RAW"
    NANOFAAS_BENCH_NETNS=1 SKIP_BUILD=1 exec unshare --net -- bash "$0" kubernetes
  fi
  log "== kubernetes suite (in a network namespace of its own): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
  local wd
  if [[ "${K8S_DEBUG:-0}" == 1 ]]; then
    REL="$TARGET_DIR/debug"; wd="$REL/nanofaas-watchdog"
    log "(K8S_DEBUG=1: debug binaries; proves the suite works, the figures need a release build)"
  else
    wd=$("$ROOT/scripts/build-static.sh" 2>/dev/null)
  fi
  log "K8S_PODS=$pods (fake containers), K8S_BURST_STARTS=$burst_n; the limit under test: api_qps=$qps api_burst=$burst; the scale phase creates pods at api_qps=$scale_qps"
  log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  ip link set lo up
  ip route add local 10.244.0.0/16 dev lo
  # Logs of an earlier run would be read before a new process truncates them (wait_line).
  rm -f "$OUT"/k8s-*.log

  # One warm watchdog answers for every pod IP. Its lease has as many holders as there are pods;
  # it stops once the control plane that held them is gone, so each phase starts its own.
  k8s_stub_watchdog() {
    local rport; rport=$(free_port)
    start_bg "k8s-watchdog-$1" EXECUTION_MODE=WARM WARM_PORT=8080 WARM_BIND=0.0.0.0 "PORT=$rport" \
      "RUNTIME_URL=http://127.0.0.1:$rport/invoke" "WATCHDOG_CMD=$REL/echo-runtime" WARM_IDLE_TIMEOUT_MS=0 \
      WARM_CONCURRENCY=1024 WARM_LEASE_MS=86400000 -- "$wd"
    wait_line "$OUT/k8s-watchdog-$1.log" '^NANOFAAS_READY ' 10 >/dev/null
  }
  k8s_stub_watchdog scale

  local kc="$OUT/k8s-kubeconfig" line fake_url
  start_bg k8s-fake -- "$REL/nanofaas-kube-fake" --containers fake --kubeconfig "$kc" --namespace bench \
    --history 100000
  line=$(wait_line "$OUT/k8s-fake.log" '^listening on ' 10); fake_url=${line#listening on }

  # A reference watcher beside the control plane's: when each pod's readiness was on the wire.
  local ref="$OUT/k8s-ready-ref.jsonl"
  : >"$ref"
  start_bg k8s-ref-watch -- python3 -c '
import http.client, json, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); out = open(sys.argv[2], "a", buffering=1)
c = http.client.HTTPConnection(u.hostname, u.port)
c.request("GET", "/api/v1/namespaces/bench/pods?watch=true&timeoutSeconds=3600&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dnanofaas")
r = c.getresponse(); seen = set()
while True:
    l = r.readline()
    if not l: break
    t = time.time()
    o = json.loads(l).get("object", {}); name = o.get("metadata", {}).get("name")
    st = o.get("status") or {}
    ready = any(x.get("type") == "Ready" and x.get("status") == "True" for x in st.get("conditions") or [])
    if ready and st.get("podIP") and name not in seen:
        seen.add(name); out.write(json.dumps({"pod": name, "t": t}) + "\n")
' "$fake_url" "$ref"
  sleep 0.5

  # Phase 1: K8S_PODS pods, all watched by one control plane.
  local common=(--set provider.type=kubernetes --set "provider.kubernetes.kubeconfig=$kc"
    --set provider.kubernetes.namespace=bench --set provider.startup_timeout_ms=300000
    --set pool.health_check_interval_ms=0 --set log_format=json
    --set "log_level=info,nanofaas_control_plane::provider::kubernetes=debug" ${K8S_EXTRA:-})
  start_cp k8s-cp-scale "${common[@]}" --set "provider.kubernetes.api_qps=$scale_qps" \
    --set "provider.kubernetes.api_burst=$scale_qps"
  local cp_pid=$LAST_PID cp_url=$CP_URL
  sleep 1
  local rss0; rss0=$(rss_kb "$cp_pid")
  local t0=$SECONDS
  register "$cp_url" "{\"name\":\"scale\",\"image\":\"bench/echo:1\",\"minInstances\":$pods,\"maxInstances\":$pods,\"concurrency\":$pods,\"idleTimeoutMs\":3600000}"
  local ready=0 deadline=$((SECONDS + 600))
  while (( ready < pods && SECONDS < deadline )); do
    sleep 1
    ready=$(curl -fsS "$cp_url/v1/functions/scale/instances" | grep -o '"state":"ready"' | wc -l || true)
  done
  local fill_s=$((SECONDS - t0))
  sleep 2
  local rss1; rss1=$(rss_kb "$cp_pid")
  log "phase 1: $ready of $pods instances ready after ${fill_s} s; control plane RSS ${rss0} KiB before, ${rss1} KiB after"
  python3 -c '
import json, sys, datetime
ref = {}
for l in open(sys.argv[1]):
    d = json.loads(l); ref[d["pod"]] = d["t"]
lags, create, until = [], [], []
for l in open(sys.argv[2]):
    if not l.startswith("{"): continue
    d = json.loads(l); f = dict(d, **d.get("fields", {}))
    if f.get("message") != "pod ready": continue
    ts = datetime.datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00")).timestamp()
    seen = ts - float(f.get("probe_ms", 0)) / 1000
    if f.get("pod") in ref: lags.append((seen - ref[f["pod"]]) * 1000)
    create.append(float(f.get("create_ms", 0))); until.append(float(f.get("until_ready_ms", 0)))
r = {"lags_ms": lags, "create_ms": create, "until_ready_ms": until}
open(sys.argv[3], "a").write(json.dumps({"label": "k8s-scale", "result": r}) + "\n")
' "$ref" "$OUT/k8s-cp-scale.log" "$RAW"
  kill -TERM "$cp_pid"
  for _ in $(seq 600); do kill -0 "$cp_pid" 2>/dev/null || break; sleep 0.1; done
  local left; left=$(curl -fsS "$fake_url/api/v1/namespaces/bench/pods" | grep -o '"name":"nf-' | wc -l || true)
  log "after the control plane's SIGTERM: $left pods left in the fake cluster"

  # Phase 2: K8S_BURST_STARTS cold starts at once, under the configured limit.
  for _ in $(seq 100); do curl -s -o /dev/null "http://10.244.0.2:8080/health" || break; sleep 0.1; done
  k8s_stub_watchdog burst
  curl -fsS -XPOST "$fake_url/_fake/stats/reset" >/dev/null
  start_cp k8s-cp-burst "${common[@]}" --set "provider.kubernetes.api_qps=$qps" --set "provider.kubernetes.api_burst=$burst"
  cp_pid=$LAST_PID; cp_url=$CP_URL
  # minInstances too: the echo answers at once, so the calls alone would reuse the first ready
  # pods; the pool starts all K8S_BURST_STARTS pods together, as that many cold starts would.
  register "$cp_url" "{\"name\":\"burst\",\"image\":\"bench/echo:1\",\"minInstances\":$burst_n,\"maxInstances\":$burst_n,\"concurrency\":$burst_n,\"queueSize\":$burst_n,\"timeoutMs\":300000}"
  python3 -c '
import http.client, json, sys, threading, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); n = int(sys.argv[2]); res = [(0, None, 0.0)] * n
go = threading.Barrier(n)
def one(i):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    go.wait(); t = time.perf_counter()
    try:
        c.request("POST", "/v1/functions/burst:invoke", json.dumps({"input": {"i": i}}), {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        res[i] = (r.status, r.getheader("x-cold-start"), (time.perf_counter() - t) * 1000)
    except Exception:
        res[i] = (0, None, (time.perf_counter() - t) * 1000)
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
[t.start() for t in ts]; [t.join() for t in ts]
out = {"ok": sum(1 for s, _, _ in res if s == 200), "cold": sum(1 for _, c, _ in res if c == "true"), "ms": sorted(m for _, _, m in res)}
open(sys.argv[3], "a").write(json.dumps({"label": "k8s-burst", "result": out}) + "\n")
' "$cp_url" "$burst_n" "$RAW"
  # Every pod of the burst created (the bucket spreads the creates out) before the stats are read.
  local burst_ready=0
  deadline=$((SECONDS + 300))
  while (( burst_ready < burst_n && SECONDS < deadline )); do
    burst_ready=$(curl -fsS "$cp_url/v1/functions/burst/instances" | grep -o '"state":"ready"' | wc -l || true)
    (( burst_ready < burst_n )) && sleep 1
  done
  log "phase 2: $burst_ready of $burst_n pods ready"
  curl -fsS "$fake_url/_fake/stats" | python3 -c 'import json,sys; d = json.load(sys.stdin); d.pop("pods", None); print(json.dumps({"label": "k8s-api", "result": d}))' >>"$RAW"

  # Phase 3: one cold start at a time, each a fresh function's first call, so the provider's own
  # cost of a start is what the call took minus the simulated kubelet's start of its pod. The
  # control plane runs with its default API limits.
  local cold_n="${K8S_COLD_STARTS:-15}"
  kill -TERM "$cp_pid"
  for _ in $(seq 600); do kill -0 "$cp_pid" 2>/dev/null || break; sleep 0.1; done
  for _ in $(seq 100); do curl -s -o /dev/null "http://10.244.0.2:8080/health" || break; sleep 0.1; done
  k8s_stub_watchdog cold
  curl -fsS -XPOST "$fake_url/_fake/stats/reset" >/dev/null
  start_cp k8s-cp-cold "${common[@]}"
  local r
  r=$(provider_cold_starts "$CP_URL" '{"name":"NAME","image":"bench/echo:1","maxInstances":1}' "$cold_n" "kubernetes=$fake_url")
  printf '{"label":"k8s-cold","result":%s}\n' "$r" >>"$RAW"
  local dk="$OUT/k8s-docker-cold.json"
  [[ -s "$dk" ]] && printf '{"label":"docker-cold","result":%s}\n' "$(cat "$dk")" >>"$RAW"
  [[ -s "$dk.base" ]] && printf '{"label":"docker-cold-base","result":%s}\n' "$(cat "$dk.base")" >>"$RAW"
  log "phase 3: $cold_n cold starts one at a time"
  log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

  log ""
  row "metric" "value" "" "" "target" "verdict"
  local S="R['k8s-scale'][0]" B="R['k8s-burst'][0]"
  local med_lag; med_lag=$(stats "med(${S}['lags_ms']) if ${S}['lags_ms'] else -1")
  row "pods watched (ready instances)" "$ready" "" "" "$pods" "$(verdict "$ready == $pods")"
  row "readiness lag, median (ms)" "$med_lag" "" "" "<= 100" "$(verdict "$med_lag <= 100")"
  row "readiness lag, p90 / max (ms)" "$(stats "'%.1f / %.1f' % (sorted(${S}['lags_ms'])[int(0.9 * len(${S}['lags_ms']))], max(${S}['lags_ms'])) if ${S}['lags_ms'] else 'n/a'")" "" "" "" ""
  row "pods with a lag measured" "$(stats "len(${S}['lags_ms'])")" "" "" "$pods" ""
  row "RSS per watched pod (KiB)" "$(( (rss1 - rss0) / (ready > 0 ? ready : 1) ))" "" "" "" ""
  # The limit: in any window of W seconds at most api_burst + api_qps * W requests.
  local api_check
  api_check=$(python3 -c '
import json, sys
R = {}
for l in open(sys.argv[1]):
    d = json.loads(l); R[d["label"]] = d["result"]
qps, burst = float(sys.argv[2]), float(sys.argv[3])
t = sorted(r["atMs"] / 1000 for r in R["k8s-api"]["requests"])
worst = []
for w in (1, 2, 5, 10):
    j, m = 0, 0
    for i in range(len(t)):
        while t[i] - t[j] >= w: j += 1
        m = max(m, i - j + 1)
    worst.append((w, m, burst + qps * w))
span = (t[-1] - t[0]) if len(t) > 1 else 0
ok = all(m <= lim for _, m, lim in worst)
print(("met" if ok else "MISSED") + "|" + "; ".join("%ds: %d (limit %.0f)" % x for x in worst) + "|%d requests over %.1f s = %.1f/s" % (len(t), span, len(t) / span if span else 0))
' "$RAW" "$qps" "$burst")
  local api_verdict=${api_check%%|*} api_rest=${api_check#*|}
  log "API requests in the busiest window of W s: ${api_rest%%|*}"
  log "  (${api_rest#*|}; by verb: $(stats "R['k8s-api'][0]['counts']"))"
  row "API rate within api_qps/api_burst" "" "" "" "burst+qps*W" "$api_verdict"
  row "burst: answered 200 / pods created" "$(stats "'%d / %d' % (${B}['ok'], R['k8s-api'][0]['counts']['create'])")" "" "" "$burst_n" "$(verdict "$(stats "${B}['ok']") == $burst_n")"
  row "burst: calls that were cold starts" "$(stats "${B}['cold']")" "" "" "" ""
  row "burst: call p50 / max (ms)" "$(stats "'%.0f / %.0f' % (med(${B}['ms']), max(${B}['ms']))")" "" "" "" ""
  row "pod create call, median (ms)" "$(stats "med(${S}['create_ms']) if ${S}['create_ms'] else -1")" "" "" "" ""
  row "create to ready seen, median (ms)" "$(stats "med(${S}['until_ready_ms']) if ${S}['until_ready_ms'] else -1")" "" "" "" ""
  log ""
  log "the provider's own cost of a cold start: a fresh function's first call (request to answer, at the client) minus the backend's start of its instance; medians of $cold_n starts one at a time, same echo runtime"
  row "metric" "kubernetes" "docker" "ratio" "" ""
  local K="R['k8s-cold'][0]" D="R['docker-cold'][0]" have_dk=0
  [[ -s "$dk" ]] && have_dk=1
  local m label
  for m in total start own; do
    case $m in
      total) label="first call, cold (ms)" ;;
      start) label="backend's start (ms)" ;;
      own) label="provider's own cost (ms)" ;;
    esac
    if (( have_dk )); then
      row "$label" "$(stats "med(${K}['${m}_ms'])")" "$(stats "med(${D}['${m}_ms'])")" "x$(stats "med(${K}['${m}_ms']) / med(${D}['${m}_ms'])")" "" ""
    else
      row "$label" "$(stats "med(${K}['${m}_ms'])")" "not measured" "" "" ""
    fi
  done
  row "provider's own cost, min / max (ms)" "$(stats "'%.1f / %.1f' % (min(${K}['own_ms']), max(${K}['own_ms']))")" "$( (( have_dk )) && stats "'%.1f / %.1f' % (min(${D}['own_ms']), max(${D}['own_ms']))" || echo '')" "" "" ""
  log "(kubernetes: the backend's start is the simulated kubelet's, from the pod's creation to its first Ready in the fake's own records (scheduling, then K8S fake containers Ready 50 ms after binding); docker: the engine's, from the container's Created time to the watchdog's NANOFAAS_READY line as the engine timestamped it, so it includes the watchdog's and echo runtime's start inside the container, and the provider's cost includes the engine's create call before Created is set; the provider's cost is the rest: the invocation reaching the pool, the create call (kubernetes: through the client-side rate limiter), seeing readiness (kubernetes: the watch, then a probe of the pod's address; docker: GET /health probed with back-off), the lease, the call and its answer)"
  log "per start, kubernetes (total/start ms): $(stats "' '.join('%.1f/%.1f' % x for x in zip(${K}['total_ms'], ${K}['start_ms']))")"
  (( have_dk )) && log "per start, docker (total/start ms): $(stats "' '.join('%.1f/%.1f' % x for x in zip(${D}['total_ms'], ${D}['start_ms']))")"
  if [[ -s "$dk.base" ]]; then
    local DB="R['docker-cold-base'][0]"
    log ""
    log "Docker provider, this tree against the control plane K8S_DOCKER_BASE (alternating rounds, same images and engine):"
    row "metric" "this tree" "base" "ratio" "" ""
    for m in total start own; do
      row "$m (ms), median" "$(stats "med(${D}['${m}_ms'])")" "$(stats "med(${DB}['${m}_ms'])")" "x$(stats "med(${D}['${m}_ms']) / med(${DB}['${m}_ms'])")" "" ""
    done
    row "provider's own cost, p90 (ms)" "$(stats "sorted(${D}['own_ms'])[int(0.9 * len(${D}['own_ms']))]")" "$(stats "sorted(${DB}['own_ms'])[int(0.9 * len(${DB}['own_ms']))]")" "" "" ""
    log "per start, docker base (total/start ms): $(stats "' '.join('%.1f/%.1f' % x for x in zip(${DB}['total_ms'], ${DB}['start_ms']))")"
  fi
  log "(readiness lag: the control plane's watch seeing a pod Ready (its 'pod ready' debug line, less the probe that follows) minus a reference watcher of the same fake seeing the same change (below 0: the control plane saw it first, the reference watcher being a slower Python reader); fake pods turn Ready 50 ms after binding; RSS per pod includes its instance slot and lease connection)"
}

# --- end kubernetes suite ------------------------------------------------------------------------

# ---------------------------------------------------------------- dispatch

suite="${1:-}"
case "$suite" in
  watchdog|control-plane|chain|chain-cpu|docker|runtimes|python-warm|auth|soak|kubernetes)
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    REPORT="$OUT/$suite-$stamp.txt"
    RAW="$OUT/$suite-$stamp.jsonl"
    : >"$REPORT"; : >"$RAW"
    "suite_${suite//-/_}"
    echo "report: $REPORT" >&2
    ;;
  *)
    echo "usage: bench/run.sh <suite>   (suites: watchdog, control-plane, chain, chain-cpu, docker, runtimes, python-warm, auth, soak, kubernetes)" >&2
    exit 2
    ;;
esac
