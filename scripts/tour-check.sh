#!/usr/bin/env bash
# Runs the README's five-minute tour verbatim, as a new user would after
# `./scripts/up.sh --listen 127.0.0.1:PORT`: starts `nanofaas up --listen 127.0.0.1:<free port>`
# (the examples' manifest, setup steps included), pastes the `export NANOFAAS_ENDPOINT=...` line it
# prints, then runs every ```sh block of README.md's "A five-minute tour" section, in order, in
# one shell with `set -euo pipefail`, from a folder laid out like the repository's root (its
# target/release is the build under test, its .nanofaas the examples' runtimes).
#
# Fails when a tour command fails, when the tour's calls did not reach this `up` (they would have
# gone to 127.0.0.1:8080), when `up` does not stop cleanly on SIGINT, or when it logged anything at
# ERROR level. The last line is `TIER-COUNTS passed=N failed=N skipped=0` (N = tour commands).
#
#   scripts/tour-check.sh [BIN_DIR]     default target/debug (what scripts/test.sh builds)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin_dir="$(cd "${1:-target/debug}" && pwd)"
[[ -x $bin_dir/nanofaas && -x $bin_dir/nanofaas-watchdog ]] \
  || { echo "tour-check: build nanofaas and nanofaas-watchdog into $bin_dir first" >&2; exit 1; }

work=$(mktemp -d)
# Instances may run as a user of their own (provider.process.user): the tour's folder must be
# readable by others, as a clone of the repository is.
chmod 755 "$work"
up_pid=""
cleanup() {
  if [[ -n $up_pid ]] && kill -0 "$up_pid" 2>/dev/null; then
    kill -INT "$up_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$up_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "tour-check: FAILED: $*" >&2
  echo "--- nanofaas up (stdout) ---" >&2; cat "$work/up.out" >&2 || true
  echo "--- nanofaas up (stderr, last 60 lines) ---" >&2; tail -n 60 "$work/up.err" >&2 || true
  echo "TIER-COUNTS passed=0 failed=1 skipped=0"
  exit 1
}

# The tour's code blocks, verbatim.
awk '/^## A five-minute tour/ { t = 1; next }
     /^## / { t = 0 }
     t && /^```sh$/ { c = 1; next }
     t && c && /^```$/ { c = 0; print ""; next }
     t && c' README.md >"$work/tour.sh"
commands=$(grep -cvE '^\s*(#|$)' "$work/tour.sh" || true)
[[ $commands -gt 5 ]] || fail "found no tour in README.md (section \"## A five-minute tour\", \`\`\`sh blocks)"

# A free port (not 8080: the tour must follow the export line, not the default).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin_dir/nanofaas" up --listen "127.0.0.1:$port" --state-dir "$work/state" \
  >"$work/up.out" 2>"$work/up.err" </dev/null &
up_pid=$!
# Setup steps are quick when the examples' runtimes are prepared (the e2e tier did it); the first
# run on a machine builds them.
for _ in $(seq 1 6000); do
  grep -q '^Press Ctrl-C' "$work/up.out" 2>/dev/null && break
  kill -0 "$up_pid" 2>/dev/null || fail "nanofaas up exited before it was ready"
  sleep 0.1
done
grep -q '^Press Ctrl-C' "$work/up.out" || fail "nanofaas up was not ready within 10 minutes"
export_line=$(grep -m1 '^  export NANOFAAS_ENDPOINT=' "$work/up.out") \
  || fail "up's Try it block has no export NANOFAAS_ENDPOINT line"
echo "tour-check: up is ready; pasting:$export_line"

# The repository's root as the tour sees it.
root="$work/root"
mkdir -p "$root/target"
ln -s "$bin_dir" "$root/target/release"
ln -s "$repo/.nanofaas" "$root/.nanofaas"
tour_rc=0
(cd "$root" && env -u NANOFAAS_ENDPOINT bash -euo pipefail -c "$export_line
$(cat "$work/tour.sh")") >"$work/tour.out" 2>&1 || tour_rc=$?
cat "$work/tour.out"
[[ $tour_rc == 0 ]] || fail "a tour command failed (exit $tour_rc); its output is above"

grep -q '"words": 4' "$work/tour.out" || fail "the first invocation did not count 4 words"
grep -q 'nanofaas_function_cold_start_total{function="wordcount"} 1' "$work/tour.out" \
  || fail "the metrics line of the tour is missing"

kill -INT "$up_pid"
up_rc=0
for _ in $(seq 1 300); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$up_pid" 2>/dev/null && fail "up did not stop within 30 s of SIGINT"
wait "$up_pid" || up_rc=$?
up_pid=""
[[ $up_rc == 0 ]] || fail "up exited $up_rc on SIGINT"
# The tour talked to this `up`: its executions are in up's log. Counted only
# now that up has exited: the line for an execution is written after its
# answer, so the last one may still be on its way while the tour prints.
runs=$(grep -c 'execution finished function=wordcount ' "$work/up.err" || true)
[[ ${runs:-0} -ge 5 ]] || fail "up logged $runs executions of wordcount, expected at least 5 (the tour went elsewhere?)"
if grep -nE 'ERROR|"level": ?"(ERROR|error)"|nanofaas-watchdog error' "$work/up.err" >"$work/errors"; then
  fail "a clean run and Ctrl-C logged at ERROR level: $(cat "$work/errors")"
fi
echo "tour-check: the README's tour ran verbatim against up on 127.0.0.1:$port ($commands lines of its code blocks); up stopped cleanly"
echo "TIER-COUNTS passed=$commands failed=0 skipped=0"
