# Shell functions shared by scripts/test.sh, scripts/bench.sh and scripts/bench_nfs.sh.
# Sourced, not run: `. "$ROOT/scripts/lib.sh"` with ROOT the repository root.

log() { printf '\n==> %s\n' "$*" >&2; }

# The userspace NFSv3 server the NFS tests and bench_nfs.sh start, built once into $1.
install_nfs_server() {
  [ -x "$1/bin/cargo-nfs3-server" ] && return 0
  log "building cargo-nfs3-server 0.2.3 into $1 (once, about a minute)"
  cargo install -q cargo-nfs3-server --version 0.2.3 --locked --root "$1" \
    || cargo install -q cargo-nfs3-server --version 0.2.3 --root "$1"
}

# The release binary, built from $ROOT; sets CCFS.
build_ccfs() {
  log "building ccfs (release)"
  (cd "$ROOT" && cargo build --release -q --bin ccfs) || return 1
  CCFS=$ROOT/target/release/ccfs
}

# The shared benchmark dataset, generated once into $1/pristine by $SHARED/gen_dataset.py;
# sets PRISTINE.
shared_dataset() {
  PRISTINE=$1/pristine
  [ -f "$PRISTINE/.complete" ] && return 0
  log "generating the shared dataset (about 40 s)"
  rm -rf "$PRISTINE"
  python3 "$SHARED/gen_dataset.py" generate "$PRISTINE" >&2 && touch "$PRISTINE/.complete"
}
