#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs the format check, clippy with
# warnings denied, and every test (unit, end-to-end with the real binary, property tests).
# Usage: scripts/test.sh            (from anywhere; CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

# System packages the tests use: setpriv (util-linux) to run as an unprivileged user,
# fuse3 for the FUSE mount tests.
need_pkgs=()
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v fusermount3 >/dev/null || need_pkgs+=(fuse3)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v openssl >/dev/null || need_pkgs+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "WARNING: missing ${need_pkgs[*]} and cannot install them (not root or no apt-get)" >&2
  fi
fi

log "rustfmt"
cargo fmt --all -- --check

log "clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings

log "core builds without the CLI wiring, and depends directly on no adapter crate"
cargo build -q -p ccfs --lib --no-default-features
if cargo tree -p ccfs --no-default-features -e normal --depth 1 --prefix none | grep -Eq '^(fuser|axum|clap|nix) '; then
  echo "the ccfs core must not depend on fuser, axum, clap or nix" >&2
  exit 1
fi

log "test servers: S3 (moto) on 127.0.0.1"
VENV=.tools/venv
if [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'moto[server]==5.2.5' 'schemathesis==4.32.5'
fi
MOTO_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p target
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" > target/moto.log 2>&1 &
MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/" && break; sleep 0.1; done
curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/" || { echo "moto did not start:"; cat target/moto.log; exit 1; }
export CCFS_TEST_S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT"

# moto accepts any credentials; s3s-fs checks SigV4 signatures, so wrong credentials are tested
# against it. Built once per machine (about 6 minutes) into a cache outside the work tree.
log "test servers: SigV4-checking S3 (s3s-fs) on 127.0.0.1"
TOOLS_CACHE=${CCFS_TOOLS_CACHE:-$HOME/.cache/ccfs-tools}
if [ ! -x "$TOOLS_CACHE/bin/s3s-fs" ]; then
  cargo install -q s3s-fs --version 0.14.1 --locked --features binary --root "$TOOLS_CACHE" \
    || cargo install -q s3s-fs --version 0.14.1 --features binary --root "$TOOLS_CACHE" || exit 1
fi
S3S_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
S3S_DIR=$(mktemp -d)
"$TOOLS_CACHE/bin/s3s-fs" --host 127.0.0.1 --port "$S3S_PORT" --access-key ccfs-test-key \
  --secret-key ccfs-test-secret "$S3S_DIR" > target/s3s.log 2>&1 &
S3S_PID=$!
trap 'kill $MOTO_PID $S3S_PID 2>/dev/null || true; rm -rf "$S3S_DIR"' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$S3S_PORT/" && break; sleep 0.1; done
curl -s -o /dev/null "http://127.0.0.1:$S3S_PORT/" || { echo "s3s-fs did not start:"; cat target/s3s.log; exit 1; }
export CCFS_TEST_S3V4_ENDPOINT="http://127.0.0.1:$S3S_PORT" CCFS_TEST_S3V4_DIR="$S3S_DIR"

# A userspace NFSv3 server (MOUNT and NFS on one port, no portmapper, no kernel support): the
# NFS tests start their own instances on free ports. Built once per machine (about a minute).
log "test servers: userspace NFSv3 (cargo-nfs3-server)"
install_nfs_server "$TOOLS_CACHE" || exit 1
export CCFS_TEST_NFS_SERVER="$TOOLS_CACHE/bin/cargo-nfs3-server"

log "tests"
export CI="${CI:-true}"   # insta: never write snapshots in the test command, fail on mismatch
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.log

log "schema-driven fuzzing of the control plane (schemathesis)"
bash scripts/fuzz_api.sh target/debug/ccfs

# One closing line with the totals of every cargo test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nsummary: %d passed, %d failed\n", p, f }' target/test-output.log
