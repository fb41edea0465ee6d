#!/usr/bin/env bash
# Checks the running control plane against openapi.yaml with schemathesis (from PyPI, in the
# project's venv): every documented operation is called with generated valid and invalid
# requests, and every answer must have a documented status, content type, headers and schema.
#
# Two passes. :invoke and :enqueue get every check but two: a function's failure is a
# legitimate, documented 5xx answer of :invoke, and schemathesis counts an undeclared extra
# header as "invalid data that must be refused" (no HTTP server refuses unknown headers). Every
# other operation gets all checks, including those two.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NANOFAAS_VENV:-.venv}
EXAMPLES=${CONFORMANCE_EXAMPLES:-60}

./scripts/python-env.sh "$VENV" >/dev/null
if ! "$VENV/bin/python" -c "import schemathesis" 2>/dev/null; then
  echo "installing schemathesis into $VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==4.32.5"
fi
cargo build --quiet -p nanofaas-cli

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_line() { # file pattern
  for _ in $(seq 1 200); do
    if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}

python3 scripts/lib/echo_server.py 0 >"$work/echo.out" 2>&1 &
pids+=($!)
wait_line "$work/echo.out" "port="
echo_port=$(sed -n 's/^port=//p' "$work/echo.out")

./target/debug/nanofaas serve --listen 127.0.0.1:0 --state-dir "$work/state" --log-level warn \
  --set max_body_bytes=65536 --set provider.type=none >"$work/cp.out" 2>"$work/cp.err" &
pids+=($!)
wait_line "$work/cp.out" "listening on"
base=$(sed -n 's/^nanofaas listening on //p' "$work/cp.out")

curl -sf -XPOST "$base/v1/functions" -H 'content-type: application/json' \
  -d "{\"name\":\"echo\",\"executionMode\":\"POOL\",\"endpointUrl\":\"http://127.0.0.1:$echo_port/invoke\"}" >/dev/null

# A real execution for GET /v1/executions/{id} (scripts/lib/schemathesis.toml).
CONFORMANCE_EXECUTION_ID=$(curl -sf -XPOST "$base/v1/functions/echo:invoke" -H 'content-type: application/json' \
  -d '{"input": "seed"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["executionId"])')
export CONFORMANCE_EXECUTION_ID

common=(--url "$base" --max-examples "$EXAMPLES" --mode all --seed 1 --no-color)
conformance=status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

st() { "$VENV/bin/schemathesis" --config-file scripts/lib/schemathesis.toml run openapi.yaml "${common[@]}" "$@"; }

echo "==> conformance: every operation but :invoke and :enqueue, all checks"
# The dashboard's event stream never ends (it is checked by crates/cli/tests/dashboard.rs).
st --checks "$conformance,not_a_server_error,negative_data_rejection" \
  --exclude-operation-id invokeFunction --exclude-operation-id enqueueFunction \
  --exclude-operation-id dashboardStream
echo "==> conformance: :invoke and :enqueue"
# The first pass may have replaced or deleted "echo" (it exercises PUT and DELETE): put it back.
curl -sf -XPUT "$base/v1/functions/echo" -H 'content-type: application/json' \
  -d "{\"executionMode\":\"POOL\",\"endpointUrl\":\"http://127.0.0.1:$echo_port/invoke\"}" >/dev/null
st --checks "$conformance" --include-operation-id invokeFunction --include-operation-id enqueueFunction
if grep -q "panicked" "$work/cp.err"; then
  echo "the control plane panicked during the run:" >&2; cat "$work/cp.err" >&2; exit 1
fi
echo "conformance: ok"
