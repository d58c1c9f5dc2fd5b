//! Checkout into live directories: every modified/absent policy pair on a prepared target,
//! resume after a kill without rewriting finished files, and the same through the binary.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const V_MTIME: i64 = 1_600_000_000;

/// The version: identical, newer, older and missing files, plus a directory.
fn make_version_src(src: &Path) {
    for (name, body) in [
        ("identical.txt", "same content"),
        ("newer.txt", "version newer"),
        ("older.txt", "version older"),
        ("missing.txt", "only in version"),
        ("dir/inner.txt", "inner"),
    ] {
        write(&src.join(name), body.as_bytes());
        set_mtime(&src.join(name), V_MTIME, 0);
    }
}

/// The target before checkout: identical content with another mtime, a newer and an older
/// modified file, and entries the version lacks.
fn prepare_target(dst: &Path) {
    write(&dst.join("identical.txt"), b"same content");
    set_mtime(&dst.join("identical.txt"), V_MTIME + 50, 0);
    write(&dst.join("newer.txt"), b"target newer!");
    set_mtime(&dst.join("newer.txt"), V_MTIME + 1000, 0);
    write(&dst.join("older.txt"), b"target older!");
    set_mtime(&dst.join("older.txt"), V_MTIME - 1000, 0);
    write(&dst.join("absent.txt"), b"only in target");
    write(&dst.join("absent_dir/deep/x"), b"x");
    write(&dst.join("dir/absent_inner"), b"y");
}

#[test]
fn every_policy_pair_file_by_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, store) = (tmp.path().join("src"), tmp.path().join("store"));
    make_version_src(&src);
    ccfs_ok(&store, &["store", "init"]);
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap()]);
    for modified in ["replace", "keep-existing", "keep-newer"] {
        for absent in ["preserve", "delete", "archive"] {
            let dst = tmp.path().join(format!("t-{modified}-{absent}"));
            prepare_target(&dst);
            let ino_identical = std::fs::metadata(dst.join("identical.txt")).unwrap().ino();
            let out = ccfs_json(
                &store,
                &[
                    "version",
                    "checkout",
                    "--to",
                    dst.to_str().unwrap(),
                    "--modified-policy",
                    modified,
                    "--absent-policy",
                    absent,
                ],
            );
            let o = &out["outcome"];
            let read = |n: &str| std::fs::read_to_string(dst.join(n)).ok();
            let ctx = format!("{modified}/{absent}");
            // identical: not rewritten, metadata brought in line
            let md = std::fs::metadata(dst.join("identical.txt")).unwrap();
            assert_eq!(md.ino(), ino_identical, "{ctx}: identical file rewritten");
            assert_eq!(md.mtime(), V_MTIME, "{ctx}");
            assert_eq!(read("missing.txt").as_deref(), Some("only in version"), "{ctx}");
            assert_eq!(read("dir/inner.txt").as_deref(), Some("inner"), "{ctx}");
            let (newer, older) = match modified {
                "replace" => ("version newer", "version older"),
                "keep-existing" => ("target newer!", "target older!"),
                _ => ("target newer!", "version older"),
            };
            assert_eq!(read("newer.txt").as_deref(), Some(newer), "{ctx}");
            assert_eq!(read("older.txt").as_deref(), Some(older), "{ctx}");
            let kept = [newer, older].iter().filter(|s| s.starts_with("target")).count() as u64;
            assert_eq!(o["kept"], kept, "{ctx}: {o}");
            match absent {
                "preserve" => {
                    assert_eq!(read("absent.txt").as_deref(), Some("only in target"), "{ctx}");
                    assert!(dst.join("absent_dir/deep/x").exists() && dst.join("dir/absent_inner").exists(), "{ctx}");
                }
                "delete" => {
                    assert!(!dst.join("absent.txt").exists() && !dst.join("absent_dir").exists(), "{ctx}");
                    assert!(!dst.join("dir/absent_inner").exists(), "{ctx}");
                    assert_eq!(o["deleted"], 3, "{ctx}: {o}");
                }
                _ => {
                    assert!(!dst.join("absent.txt").exists(), "{ctx}");
                    let archive = Path::new(o["archive_dir"].as_str().expect("archive_dir reported")).to_path_buf();
                    assert!(archive.starts_with(dst.join(".ccfs_archive")), "{ctx}: {}", archive.display());
                    assert_eq!(std::fs::read(archive.join("absent.txt")).unwrap(), b"only in target");
                    assert_eq!(std::fs::read(archive.join("absent_dir/deep/x")).unwrap(), b"x");
                    assert_eq!(std::fs::read(archive.join("dir/absent_inner")).unwrap(), b"y", "relative paths kept");
                    assert_eq!(o["archived"], 3, "{ctx}: {o}");
                }
            }
            assert!(
                std::fs::read_dir(&dst).unwrap().all(|e| !e
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".ccfs-part-")),
                "{ctx}: no temporary files left"
            );
        }
    }
    // a second checkout with archive does not archive the archive
    let dst = tmp.path().join("t-keep-existing-archive");
    let again = ccfs_json(
        &store,
        &[
            "version",
            "checkout",
            "--to",
            dst.to_str().unwrap(),
            "--absent-policy",
            "archive",
            "--modified-policy",
            "keep-existing",
        ],
    );
    assert_eq!(again["outcome"]["archived"], 0, "{again}");
}

#[test]
fn killed_checkout_resumes_without_rewriting_finished_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, store, dst) = (tmp.path().join("src"), tmp.path().join("store"), tmp.path().join("dst"));
    for i in 0..48 {
        write(&src.join(format!("d{}/f{i:02}.bin", i % 4)), &random_bytes(4 << 20, 500 + i));
    }
    write(&src.join("sparse.img"), b"");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(src.join("sparse.img")).unwrap();
        f.set_len(256 << 20).unwrap();
        f.write_all_at(b"end", (256 << 20) - 3).unwrap();
    }
    ccfs_ok(&store, &["store", "init"]);
    ccfs_ok(&store, &["version", "create", src.to_str().unwrap()]);
    let mut child = Command::new(bin())
        .arg("--store")
        .arg(&store)
        .args(["version", "checkout", "--to", dst.to_str().unwrap(), "--threads", "1"])
        .spawn()
        .unwrap();
    let finished = |dst: &Path| -> Vec<(std::path::PathBuf, u64)> {
        let mut v = Vec::new();
        for d in 0..4 {
            if let Ok(rd) = std::fs::read_dir(dst.join(format!("d{d}"))) {
                for e in rd.flatten() {
                    if !e.file_name().to_string_lossy().starts_with(".ccfs-part-") {
                        v.push((e.path(), e.metadata().unwrap().ino()));
                    }
                }
            }
        }
        v
    };
    let t0 = Instant::now();
    while finished(&dst).len() < 10 {
        assert!(t0.elapsed() < Duration::from_secs(120), "checkout made no progress");
        assert!(child.try_wait().unwrap().is_none(), "checkout finished before it could be killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = finished(&dst);
    assert!(before.len() < 48, "killed mid-way");
    // every file under its final name is complete
    for (p, _) in &before {
        let rel = p.strip_prefix(&dst).unwrap();
        assert!(std::fs::read(p).unwrap() == std::fs::read(src.join(rel)).unwrap(), "{} half-written", p.display());
    }
    let out = ccfs_json(&store, &["version", "checkout", "--to", dst.to_str().unwrap()]);
    assert!(out["outcome"]["unchanged"].as_u64().unwrap() >= before.len() as u64, "{out}");
    for (p, ino) in &before {
        assert_eq!(std::fs::metadata(p).unwrap().ino(), *ino, "{} was rewritten on resume", p.display());
    }
    assert_same_tree(&src, &dst);
    let md = std::fs::metadata(dst.join("sparse.img")).unwrap();
    assert!(md.blocks() * 512 < 1 << 20, "sparse file stays sparse: {} blocks", md.blocks());
}
