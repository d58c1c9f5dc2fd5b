#!/usr/bin/env bash
# Requests and bytes that ccfs sends to an S3 server for the shared benchmark dataset, per GB of
# data: first create, unchanged re-create, create after the standard mutate, full restore, and
# deleting the first version plus gc. The server is moto on 127.0.0.1 (started here); the
# figures are ccfs's own request counters (`--json` output, the API guide's bucket counters).
#
# Usage: scripts/measure_s3.sh        Results: bench/results/<date>-s3-requests.md
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
CACHE=${BENCH_CACHE:-/tmp/ccfs-bench-cache}
WORK=${WORK:-/tmp/ccfs-s3-measure}
OUT=$ROOT/bench/results/$(date -u +%Y-%m-%d)-s3-requests.md
VENV=$ROOT/.tools/venv
cd "$ROOT"
[ -x "$VENV/bin/moto_server" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'moto[server]==5.2.5'; }
cargo build --release -q --bin ccfs
CCFS=$ROOT/target/release/ccfs
if [ ! -f "$CACHE/pristine/.complete" ]; then
  rm -rf "$CACHE/pristine"; mkdir -p "$CACHE"
  python3 "$SHARED/gen_dataset.py" generate "$CACHE/pristine" >&2 && touch "$CACHE/pristine/.complete"
fi
rm -rf "$WORK"; mkdir -p "$WORK"
cp -a "$CACHE/pristine" "$WORK/data"; rm -f "$WORK/data/.complete"
BYTES=$(du -sb "$WORK/data" | cut -f1)

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" > "$WORK/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true' EXIT
until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do sleep 0.1; done
curl -s -X PUT "http://127.0.0.1:$PORT/ccfs-measure" > /dev/null
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test CCFS_STORE="s3://ccfs-measure?endpoint=http://127.0.0.1:$PORT"

"$CCFS" store init > /dev/null
step() { # name json-file
  python3 - "$1" "$2" "$BYTES" <<'PY'
import json, sys
name, path, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = json.load(open(path))["bucket"]
gb = nbytes / 1e9
reqs = b["read_blobs_ops"] + b["read_metadata_ops"] + b["write_blobs_ops"] + b["delete_blobs_ops"]
print(f"| {name} | {b['write_blobs_ops']} | {b['read_blobs_ops']} | {b['read_metadata_ops']} | {b['delete_blobs_ops']} "
      f"| {reqs / gb:.0f} | {b['write_blobs_bytes'] / 1e6:.1f} | {b['read_blobs_bytes'] / 1e6:.1f} |")
PY
}
{
  echo "# ccfs requests to S3 for the shared dataset — $(date -u +%Y-%m-%d)"
  echo
  echo "Dataset: $BYTES bytes ($(python3 -c "print(f'{$BYTES/1e9:.3f}')") GB), \`scripts/measure_s3.sh\`, moto 5.2.5 on 127.0.0.1,"
  echo "default store settings (512 KiB FastCDC blocks, 8 MiB packs, zstd auto). Requests per GB = all"
  echo "requests of the step divided by the dataset's size. Lists are one request per listing call."
  echo
  echo "| step | PUT | GET (whole or range) | LIST | DELETE | requests per GB | MB written | MB read |"
  echo "|---|---|---|---|---|---|---|---|"
  "$CCFS" --json version create "$WORK/data" > "$WORK/c1.json"; step "first create" "$WORK/c1.json"
  "$CCFS" --json version create "$WORK/data" > "$WORK/c2.json"; step "unchanged re-create" "$WORK/c2.json"
  python3 "$SHARED/gen_dataset.py" mutate "$WORK/data" > /dev/null
  "$CCFS" --json version create "$WORK/data" > "$WORK/c3.json"; step "create after mutate" "$WORK/c3.json"
  "$CCFS" --json version checkout latest --to "$WORK/restore" > "$WORK/co.json"; step "full restore" "$WORK/co.json"
  FIRST=$(python3 -c "import json; print(json.load(open('$WORK/c1.json'))['version']['version_id'])")
  "$CCFS" version delete "$FIRST" > /dev/null
  "$CCFS" --json gc --grace 0 > "$WORK/gc.json"; step "gc after deleting the first version" "$WORK/gc.json"
  echo
  python3 - "$WORK/c1.json" "$BYTES" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); n = int(sys.argv[2])
b = c["bucket"]
print(f"Stored after the first create: {b['write_blobs_bytes'] / 1e6:.1f} MB in {b['write_blobs_ops']} objects "
      f"({b['write_blobs_bytes'] / max(b['write_blobs_ops'], 1) / 1e6:.2f} MB per object on average).")
PY
} | tee "$OUT"
diff -rq --no-dereference "$WORK/data" "$WORK/restore" > /dev/null || { echo "restore differs from the data!" >&2; exit 1; }
echo "results: $OUT" >&2
rm -rf "$WORK"
