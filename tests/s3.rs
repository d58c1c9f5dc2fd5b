//! The core round trip, incremental create, checkout, delete and gc against a real S3 server
//! (moto, started on 127.0.0.1 by scripts/test.sh, which sets CCFS_TEST_S3_ENDPOINT), plus the
//! distinct connect-time errors of a missing bucket and an unreachable endpoint.

mod common;

use std::process::{Command, Output};

use common::*;

fn endpoint() -> Option<String> {
    let e = std::env::var("CCFS_TEST_S3_ENDPOINT").ok();
    if e.is_none() {
        eprintln!(
            "\n!!! SKIPPED: CCFS_TEST_S3_ENDPOINT is not set; scripts/test.sh starts an S3 server and sets it !!!\n"
        );
    }
    e
}

/// A fresh bucket on the test server (moto accepts an unsigned CreateBucket).
fn new_bucket(endpoint: &str) -> String {
    let name = format!("ccfs-test-{:016x}", rand::random::<u64>());
    let r = ureq::put(&format!("{endpoint}/{name}")).send_bytes(&[]).expect("create bucket");
    assert_eq!(r.status(), 200);
    name
}

fn s3(url: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--store")
        .arg(url)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap()
}

fn s3_ok(url: &str, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = s3(url, &a);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn round_trip_incremental_checkout_and_delete_on_s3() {
    let Some(ep) = endpoint() else { return };
    let url = format!("s3://{}?endpoint={ep}", new_bucket(&ep));
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src);
    for i in 0..100 {
        write(&src.join(format!("many/f{i:03}")), format!("file {i}").as_bytes());
    }
    s3_ok(&url, &["store", "init"]);
    std::thread::sleep(std::time::Duration::from_millis(150));
    let first = s3_ok(&url, &["version", "create", src.to_str().unwrap()]);
    let second = s3_ok(&url, &["version", "create", src.to_str().unwrap()]);
    assert_eq!(second["stats"]["new_blocks"], 0, "unchanged re-create stores nothing new");
    assert_eq!(second["stats"]["diff_num_files"], 0);
    let out = tmp.path().join("out");
    s3_ok(&url, &["version", "checkout", "--to", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    let v1 = first["version"]["version_id"].as_str().unwrap();
    s3_ok(&url, &["version", "delete", v1]);
    let list = s3_ok(&url, &["version", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let info = s3_ok(&url, &["store", "info"]);
    assert_eq!(info["summary"]["deleted_versions_num"], 1);
    // the remaining version still reads back completely after its parent is gone
    let out2 = tmp.path().join("out2");
    s3_ok(&url, &["version", "checkout", "--to", out2.to_str().unwrap()]);
    assert_same_tree(&src, &out2);
    let cat = s3(&url, &["version", "cat", "latest", "/large/random.bin"]);
    assert!(cat.status.success());
    assert!(cat.stdout == std::fs::read(src.join("large/random.bin")).unwrap());
    // garbage collection on S3: a changed tree, the old version deleted, repacked and swept
    write(&src.join("large/random.bin"), &random_bytes(5 << 20, 99));
    // Two changes in a directory of 100: stored as a delta from the deleted versions' tree.
    write(&src.join("many/f007"), b"changed");
    write(&src.join("many/f150"), b"added");
    let third = s3_ok(&url, &["version", "create", src.to_str().unwrap()]);
    let v2 = second["version"]["version_id"].as_str().unwrap();
    s3_ok(&url, &["version", "delete", v2]);
    let gc = s3_ok(&url, &["gc", "--grace", "0", "--repack-below", "0.9"]);
    assert!(gc["gc"]["packs_deleted"].as_u64().unwrap() > 0, "{gc:#}");
    assert_eq!(gc["gc"]["pending"].as_array().unwrap().len(), 0, "{gc:#}");
    let check = s3_ok(&url, &["check", "--read-data"]);
    assert_eq!(check["check"]["healthy"], true, "{check:#}");
    assert_eq!(check["check"]["unused_packs"], 0, "{check:#}");
    let out3 = tmp.path().join("out3");
    s3_ok(
        &url,
        &["version", "checkout", third["version"]["version_id"].as_str().unwrap(), "--to", out3.to_str().unwrap()],
    );
    assert_same_tree(&src, &out3);
}

#[test]
fn connect_errors_are_distinct_on_s3() {
    let Some(ep) = endpoint() else { return };
    let o = s3(&format!("s3://ccfs-missing-bucket?endpoint={ep}"), &["version", "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("does not exist"), "{err}");
    let o = s3("s3://ccfs-any?endpoint=http://127.0.0.1:1", &["version", "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("cannot reach") && err.contains("connection refused"), "{err}");
    let o = s3("s3://ccfs-any?endpoint=http://no-such-host.invalid:80", &["store", "init"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("cannot reach"), "{err}");
}

#[test]
fn large_packs_are_uploaded_in_parts_on_s3() {
    let Some(ep) = endpoint() else { return };
    let bucket = new_bucket(&ep);
    let url = format!("s3://{bucket}?endpoint={ep}&max_requests=4");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("big.bin"), &random_bytes(60 << 20, 5));
    s3_ok(&url, &["store", "init", "--pack-size-mb", "48"]);
    let v = s3_ok(&url, &["version", "create", src.to_str().unwrap()]);
    // a pack above 32 MiB went up as a multipart upload: S3 ETags of those end in -<parts>
    let listing =
        ureq::get(&format!("{ep}/{bucket}?list-type=2&prefix=packs/data/")).call().unwrap().into_string().unwrap();
    let etags: Vec<&str> = listing.split("<ETag>").skip(1).map(|s| s.split("</ETag>").next().unwrap()).collect();
    assert!(etags.iter().any(|e| e.contains('-')), "{listing}");
    let out = tmp.path().join("out");
    s3_ok(&url, &["version", "checkout", v["version"]["version_id"].as_str().unwrap(), "--to", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), std::fs::read(src.join("big.bin")).unwrap());
}

/// Credentials checked for real: s3s-fs verifies SigV4 signatures (scripts/test.sh starts it
/// with key `ccfs-test-key` / secret `ccfs-test-secret` and sets CCFS_TEST_S3V4_ENDPOINT).
#[test]
fn wrong_credentials_are_refused_clearly() {
    let (Ok(ep), Ok(dir)) = (std::env::var("CCFS_TEST_S3V4_ENDPOINT"), std::env::var("CCFS_TEST_S3V4_DIR")) else {
        eprintln!("\n!!! SKIPPED wrong_credentials_are_refused_clearly: CCFS_TEST_S3V4_ENDPOINT not set (scripts/test.sh starts s3s-fs) !!!\n");
        return;
    };
    let bucket = format!("ccfs-v4-{:016x}", rand::random::<u64>());
    std::fs::create_dir_all(std::path::Path::new(&dir).join(&bucket)).unwrap();
    let url = format!("s3://{bucket}?endpoint={ep}");
    let with = |key: &str, secret: &str, args: &[&str]| {
        Command::new(bin())
            .arg("--store")
            .arg(&url)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap()
    };
    let o = with("ccfs-test-key", "not-the-secret", &["store", "init"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("denied") && err.contains("check the access key"), "{err}");
    let o = with("no-such-key", "ccfs-test-secret", &["version", "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("denied"), "{err}");
    // the right ones work end to end
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("src/f"), &random_bytes(100_000, 3));
    let o = with("ccfs-test-key", "ccfs-test-secret", &["store", "init"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = with("ccfs-test-key", "ccfs-test-secret", &["version", "create", tmp.path().join("src").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = with("ccfs-test-key", "ccfs-test-secret", &["--json", "version", "list"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}
