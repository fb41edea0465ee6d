#!/usr/bin/env bash
# Builds the Java runtime (runtimes/java/build.sh) and this example's handler jar,
# examples/java-hello/build/hello.jar (the class plus its META-INF/services registration).
# Does nothing when neither changed (well under a second then).
#
# Exit codes: 0 built or up to date, 1 a step failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=$here/build
jar=$build/hello.jar

"$repo/runtimes/java/build.sh" >&2 || { echo "java-hello: the Java runtime build failed" >&2; exit 1; }
eval "$("$repo/scripts/java-env.sh" --runtime-only)"
runtime_jar=$repo/runtimes/java/build/nanofaas-runtime.jar

fingerprint=$( { sha256sum "$here/build.sh" "$runtime_jar"; (cd "$here" && find src -type f | LC_ALL=C sort | xargs sha256sum); } \
  | sha256sum | cut -d' ' -f1)
if [[ -f $jar && "$(cat "$build/.fingerprint" 2>/dev/null)" == "$fingerprint" ]]; then
  echo "java-hello: up to date: $jar" >&2
  exit 0
fi

rm -rf "$build/classes" "$jar" "$build/.fingerprint"
mkdir -p "$build/classes/META-INF/services"
mapfile -t sources < <(find "$here/src" -name '*.java' | LC_ALL=C sort)
"$NANOFAAS_JAVA_HOME/bin/javac" --release 17 -Xlint:all -Werror -encoding UTF-8 -d "$build/classes" \
  -cp "$runtime_jar:$NANOFAAS_JAVA_RUNTIME_CP" "${sources[@]}" \
  || { echo "java-hello: javac failed" >&2; exit 1; }
echo dev.nanofaas.examples.Hello >"$build/classes/META-INF/services/dev.nanofaas.runtime.FunctionHandler"
"$NANOFAAS_JAVA_HOME/bin/jar" --create --file "$jar" -C "$build/classes" . \
  || { echo "java-hello: jar failed" >&2; exit 1; }
printf '%s\n' "$fingerprint" >"$build/.fingerprint"
echo "java-hello: built $jar" >&2
