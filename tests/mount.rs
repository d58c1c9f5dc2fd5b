//! End-to-end tests of `ccfs mount` with a real FUSE mount: content and metadata equal to the
//! source, a 100,000-entry directory, EIO on a corrupt block, EROFS on writes, the whole-store
//! layout, and clean unmounts that leave no process behind.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// FUSE is needed; CI installs fuse3 (scripts/test.sh). Without it the test says so loudly.
fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists()
        && Command::new("fusermount3").arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        eprintln!("\n!!! SKIPPED: /dev/fuse or fusermount3 missing; run scripts/test.sh (installs fuse3) !!!\n");
    }
    ok
}

/// A background mount that is unmounted (and its process checked gone) on drop.
struct Mount {
    dir: PathBuf,
    pid: u32,
}

impl Mount {
    fn new(store: &Path, dir: &Path, extra: &[&str]) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let mut args = vec!["mount", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = ccfs_ok(store, &args);
        let pid: u32 =
            out.split("(pid ").nth(1).and_then(|s| s.split(',').next()).and_then(|s| s.parse().ok()).expect(&out);
        Mount { dir: dir.to_path_buf(), pid }
    }

    fn unmount(&mut self) {
        if self.pid == 0 {
            return;
        }
        let out = Command::new(bin()).args(["unmount"]).arg(&self.dir).output().unwrap();
        assert!(out.status.success(), "unmount: {}", String::from_utf8_lossy(&out.stderr));
        wait_gone(self.pid);
        self.pid = 0;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.pid != 0 {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.dir).status();
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // A zombie has exited; it only waits to be reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
}

fn wait_gone(pid: u32) {
    let t0 = Instant::now();
    while process_alive(pid) {
        assert!(t0.elapsed() < Duration::from_secs(20), "mount process {pid} still running after unmount");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mounted(dir: &Path) -> bool {
    let canon = std::fs::canonicalize(dir).unwrap();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == canon.to_str())
}

#[test]
fn mounted_version_equals_source() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, store) = (tmp.path().join("src"), tmp.path().join("store"));
    make_rich_tree(&src);
    for i in 0..100 {
        write(&src.join(format!("many/f{i:03}")), format!("file {i}").as_bytes());
    }
    ccfs_ok(&store, &["store", "init"]);
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap()]);
    // Two changes in a directory of 100: the mounted version reads that directory as a delta.
    write(&src.join("many/f007"), b"changed");
    write(&src.join("many/f150"), b"added");
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap()]);
    let mut m = Mount::new(&store, &tmp.path().join("mnt"), &["--version", "latest"]);
    assert_same_tree(&src, &m.dir);
    // sparse files report their allocation, not their size
    let md = std::fs::metadata(m.dir.join("sparse.img")).unwrap();
    assert_eq!(md.len(), 64 << 20);
    assert!(md.blocks() * 512 < 1 << 20, "{} blocks", md.blocks());
    // random reads at odd offsets
    let data = std::fs::read(src.join("large/random.bin")).unwrap();
    let f = std::fs::File::open(m.dir.join("large/random.bin")).unwrap();
    use std::os::unix::fs::FileExt;
    for off in [0u64, 1, 4095, 524_287, 3_000_001, (5 << 20) - 10] {
        let mut buf = vec![0u8; 10_000];
        let n = f.read_at(&mut buf, off).unwrap();
        let want = &data[off as usize..(off as usize + 10_000).min(data.len())];
        assert_eq!(&buf[..n], want, "read at {off}");
    }
    // statfs answers
    let st = nix_statvfs(&m.dir);
    assert!(st > 0, "statvfs reports files");
    // a busy mount is refused with a clear error, then unmounts once the file is closed
    let busy = Command::new(bin()).arg("unmount").arg(&m.dir).output().unwrap();
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("busy"), "{}", String::from_utf8_lossy(&busy.stderr));
    drop(f);
    m.unmount();
    assert!(!mounted(&m.dir));
}

fn nix_statvfs(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and an out-struct of the right type.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_files
}

#[test]
fn writes_are_refused_with_erofs() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, store) = (tmp.path().join("src"), tmp.path().join("store"));
    write(&src.join("f"), b"data");
    ccfs_ok(&store, &["store", "init"]);
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap()]);
    let mut m = Mount::new(&store, &tmp.path().join("mnt"), &["--version", "latest"]);
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(std::fs::write(m.dir.join("new"), b"x"), "create");
    erofs(std::fs::OpenOptions::new().write(true).open(m.dir.join("f")).map(drop), "open for write");
    erofs(std::fs::create_dir(m.dir.join("d")), "mkdir");
    erofs(std::fs::remove_file(m.dir.join("f")), "unlink");
    erofs(xattr::set(m.dir.join("f"), "user.x", b"1"), "setxattr");
    assert_eq!(std::fs::read(m.dir.join("f")).unwrap(), b"data");
    m.unmount();
}

#[test]
fn corrupt_block_gives_eio_and_the_mount_stays_up() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, store) = (tmp.path().join("src"), tmp.path().join("store"));
    write(&src.join("bad.bin"), &random_bytes(2 << 20, 9));
    ccfs_ok(&store, &["store", "init"]);
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap()]);
    write(&src.join("good.txt"), b"fine");
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap()]);
    let packs = objects_under(&store, "packs/data");
    let first = packs.iter().find(|p| std::fs::metadata(p).unwrap().len() > 1 << 20).unwrap();
    let mut bytes = std::fs::read(first).unwrap();
    for i in (0..bytes.len() - 100).step_by(4096) {
        bytes[i] ^= 0x55;
    }
    std::fs::write(first, &bytes).unwrap();
    let mut m = Mount::new(&store, &tmp.path().join("mnt"), &["--version", "latest"]);
    let err = std::fs::read(m.dir.join("bad.bin")).expect_err("corrupt data must not be served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(std::fs::read(m.dir.join("good.txt")).unwrap(), b"fine", "the mount keeps serving");
    let log = std::fs::read_to_string(std::env::temp_dir().join(format!(
        "ccfs-mount-{}.log",
        std::fs::canonicalize(&m.dir).unwrap().to_string_lossy().trim_start_matches('/').replace('/', "_")
    )))
    .unwrap();
    assert!(log.contains("corrupt") && log.contains(first.file_name().unwrap().to_str().unwrap()), "log: {log}");
    m.unmount();
}

#[test]
fn hundred_thousand_entries_list_completely() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, store) = (tmp.path().join("src"), tmp.path().join("store"));
    let big = src.join("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..100_000 {
        std::fs::File::create(big.join(format!("entry-{i:06}"))).unwrap();
    }
    write(&big.join("entry-050000"), b"the middle one");
    ccfs_ok(&store, &["store", "init"]);
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap()]);
    let mut m = Mount::new(&store, &tmp.path().join("mnt"), &["--version", "latest"]);
    // `ls -l`: readdir(plus) and a stat of every entry
    let out = Command::new("ls").arg("-l").arg(m.dir.join("big")).output().unwrap();
    assert!(out.status.success());
    let lines = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("entry-")).count();
    assert_eq!(lines, 100_000);
    let mut names: Vec<String> =
        std::fs::read_dir(m.dir.join("big")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 100_000);
    assert_eq!(names[0], "entry-000000");
    assert_eq!(names[99_999], "entry-099999");
    assert_eq!(std::fs::read(m.dir.join("big/entry-050000")).unwrap(), b"the middle one");
    m.unmount();
}

#[test]
fn whole_store_layout_and_signal_unmount() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, store) = (tmp.path().join("src"), tmp.path().join("store"));
    write(&src.join("v"), b"one");
    ccfs_ok(&store, &["store", "init"]);
    let v1 = ccfs_json(&store, &["version", "create", src.to_str().unwrap()])["version"]["version_id"].clone();
    write(&src.join("v"), b"two");
    let v2 = ccfs_json(&store, &["version", "create", src.to_str().unwrap()])["version"]["version_id"].clone();
    write(&src.join("v"), b"dev");
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap(), "--branch", "dev"]);
    let micros = |v: &serde_json::Value| v.as_str().unwrap().rsplit('/').next().unwrap().to_string();

    let m = Mount::new(&store, &tmp.path().join("mnt"), &[]);
    let mut branches: Vec<String> =
        std::fs::read_dir(&m.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    branches.sort();
    assert_eq!(branches, ["dev", "main"]);
    assert_eq!(std::fs::read_link(m.dir.join("main/latest")).unwrap(), Path::new(&micros(&v2)));
    assert_eq!(std::fs::read(m.dir.join("main/latest/v")).unwrap(), b"two");
    assert_eq!(std::fs::read(m.dir.join("main").join(micros(&v1)).join("v")).unwrap(), b"one");
    assert_eq!(std::fs::read(m.dir.join("dev/latest/v")).unwrap(), b"dev");
    assert!(std::fs::metadata(m.dir.join("nope")).is_err());
    // SIGTERM unmounts cleanly and the process exits
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(m.pid as i32, libc::SIGTERM) }, 0);
    wait_gone(m.pid);
    let t0 = Instant::now();
    while mounted(&m.dir) {
        assert!(t0.elapsed() < Duration::from_secs(10), "still mounted after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::mem::forget(m);

    // one branch at the root
    let mut b = Mount::new(&store, &tmp.path().join("mnt2"), &["--branch", "main"]);
    assert_eq!(std::fs::read(b.dir.join("latest/v")).unwrap(), b"two");
    b.unmount();

    // bad mount requests are refused clearly
    let o = ccfs(&store, &["mount", tmp.path().join("missing-dir").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("mount point"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ccfs(&store, &["mount", tmp.path().join("mnt3").to_str().unwrap(), "--version", "nope"]);
    assert!(!o.status.success());
}

#[test]
fn disk_cache_is_shared_verified_and_bounded() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, store, cache) = (tmp.path().join("src"), tmp.path().join("store"), tmp.path().join("cache"));
    let data = random_bytes(3 << 20, 77);
    write(&src.join("f.bin"), &data);
    ccfs_ok(&store, &["store", "init"]);
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap()]);
    let cache_arg = ["--disk-cache", cache.to_str().unwrap(), "--disk-cache-mb", "64"];
    let mut args = vec!["--version", "latest"];
    args.extend_from_slice(&cache_arg);
    let mut m = Mount::new(&store, &tmp.path().join("mnt"), &args);
    assert!(std::fs::read(m.dir.join("f.bin")).unwrap() == data);
    m.unmount();
    let cached: Vec<PathBuf> = objects_under(&cache, "");
    assert!(!cached.is_empty(), "blocks land in the disk cache");
    // the store loses its data: a new mount of another view is still served from the cache
    for p in objects_under(&store, "packs/data") {
        std::fs::remove_file(p).unwrap();
    }
    let mut m = Mount::new(&store, &tmp.path().join("mnt2"), &cache_arg);
    let via_store_view = m.dir.join("main/latest/f.bin");
    assert!(std::fs::read(&via_store_view).unwrap() == data, "served from the disk cache");
    m.unmount();
    // a corrupted cache entry is a miss, never wrong data (and the store has nothing left)
    let victim = &cached[0];
    std::fs::write(victim, b"not the block").unwrap();
    let mut m = Mount::new(&store, &tmp.path().join("mnt3"), &args);
    let err = std::fs::read(m.dir.join("f.bin")).expect_err("a corrupt cache entry must not be served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(!victim.exists(), "the corrupt entry is dropped");
    m.unmount();
}
