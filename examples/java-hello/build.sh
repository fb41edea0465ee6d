#!/usr/bin/env bash
# Builds the Java runtime (runtimes/java/build.sh) and this example's handler jar,
# examples/java-hello/build/hello.jar (the class plus its META-INF/services registration), the way
# a Java user builds a handler: Maven, from this folder's pom.xml, offline, with the plugins of
# Debian's Maven repository and the function API from the runtime's build (runtimes/java/build/m2).
# Does nothing when nothing changed (well under a second then).
#
# Usage: examples/java-hello/build.sh [maven|javac|check]
#   (none)  Maven when it can be had (scripts/java-env.sh --maven installs it as root), else javac
#   maven   Maven only: fails when it cannot run
#   javac   the documented equivalent without Maven: javac and jar, the same entries and pom files
#   check   both, into separate folders, and compares their entries and pom files (a test: prints
#           "java-example-build: N passed, N failed")
#
# Exit codes: 0 built or up to date (check: both builds agree), 1 a step failed, 2 bad usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
mode=${1:-auto}
case "$mode" in
  auto|maven|javac|check) ;;
  *) echo "java-hello: unknown mode '$mode' (expected maven, javac or check)" >&2; exit 2 ;;
esac
say() { printf 'java-hello: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

"$repo/runtimes/java/build.sh" >&2 || die "the Java runtime build failed"
export NANOFAAS_JAVA_BUILD_DIR=$repo/runtimes/java/build
api_jar=$NANOFAAS_JAVA_BUILD_DIR/nanofaas-function-api.jar
settings=$repo/runtimes/java/maven-settings.xml

# The pom's coordinates, for the javac build's META-INF/maven entries.
pom_value() { sed -n "s:^  <$1>\\(.*\\)</$1>\$:\\1:p" "$here/pom.xml" | head -n 1; }
group=$(pom_value groupId) artifact=$(pom_value artifactId) version=$(pom_value version)

# build_maven OUT_DIR: Maven's build in OUT_DIR/maven, the jar copied to OUT_DIR/hello.jar.
build_maven() {
  local out=$1 env_out
  env_out=$("$repo/scripts/java-env.sh" --maven) || return 1
  local NANOFAAS_MVN='' NANOFAAS_JAVA_HOME='' NANOFAAS_JAVA_RUNTIME_CP=''
  eval "$env_out"
  say "mvn -o package (offline, Debian's Maven repository)"
  (cd "$here" && JAVA_HOME=$NANOFAAS_JAVA_HOME "$NANOFAAS_MVN" -o -q -B -Dstyle.color=never -Daether.offline.protocols=file \
      -s "$settings" -Dhandler.build.dir="$out/maven" package >&2) || return 1
  cp "$out/maven/hello.jar" "$out/hello.jar"
}

# build_javac OUT_DIR: the same jar with javac and jar.
build_javac() {
  local out=$1 env_out
  env_out=$("$repo/scripts/java-env.sh" --runtime-only) || return 1
  local NANOFAAS_JAVA_HOME='' NANOFAAS_JAVA_RUNTIME_CP=''
  eval "$env_out"
  local classes=$out/javac/classes meta
  rm -rf "$out/javac"
  mkdir -p "$classes"
  mapfile -t sources < <(find "$here/src/main/java" -name '*.java' | LC_ALL=C sort)
  "$NANOFAAS_JAVA_HOME/bin/javac" --release 17 -Xlint:all -Werror -encoding UTF-8 -d "$classes" \
    -cp "$api_jar" "${sources[@]}" || return 1
  cp -r "$here/src/main/resources/." "$classes/"
  meta=$classes/META-INF/maven/$group/$artifact
  mkdir -p "$meta"
  cp "$here/pom.xml" "$meta/pom.xml"
  printf 'artifactId=%s\ngroupId=%s\nversion=%s\n' "$artifact" "$group" "$version" >"$meta/pom.properties"
  "$NANOFAAS_JAVA_HOME/bin/jar" --create --file "$out/hello.jar" -C "$classes" . || return 1
}

if [[ $mode == check ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  passed=0 failed=0
  if build_maven "$tmp/m" && build_javac "$tmp/j"; then
    passed=$((passed + 1))
    entries() { unzip -Z1 "$1" | grep -v '/$' | grep -v '^META-INF/MANIFEST.MF$' | LC_ALL=C sort; }
    if diff <(entries "$tmp/m/hello.jar") <(entries "$tmp/j/hello.jar") >&2; then
      passed=$((passed + 1))
    else
      say "FAILED: the Maven and javac jars have different entries"; failed=$((failed + 1))
    fi
    same=1
    for f in "META-INF/maven/$group/$artifact/pom.xml" "META-INF/maven/$group/$artifact/pom.properties" \
        META-INF/services/dev.nanofaas.function.FunctionHandler; do
      cmp -s <(unzip -p "$tmp/m/hello.jar" "$f") <(unzip -p "$tmp/j/hello.jar" "$f") \
        || { say "FAILED: $f differs"; same=0; }
    done
    if [[ $same == 1 ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  else
    say "FAILED: a build did not succeed"; failed=$((failed + 1))
  fi
  printf 'java-example-build: %d passed, %d failed\n' "$passed" "$failed"
  printf 'TIER-COUNTS passed=%d failed=%d skipped=0\n' "$passed" "$failed"
  [[ $failed == 0 ]]
  exit
fi

build=$here/build
jar=$build/hello.jar
fingerprint=$( { echo "$mode"; sha256sum "$here/build.sh" "$here/pom.xml" "$api_jar" "$settings";
  (cd "$here" && find src -type f | LC_ALL=C sort | xargs sha256sum); } | sha256sum | cut -d' ' -f1)
if [[ -f $jar && "$(cat "$build/.fingerprint" 2>/dev/null)" == "$fingerprint" ]]; then
  say "up to date: $jar"
  exit 0
fi
rm -rf "$jar" "$build/.fingerprint"
mkdir -p "$build"
case "$mode" in
  maven) build_maven "$build" || die "the Maven build failed" ;;
  javac) build_javac "$build" || die "the javac build failed" ;;
  auto)
    if ! build_maven "$build"; then
      say "the Maven build could not run; building the same jar with javac and jar instead"
      build_javac "$build" || die "the javac build failed"
    fi
    ;;
esac
printf '%s\n' "$fingerprint" >"$build/.fingerprint"
say "built $jar"
