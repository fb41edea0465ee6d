#!/usr/bin/env bash
# Builds a release binary statically linked (for container images and the benchmarks), prints
# its path and size, and fails if the result is not static.
#
# Usage: scripts/build-static.sh [nanofaas-watchdog | nanofaas]   (default nanofaas-watchdog)
#   nanofaas-watchdog   the watchdog (the runtime images copy it)
#   nanofaas            the nanofaas command, i.e. the control plane (deploy/control-plane)
#
# glibc with crt-static; `--target` is passed so that RUSTFLAGS apply to the binary only and
# proc-macros stay dynamic. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${1:-nanofaas-watchdog}
case "$NAME" in
  nanofaas-watchdog) PKG=(-p nanofaas-watchdog) ;;
  nanofaas) PKG=(-p nanofaas-cli --bin nanofaas) ;;
  *) echo "build-static: unknown binary '$NAME' (nanofaas-watchdog or nanofaas)" >&2; exit 2 ;;
esac

TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static ${RUSTFLAGS:-}" \
  cargo build --release --target "$TARGET" "${PKG[@]}" >&2

BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/$NAME"
if [[ ! -x "$BIN" ]]; then
  echo "build-static: $BIN was not produced" >&2
  exit 1
fi
if command -v file >/dev/null 2>&1; then
  info=$(file -b "$BIN")
  case "$info" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "build-static: $BIN is not static: $info" >&2; exit 1 ;;
  esac
elif ldd "$BIN" >/dev/null 2>&1; then
  echo "build-static: $BIN is dynamically linked:" >&2
  ldd "$BIN" >&2
  exit 1
fi
size=$(stat -c %s "$BIN")
echo "$BIN"
echo "size: $size bytes ($(( (size + 1023) / 1024 )) KiB), static" >&2
