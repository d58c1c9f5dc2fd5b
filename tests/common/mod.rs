//! Helpers shared by the end-to-end tests: running the `ccfs` binary, building source trees
//! with every kind of entry, and comparing two trees by content and metadata.
#![allow(dead_code)]

pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ccfs")
}

/// Run `ccfs --store STORE ARGS...`.
pub fn ccfs(store: &Path, args: &[&str]) -> Output {
    Command::new(bin()).arg("--store").arg(store).args(args).output().expect("run ccfs")
}

/// Run and require success; returns stdout.
pub fn ccfs_ok(store: &Path, args: &[&str]) -> String {
    let out = ccfs(store, args);
    assert!(
        out.status.success(),
        "ccfs {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Run with `--json` and parse stdout.
pub fn ccfs_json(store: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ccfs_ok(store, &a)).expect("json output")
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for hundreds of MiB.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A tree with every kind of entry the format keeps.
pub fn make_rich_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    write(&root.join("small.txt"), b"hello world\n");
    write(&root.join("empty"), b"");
    write(&root.join("nested/a/b/c/deep.txt"), b"deep file");
    std::fs::create_dir_all(root.join("nested/empty-dir")).unwrap();
    write(&root.join("large/random.bin"), &random_bytes(5 << 20, 1));
    let text: Vec<u8> = (0..200_000).flat_map(|i| format!("line {i} of some text\n").into_bytes()).collect();
    write(&root.join("large/text.log"), &text);
    // duplicates of content under other names
    write(&root.join("dups/one.bin"), &random_bytes(300_000, 2));
    write(&root.join("dups/two.bin"), &random_bytes(300_000, 2));
    // symlinks: relative, absolute, dangling, to a directory
    std::os::unix::fs::symlink("../small.txt", root.join("nested/link-to-small")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("nested/a", root.join("dir-link")).unwrap();
    // hard links (three names, one inode)
    write(&root.join("hard/original"), b"linked content");
    std::fs::hard_link(root.join("hard/original"), root.join("hard/second")).unwrap();
    std::fs::hard_link(root.join("hard/original"), root.join("nested/third-link")).unwrap();
    // fifo
    mkfifo(&root.join("a-fifo"));
    // a character device when root can make one
    if unsafe_is_root() {
        let c = std::ffi::CString::new(root.join("null-dev").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string; makedev(1, 3) is /dev/null's number.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(rc, 0, "mknod");
    }
    // xattrs
    write(&root.join("with-xattr"), b"x");
    xattr::set(root.join("with-xattr"), "user.ccfs.test", b"value-1").unwrap();
    xattr::set(root.join("with-xattr"), "user.empty", b"").unwrap();
    xattr::set(root.join("nested"), "user.dir-attr", b"on a dir").unwrap();
    // sparse file: 64 MiB with data at 1 MiB and at the end
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(root.join("sparse.img")).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&random_bytes(100_000, 3), 1 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    }
    // odd names: non-UTF-8 bytes, newline, spaces, unicode, leading dash
    write(&root.join(OsStr::from_bytes(b"bad-\xff\xfe-name")), b"non utf8 name");
    write(&root.join("new\nline"), b"newline in name");
    write(&root.join(" spaced name "), b"spaces");
    write(&root.join("ünïcødé-名前"), b"unicode");
    write(&root.join("-dash"), b"dash");
    // modes and times
    write(&root.join("exec.sh"), b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(root.join("exec.sh"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(root.join("nested/a"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(root.join("small.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    if unsafe_is_root() {
        std::os::unix::fs::lchown(root.join("small.txt"), Some(1234), Some(5678)).unwrap();
    }
    set_mtime(&root.join("small.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("nested/a/b"), 1_500_000_000, 987_654_321);
}

pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

pub fn unsafe_is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn set_mtime(path: &Path, sec: i64, nsec: u32) {
    let t = filetime::FileTime::from_unix_time(sec, nsec);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

/// Everything we compare about one entry.
#[derive(Debug, PartialEq)]
pub struct Meta {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub nlink: u64,
    pub rdev: u64,
    pub target: Option<PathBuf>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub content_hash: Option<[u8; 32]>,
}

fn kind_of(md: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "file"
    }
}

/// Relative path → metadata of every entry below a root.
pub type Entries = BTreeMap<Vec<u8>, Meta>;
/// Hard-link groups: the sorted relative paths of each multiply-linked inode.
pub type LinkGroups = Vec<Vec<Vec<u8>>>;

/// Walk a tree: every entry's metadata, plus the hard-link groups.
pub fn snapshot(root: &Path, compare_dir_mtime: bool) -> (Entries, LinkGroups) {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for ent in std::fs::read_dir(&dir).unwrap() {
            let ent = ent.unwrap();
            let path = ent.path();
            let rel = path.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
            let md = std::fs::symlink_metadata(&path).unwrap();
            let kind = kind_of(&md);
            let xattrs = if kind == "symlink" {
                BTreeMap::new()
            } else {
                xattr::list(&path)
                    .unwrap()
                    .map(|n| (n.as_bytes().to_vec(), xattr::get(&path, &n).unwrap().unwrap_or_default()))
                    .collect()
            };
            let content_hash = (kind == "file").then(|| Sha256::digest(std::fs::read(&path).unwrap()).into());
            if kind == "file" && md.nlink() > 1 {
                inodes.entry(md.ino()).or_default().push(rel.clone());
            }
            if kind == "dir" {
                stack.push(path.clone());
            }
            let mtime = if kind == "dir" && !compare_dir_mtime { (0, 0) } else { (md.mtime(), md.mtime_nsec()) };
            out.insert(
                rel,
                Meta {
                    kind,
                    mode: if kind == "symlink" { 0 } else { md.mode() & 0o7777 },
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime,
                    size: if kind == "dir" { 0 } else { md.size() },
                    nlink: if kind == "dir" { 0 } else { md.nlink() },
                    rdev: md.rdev(),
                    target: (kind == "symlink").then(|| std::fs::read_link(&path).unwrap()),
                    xattrs,
                    content_hash,
                },
            );
        }
    }
    let mut groups: Vec<Vec<Vec<u8>>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    (out, groups)
}

/// Assert two trees are equal by content and every kept piece of metadata.
pub fn assert_same_tree(src: &Path, dst: &Path) {
    let (a, ga) = snapshot(src, true);
    let (b, gb) = snapshot(dst, true);
    let names_a: Vec<_> = a.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    let names_b: Vec<_> = b.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    assert_eq!(names_a, names_b, "entry names differ");
    for (k, ma) in &a {
        let mb = &b[k];
        assert_eq!(ma, mb, "entry {:?} differs", String::from_utf8_lossy(k));
    }
    assert_eq!(ga, gb, "hard-link groups differ");
    // the root directory itself
    let ra = std::fs::metadata(src).unwrap();
    let rb = std::fs::metadata(dst).unwrap();
    assert_eq!(ra.mode() & 0o7777, rb.mode() & 0o7777, "root mode");
    assert_eq!((ra.mtime(), ra.mtime_nsec()), (rb.mtime(), rb.mtime_nsec()), "root mtime");
}

/// Count objects under a store prefix (a local store directory).
pub fn count_objects(store: &Path, prefix: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![store.join(prefix)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// Total bytes of objects under a prefix.
pub fn bytes_under(store: &Path, prefix: &str) -> u64 {
    let mut n = 0;
    let mut stack = vec![store.join(prefix)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                n += md.len();
            }
        }
    }
    n
}

/// Paths of the objects under a prefix.
pub fn objects_under(store: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![store.join(prefix)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}
