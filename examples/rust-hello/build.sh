#!/usr/bin/env bash
# Builds the hello-rust example (package nanofaas-example-rust-hello, binary rust-hello) and
# installs it as .nanofaas/bin/rust-hello at the repository root, where examples/manifest.yaml
# runs it from. Cargo does nothing when nothing changed, and the binary is only replaced when it
# differs, so a second run takes well under a second.
#
# Environment: NANOFAAS_RUST_PROFILE (default release; dev for a quicker first build),
# CARGO_TARGET_DIR (honoured as cargo does).
# Exit codes: 0 built or up to date, 1 the build failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
profile=${NANOFAAS_RUST_PROFILE:-release}
cd "$repo"

command -v cargo >/dev/null 2>&1 || { echo "rust-hello: cargo not found on PATH (install Rust)" >&2; exit 1; }
cargo build --profile "$profile" -p nanofaas-example-rust-hello >&2 \
  || { echo "rust-hello: cargo build failed" >&2; exit 1; }

target=${CARGO_TARGET_DIR:-$repo/target}
[[ $target == /* ]] || target=$repo/$target
case $profile in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac
built=$target/$dir/rust-hello
[[ -x $built ]] || { echo "rust-hello: cargo reported success but $built is missing" >&2; exit 1; }

dest=$repo/.nanofaas/bin/rust-hello
mkdir -p "$(dirname "$dest")"
if cmp -s "$built" "$dest"; then
  echo "rust-hello: up to date: $dest" >&2
else
  # Copy then rename: a warm instance still running the old binary keeps it.
  cp "$built" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest"
  echo "rust-hello: installed $dest ($profile)" >&2
fi
