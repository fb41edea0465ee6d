#!/usr/bin/env bash
# Makes sure the Java runtime's build and test dependencies are present, and prints where they are.
#
# Needs: a JDK >= 17 (javac), Jackson (libjackson2-databind-java, which pulls core and annotations)
# and JUnit 5 (junit5, for the console launcher). Missing Debian packages are installed with apt-get
# when running as root; otherwise the script names them and exits 1.
#
# Usage: scripts/java-env.sh [--runtime-only | --maven]
#   --runtime-only   only what running the runtime needs (JDK + Jackson), not JUnit.
#   --maven          what the runtime needs plus Maven and the plugins of an offline handler build
#                    from Debian's Maven repository (maven, libmaven-{resources,compiler,jar,
#                    install}-plugin-java, libsurefire-java), not JUnit.
#
# Stdout: shell assignments, one per line, safe to `eval`:
#   NANOFAAS_JAVA_HOME=...           the JDK whose javac was found
#   NANOFAAS_JAVA_RUNTIME_CP=a.jar:b.jar:...   jars the runtime needs at compile and run time
#   NANOFAAS_JUNIT_CONSOLE=...       the JUnit 5 console launcher (a self-contained jar); absent with --runtime-only
#   NANOFAAS_MVN=...                 with --maven: the mvn command
# Progress and errors go to stderr.
#
# Exit codes: 0 ok, 1 something is missing and could not be installed, 2 bad usage.
set -euo pipefail

runtime_only=0
maven=0
case "${1:-}" in
  "") ;;
  --runtime-only) runtime_only=1 ;;
  --maven) runtime_only=1; maven=1 ;;
  -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "java-env.sh: unknown argument '$1' (expected --runtime-only or --maven)" >&2; exit 2 ;;
esac

say() { printf 'java-env: %s\n' "$*" >&2; }
die() { printf 'java-env: error: %s\n' "$*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian-based systems only"

# Debian packages this environment needs.
packages=(libjackson2-databind-java libjackson2-core-java libjackson2-annotations-java)
[[ $runtime_only == 1 ]] || packages+=(junit5)
[[ $maven == 0 ]] || packages+=(maven libmaven-resources-plugin-java libmaven-compiler-plugin-java
  libmaven-jar-plugin-java libmaven-install-plugin-java libsurefire-java)

# A JDK >= 17: honour JAVA_HOME, else javac on PATH, else install Debian's JDK 17.
find_javac() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/javac" ]]; then
    printf '%s\n' "$JAVA_HOME/bin/javac"
  elif command -v javac >/dev/null 2>&1; then
    readlink -f "$(command -v javac)"
  fi
}
javac_bin=$(find_javac || true)
[[ -n "$javac_bin" ]] || packages+=(openjdk-17-jdk-headless)

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]; }
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing Debian packages: ${missing[*]} (install them as root: apt-get install -y ${missing[*]})"
  fi
  say "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    say "apt-get install failed; refreshing the package lists and trying once more"
    apt-get update -q >&2 || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
      || die "apt-get install ${missing[*]} failed"
  fi
  [[ -n "$javac_bin" ]] || javac_bin=$(find_javac || true)
fi

[[ -n "$javac_bin" ]] || die "no javac found (set JAVA_HOME or install openjdk-17-jdk-headless)"
java_home=$(dirname "$(dirname "$javac_bin")")
[[ -x "$java_home/bin/java" ]] || die "$java_home/bin/java is missing next to $javac_bin"
# `javac -version` prints e.g. "javac 17.0.15"; the feature release is the first number.
javac_version=$("$javac_bin" -version 2>&1 | awk '{print $2}')
feature=${javac_version%%.*}
[[ "$feature" =~ ^[0-9]+$ && "$feature" -ge 17 ]] \
  || die "$javac_bin is version '$javac_version'; JDK 17 or newer is required (set JAVA_HOME)"

# The jar called NAME that package PKG installs under /usr/share/java, found through dpkg's file list:
# the unversioned name Debian links when present, else the newest versioned one.
jar_of() {
  local pkg=$1 name=$2 files jar
  files=$(dpkg-query -L "$pkg" 2>/dev/null) || die "dpkg knows no files of package $pkg"
  jar=$(grep -E "^/usr/share/java/${name}\.jar$" <<<"$files" || true)
  if [[ -z "$jar" ]]; then
    jar=$(grep -E "^/usr/share/java/${name}-[0-9][^/]*\.jar$" <<<"$files" | sort -V | tail -n 1 || true)
  fi
  [[ -n "$jar" && -f "$jar" ]] || die "package $pkg provides no ${name}.jar under /usr/share/java"
  printf '%s\n' "$jar"
}

runtime_cp=$(jar_of libjackson2-databind-java jackson-databind)
runtime_cp+=":$(jar_of libjackson2-core-java jackson-core)"
runtime_cp+=":$(jar_of libjackson2-annotations-java jackson-annotations)"

printf 'NANOFAAS_JAVA_HOME=%q\n' "$java_home"
printf 'NANOFAAS_JAVA_RUNTIME_CP=%q\n' "$runtime_cp"
if [[ $runtime_only == 0 ]]; then
  printf 'NANOFAAS_JUNIT_CONSOLE=%q\n' "$(jar_of junit5 junit-platform-console-standalone)"
fi
if [[ $maven == 1 ]]; then
  mvn_bin=$(command -v mvn) || die "mvn not found after installing maven"
  printf 'NANOFAAS_MVN=%q\n' "$mvn_bin"
fi
