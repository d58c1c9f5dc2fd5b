#!/usr/bin/env bash
# Benchmarks ccfs against restic and borg (and, with --all-peers, rustic and bupstash) on the
# shared dataset, in one run, and prints every ccfs figure as a ratio to each peer.
#
# After the first iteration's phases, ccfs, restic and borg also build a history of ten
# snapshots (seven more mutate+backup rounds), delete the third (the first two hold the same
# data) and reclaim its space (ccfs: version delete + gc --grace 0; restic: forget --prune;
# borg: delete + compact), timed, and counted as repository files opened or deleted (strace, on
# a copy of the repository). Skipped by --quick unless --gc is given.
#
# Usage: scripts/bench.sh [--quick] [--all-peers] [--iters N] [--gc]
#   --quick      one iteration on a reduced dataset (the 256 MiB rand_a.bin and text_b.txt
#                removed), under ~3 minutes once the dataset and tools exist
#   --gc         with --quick: run the gc phase too
#   --all-peers  also rustic (with its mount feature) and bupstash, built with cargo install
#                --locked into .tools/peers (about 15 minutes the first time)
# Needs root (drop_caches, FUSE). Results: bench/results/<date>[-N].md (+ raw CSV beside it).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
QUICK=0 ALL=0 ITERS=3 GC=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1; ITERS=1 ;;
    --all-peers) ALL=1 ;;
    --gc) GC=1 ;;
    --iters) ITERS=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
WORK=${WORK:-/tmp/ccfs-bench}
CACHE=${BENCH_CACHE:-/tmp/ccfs-bench-cache}
DATE=$(date -u +%Y-%m-%d)
SUFFIX=$([ $QUICK = 1 ] && echo "-quick" || echo "")
# A second run on the same day gets its own files (<date>-2.md, …): runs are never overwritten.
RUN=$DATE$SUFFIX
for n in $(seq 2 99); do
  [ -e "$ROOT/bench/results/$RUN.md" ] || break
  RUN=$DATE$SUFFIX-$n
done
CSV=$ROOT/bench/results/$RUN.csv
MD=$ROOT/bench/results/$RUN.md
mkdir -p "$WORK" "$CACHE" "$ROOT/bench/results"
. "$ROOT/scripts/lib.sh"

# --- tools ---------------------------------------------------------------------------------
need=()
for c in restic:restic borg:borgbackup fusermount3:fuse3 /usr/bin/time:time openssl:openssl zstd:zstd bc:bc strace:strace; do
  command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || exit 1
fi
TOOLS="ccfs restic borg"
if [ $ALL = 1 ]; then
  PEERS=$ROOT/.tools/peers
  if [ ! -x "$PEERS/bin/rustic" ] || [ ! -x "$PEERS/bin/bupstash" ]; then
    log "building rustic and bupstash into $PEERS (slow, once)"
    command -v pkg-config >/dev/null || apt-get install -y -qq pkg-config libsodium-dev >/dev/null
    cargo install -q rustic-rs --locked --features mount --root "$PEERS" || exit 1
    cargo install -q bupstash --locked --root "$PEERS" || exit 1
  fi
  export PATH=$PEERS/bin:$PATH
  TOOLS="$TOOLS rustic bupstash"
fi
build_ccfs || exit 1

# --- dataset -------------------------------------------------------------------------------
shared_dataset "$CACHE" || exit 1
SRC=$PRISTINE
if [ $QUICK = 1 ]; then
  SRC=$CACHE/quick
  if [ ! -f "$SRC/.complete" ]; then
    rm -rf "$SRC"; cp -a "$PRISTINE" "$SRC"; rm -f "$SRC/large/rand_a.bin" "$SRC/large/text_b.txt" "$SRC/.complete"
    touch "$SRC/.complete"
  fi
fi
CAT_FILE=large/rand_b.bin   # 256 MiB random; present in both datasets (mutate changes it after the mount phase)
DATA=$WORK/data
DATA_BYTES=$(du -sb --exclude=.complete "$SRC" | cut -f1)

export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic-cache
export BORG_PASSPHRASE=bench BORG_BASE_DIR=$WORK/borg-base BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_DISPLAY_PASSPHRASE=no
export RUSTIC_PASSWORD=bench RUSTIC_CACHE_DIR=$WORK/rustic-cache RUSTIC_NO_PROGRESS=true
export BUPSTASH_KEY=$WORK/bupstash.key BUPSTASH_SEND_LOG=$WORK/bupstash.sendlog BUPSTASH_QUERY_CACHE=$WORK/bupstash.qcache
REPO=$WORK/repo MNT=$WORK/mnt RESTORE=$WORK/restore
export RUSTIC_REPOSITORY=$REPO

echo "tool,iter,phase,seconds,rss_kb,value" > "$CSV"
now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
rec() { echo "$TOOL,$IT,$1,$2,$3,${4:-}" >> "$CSV"; printf '  %-24s %8s s  %8s KB  %s\n' "$1" "$2" "$3" "${4:-}" >&2; }
run() { # phase cmd...: wall time and peak RSS under /usr/bin/time
  local phase=$1; shift
  local t0 t1 rc
  t0=$(now)
  /usr/bin/time -f '%M' -o "$WORK/time.out" "$@" > "$WORK/$phase.out" 2>&1; rc=$?
  t1=$(now)
  [ $rc = 0 ] || { echo "FAILED ($rc): $*" >&2; tail -5 "$WORK/$phase.out" >&2; }
  rec "$phase" "$(echo "$t1 - $t0" | bc)" "$(tail -1 "$WORK/time.out")" "rc=$rc"
}
size() { du -sb "$1" | cut -f1; }

init_repo() {
  case $TOOL in
    ccfs) "$CCFS" --store "$REPO" store init ;;
    restic) restic -r "$REPO" init ;;
    borg) borg init --encryption repokey "$REPO" ;;
    rustic) rustic init ;;
    bupstash) bupstash init --repository "$REPO" && bupstash new-key -o "$BUPSTASH_KEY" ;;
  esac > "$WORK/init.out" 2>&1
}
backup() { # n
  case $TOOL in
    ccfs) run "$1" "$CCFS" --store "$REPO" version create "$DATA" ;;
    restic) run "$1" restic -r "$REPO" backup "$DATA" ;;
    borg) run "$1" borg create "$REPO::snap$2" "$DATA" ;;
    rustic) run "$1" rustic backup "$DATA" ;;
    bupstash) run "$1" bupstash put --repository "$REPO" "snap=$2" "$DATA" ;;
  esac
}
restore() {
  case $TOOL in
    ccfs) run restore "$CCFS" --store "$REPO" version checkout latest --to "$RESTORE$DATA" ;;
    restic) run restore restic -r "$REPO" restore latest --target "$RESTORE" ;;
    borg) (cd "$RESTORE" && run restore borg extract "$REPO::snap2") ;;
    rustic) run restore rustic restore latest "$RESTORE" ;;
    bupstash) mkdir -p "$RESTORE$DATA"; run restore bupstash restore --repository "$REPO" --into "$RESTORE$DATA" snap=2 ;;
  esac
}
mount_start() {
  case $TOOL in
    ccfs) /usr/bin/time -f '%M' -o "$WORK/mount.time" "$CCFS" --store "$REPO" mount "$MNT" --version latest --foreground > "$WORK/mount.out" 2>&1 & ;;
    restic) /usr/bin/time -f '%M' -o "$WORK/mount.time" restic -r "$REPO" mount "$MNT" > "$WORK/mount.out" 2>&1 & ;;
    borg) /usr/bin/time -f '%M' -o "$WORK/mount.time" borg mount -f "$REPO::snap2" "$MNT" > "$WORK/mount.out" 2>&1 & ;;
    rustic) /usr/bin/time -f '%M' -o "$WORK/mount.time" rustic mount "$MNT" > "$WORK/mount.out" 2>&1 & ;;
    *) return 1 ;;
  esac
  MOUNT_PID=$!
}
snapdir() {
  case $TOOL in
    ccfs) echo "$MNT" ;;
    restic) echo "$MNT/snapshots/latest$DATA" ;;
    borg) echo "$MNT$DATA" ;;
    rustic) echo "$MNT/[$(hostname)]/[]/latest$DATA" ;;
  esac
}
forget_third() { # repo: delete the third-oldest snapshot (the first with data of its own: the
  # first two are the initial and the unchanged backup) and reclaim the space it alone used
  case $TOOL in
    ccfs) local id
          id=$("$CCFS" --store "$1" --json version list | python3 -c 'import json,sys; print(json.load(sys.stdin)[-3]["version_id"])')
          "$CCFS" --store "$1" version delete "$id" && "$CCFS" --store "$1" gc --grace 0 ;;
    restic) local id
          id=$(restic -r "$1" snapshots --json | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin), key=lambda s: s["time"])[2]["id"])')
          restic -r "$1" forget "$id" --prune ;;
    borg) borg delete "$1::snap3" && borg compact "$1" ;;
  esac
}
gc_phase() { # ten snapshots, then forget the third: time, and file operations on the repository
  for k in $(seq 4 10); do
    python3 "$SHARED/gen_dataset.py" mutate "$DATA" --seed $((40 + k)) --force > /dev/null 2>&1
    backup backup_history "$k"
  done
  local before copy=$WORK/gc-copy
  before=$(size "$REPO"); rec repo_size_10_snapshots "" "" "$before"
  # The request count runs on a copy (with copies of the tools' local caches), so that tracing
  # does not slow the timed run.
  rm -rf "$copy"; mkdir -p "$copy"
  cp -a "$REPO" "$copy/repo"
  [ -d "$RESTIC_CACHE_DIR" ] && cp -a "$RESTIC_CACHE_DIR" "$copy/restic-cache"
  [ -d "$BORG_BASE_DIR" ] && cp -a "$BORG_BASE_DIR" "$copy/borg-base"
  drop; run forget_one_and_reclaim bash -c "$(declare -f forget_third); TOOL=$TOOL CCFS=$CCFS forget_third $REPO"
  rec reclaimed "" "" "$(( before - $(size "$REPO") ))"
  RESTIC_CACHE_DIR=$copy/restic-cache BORG_BASE_DIR=$copy/borg-base RUSTIC_REPOSITORY=$copy/repo \
    strace -f -qq -e trace=open,openat,unlink,unlinkat -o "$WORK/strace.out" \
    bash -c "$(declare -f forget_third); TOOL=$TOOL CCFS=$CCFS forget_third $copy/repo" > /dev/null 2>&1
  rec reclaim_repo_file_ops "" "" "$(grep -c "\"$copy/repo/" "$WORK/strace.out")"
  rm -rf "$copy"
}
random_reads() { # file: 2000 random 4 KiB preads
  python3 - "$1" <<'PY'
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDONLY); size = os.fstat(fd).st_size; r = random.Random(7)
for _ in range(2000):
    os.pread(fd, 4096, r.randrange(0, size - 4096) & ~4095)
PY
}

# --- machine limits ------------------------------------------------------------------------
TOOL=machine IT=1
log "machine limits"
cat "$SRC/large/rand_b.bin" "$SRC/large/text_a.log" > /dev/null
t0=$(now); openssl dgst -sha256 "$SRC/large/rand_b.bin" > /dev/null; t1=$(now)
rec sha256_1core "$(echo "$t1 - $t0" | bc)" "" "bytes=$(stat -c %s "$SRC/large/rand_b.bin")"
t0=$(now); zstd -1 -q -c "$SRC/large/text_a.log" > /dev/null; t1=$(now)
rec zstd1_text_1core "$(echo "$t1 - $t0" | bc)" "" "bytes=$(stat -c %s "$SRC/large/text_a.log")"
t0=$(now); dd if="$SRC/large/rand_b.bin" of=/dev/null bs=1M 2>/dev/null; t1=$(now)
rec pagecache_read "$(echo "$t1 - $t0" | bc)" "" "bytes=$(stat -c %s "$SRC/large/rand_b.bin")"

# --- tools ---------------------------------------------------------------------------------
for TOOL in $TOOLS; do
  for IT in $(seq 1 "$ITERS"); do
    log "$TOOL iteration $IT"
    mountpoint -q "$MNT" 2>/dev/null && fusermount3 -u "$MNT"
    rm -rf "$REPO" "$DATA" "$RESTORE" "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR" "$RUSTIC_CACHE_DIR" \
      "$BUPSTASH_KEY" "$BUPSTASH_SEND_LOG" "$BUPSTASH_QUERY_CACHE"
    mkdir -p "$MNT" "$RESTORE"
    cp -a "$SRC" "$DATA" && rm -f "$DATA/.complete"
    init_repo || { echo "init of $TOOL failed:" >&2; cat "$WORK/init.out" >&2; exit 1; }
    drop; backup backup_initial 1
    R1=$(size "$REPO"); rec repo_size "" "" "$R1"
    drop; backup backup_unchanged 2
    R2=$(size "$REPO"); rec growth_unchanged "" "" "$((R2 - R1))"
    drop; restore
    if diff -rq --no-dereference "$DATA" "$RESTORE$DATA" > "$WORK/diff.out" 2>&1; then V=identical; else V=DIFFERS; fi
    rec restore_verify "" "" "$V"
    rm -rf "$RESTORE"; mkdir -p "$RESTORE"
    if [ "$TOOL" != bupstash ]; then
      drop; t0=$(now); mount_start; SD=$(snapdir)
      while ! ls "$SD/small" > /dev/null 2>&1; do sleep 0.01; done
      rec mount_ready "$(echo "$(now) - $t0" | bc)" "" ""
      run mount_find_cold bash -c "find '$SD' -type f | wc -l"
      run mount_ls_l_2000_cold bash -c "ls -l '$SD/small/flat' > /dev/null"
      run mount_ls_l_2000_warm bash -c "ls -l '$SD/small/flat' > /dev/null"
      drop; run mount_cat_256m_cold bash -c "cat '$SD/$CAT_FILE' > /dev/null"
      run mount_cat_256m_warm bash -c "cat '$SD/$CAT_FILE' > /dev/null"
      cmp -s "$SD/$CAT_FILE" "$DATA/$CAT_FILE" && V=identical || V=DIFFERS
      rec mount_cat_verify "" "" "$V"
      drop; t0=$(now); random_reads "$SD/large/text_a.log"; rec mount_random_4k_x2000_cold "$(echo "$(now) - $t0" | bc)" "" ""
      fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
      wait "$MOUNT_PID" 2>/dev/null
      rec mount_server_rss "" "$(tail -1 "$WORK/mount.time" 2>/dev/null)" ""
    fi
    python3 "$SHARED/gen_dataset.py" mutate "$DATA" > /dev/null 2>&1
    R3=$(size "$REPO")
    drop; backup backup_after_mutate 3
    rec growth_after_mutate "" "" "$(( $(size "$REPO") - R3 ))"
    # gc: once per tool (slow: seven more mutate+backup rounds); not in --quick unless --gc
    if [ "$IT" = 1 ] && { [ $QUICK = 0 ] || [ $GC = 1 ]; } && [[ " ccfs restic borg " == *" $TOOL "* ]]; then gc_phase; fi
  done
done
rm -rf "$DATA" "$RESTORE" "$REPO"

python3 "$ROOT/scripts/bench_summary.py" "$CSV" "$DATA_BYTES" "$QUICK" > "$MD"
cat "$MD"
echo "results: $MD (raw: $CSV)" >&2
