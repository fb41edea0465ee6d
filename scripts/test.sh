#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need on a fresh machine of the
# supported kind (Debian with Rust, Python 3.11 and a JDK): a Python venv from PyPI, Debian
# packages with apt-get when running as root.
#
# Tiers (see docs/testing.md):
#   1. Python runtime tests (pytest) and Java runtime tests (JUnit 5); they also install the
#      Python and Java prerequisites that the Rust end-to-end test of the examples needs.
#   2. Rust unit and integration tests (integration tests start the real binaries on loopback).
#   3. Docker tests: skipped loudly without an engine; mandatory with NANOFAAS_REQUIRE_DOCKER=1.
#   4. Fuzzing: each fuzz target for a bounded time (crates/fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- Python runtime (runtimes/python) ---------------------------------------------------------
step "Python runtime: venv and pytest"
py_venv="${NANOFAAS_VENV:-$PWD/.venv}"
scripts/python-env.sh "$py_venv"
"$py_venv/bin/python" -m pytest runtimes/python/tests -q -p no:cacheprovider
# --- end Python runtime ------------------------------------------------------------------------

# --- The seed plan's own Python runtime tests (runtimes/python/tools/seed_tests.py) ------------
# Read from the plan's text at test time (not kept here) and run as the plan runs them; SKIPPED
# without the plan ($NANOFAAS_SEED_PLAN, else ../shared/seed/ next to the repository),
# mandatory with NANOFAAS_REQUIRE_SEED=1.
step "Python runtime: the seed plan's Task 9 tests against our runtime"
"$py_venv/bin/python" runtimes/python/tools/seed_tests.py
# --- end seed plan tests -----------------------------------------------------------------------

# --- Java runtime (runtimes/java) -------------------------------------------------------------
step "Java runtime: Debian packages, build and JUnit 5"
scripts/java-env.sh
runtimes/java/build.sh test
# --- end Java runtime --------------------------------------------------------------------------

# --- Docker images (deploy/, scripts/docker-images.sh) -----------------------------------------
# The images the Docker tests run, built from the project's files; reused when their inputs did
# not change (the first run on a machine builds local Debian bases: a few minutes).
if docker version >/dev/null 2>&1; then
  step "Docker: images for the Docker tests (reused when unchanged)"
  scripts/docker-images.sh
elif [[ ${NANOFAAS_REQUIRE_DOCKER:-} == 1 ]]; then
  echo "NANOFAAS_REQUIRE_DOCKER=1 but no container engine answers ('docker version' failed)" >&2
  exit 1
else
  step "Docker: SKIPPED: no container engine answers; the Docker tests will skip (NANOFAAS_REQUIRE_DOCKER=1 makes this an error)"
fi
# --- end Docker images --------------------------------------------------------------------------

# --- Chromium for the headless-browser attack test (crates/cli/tests/browser.rs) -------------
if ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  step "Chromium: Debian package for the browser test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# --- end Chromium -------------------------------------------------------------------------------

# Rust last of the three: the end-to-end test (crates/e2e) runs the examples' setup steps, which
# need the JDK and Jackson installed above.
step "Rust: build and test the workspace"
# Integration tests start other packages' binaries (nanofaas, nanofaas-watchdog, the test
# runtime): build every binary first, whatever order the test runner builds in.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace
fi

# --- Fuzzing (crates/fuzz, docs/testing.md#fuzzing) -------------------------------------------
# Every fuzz target for a bounded time (NANOFAAS_FUZZ_SECONDS each, 12 by default: 6 targets,
# about 75 s); a new seed each run, printed so that a finding can be reproduced. A finding fails
# the run and leaves the minimised input under target/fuzz/<target>/.
fuzz_seed="${NANOFAAS_FUZZ_SEED:-$(date +%s)}"
step "Fuzz: each target for ${NANOFAAS_FUZZ_SECONDS:-12} s, seed $fuzz_seed"
cargo run -q -p nanofaas-fuzz -- --seconds "${NANOFAAS_FUZZ_SECONDS:-12}" --seed "$fuzz_seed"
# --- end fuzzing -------------------------------------------------------------------------------

# --- API conformance (openapi.yaml against the live server) -----------------------------------
step "API: openapi.yaml against the running control plane (schemathesis)"
scripts/api-conformance.sh
# --- end API conformance -----------------------------------------------------------------------

step "all tests passed"
