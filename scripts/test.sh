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
#   5. API conformance (schemathesis) and the README's tour run verbatim (scripts/tour-check.sh).
#
# It ends with a table: each tier's passed/failed/skipped counts and time, and the whole time
# (printed on failure too). A tier is one line: `tier NAME COUNTER COMMAND...`
# (scripts/lib/tiers.sh lists the counters; `none` for steps that only install or build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/tiers.sh
tiers_start

# --- Python runtime (runtimes/python) ---------------------------------------------------------
py_venv="${NANOFAAS_VENV:-$PWD/.venv}"
tier "Python runtime: venv (install)" none scripts/python-env.sh "$py_venv"
tier "Python runtime (pytest)" pytest "$py_venv/bin/python" -m pytest runtimes/python/tests -q -p no:cacheprovider
# The runtime's type hints (it ships py.typed), checked with mypy as configured in its pyproject.toml.
tier "Python runtime: type check (mypy)" none "$py_venv/bin/python" -m mypy --config-file runtimes/python/pyproject.toml runtimes/python/src
# --- end Python runtime ------------------------------------------------------------------------

# --- The seed plan's own Python runtime tests (runtimes/python/tools/seed_tests.py) ------------
# Read from the plan's text at test time (not kept here) and run as the plan runs them; SKIPPED
# without the plan ($NANOFAAS_SEED_PLAN, else ../shared/seed/ next to the repository),
# mandatory with NANOFAAS_REQUIRE_SEED=1.
tier "Python runtime: the seed plan's Task 9 tests" pytest "$py_venv/bin/python" runtimes/python/tools/seed_tests.py
# --- end seed plan tests -----------------------------------------------------------------------

# --- Java runtime (runtimes/java) -------------------------------------------------------------
tier "Java runtime: Debian packages (install)" none scripts/java-env.sh
tier "Java runtime (JUnit 5)" junit runtimes/java/build.sh test
# The Java example handler built as Java users build theirs: Maven offline from Debian's Maven
# repository (installs maven and its plugins' Debian packages as root), compared with the
# documented javac equivalent; then the Maven build the e2e test deploys (examples/manifest.yaml).
tier "Java example: Maven build vs the javac equivalent" counts examples/java-hello/build.sh check
tier "Java example: hello-java built with Maven (offline)" none examples/java-hello/build.sh maven
# --- end Java runtime --------------------------------------------------------------------------

# --- Docker images (deploy/, scripts/docker-images.sh) -----------------------------------------
# The images the Docker tests run, built from the project's files; reused when their inputs did
# not change (the first run on a machine builds local Debian bases: a few minutes).
if docker version >/dev/null 2>&1; then
  tier "Docker: images for the Docker tests (build)" none scripts/docker-images.sh
elif [[ ${NANOFAAS_REQUIRE_DOCKER:-} == 1 ]]; then
  echo "NANOFAAS_REQUIRE_DOCKER=1 but no container engine answers ('docker version' failed)" >&2
  exit 1
else
  printf '\n==> Docker: SKIPPED: no container engine answers; the Docker tests will skip (NANOFAAS_REQUIRE_DOCKER=1 makes this an error)\n'
  tier_skipped "Docker: images (no container engine)"
fi
# --- end Docker images --------------------------------------------------------------------------

# --- Chromium for the browser tests (crates/cli/tests/browser.rs, dashboard.rs) --------------
if ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  tier "Chromium: Debian package for the browser test (install)" none \
    bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null'
fi
# --- end Chromium -------------------------------------------------------------------------------

# Rust last of the three: the end-to-end test (crates/e2e) runs the examples' setup steps, which
# need the JDK and Jackson installed above.
# Integration tests start other packages' binaries (nanofaas, nanofaas-watchdog, the test
# runtime): build every binary first, whatever order the test runner builds in.
tier "Rust: build the workspace" none cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  tier "Rust: unit, integration, e2e (nextest)" nextest cargo nextest run --workspace --no-fail-fast
  tier "Rust: doc tests" cargo-test cargo test --workspace --doc
else
  tier "Rust: unit, integration, e2e, doc (cargo test)" cargo-test cargo test --workspace
fi

# --- Fuzzing (crates/fuzz, docs/testing.md#fuzzing) -------------------------------------------
# Every fuzz target for a bounded time (NANOFAAS_FUZZ_SECONDS each, 12 by default: 6 targets,
# about 75 s); a new seed each run, printed so that a finding can be reproduced. A finding fails
# the run and leaves the minimised input under target/fuzz/<target>/.
fuzz_seed="${NANOFAAS_FUZZ_SEED:-$(date +%s)}"
tier "Fuzz: ${NANOFAAS_FUZZ_SECONDS:-12} s a target, seed $fuzz_seed" fuzz \
  cargo run -q -p nanofaas-fuzz -- --seconds "${NANOFAAS_FUZZ_SECONDS:-12}" --seed "$fuzz_seed"
# --- end fuzzing -------------------------------------------------------------------------------

# --- API conformance (openapi.yaml against the live server) -----------------------------------
tier "API: openapi.yaml (schemathesis)" schemathesis scripts/api-conformance.sh
# --- end API conformance -----------------------------------------------------------------------

# --- The README's tour, verbatim, against `nanofaas up --listen` (scripts/tour-check.sh) ------
tier "README tour (tour-check.sh)" counts scripts/tour-check.sh target/debug
# --- end README tour ---------------------------------------------------------------------------
