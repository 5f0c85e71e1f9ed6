#!/usr/bin/env bash
# The operator API against its own OpenAPI document (issue 15, item 3): starts switchyard on
# the embedded defaults with a supervisor token and reads closed on loopback, checks that the
# document it serves is docs/openapi.json, and runs schemathesis (PyPI, a property-based API
# tester) over every operation: no 5xx, only documented status codes and content types,
# responses that match their schemas, invalid input refused with a 4xx, and no operation that
# answers without the token. positive_data_acceptance is off: most well-formed requests name an
# order, meter, campaign or exception that does not exist, and 404 is the right answer.
# Needs target/release/switchyard (tests/run.sh builds it). Schemathesis goes into a venv
# under target/ (reused when present).
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${SWITCHYARD_BIN:-target/release/switchyard}
venv="$PWD/target/schemathesis-venv"
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis>=4,<5"
fi
"$venv/bin/st" --version

work=$(mktemp -d)
token=fuzz-supervisor-token-$$
port=${SWITCHYARD_FUZZ_PORT:-19464}
hash=$("$bin" token hash --name fuzz --role supervisor <<<"$token" | tail -n1)
export SWITCHYARD__DATA_DIR="$work/data"
export SWITCHYARD__HTTP__LISTEN="127.0.0.1:$port"
export SWITCHYARD__HTTP__AUTH__TOKENS="[\"$hash\"]"
export SWITCHYARD__HTTP__AUTH__OPEN_READS_ON_LOOPBACK=false
# No request budget: the fuzzer's pace would spend it (the 429 answer is unit-tested).
export SWITCHYARD__HTTP__AUTH__REQUESTS_PER_SECOND=0
export SWITCHYARD__LOG__LEVEL=warn
"$bin" run >"$work/switchyard.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  curl -sf "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/switchyard.log"; echo "switchyard exited" >&2; exit 1; }
  sleep 0.5
done
curl -sf "$base/readyz" >/dev/null || { cat "$work/switchyard.log"; echo "switchyard never became ready" >&2; exit 1; }

echo "== the served document is docs/openapi.json"
curl -sf "$base/api/v1/openapi.json" | cmp - docs/openapi.json

echo "== schemathesis"
# Run from a scratch directory (schemathesis keeps a cache where it runs).
fuzz() {
  (cd "$work" && "$venv/bin/st" run "$base/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --exclude-checks positive_data_acceptance \
    --max-examples "${SWITCHYARD_FUZZ_EXAMPLES:-40}" \
    --workers 2 \
    --no-color) 2>&1 | tee "$work/st.log"
  return "${PIPESTATUS[0]}"
}
if ! fuzz; then
  # A crash of schemathesis itself ("Runtime Error", with no failure found in switchyard's
  # answers) is run once more; a failure is not.
  if grep -q "Runtime Error" "$work/st.log" && ! grep -q "=== FAILURES" "$work/st.log"; then
    echo "== schemathesis crashed (its own runtime error, no failure found); once more"
    fuzz
  else
    exit 1
  fi
fi
