#!/usr/bin/env bash
# Create throughput from an NFSv3 export (ccfs's userspace client against cargo-nfs3-server on
# 127.0.0.1) against the same tree read locally, in one run: medians of --iters runs, page
# caches dropped before each, a fresh store each time.
#
# Usage: scripts/bench_nfs.sh [--quick] [--iters N]
#   --quick  the reduced dataset of scripts/bench.sh --quick (no 256 MiB rand_a.bin/text_b.txt)
# Needs root (drop_caches). Results: bench/results/<date>-nfs.md
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
QUICK=0 ITERS=3
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --iters) ITERS=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
WORK=${WORK:-/tmp/ccfs-bench-nfs}
CACHE=${BENCH_CACHE:-/tmp/ccfs-bench-cache}
TOOLS_CACHE=${CCFS_TOOLS_CACHE:-$HOME/.cache/ccfs-tools}
MD=$ROOT/bench/results/$(date -u +%Y-%m-%d)-nfs$([ $QUICK = 1 ] && echo "-quick").md
. "$ROOT/scripts/lib.sh"

command -v bc >/dev/null || { apt-get update -qq && apt-get install -y -qq bc >/dev/null; }
install_nfs_server "$TOOLS_CACHE" || exit 1
build_ccfs || exit 1
shared_dataset "$CACHE" || exit 1
rm -rf "$WORK"; mkdir -p "$WORK/export"
cp -a "$PRISTINE" "$WORK/export/data" && rm -f "$WORK/export/data/.complete"
if [ $QUICK = 1 ]; then rm -f "$WORK/export/data/large/rand_a.bin" "$WORK/export/data/large/text_b.txt"; fi
BYTES=$(du -sb "$WORK/export/data" | cut -f1)

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$TOOLS_CACHE/bin/cargo-nfs3-server" --path "$WORK/export" --export-name /export -i 127.0.0.1 -p "$PORT" --quiet &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 0.5

drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
time_create() { # source → seconds
  rm -rf "$WORK/store"; "$CCFS" --store "$WORK/store" store init > /dev/null || exit 1
  drop
  local t0; t0=$(now)
  if ! "$CCFS" --store "$WORK/store" version create "$1" > "$WORK/create.out" 2>&1; then
    echo "create from $1 failed or skipped files:" >&2; cat "$WORK/create.out" >&2; return 1
  fi
  echo "$(now) - $t0" | bc
}
median() { tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

LOCAL=() NFS=()
for i in $(seq 1 "$ITERS"); do
  l=$(time_create "$WORK/export/data") || exit 1; LOCAL+=("$l")
  n=$(time_create "nfs://127.0.0.1/export/data?port=$PORT") || exit 1; NFS+=("$n")
  log "iteration $i: local ${l}s, NFS ${n}s"
done
L=$(echo "${LOCAL[*]}" | median) N=$(echo "${NFS[*]}" | median)
mbps() { echo "scale=1; $BYTES / 1048576 / $1" | bc; }
{
  echo "# Create from an NFSv3 export vs. the same tree read locally ($(date -u +%Y-%m-%d))"
  echo
  echo "Dataset: $(echo "scale=2; $BYTES / 1073741824" | bc) GiB ($([ $QUICK = 1 ] && echo quick || echo full)); medians of $ITERS; caches dropped before each run."
  echo "Server: cargo-nfs3-server 0.2.3 on 127.0.0.1; client: ccfs's userspace NFSv3 (8 connections, 4 READs ahead per file)."
  echo
  echo "| source | seconds | MiB/s | runs |"
  echo "|---|---|---|---|"
  echo "| local directory | $L | $(mbps "$L") | ${LOCAL[*]} |"
  echo "| nfs:// export | $N | $(mbps "$N") | ${NFS[*]} |"
  echo
  echo "NFS create throughput is $(echo "scale=2; $L / $N" | bc) of the local figure (target: at least 0.5)."
} | tee "$MD"
echo "results: $MD" >&2
