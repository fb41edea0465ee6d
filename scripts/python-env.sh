#!/usr/bin/env bash
# Creates or updates the Python virtual environment for the Python runtime and its tests.
#
#   scripts/python-env.sh [VENV_DIR]
#
# VENV_DIR defaults to $NANOFAAS_VENV, else .venv at the repository root. The runtime package
# (runtimes/python) is installed editable with its `test` extra, constrained to the exact versions
# of runtimes/python/constraints.txt (pyproject.toml has version ranges; the constraints make the
# venv reproducible). A stamp file inside the venv records a hash of pyproject.toml,
# constraints.txt and the interpreter version; when it matches, the runtime imports and the
# constrained versions are the installed ones, pip is not run at all, so a second call takes
# well under a second.
#
# Needs python3 >= 3.11 (or python3.11+ on PATH, or $NANOFAAS_PYTHON). On Debian, when the venv
# module is missing and we run as root, python3-venv is installed with apt-get.
#
# Exit codes: 0 ready, 1 could not create or install, 2 no suitable Python.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
pkg="$root/runtimes/python"
venv="${1:-${NANOFAAS_VENV:-$root/.venv}}"
case "$venv" in
  /*) ;;
  *) venv="$PWD/$venv" ;;
esac

say() { printf 'python-env: %s\n' "$*" >&2; }
die() { say "error: $2"; exit "$1"; }

# One preparation of a venv at a time: two runs on the same folder (two tests, two `up`s) would
# otherwise see each other's half-made venv (no pip yet). The second waits, then finds the stamp.
mkdir -p "$(dirname "$venv")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv.lock"
  flock -w 600 9 || die 1 "another python-env.sh has held $venv.lock for 10 minutes"
fi

version_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; }
# As root, the process provider runs functions as unprivileged users of their own: the real
# interpreter (symbolic links followed) and every folder above it must be usable by others.
# Not root: functions run as the caller, any interpreter is fine.
others_can_run() {
  [ "$(id -u)" != 0 ] && return 0
  "$1" - >/dev/null 2>&1 <<'PY'
import os, stat, sys
p = os.path.realpath(sys.executable)
d = os.path.dirname(p)
while True:
    if not os.stat(d).st_mode & stat.S_IXOTH:
        sys.exit(1)
    if d == "/":
        break
    d = os.path.dirname(d)
sys.exit(0 if os.stat(p).st_mode & stat.S_IXOTH else 1)
PY
}
py_version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }
constraints="$pkg/constraints.txt"
stamp_of() { { cat "$pkg/pyproject.toml" "$constraints"; echo "python=$1"; echo "pkg=$pkg"; } | sha256sum | cut -d' ' -f1; }

stamp="$venv/.nanofaas-python-env"
vpy="$venv/bin/python"

# True when the venv imports the runtime and every package of constraints.txt that is installed
# has exactly its version there, the runtime's direct dependencies and test tools being installed
# (another tool installing into the same venv may have moved one).
pins_hold() {
  "$1" - "$constraints" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
import nanofaas_runtime  # noqa: F401
required = {"flask", "werkzeug", "gunicorn", "pytest", "mypy"}
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    name = name.strip()
    try:
        if version(name) != pinned.strip():
            sys.exit(1)
    except PackageNotFoundError:
        if name in required:
            sys.exit(1)
PY
}

# --- already up to date? ---------------------------------------------------------------------
if [ -x "$vpy" ] && version_ok "$vpy" && ! others_can_run "$vpy"; then
  say "venv $venv uses a Python other users cannot run (functions run as other users when root); recreating it"
  rm -rf "$venv"
fi
if [ -x "$vpy" ] && version_ok "$vpy"; then
  want="$(stamp_of "$(py_version "$vpy")")"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && pins_hold "$vpy"; then
    say "venv $venv is up to date (Python $(py_version "$vpy"))"
    exit 0
  fi
elif [ -e "$venv" ]; then
  say "venv $venv has no usable Python >= 3.11; recreating it"
  rm -rf "$venv"
fi

# --- create it -------------------------------------------------------------------------------
if [ ! -x "$vpy" ]; then
  python=""
  fallback=""
  for cand in ${NANOFAAS_PYTHON:-} python3 python3.13 python3.12 python3.11 /usr/bin/python3 /usr/local/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1 && version_ok "$cand"; then
      if others_can_run "$cand"; then
        python="$(command -v "$cand")"
        break
      fi
      fallback="${fallback:-$(command -v "$cand")}"
    fi
  done
  if [ -z "$python" ] && [ -n "$fallback" ]; then
    say "warning: $fallback cannot be run by other users; functions running as users of their own (the process provider as root) will not start"
    python="$fallback"
  fi
  if [ -z "$python" ]; then
    found="no python3 on PATH"
    if command -v python3 >/dev/null 2>&1; then
      found="python3 is $(python3 --version 2>&1 || true)"
    fi
    die 2 "Python >= 3.11 is required for the Python runtime ($found). Install python3 (>= 3.11) or set NANOFAAS_PYTHON to one."
  fi
  if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "the venv module is missing; installing python3-venv with apt-get"
      apt-get update -qq >/dev/null || die 1 "apt-get update failed"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
        || die 1 "apt-get install python3-venv failed"
    else
      die 1 "$python has no working venv module (on Debian: apt-get install python3-venv)"
    fi
  fi
  say "creating venv $venv with $python (Python $(py_version "$python"))"
  "$python" -m venv "$venv" || die 1 "could not create the venv at $venv"
fi
want="$(stamp_of "$(py_version "$vpy")")"

# --- install ---------------------------------------------------------------------------------
say "installing runtimes/python with its test extra (exact versions from runtimes/python/constraints.txt)"
"$vpy" -m pip install --disable-pip-version-check --no-input -q -c "$constraints" -e "$pkg[test]" \
  || die 1 "pip could not install runtimes/python into $venv (see the messages above)"

pins_hold "$vpy" \
  || die 1 "the venv at $venv was installed but the runtime does not import or a version differs from constraints.txt"

printf '%s\n' "$want" >"$stamp"
say "venv $venv is ready"
