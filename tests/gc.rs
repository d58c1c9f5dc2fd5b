//! Deleting versions, garbage collection and `check`, end to end through the `ccfs` binary on
//! local stores: shared data survives deletes, space comes back, gc killed at every write point
//! leaves a store that the next run finishes, creates running beside gc never lose a block, and
//! `check --read-data` names a corrupt block and the files it breaks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn init(store: &Path) {
    // Small packs so a few MiB of data spread over many packs (repack and sweep have work).
    ccfs_ok(store, &["store", "init", "--pack-size-mb", "1", "--block-size-kb", "64"]);
}

/// Copy a tree as the expected content of a version (cp -a keeps modes, times, xattrs, links).
fn keep_copy(src: &Path, dst: &Path) {
    let st = Command::new("cp").arg("-a").arg(src).arg(dst).status().unwrap();
    assert!(st.success());
}

fn create(store: &Path, src: &Path) -> String {
    let v = ccfs_json(store, &["version", "create", src.to_str().unwrap()]);
    v["version"]["version_id"].as_str().unwrap().to_string()
}

/// A create on a slow store (every write 40 ms late), so it overlaps gc runs.
fn slow_create(store: &Path, src: &Path) -> String {
    let out = Command::new(bin())
        .args(["--store", store.to_str().unwrap(), "--json", "version", "create", src.to_str().unwrap()])
        .env("CCFS_FAULTS", "delay_ms=40")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["version"]["version_id"].as_str().unwrap().to_string()
}

fn assert_version_is(store: &Path, id: &str, expected: &Path, scratch: &Path) {
    let out = scratch.join(format!("co-{}", id.rsplit('/').next().unwrap()));
    let _ = std::fs::remove_dir_all(&out);
    ccfs_ok(store, &["version", "checkout", id, "--to", out.to_str().unwrap()]);
    assert_same_tree(expected, &out);
    std::fs::remove_dir_all(&out).unwrap();
}

fn gc(store: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["gc", "--grace", "0"];
    args.extend_from_slice(extra);
    ccfs_json(store, &args)["gc"].clone()
}

fn check_healthy(store: &Path) -> serde_json::Value {
    let r = ccfs_json(store, &["check", "--read-data"]);
    assert_eq!(r["check"]["healthy"], true, "check: {r:#}");
    r["check"].clone()
}

/// Three versions sharing most of their data; the middle one (parent of the third) is deleted.
fn three_versions(tmp: &Path, store: &Path) -> (Vec<String>, Vec<PathBuf>) {
    let src = tmp.join("src");
    make_rich_tree(&src);
    for i in 0..12 {
        write(&src.join(format!("many/f{i}")), &random_bytes(150_000, 100 + i));
    }
    let mut ids = Vec::new();
    let mut copies = Vec::new();
    for round in 0..3u64 {
        if round > 0 {
            // change some files, drop some, add some
            write(&src.join("large/random.bin"), &random_bytes(5 << 20, 50 + round));
            for i in 0..12 {
                if (i + round) % 3 == 0 {
                    let _ = std::fs::remove_file(src.join(format!("many/f{i}")));
                }
            }
            write(&src.join(format!("added-{round}")), &random_bytes(400_000, 70 + round));
        }
        ids.push(create(store, &src));
        let copy = tmp.join(format!("expect-{round}"));
        keep_copy(&src, &copy);
        copies.push(copy);
    }
    (ids, copies)
}

#[test]
fn delete_one_of_three_keeps_the_others_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let (ids, copies) = three_versions(tmp.path(), &store);
    let before = bytes_under(&store, "packs");

    ccfs_ok(&store, &["version", "delete", &ids[1]]);
    let listed = ccfs_json(&store, &["version", "list"]);
    let listed: Vec<&str> = listed.as_array().unwrap().iter().map(|m| m["version_id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[0].as_str()], "the version leaves the listing at once");

    // Aggressive repacking: most surviving packs move, so reads must follow blobs by id.
    let r = gc(&store, &["--repack-below", "0.95"]);
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["packs_repacked"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["pending"].as_array().unwrap().len(), 0, "{r:#}");
    assert_eq!(r["missing_blobs"], 0);
    let after = bytes_under(&store, "packs");
    assert!(after < before, "gc gives space back: {before} -> {after}");

    check_healthy(&store);
    assert_version_is(&store, &ids[0], &copies[0], tmp.path());
    assert_version_is(&store, &ids[2], &copies[2], tmp.path());
    // reads by path (not only checkout) follow moved blocks
    let cat = ccfs(&store, &["version", "cat", &ids[2], "/large/random.bin"]);
    assert!(cat.status.success());
    assert_eq!(cat.stdout, std::fs::read(copies[2].join("large/random.bin")).unwrap());

    // the summary counts the deletion and sums only live versions
    let info = ccfs_json(&store, &["store", "info"]);
    assert_eq!(info["summary"]["versions_num"], 2);
    assert_eq!(info["summary"]["deleted_versions_num"], 1);
    let s0 = ccfs_json(&store, &["version", "stats", &ids[0]]);
    let s2 = ccfs_json(&store, &["version", "stats", &ids[2]]);
    let total = s0["summary"]["fs_total_data"].as_u64().unwrap() + s2["summary"]["fs_total_data"].as_u64().unwrap();
    assert_eq!(info["summary"]["fs_total_data"].as_u64().unwrap(), total);

    // a second gc finds nothing left to do
    let r = gc(&store, &[]);
    assert_eq!(r["packs_deleted"], 0, "{r:#}");
    assert_eq!(r["packs_repacked"], 0, "{r:#}");
}

#[test]
fn deleting_every_version_then_gc_leaves_only_header_and_records() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let (ids, _) = three_versions(tmp.path(), &store);
    // dry run changes nothing
    for id in &ids {
        ccfs_ok(&store, &["version", "delete", id]);
    }
    let packs = count_objects(&store, "packs");
    let dry = gc(&store, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["packs_condemned"].as_u64().unwrap(), packs as u64);
    assert_eq!(count_objects(&store, "packs"), packs, "dry run deletes nothing");

    let r = gc(&store, &[]);
    assert_eq!(r["packs_deleted"].as_u64().unwrap(), packs as u64, "{r:#}");
    let mut left: Vec<String> = objects_under(&store, "")
        .iter()
        .map(|p| p.strip_prefix(&store).unwrap().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expect = vec!["ccfs.json".to_string()];
    expect.extend(ids.iter().map(|id| {
        let micros: u64 = id.rsplit('/').next().unwrap().parse().unwrap();
        format!("deleted/main/{micros:020}")
    }));
    expect.sort();
    assert_eq!(left, expect);
    let info = ccfs_json(&store, &["store", "info"]);
    assert_eq!(info["summary"]["versions_num"], 0);
    assert_eq!(info["summary"]["deleted_versions_num"], 3);
    assert!(info["summary"]["total_object_data"].as_u64().unwrap() < 16 * 1024);
    check_healthy(&store);
}

#[test]
fn gc_killed_at_every_write_then_rerun_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let (ids, copies) = three_versions(tmp.path(), &store);
    ccfs_ok(&store, &["version", "delete", &ids[1]]);

    // Crash gc (abort, as kill -9) before its 1st, 2nd, … write until a run gets through.
    let mut crashes = 0;
    for n in 0..200 {
        let out = Command::new(bin())
            .args(["--store", store.to_str().unwrap(), "--json", "gc", "--grace", "0", "--repack-below", "0.95"])
            .env("CCFS_FAULTS", format!("crash_after_writes={n}"))
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("fault injection: aborting"),
            "gc failed for another reason: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        crashes += 1;
        // After every crash the store is whole: each version reads back.
        let c = ccfs_json(&store, &["check"]);
        assert_eq!(c["check"]["healthy"], true, "after a crash at write {n}: {c:#}");
        if n % 4 == 0 {
            assert_version_is(&store, &ids[2], &copies[2], tmp.path());
        }
    }
    assert!(crashes >= 5, "gc has several write points (lease, repack, index, record, deletes): {crashes}");
    // A final clean run leaves nothing behind.
    let r = gc(&store, &[]);
    assert_eq!(r["pending"].as_array().unwrap().len(), 0, "{r:#}");
    let c = check_healthy(&store);
    assert_eq!(c["unused_packs"], 0, "{c:#}");
    assert_eq!(count_objects(&store, "gc"), 0, "no gc record left");
    assert_eq!(count_objects(&store, "leases"), 0, "no lease left");
    assert_version_is(&store, &ids[0], &copies[0], tmp.path());
    assert_version_is(&store, &ids[2], &copies[2], tmp.path());

    // And killed at random moments by a real SIGKILL.
    ccfs_ok(&store, &["version", "delete", &ids[0]]);
    for delay_ms in [5u64, 20, 40, 80, 150] {
        let mut child = Command::new(bin())
            .args(["--store", store.to_str().unwrap(), "gc", "--grace", "0", "--repack-below", "0.95"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let c = ccfs_json(&store, &["check"]);
        assert_eq!(c["check"]["healthy"], true, "after SIGKILL at {delay_ms} ms: {c:#}");
    }
    gc(&store, &[]);
    check_healthy(&store);
    assert_version_is(&store, &ids[2], &copies[2], tmp.path());
}

#[test]
fn gc_waits_for_a_running_create_and_ignores_dead_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let (ids, copies) = three_versions(tmp.path(), &store);
    ccfs_ok(&store, &["version", "delete", &ids[0]]);

    // A create on another machine, alive (renewed now).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let lease = |id: &str, host: &str, pid: u32, renewed: u64| {
        serde_json::json!({"id": id, "kind": "create", "host": host, "pid": pid,
                           "started_micros": renewed, "renewed_micros": renewed, "ttl_secs": 600})
        .to_string()
    };
    write(&store.join("leases/remote-create"), lease("remote-create", "some-other-host", 1, now).as_bytes());
    let packs_before = objects_under(&store, "packs");
    let r = gc(&store, &[]);
    let pending = r["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{r:#}");
    assert_eq!(pending[0]["waiting_for"][0], "remote-create");
    assert_eq!(r["packs_deleted"], 0, "nothing is deleted while the create may still commit");
    assert!(packs_before.iter().all(|p| p.exists()), "every pack is still there");
    assert_eq!(count_objects(&store, "gc"), 1);
    // Condemned packs are excluded from what new creates deduplicate against; versions still read.
    check_healthy(&store);
    assert_version_is(&store, &ids[2], &copies[2], tmp.path());

    // The remote create finishes (its lease is released): the next gc completes the sweep.
    std::fs::remove_file(store.join("leases/remote-create")).unwrap();
    let r = gc(&store, &[]);
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["pending"].as_array().unwrap().len(), 0);
    assert_eq!(count_objects(&store, "gc"), 0);

    // Leases that no longer count: expired on another host, or of a dead process on this one.
    ccfs_ok(&store, &["version", "delete", &ids[1]]);
    let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap().trim().to_string();
    write(&store.join("leases/expired"), lease("expired", "some-other-host", 1, now - 3_600_000_000).as_bytes());
    write(&store.join("leases/dead-pid"), lease("dead-pid", &host, u32::MAX - 7, now).as_bytes());
    let r = gc(&store, &[]);
    assert_eq!(r["pending"].as_array().unwrap().len(), 0, "{r:#}");
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r:#}");
    check_healthy(&store);
    assert_version_is(&store, &ids[2], &copies[2], tmp.path());

    // Two gcs at once: the younger one backs off with a clear error.
    let gc_lease = serde_json::json!({"id": "00000000000000000001-other-gc", "kind": "gc", "host": "some-other-host",
                                      "pid": 1, "started_micros": now, "renewed_micros": now, "ttl_secs": 600});
    write(&store.join("leases/00000000000000000001-other-gc"), gc_lease.to_string().as_bytes());
    let out = ccfs(&store, &["gc"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another gc is running"), "{out:?}");
}

#[test]
fn creates_and_gc_running_together_never_lose_a_block() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let src = tmp.path().join("src");
    for i in 0..10 {
        write(&src.join(format!("d{}/f{i}", i % 3)), &random_bytes(400_000 + i * 1000, i as u64));
    }
    let rounds = 14u64;
    let (store2, tmp2) = (store.clone(), tmp.path().to_path_buf());
    // Process 1: mutate, create, remember what each version must contain.
    let creator = std::thread::spawn(move || {
        let mut made = Vec::new();
        for round in 0..rounds {
            for k in 0..3u64 {
                let i = (round * 3 + k) % 10;
                let data = random_bytes(900_000 + (round as usize) * 777, 1000 + round * 10 + k);
                write(&src.join(format!("d{}/f{i}", i % 3)), &data);
            }
            // every other round shares a block with an old, soon deleted, version
            if round % 2 == 0 {
                write(&src.join("shared"), &random_bytes(200_000, round / 4));
            }
            let id = slow_create(&store2, &src);
            let copy = tmp2.join(format!("expect-{round}"));
            keep_copy(&src, &copy);
            made.push((id, copy));
        }
        made
    });
    // Process 2: delete the oldest versions and collect, over and over.
    let mut gcs = 0;
    let mut pended = 0;
    while !creator.is_finished() {
        let listed = ccfs_json(&store, &["version", "list"]);
        let ids: Vec<String> =
            listed.as_array().unwrap().iter().map(|m| m["version_id"].as_str().unwrap().to_string()).collect();
        if ids.len() > 3 {
            ccfs_ok(&store, &["version", "delete", ids.last().unwrap()]);
        }
        let r = gc(&store, &["--repack-below", "0.8"]);
        gcs += 1;
        pended += usize::from(!r["pending"].as_array().unwrap().is_empty());
        assert_eq!(r["missing_blobs"], 0, "{r:#}");
    }
    let made = creator.join().unwrap();
    assert!(gcs >= 3, "gc ran alongside the creates ({gcs} runs)");
    assert!(pended >= 1, "some gc ran while a create held its lease ({gcs} runs)");
    eprintln!("{gcs} gc runs beside {rounds} creates; {pended} left a sweep waiting for a create");
    gc(&store, &["--repack-below", "0.8"]);
    assert_eq!(count_objects(&store, "gc"), 0, "every sweep completed once no create runs");
    check_healthy(&store);
    let live = ccfs_json(&store, &["version", "list"]);
    let live: Vec<&str> = live.as_array().unwrap().iter().map(|m| m["version_id"].as_str().unwrap()).collect();
    let mut checked = 0;
    for (id, copy) in &made {
        if live.contains(&id.as_str()) {
            assert_version_is(&store, id, copy, tmp.path());
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} versions survived");
}

#[test]
fn check_names_corrupt_and_missing_blocks_and_the_files_they_break() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init(&store);
    let src = tmp.path().join("src");
    write(&src.join("victim.bin"), &random_bytes(300_000, 9));
    write(&src.join("sub/also-victim.bin"), &random_bytes(300_000, 9)); // same content
    write(&src.join("fine.txt"), b"untouched");
    let v1 = create(&store, &src);
    write(&src.join("later.txt"), b"second version");
    let v2 = create(&store, &src);
    check_healthy(&store);

    // Flip a byte inside a data pack (within a blob, not the trailer).
    let pack =
        objects_under(&store, "packs/data").into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&pack, &bytes).unwrap();

    // Structure alone looks fine; reading the data finds it.
    let quick = ccfs(&store, &["check"]);
    assert!(quick.status.success(), "{quick:?}");
    let out = ccfs(&store, &["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(4), "exit status 4 = problems found");
    let text = String::from_utf8_lossy(&out.stdout);
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(text.contains("PROBLEM corrupt_blob"), "{text}");
    assert!(text.contains(&pack_name), "names the pack: {text}");
    assert!(text.contains(&format!("{v1}:/victim.bin")), "names the file in v1: {text}");
    assert!(text.contains(&format!("{v2}:/sub/also-victim.bin")), "names the file in v2: {text}");
    assert!(!text.contains("fine.txt"), "{text}");
    let out = ccfs(&store, &["--json", "check", "--read-data=100"]);
    assert_eq!(out.status.code(), Some(4));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["check"]["healthy"], false);
    let p = &j["check"]["problems"][0];
    assert_eq!(p["versions"].as_array().unwrap().len(), 2, "{p:#}");

    // A missing pack is found without reading data.
    std::fs::remove_file(&pack).unwrap();
    let out = ccfs(&store, &["check"]);
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PROBLEM missing_blob"), "{text}");
    assert!(text.contains(&format!("{v2}:/victim.bin")), "{text}");

    // gc reports what is missing and never makes it worse: files in other packs still read.
    let r = gc(&store, &[]);
    assert!(r["missing_blobs"].as_u64().unwrap() > 0, "{r:#}");
    let later = ccfs(&store, &["version", "cat", &v2, "/later.txt"]);
    assert_eq!(later.stdout, b"second version");

    // bad arguments
    let out = ccfs(&store, &["check", "--read-data=0"]);
    assert!(!out.status.success());
    let out = ccfs(&store, &["gc", "--grace", "1 fortnight"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit"), "{out:?}");
}

/// A big directory where a few files change is stored as a delta from the parent version's full
/// tree. Deleting that parent and collecting garbage must keep the full tree the delta is built
/// on, and the deltas must keep reading after their packs are repacked.
#[test]
fn directory_deltas_survive_deleting_their_base_version_and_repacks() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, store) = (tmp.path().join("src"), tmp.path().join("store"));
    ccfs_ok(&store, &["store", "init", "--pack-size-mb", "1"]);
    let big = src.join("big");
    for i in 0..300 {
        write(&big.join(format!("file-{i:04}.txt")), format!("content of file {i}\n").as_bytes());
    }
    write(&src.join("other/a.txt"), b"a");
    std::thread::sleep(std::time::Duration::from_millis(150));
    let v1 = create(&store, &src);
    let trees_v1 = bytes_under(&store, "packs/tree");

    // Three changes, one removal, one addition: the new `big` tree is a delta.
    for i in [7, 150, 299] {
        write(&big.join(format!("file-{i:04}.txt")), format!("changed file {i}\n").as_bytes());
    }
    std::fs::remove_file(big.join("file-0100.txt")).unwrap();
    write(&big.join("file-0100a.txt"), b"new file\n");
    std::thread::sleep(std::time::Duration::from_millis(150));
    let v2 = create(&store, &src);
    let trees_v2 = bytes_under(&store, "packs/tree") - trees_v1;
    assert!(
        trees_v2 * 5 < trees_v1,
        "v2 wrote {trees_v2} tree bytes, v1 {trees_v1}: the changed directory must be a delta"
    );
    let expect_v2 = tmp.path().join("expect-v2");
    keep_copy(&src, &expect_v2);

    // A third version with more changes: its delta is against v1's full tree again, not v2's delta.
    for i in 0..20 {
        write(&big.join(format!("file-{:04}.txt", 200 + i)), b"third round\n");
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    let v3 = create(&store, &src);
    let expect_v3 = tmp.path().join("expect-v3");
    keep_copy(&src, &expect_v3);
    let listing = ccfs_json(&store, &["version", "dir", &v3, "--path", "/big"]);
    assert_eq!(listing.as_array().unwrap().len(), 300);

    // Delete the version whose full tree both deltas are built on, and repack everything.
    ccfs_ok(&store, &["version", "delete", &v1]);
    gc(&store, &["--repack-below", "1.0"]);
    check_healthy(&store);
    assert_version_is(&store, &v2, &expect_v2, tmp.path());
    assert_version_is(&store, &v3, &expect_v3, tmp.path());
    // And again with only the newest left.
    ccfs_ok(&store, &["version", "delete", &v2]);
    gc(&store, &["--repack-below", "1.0"]);
    check_healthy(&store);
    assert_version_is(&store, &v3, &expect_v3, tmp.path());
}
