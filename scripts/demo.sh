#!/usr/bin/env bash
# First run on the embedded default (a local directory store, no cloud account):
# builds ccfs, formats a store, snapshots this repository's docs/ and src/ as a version,
# lists the versions, browses the root of the newest one and restores it.
# Usage: scripts/demo.sh [STORE_DIR]      (default /tmp/ccfs-demo/store)
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-/tmp/ccfs-demo/store}
cargo build --release -q --bin ccfs
ccfs() { ./target/release/ccfs --store "$STORE" "$@"; }
[ -f "$STORE/ccfs.json" ] || ccfs store init
SAMPLE=$(mktemp -d /tmp/ccfs-demo-sample.XXXXXX)
cp -a docs src "$SAMPLE"/
ccfs version create "$SAMPLE" --desc "ccfs demo sample"
ccfs version list
ccfs version dir latest --path /
RESTORE=$(mktemp -d /tmp/ccfs-demo-restore.XXXXXX)
rmdir "$RESTORE"
ccfs version checkout latest --to "$RESTORE"
diff -r "$SAMPLE" "$RESTORE" && echo "restored copy in $RESTORE is identical to $SAMPLE"
ccfs store info
