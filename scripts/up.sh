#!/usr/bin/env bash
# Builds nanofaas (release) and runs `nanofaas up`: the control plane on 127.0.0.1:8080 with the
# process provider, the example manifest's setup steps (Python venv, Java runtime, Rust example),
# and every example function deployed and ready to invoke. Ctrl-C stops everything.
#
#   ./scripts/up.sh [nanofaas up options]     e.g. --listen 127.0.0.1:9000, --manifest FILE
#
# Environment: NANOFAAS_PROFILE (cargo profile, default release; `dev` builds quicker and runs
# slower), CARGO_TARGET_DIR (honoured as cargo does).
# Exit codes: those of `nanofaas up` (docs/cli.md); 1 when cargo is missing or the build fails.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
profile="${NANOFAAS_PROFILE:-release}"

say() { printf 'up.sh: %s\n' "$*" >&2; }

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
