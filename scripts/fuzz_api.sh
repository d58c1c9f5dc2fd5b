#!/usr/bin/env bash
# Schema-driven fuzzing of the control plane: schemathesis generates requests from the served
# OpenAPI document against a real `ccfs serve` and fails on any 5xx but the documented 501s.
# Usage: scripts/fuzz_api.sh [CCFS_BINARY]   (scripts/test.sh runs it)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/debug/ccfs}
VENV=$ROOT/.tools/venv
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'schemathesis==4.32.5' 'moto[server]==5.2.5'
fi
WORK=$(mktemp -d /tmp/ccfs-fuzz.XXXXXX)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/data/docs"
cp -r "$ROOT/docs/." "$WORK/data/docs/"
# Generated connections may name any S3 endpoint: keep the server on a closed loopback port.
CCFS_ADMIN_PASSWORD=fuzz-pw "$BIN" serve --listen 127.0.0.1:0 --state "$WORK/state" --fs-root "$WORK" \
  --allow-endpoint http://127.0.0.1:9/ 2> "$WORK/server.log" &
SERVER=$!
for _ in $(seq 1 200); do grep -q 'control plane on' "$WORK/server.log" && break; sleep 0.05; done
URL=$(sed -n 's/.*control plane on //p' "$WORK/server.log")
[ -n "$URL" ] || { echo "server did not start:"; cat "$WORK/server.log"; exit 1; }
TOKEN=$(curl -sf -X POST "$URL/api/sessions" -d 'user[login]=admin&user[password]=fuzz-pw' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -sf -H "Authorization: Bearer $TOKEN" -X POST "$URL/elcc_api/ccstores/cs/connect" \
  -d cloud_service=local -d bucket_name=fuzz-bucket -d create_if_not_found=true -d "fs_path=$WORK/data" > /dev/null
curl -sf -H "Authorization: Bearer $TOKEN" -X POST "$URL/elcc_api/ccstores/cs/versions" -d fs_src=/docs > /dev/null
cd "$ROOT/scripts/fuzz"
# Logout, disconnect and store deletion are left out so the session and store stay usable;
# the end-to-end tests cover them.
SCHEMATHESIS_HOOKS=hooks PYTHONPATH=. "$VENV/bin/schemathesis" --config-file schemathesis.toml run "$URL/elcc_api/openapi.json" \
  -H "Authorization: Bearer $TOKEN" --checks no_server_error -n "${FUZZ_EXAMPLES:-40}" --generation-deterministic \
  --exclude-name 'DELETE /api/sessions' \
  --exclude-name 'PUT /elcc_api/ccstores/{ccstore_ref}/disconnect' \
  --exclude-name 'DELETE /elcc_api/ccstores/{ccstore_ref}' \
  --request-timeout 30
if grep -qi 'panicked' "$WORK/server.log"; then
  echo "the server panicked during fuzzing:"; grep -i -A5 panicked "$WORK/server.log"; exit 1
fi
