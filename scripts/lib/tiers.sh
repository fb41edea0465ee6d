# Test tiers with a closing summary, for scripts/test.sh (sourced).
#
#   tier NAME COUNTER COMMAND [ARGS...]
#
# runs COMMAND with its output shown as it comes and kept in a log, then records the tier's time
# and its passed/failed/skipped counts, read from the runner's closing lines by COUNTER:
#   pytest        "12 passed, 1 skipped in 3.2s"
#   junit         the console launcher's "[ 12 tests successful ]" box
#   nextest       "Summary [ 8.4s] 87 tests run: 87 passed, 0 skipped"
#   cargo-test    every "test result: ok. 3 passed; 0 failed; 1 ignored; ..." line, summed
#   schemathesis  "Test cases: 1576 generated, 2 found 2 unique failures, 1574 passed, 18 skipped"
#                 lines, summed (failed = unique failures)
#   fuzz          nanofaas-fuzz's "<target> ok: N inputs" / "<target> FAILED after N inputs"
#                 lines, one per target
#   counts        a line "TIER-COUNTS passed=N failed=N skipped=N" the command prints (for
#                 runners of your own)
#   none          a step that installs or builds: time only
# A failing COMMAND fails the tier and, under `set -e`, the script; the summary table is printed
# on exit either way (tiers_summary, installed as an EXIT trap by tiers_start).

_tiers_rows=()
_tiers_t0=0
_tiers_logs=""

_tiers_now_ms() { date +%s%3N; }

tiers_start() {
  _tiers_t0=$(_tiers_now_ms)
  _tiers_logs=$(mktemp -d)
  trap tiers_summary EXIT
}

# The first number before WORD in LINE, else 0.
_tiers_num() { grep -oE "[0-9]+ $2" <<<"$1" | head -n1 | grep -oE '^[0-9]+' || echo 0; }

# Prints "passed failed skipped" for a log, or "- - -".
_tiers_count() {
  local counter=$1 log=$2 l p=0 f=0 s=0
  case $counter in
    pytest)
      l=$(grep -E '[0-9]+ (passed|failed|errors?|skipped)' "$log" | grep -E ' in [0-9.]+s' | tail -n1 || true)
      [[ -n $l ]] || { echo "- - -"; return; }
      echo "$(_tiers_num "$l" passed) $(( $(_tiers_num "$l" failed) + $(_tiers_num "$l" error) )) $(_tiers_num "$l" skipped)" ;;
    junit)
      grep -qE '^\[ *[0-9]+ tests successful' "$log" || { echo "- - -"; return; }
      p=$(sed -n 's/^\[ *\([0-9]*\) tests successful.*/\1/p' "$log" | tail -n1)
      f=$(sed -n 's/^\[ *\([0-9]*\) tests failed.*/\1/p' "$log" | tail -n1)
      s=$(( $(sed -n 's/^\[ *\([0-9]*\) tests skipped.*/\1/p' "$log" | tail -n1) + $(sed -n 's/^\[ *\([0-9]*\) tests aborted.*/\1/p' "$log" | tail -n1) ))
      echo "${p:-0} ${f:-0} $s" ;;
    nextest)
      l=$(grep -E 'Summary \[.*\] +[0-9]+ tests? run:' "$log" | tail -n1 || true)
      [[ -n $l ]] || { echo "- - -"; return; }
      echo "$(_tiers_num "$l" passed) $(( $(_tiers_num "$l" failed) + $(_tiers_num "$l" 'timed out') )) $(_tiers_num "$l" skipped)" ;;
    cargo-test)
      grep -qE '^test result: ' "$log" || { echo "- - -"; return; }
      while IFS= read -r l; do
        p=$((p + $(_tiers_num "$l" passed))); f=$((f + $(_tiers_num "$l" failed))); s=$((s + $(_tiers_num "$l" ignored)))
      done < <(grep -E '^test result: ' "$log")
      echo "$p $f $s" ;;
    schemathesis)
      grep -qE '^ *[0-9]+ generated' "$log" || { echo "- - -"; return; }
      while IFS= read -r l; do
        p=$((p + $(_tiers_num "$l" passed))); f=$((f + $(_tiers_num "$l" 'unique failures') + $(_tiers_num "$l" errored))); s=$((s + $(_tiers_num "$l" skipped)))
      done < <(grep -E '^ *[0-9]+ generated' "$log")
      echo "$p $f $s" ;;
    fuzz)
      p=$(grep -cE '^[A-Za-z0-9_-]+ +ok: [0-9]+ inputs' "$log" || true)
      f=$(grep -cE '^[A-Za-z0-9_-]+ +FAILED after [0-9]+ inputs' "$log" || true)
      [[ $p != 0 || $f != 0 ]] || { echo "- - -"; return; }
      echo "$p $f 0" ;;
    counts)
      l=$(grep -E '^TIER-COUNTS ' "$log" | tail -n1 || true)
      [[ -n $l ]] || { echo "- - -"; return; }
      sed -E 's/.*passed=([0-9]+).*failed=([0-9]+).*skipped=([0-9]+).*/\1 \2 \3/' <<<"$l" ;;
    *) echo "- - -" ;;
  esac
}

tier() {
  local name=$1 counter=$2
  shift 2
  local log="$_tiers_logs/${#_tiers_rows[@]}.log" t0 rc
  t0=$(_tiers_now_ms)
  printf '\n==> %s\n' "$name"
  set +e
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  local counts
  counts=$(_tiers_count "$counter" "$log")
  _tiers_rows+=("$name|$counts|$(( $(_tiers_now_ms) - t0 ))|$rc")
  return "$rc"
}

# A line in the table for something that did not run (e.g. a tier skipped for want of Docker).
tier_skipped() { _tiers_rows+=("$1|- - -|0|skipped"); }

_tiers_secs() { # ms -> "12.3 s" or "6 min 52 s"
  local ms=$1
  if ((ms < 60000)); then printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
  else printf '%d min %02d s' $((ms / 60000)) $((ms % 60000 / 1000)); fi
}

tiers_summary() {
  local rc=$? row name counts ms trc p f s tp=0 tf=0 ts=0 verdict="all tiers passed" failed_any=""
  printf '\n==> summary\n'
  printf '%-44s %7s %7s %8s %12s  %s\n' tier passed failed skipped time result
  for row in "${_tiers_rows[@]}"; do
    IFS='|' read -r name counts ms trc <<<"$row"
    read -r p f s <<<"$counts"
    [[ $p == - ]] || { tp=$((tp + p)); tf=$((tf + f)); ts=$((ts + s)); }
    case $trc in
      0) trc=ok ;;
      skipped) ;;
      *) trc="FAILED (exit $trc)"; failed_any=1 ;;
    esac
    printf '%-44s %7s %7s %8s %12s  %s\n' "$name" "$p" "$f" "$s" "$(_tiers_secs "$ms")" "$trc"
  done
  if [[ $rc != 0 ]]; then
    verdict="FAILED (exit $rc)"
  elif [[ -n $failed_any ]]; then
    verdict="FAILED"
  fi
  printf '%-44s %7s %7s %8s %12s  %s\n' total "$tp" "$tf" "$ts" "$(_tiers_secs $(( $(_tiers_now_ms) - _tiers_t0 )))" "$verdict"
  rm -rf "$_tiers_logs"
}
