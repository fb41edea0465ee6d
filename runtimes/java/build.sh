#!/usr/bin/env bash
# Builds the nanofaas Java runtime with javac alone (no Maven, no Gradle) into runtimes/java/build/:
#   build/nanofaas-function-api.jar  the function API handlers compile against (function-api/:
#                                dev.nanofaas.function, JDK types only), also installed with its
#                                pom.xml into the Maven repository build/m2 (for handler builds
#                                with Maven, see the README)
#   build/nanofaas-runtime.jar   the runtime (Main-Class dev.nanofaas.runtime.Main; its manifest
#                                Class-Path names the function API and the Debian Jackson jars)
#   build/nanofaas-runtime.jsa   AppCDS archive made by a training run, used by bin/nanofaas-java-runtime
#   build/java                   the java binary the archive belongs to
#   build/classpath              the dependency jars, for the launcher
#
# Usage: runtimes/java/build.sh [build|test|clean]
#   build (default)  compile, package and archive; does nothing when nothing changed
#   test             build, then compile and run the JUnit 5 tests with the console launcher
#   clean            remove build/
#
# Exit codes: 0 ok, 1 a build step or a test failed, 2 bad usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=$here/build
cmd=${1:-build}

say() { printf 'java-build: %s\n' "$*" >&2; }
die() { printf 'java-build: error: %s\n' "$*" >&2; exit 1; }

case "$cmd" in
  build|test) ;;
  clean) rm -rf "$build"; say "removed build/"; exit 0 ;;
  -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build.sh: unknown command '$cmd' (expected build, test or clean)" >&2; exit 2 ;;
esac

if [[ $cmd == test ]]; then
  env_out=$("$repo/scripts/java-env.sh") || die "scripts/java-env.sh failed"
else
  env_out=$("$repo/scripts/java-env.sh" --runtime-only) || die "scripts/java-env.sh failed"
fi
NANOFAAS_JAVA_HOME='' NANOFAAS_JAVA_RUNTIME_CP='' NANOFAAS_JUNIT_CONSOLE=''
eval "$env_out"
java=$NANOFAAS_JAVA_HOME/bin/java
javac=$NANOFAAS_JAVA_HOME/bin/javac
jar_tool=$NANOFAAS_JAVA_HOME/bin/jar

mkdir -p "$build"
runtime_jar=$build/nanofaas-runtime.jar
archive=$build/nanofaas-runtime.jsa
api_jar=$build/nanofaas-function-api.jar
# The function API's coordinates, from its pom.xml (the one place they are written).
api_version=$(sed -n 's:^  <version>\(.*\)</version>$:\1:p' "$here/function-api/pom.xml" | head -n 1)
[[ -n $api_version ]] || die "no <version> in function-api/pom.xml"
api_repo_dir=$build/m2/dev/nanofaas/nanofaas-function-api/$api_version

# Fingerprint of everything the jar depends on: source paths and contents, the dependency jars,
# the JDK and this script. A change anywhere rebuilds; otherwise the build is a no-op.
fingerprint() {
  {
    printf '%s\n' "$NANOFAAS_JAVA_HOME" "$NANOFAAS_JAVA_RUNTIME_CP"
    "$java" -version 2>&1
    (cd "$here" && find src/main function-api -type f | LC_ALL=C sort | xargs sha256sum)
    sha256sum "$here/build.sh" "$here/bin/nanofaas-java-runtime"
    IFS=: read -ra deps <<<"$NANOFAAS_JAVA_RUNTIME_CP"
    for d in "${deps[@]}"; do stat -L -c '%n %s %Y' "$d"; done
  } | sha256sum | cut -d' ' -f1
}

main_fp=$(fingerprint)
if [[ -f $runtime_jar && -f $archive && -f $api_jar && -f $build/java && -f $build/classpath && "$(cat "$build/.main-fingerprint" 2>/dev/null)" == "$main_fp" ]]; then
  say "runtime up to date: $runtime_jar"
else
  say "compiling the runtime"
  rm -rf "$build/classes" "$build/api-classes" "$runtime_jar" "$archive" "$api_jar" "$build/m2" "$build/m2-local" "$build/.main-fingerprint"
  # The function API first: JDK only on its classpath, so it cannot come to depend on Jackson.
  mkdir -p "$build/api-classes/META-INF/maven/dev.nanofaas/nanofaas-function-api"
  mapfile -t api_sources < <(find "$here/function-api/src/main/java" -name '*.java' | LC_ALL=C sort)
  "$javac" --release 17 -Xlint:all -Werror -encoding UTF-8 -d "$build/api-classes" "${api_sources[@]}" \
    || die "javac (function-api) failed"
  # What Maven's jar plugin puts in the jar too: the pom and its coordinates.
  cp "$here/function-api/pom.xml" "$build/api-classes/META-INF/maven/dev.nanofaas/nanofaas-function-api/pom.xml"
  printf 'groupId=dev.nanofaas\nartifactId=nanofaas-function-api\nversion=%s\n' "$api_version" \
    >"$build/api-classes/META-INF/maven/dev.nanofaas/nanofaas-function-api/pom.properties"
  "$jar_tool" --create --file "$api_jar" -C "$build/api-classes" . || die "jar (function-api) failed"
  # A Maven repository of one artifact, for handler builds (`mvn -o`, see the README).
  mkdir -p "$api_repo_dir"
  cp "$api_jar" "$api_repo_dir/nanofaas-function-api-$api_version.jar"
  cp "$here/function-api/pom.xml" "$api_repo_dir/nanofaas-function-api-$api_version.pom"
  mkdir -p "$build/classes"
  mapfile -t sources < <(find "$here/src/main/java" -name '*.java' | LC_ALL=C sort)
  # -XDstringConcat=inline: plain StringBuilder concatenation instead of invokedynamic, whose
  # bootstrap spins method-handle classes at run time that no CDS archive can hold (~20-40 ms of
  # cold start, measured).
  "$javac" --release 17 -XDstringConcat=inline -Xlint:all -Werror -encoding UTF-8 -d "$build/classes" \
    -cp "$api_jar:$NANOFAAS_JAVA_RUNTIME_CP" "${sources[@]}" || die "javac failed"
  # Manifest Class-Path entries are space-separated URLs; absolute paths are valid URLs here.
  # (`jar` folds long manifest lines itself.)
  printf 'Main-Class: dev.nanofaas.runtime.Main\nClass-Path: %s\n' "$api_jar ${NANOFAAS_JAVA_RUNTIME_CP//:/ }" \
    >"$build/manifest.txt"
  "$jar_tool" --create --file "$runtime_jar" --manifest "$build/manifest.txt" -C "$build/classes" . \
    || die "jar failed"
  printf '%s\n' "$java" >"$build/java"
  printf '%s\n' "$api_jar:$NANOFAAS_JAVA_RUNTIME_CP" >"$build/classpath"
  say "training run for the AppCDS archive"
  JAVA="$java" "$here/bin/nanofaas-java-runtime" --cds-training "$archive" \
    || die "the CDS training run failed"
  [[ -f $archive ]] || die "the CDS training run made no archive"
  printf '%s\n' "$main_fp" >"$build/.main-fingerprint"
  say "built $runtime_jar ($(stat -c %s "$runtime_jar") bytes) and $archive ($(stat -c %s "$archive") bytes)"
fi

[[ $cmd == test ]] || exit 0

test_fp=$( { printf '%s\n' "$main_fp" "$NANOFAAS_JUNIT_CONSOLE"
  (cd "$here" && find src/test -type f | LC_ALL=C sort | xargs sha256sum); } | sha256sum | cut -d' ' -f1)
if [[ -d $build/test-classes && "$(cat "$build/.test-fingerprint" 2>/dev/null)" == "$test_fp" ]]; then
  say "tests up to date"
else
  say "compiling the tests"
  rm -rf "$build/test-classes" "$build/.test-fingerprint"
  mkdir -p "$build/test-classes"
  mapfile -t tests < <(find "$here/src/test/java" -name '*.java' | LC_ALL=C sort)
  "$javac" --release 17 -Xlint:all -Xlint:-try -encoding UTF-8 -d "$build/test-classes" \
    -cp "$runtime_jar:$NANOFAAS_JUNIT_CONSOLE" "${tests[@]}" || die "javac (tests) failed"
  printf '%s\n' "$test_fp" >"$build/.test-fingerprint"
fi

# A handler jar that bundles its own com.fasterxml.jackson classes (a stand-in for another Jackson
# version), compiled against the function API alone: HandlerIsolation tests run it.
clash_src=$here/src/test/handlers/jackson-clash
clash_jar=$build/test-handlers/jackson-clash.jar
rm -rf "$build/test-handlers"
mkdir -p "$build/test-handlers/jackson-clash"
mapfile -t clash_sources < <(find "$clash_src" -name '*.java' | LC_ALL=C sort)
"$javac" --release 17 -encoding UTF-8 -d "$build/test-handlers/jackson-clash" -cp "$api_jar" "${clash_sources[@]}" \
  || die "javac (test handler jackson-clash) failed"
cp -r "$clash_src/META-INF" "$build/test-handlers/jackson-clash/"
"$jar_tool" --create --file "$clash_jar" -C "$build/test-handlers/jackson-clash" . || die "jar (jackson-clash) failed"

say "running the JUnit 5 tests"
log=$build/junit.log
set +e
"$java" -Dnanofaas.java.dir="$here" -Dnanofaas.test.clash-jar="$clash_jar" -jar "$NANOFAAS_JUNIT_CONSOLE" \
  --class-path "$build/test-classes:$runtime_jar" \
  --scan-class-path "$build/test-classes" \
  --disable-banner --disable-ansi-colors --details=tree --fail-if-no-tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(sed -n 's/^\[ *\([0-9]*\) tests successful *\]$/\1/p' "$log")
failed=$(sed -n 's/^\[ *\([0-9]*\) tests failed *\]$/\1/p' "$log")
printf 'junit: %s passed, %s failed\n' "${passed:-0}" "${failed:-0}"
[[ $status -eq 0 ]] || die "JUnit tests failed (console launcher exit $status)"
