//! Store faults injected under real stores (a local directory, and the S3 server scripts/test.sh
//! starts): transient failures are retried and the versions come out whole; a persistent
//! failure stops the create with its cause and leaves no version; a create killed at every write
//! point leaves a store whose next create reuses what was uploaded.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn run(store: &str, faults: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.arg("--store").arg(store).args(args).env("AWS_ACCESS_KEY_ID", "test").env("AWS_SECRET_ACCESS_KEY", "test");
    if let Some(f) = faults {
        c.env("CCFS_FAULTS", f);
    }
    c.output().unwrap()
}

fn ok(store: &str, faults: Option<&str>, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = run(store, faults, &a);
    assert!(o.status.success(), "{args:?} with {faults:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn versions(store: &str) -> usize {
    ok(store, None, &["version", "list"]).as_array().unwrap().len()
}

/// The shared fault suite, run per backend.
fn fault_suite(store: &str, tmp: &Path) {
    let src = tmp.join("src");
    make_rich_tree(&src);
    ok(store, None, &["store", "init", "--pack-size-mb", "1", "--block-size-kb", "64"]);

    // Persistent: every pack upload refused. The create fails, names the object, commits nothing.
    let o = run(store, Some("fail_writes_under=packs/"), &["version", "create", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("packs/") && err.contains("injected persistent fault"), "{err}");
    assert_eq!(versions(store), 0);

    // The store went away half-way (every request after the 12th fails).
    let o = run(store, Some("fail_after=12"), &["version", "create", src.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("store unavailable"), "{o:?}");
    assert_eq!(versions(store), 0);

    // Transient: every 3rd request fails once; retries carry the create through.
    let v = ok(store, Some("fail_every=3"), &["version", "create", src.to_str().unwrap()]);
    let id = v["version"]["version_id"].as_str().unwrap().to_string();
    assert_eq!(versions(store), 1, "exactly one version, even when the commit itself was retried");
    let out = tmp.join("out");
    ok(store, Some("fail_every=3"), &["version", "checkout", &id, "--to", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    let c = ok(store, None, &["check", "--read-data"]);
    assert_eq!(c["check"]["healthy"], true, "{c:#}");

    // Killed before each of its writes in turn: never a partial version; the next create
    // finishes and reuses uploaded packs.
    write(&src.join("new/data.bin"), &random_bytes(3 << 20, 77));
    let mut crashes = 0;
    let mut v2 = None;
    for n in 1u64..100 {
        let o = run(
            store,
            Some(&format!("crash_after_writes={n}")),
            &["--json", "version", "create", src.to_str().unwrap()],
        );
        if o.status.success() {
            // each crashed run left packs the next one reused: fewer writes were needed
            v2 = Some(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap());
            break;
        }
        assert!(String::from_utf8_lossy(&o.stderr).contains("fault injection: aborting"), "{o:?}");
        assert_eq!(versions(store), 1, "no partial version after a crash at write {n}");
        crashes += 1;
    }
    assert!(crashes >= 2, "{crashes}");
    let v2 = v2.expect("a create got through");
    assert_eq!(versions(store), 2);
    let out2 = tmp.join("out2");
    ok(
        store,
        None,
        &["version", "checkout", v2["version"]["version_id"].as_str().unwrap(), "--to", out2.to_str().unwrap()],
    );
    assert_same_tree(&src, &out2);
    // gc collects what the crashed creates left (nothing young: grace 0), check stays healthy
    ok(store, None, &["gc", "--grace", "0"]);
    let c = ok(store, None, &["check", "--read-data"]);
    assert_eq!(c["check"]["healthy"], true, "{c:#}");
    assert_eq!(c["check"]["unused_packs"], 0, "{c:#}");
}

#[test]
fn faults_on_a_local_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    fault_suite(store.to_str().unwrap(), tmp.path());
}

#[test]
fn faults_on_s3() {
    let Ok(ep) = std::env::var("CCFS_TEST_S3_ENDPOINT") else {
        eprintln!("\n!!! SKIPPED faults_on_s3: CCFS_TEST_S3_ENDPOINT is not set; scripts/test.sh sets it !!!\n");
        return;
    };
    let bucket = format!("ccfs-faults-{:016x}", rand::random::<u64>());
    ureq::put(&format!("{ep}/{bucket}")).send_bytes(&[]).expect("create bucket");
    let tmp = tempfile::tempdir().unwrap();
    fault_suite(&format!("s3://{bucket}?endpoint={ep}"), tmp.path());
}
