#!/usr/bin/env bash
# Builds nanofaas (release) and runs `nanofaas up`: the control plane on 127.0.0.1:8080 with the
# process provider, the example manifest's setup steps (Python venv, Java runtime, Rust example),
# and every example function deployed and ready to invoke. Ctrl-C stops everything.
#
#   ./scripts/up.sh [nanofaas up options]     e.g. --listen 127.0.0.1:9000, --manifest FILE
#
# Environment: NANOFAAS_PROFILE (cargo profile, default release; `dev` builds quicker and runs
# slower), CARGO_TARGET_DIR (honoured as cargo does).
# Exit codes: those of `nanofaas up` (docs/cli.md); 1 when cargo is missing or the build fails;
# 3 when the listen address is in use (checked first, before anything is built).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
profile="${NANOFAAS_PROFILE:-release}"

say() { printf 'up.sh: %s\n' "$*" >&2; }

# --- The listen address, before building: a busy port is reported now, not after the build. ---
# The address `nanofaas up` will use: --listen, --set listen=..., NANOFAAS_LISTEN, a --config
# file's `listen = "..."`, else the default.
listen="${NANOFAAS_LISTEN:-}" config="" prev=""
for a in "$@"; do
  case $prev in
    --listen) listen=$a ;;
    --set) [[ $a == listen=* ]] && listen=${a#listen=} ;;
    -c|--config) config=$a ;;
  esac
  case $a in
    --listen=*) listen=${a#--listen=} ;;
    --set=listen=*) listen=${a#--set=listen=} ;;
    --config=*) config=${a#--config=} ;;
  esac
  prev=$a
done
if [[ -z $listen && -n $config && -r $config ]]; then
  listen=$(sed -n 's/^[[:space:]]*listen[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$config" | head -n1)
fi
listen=${listen:-127.0.0.1:8080}

# This command line with --listen set to $1, ready to paste.
rerun_with_listen() {
  local out=(./scripts/up.sh) replaced="" skip="" a
  for a in "${args[@]}"; do
    if [[ -n $skip ]]; then skip=""; continue; fi
    case $a in
      --listen) out+=(--listen "$1"); replaced=1; skip=1 ;;
      --listen=*) out+=(--listen "$1"); replaced=1 ;;
      *) out+=("$a") ;;
    esac
  done
  [[ -n $replaced ]] || out=(./scripts/up.sh --listen "$1" "${out[@]:1}")
  printf '%q ' "${out[@]}" | sed 's/ $//'
}

args=("$@")
# The system's Python when there is one: a version manager's shim can take a second to start.
py=""
for p in /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null 2>&1; then py=$p; break; fi
done
if [[ -n $py ]]; then
  probe_rc=0
  probe=$("$py" -I -S scripts/lib/port_check.py "$listen") || probe_rc=$?
  if [[ $probe_rc != 0 ]]; then
    holder=$(sed -n 's/^holder=//p' <<<"$probe")
    why=$(sed -n 's/^error=//p' <<<"$probe")
    free=$(sed -n 's/^free=//p' <<<"$probe")
    if [[ $probe_rc == 1 ]]; then
      say "$listen is in use, held by $holder; nothing was built."
    else
      say "cannot listen on $listen: $why; nothing was built."
    fi
    if [[ -n $free ]]; then
      say "Stop it, or listen on a free address:"
      printf '  %s\n' "$(rerun_with_listen "$free")" >&2
    else
      say "Stop it, or choose another address with --listen ADDR."
    fi
    exit 3
  fi
else
  # No Python: a connection that succeeds means something listens there.
  host=${listen%:*} port=${listen##*:}
  host=${host#[}; host=${host%]}
  [[ $host == 0.0.0.0 || $host == :: ]] && host=127.0.0.1
  if timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null; then
    say "$listen is in use (python3 is missing, so the holder is not named); nothing was built."
    say "Stop it, or listen elsewhere, e.g.:"
    printf '  %s\n' "$(rerun_with_listen "${listen%:*}:$((port + 1))")" >&2
    exit 3
  fi
fi

command -v cargo >/dev/null 2>&1 || { say "cargo not found on PATH: install Rust (rustup or Debian's cargo)"; exit 1; }

say "building nanofaas and nanofaas-watchdog (cargo profile $profile; the first build takes a few minutes)"
cargo build --profile "$profile" -p nanofaas-cli -p nanofaas-watchdog --bins \
  || { say "cargo build failed (see above)"; exit 1; }

target="${CARGO_TARGET_DIR:-$repo/target}"
[[ $target == /* ]] || target="$repo/$target"
case $profile in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac
bin="$target/$dir/nanofaas"
[[ -x $bin ]] || { say "cargo reported success but $bin is missing"; exit 1; }

# The watchdog is found next to the nanofaas binary.
exec "$bin" up "$@"
