#!/bin/sh
# hello-file: a FILE-mode function. The watchdog writes the request ({"input": ..., "metadata": ...})
# to $INPUT_FILE, runs this script, and reads the output from $OUTPUT_FILE once it exits 0.
#
# {"name": "Ada"} writes {"greeting": "Hello, Ada!", "runtime": "file", "pid": <this shell>, "bytes": <request size>}.
# {"fail": "why"} exits 3 with a message on stderr: the caller gets FUNCTION_ERROR.
# Plain POSIX sh and sed: the name is read with a pattern, so a name with an escaped quote in it
# is cut short (a real function would use a JSON tool).
set -eu

: "${INPUT_FILE:?hello-file: INPUT_FILE is not set (run me in FILE mode)}"
: "${OUTPUT_FILE:?hello-file: OUTPUT_FILE is not set (run me in FILE mode)}"

request=$(cat "$INPUT_FILE")
if printf '%s' "$request" | grep -q '"fail"[[:space:]]*:'; then
  why=$(printf '%s' "$request" | sed -n 's/.*"fail"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
  echo "hello-file: failing on purpose: ${why:-no reason given}" >&2
  exit 3
fi
name=$(printf '%s' "$request" | sed -n 's/.*"name"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
bytes=$(wc -c <"$INPUT_FILE" | tr -d ' ')
printf '{"greeting": "Hello, %s!", "runtime": "file", "pid": %d, "bytes": %d}\n' \
  "${name:-world}" "$$" "$bytes" >"$OUTPUT_FILE"
