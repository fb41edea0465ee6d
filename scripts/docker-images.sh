#!/usr/bin/env bash
# Builds the nanofaas container images from the project's own files (see deploy/README.md):
#
#   watchdog   nanofaas/watchdog:TAG               the static watchdog, FROM scratch
#   python     nanofaas/python-runtime:TAG         Python runtime (needs watchdog)
#   java       nanofaas/java-runtime:TAG           Java runtime (needs watchdog)
#   examples   nanofaas/example-python-hello:TAG   examples/python-hello on the Python runtime
#              nanofaas/example-java-hello:TAG     examples/java-hello on the Java runtime
#
# Usage: scripts/docker-images.sh [--local-base | --pull] [watchdog|python|java|examples|all]...
#   (no image named: all)
#   --local-base  build the runtimes on the local Debian bases (scripts/docker-base.sh)
#   --pull        pull the official bases (python:3.11-slim, eclipse-temurin:17-jre) first
#   default: an official base already on the engine is used, else the local Debian base.
#
# Every image carries the label dev.nanofaas.inputs, a hash of everything it is built from
# (file contents, never their paths: the watchdog binary, sources, Dockerfile, base and
# watchdog image ids); an image whose inputs did not change is
# reused without building anything, so a second run takes seconds. Parallel runs (test
# processes) wait for each other on a lock.
#
# Environment: NANOFAAS_IMAGE_TAG (default latest); NANOFAAS_PYTHON_BASE, NANOFAAS_JAVA_BASE
# (base images to use as they are); NANOFAAS_WATCHDOG_BIN (a static watchdog to use instead of
# building one); NANOFAAS_DOCKER_CACHE (default ~/.cache/nanofaas/docker); CARGO_TARGET_DIR.
#
# Prints the names of the images it made sure of on stdout; progress goes to stderr.
# Exit codes: 0 ok, 1 a build failed, 2 bad usage.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf 'docker-images: %s\n' "$*" >&2; }
die() { printf 'docker-images: error: %s\n' "$*" >&2; exit 1; }

base_mode=auto
targets=()
for a in "$@"; do
  case "$a" in
    --local-base) base_mode=local ;;
    --pull) base_mode=pull ;;
    watchdog|python|java|examples) targets+=("$a") ;;
    all) targets+=(watchdog python java examples) ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker-images.sh: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done
((${#targets[@]})) || targets=(watchdog python java examples)
want() { local t; for t in "${targets[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }
# Runtime images need the watchdog image, the examples need the runtimes.
want examples && targets+=(python java)
{ want python || want java; } && targets+=(watchdog)

command -v docker >/dev/null 2>&1 || die "the docker command is not installed"
docker version >/dev/null 2>&1 || die "the container engine does not answer (is it running?)"

tag=${NANOFAAS_IMAGE_TAG:-latest}
cache=${NANOFAAS_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nanofaas/docker}
mkdir -p "$cache"
exec 9>"$cache/images.lock"
if ! flock -n 9; then
  say "another build is running; waiting for it"
  flock 9
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/nanofaas-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

# inputs <strings...> -- <files or folders...>: a short hash of the strings and the contents
# and names of the files (caches and bytecode excluded).
inputs() {
  local strings=() paths=()
  while (($#)) && [[ $1 != -- ]]; do strings+=("$1"); shift; done
  shift || true
  paths=("$@")
  {
    printf '%s\n' "${strings[@]}"
    local p
    for p in "${paths[@]}"; do
      # Names relative to the path's parent: the same tree hashes the same wherever it is.
      (cd "$(dirname "$p")" && find "$(basename "$p")" -type f ! -path '*/__pycache__/*' \
        ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    done
  } | sha256sum | cut -c1-16
}

label_of() {
  docker image inspect -f '{{index .Config.Labels "dev.nanofaas.inputs"}}' "$1" 2>/dev/null || true
}

image_id() { docker image inspect -f '{{.Id}}' "$1"; }

# build <image> <inputs> <context> [docker build args...]: builds unless the image has those inputs.
build() {
  local image=$1 hash=$2 ctx=$3; shift 3
  if [[ $(label_of "$image") == "$hash" ]]; then
    say "$image is up to date"
    echo "$image"
    return 0
  fi
  say "building $image"
  local started=$SECONDS
  if ! docker build -q --label "dev.nanofaas.inputs=$hash" -t "$image" "$@" "$ctx" >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    die "building $image failed"
  fi
  say "built $image in $((SECONDS - started)) s"
  echo "$image"
}

# base_image python|java: the base image to build a runtime on, per the base mode.
base_image() {
  local flavor=$1 official override
  if [[ $flavor == python ]]; then
    official=python:3.11-slim; override=${NANOFAAS_PYTHON_BASE:-}
  else
    official=eclipse-temurin:17-jre; override=${NANOFAAS_JAVA_BASE:-}
  fi
  if [[ -n $override ]]; then
    docker image inspect "$override" >/dev/null 2>&1 || docker pull "$override" >&2 \
      || die "base image $override is not on the engine and cannot be pulled"
    echo "$override"; return
  fi
  case $base_mode in
    pull) docker pull "$official" >&2 || die "cannot pull $official (use --local-base without a registry)"
          echo "$official" ;;
    local) "$root/scripts/docker-base.sh" "$flavor" ;;
    auto) if docker image inspect "$official" >/dev/null 2>&1; then echo "$official"
          else "$root/scripts/docker-base.sh" "$flavor"; fi ;;
  esac
}

wd_image=nanofaas/watchdog:$tag
if want watchdog; then
  # The image is the binary plus its Dockerfile: hash their contents, so the same binary given
  # by NANOFAAS_WATCHDOG_BIN (under any path) or built here (cargo is incremental: seconds when
  # nothing changed) gives the same inputs and reuses the image.
  if [[ -n ${NANOFAAS_WATCHDOG_BIN:-} ]]; then
    bin=$NANOFAAS_WATCHDOG_BIN
  else
    say "building the static watchdog (scripts/build-static.sh)"
    bin=$("$root/scripts/build-static.sh" | head -n1) || die "scripts/build-static.sh failed"
  fi
  [[ -f $bin && -x $bin ]] || die "no watchdog binary at $bin"
  wd_hash=$(inputs "$(sha256sum <"$bin" | cut -d' ' -f1)" -- deploy/watchdog/Dockerfile)
  if [[ $(label_of "$wd_image") == "$wd_hash" ]]; then
    say "$wd_image is up to date"
    echo "$wd_image"
  else
    ctx=$work/watchdog
    mkdir -p "$ctx"
    cp "$bin" "$ctx/nanofaas-watchdog"
    cp deploy/watchdog/Dockerfile "$ctx/"
    build "$wd_image" "$wd_hash" "$ctx"
  fi
fi

py_image=nanofaas/python-runtime:$tag
if want python; then
  base=$(base_image python)
  # The runtime's dependencies (the ranges of its pyproject.toml, at the exact versions of its
  # constraints.txt), installed for CPython 3.11 on x86_64 Linux once per set of pins.
  pins=$(python3 - runtimes/python/pyproject.toml <<'PY'
import sys, tomllib
print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
PY
)
  pins="$pins -c runtimes/python/constraints.txt"
  deps=$cache/python-deps/$( { printf '%s' "$pins"; cat runtimes/python/constraints.txt; } | sha256sum | cut -c1-16)
  if [[ ! -f $deps/.complete ]]; then
    say "installing the Python runtime's dependencies ($pins) with pip"
    rm -rf "$deps"
    # shellcheck disable=SC2086 # the pins are separate arguments
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$deps" --no-compile \
      --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 \
      --implementation cp --abi cp311 $pins >&2 || die "pip install of $pins failed"
    rm -rf "$deps/bin"
    touch "$deps/.complete"
  fi
  ctx=$work/python
  mkdir -p "$ctx/site-packages"
  cp -r "$deps/." "$ctx/site-packages/"
  rm -f "$ctx/site-packages/.complete"
  # The runtime and the original SDK's compatibility package (nanofaas.sdk).
  cp -r runtimes/python/src/nanofaas_runtime runtimes/python/src/nanofaas "$ctx/site-packages/"
  find "$ctx/site-packages/nanofaas_runtime" "$ctx/site-packages/nanofaas" -name __pycache__ -prune -exec rm -rf {} +
  cp deploy/python/Dockerfile "$ctx/"
  hash=$(inputs "$(image_id "$base")" "$(image_id "$wd_image")" "$pins" -- \
    deploy/python/Dockerfile runtimes/python/pyproject.toml runtimes/python/constraints.txt runtimes/python/src/nanofaas_runtime \
    runtimes/python/src/nanofaas)
  build "$py_image" "$hash" "$ctx" --build-arg "BASE=$base" --build-arg "WATCHDOG_IMAGE=$wd_image"
fi

java_image=nanofaas/java-runtime:$tag
if want java; then
  base=$(base_image java)
  say "building the Java runtime (runtimes/java/build.sh)"
  "$root/runtimes/java/build.sh" >&2 || die "runtimes/java/build.sh failed"
  read -r deps_cp <runtimes/java/build/classpath
  ctx=$work/java
  mkdir -p "$ctx/java/bin" "$ctx/java/build" "$ctx/java/lib"
  cp runtimes/java/bin/nanofaas-java-runtime "$ctx/java/bin/"
  cp runtimes/java/build/nanofaas-runtime.jar "$ctx/java/build/"
  IFS=: read -ra jars <<<"$deps_cp"
  for j in "${jars[@]}"; do cp -L "$j" "$ctx/java/lib/"; done
  cp deploy/java/Dockerfile "$ctx/"
  hash=$(inputs "$(image_id "$base")" "$(image_id "$wd_image")" -- "$ctx")
  build "$java_image" "$hash" "$ctx" --build-arg "BASE=$base" --build-arg "WATCHDOG_IMAGE=$wd_image"
fi

if want examples; then
  ctx=$work/example-python-hello
  mkdir -p "$ctx"
  cp examples/python-hello/handler.py "$ctx/"
  cp deploy/examples/python-hello/Dockerfile "$ctx/"
  hash=$(inputs "$(image_id "$py_image")" -- "$ctx")
  build "nanofaas/example-python-hello:$tag" "$hash" "$ctx" --build-arg "RUNTIME_IMAGE=$py_image"
fi
if want examples; then
  say "building the hello-java handler jar (examples/java-hello/build.sh)"
  examples/java-hello/build.sh >&2 || die "examples/java-hello/build.sh failed"
  ctx=$work/example-java-hello
  mkdir -p "$ctx"
  cp examples/java-hello/build/hello.jar "$ctx/"
  cp deploy/examples/java-hello/Dockerfile "$ctx/"
  hash=$(inputs "$(image_id "$java_image")" -- "$ctx")
  build "nanofaas/example-java-hello:$tag" "$hash" "$ctx" --build-arg "RUNTIME_IMAGE=$java_image"
fi
