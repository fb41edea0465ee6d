#!/usr/bin/env bash
# Builds the release nanofaas-watchdog as a statically linked binary (for container images and
# the benchmarks), prints its path and size, and fails if the result is not static.
#
# glibc with crt-static; `--target` is passed so that RUSTFLAGS apply to the binary only and
# proc-macros stay dynamic. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static ${RUSTFLAGS:-}" \
  cargo build --release --target "$TARGET" -p nanofaas-watchdog >&2

BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/nanofaas-watchdog"
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
