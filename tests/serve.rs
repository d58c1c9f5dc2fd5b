//! End-to-end tests of `ccfs serve` over real HTTP: sessions, connections, versions as
//! operations, paging, downloads with ranges, checkout, delete, abort, skipped files, history,
//! restarts, every route of the guide, and refusal of bad requests.

mod common;

use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use serde_json::{json, Value};

#[test]
fn full_flow_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_rich_tree(&data.join("src"));
    let mut s = Server::start(&tmp.path().join("state"), &[]);
    s.login();
    let c = connect(&s, "cs1", "bucket-one", &data);
    assert_eq!(c["action_performed"], "create+format");
    assert_eq!(c["version_id"], "");

    // create as an operation, polled to completion
    let op = s.ok(
        "POST",
        "/elcc_api/ccstores/cs1/versions",
        Some(json!({"fs_src": "/src", "version_desc": "first", "threads": "2"})),
    );
    assert_eq!(op["state"], "working");
    let done = s.wait_op(op["id"].as_i64().unwrap());
    assert_eq!(done["operation_status"], "complete", "{done}");
    assert_eq!(done["operation_type"], "scan");
    let progress = &done["operation_progress"]["progress"];
    assert!(progress["fs_created_files"].as_u64().unwrap() > 20, "{progress}");
    for k in ["fs_files_bytes_read_per_sec", "elapsed_sec", "update_time"] {
        assert!(progress.get(k).is_some(), "progress lacks {k}");
    }
    assert!(done["operation_progress"]["bucket"]["write_blobs_bytes"].as_u64().unwrap() > 0);
    let vid = done["operation_result"]["version_id"].as_str().unwrap().to_string();

    // list, stats (cached and not), summary
    let list = s.ok("GET", "/elcc_api/ccstores/cs1/versions", None);
    assert_eq!(list[0]["version_id"], vid.as_str());
    assert_eq!(list[0]["block_size"], "524288");
    assert_eq!(list[0]["version_desc"], "first");
    let st = s.ok("GET", &format!("/elcc_api/ccstores/cs1/versions/stats?version_id={}", enc(&vid)), None);
    assert!(st["summary"]["fs_num_files"].as_u64().unwrap() > 20);
    let st2 =
        s.ok("GET", &format!("/elcc_api/ccstores/cs1/versions/stats?version_id={}&no_cache=true", enc(&vid)), None);
    assert_eq!(st["summary"], st2["summary"]);
    let sum = s.ok("GET", "/elcc_api/ccstores/cs1", None);
    assert_eq!(sum["summary"]["versions_num"], 1);
    let stores = s.ok("GET", "/elcc_api/ccstores", None);
    assert_eq!(stores[0]["user_password"], "XXXX");
    assert_eq!(stores[0]["hash_type"], "SHA-256");

    // dir with paging
    let all = s.ok("GET", &format!("/elcc_api/ccstores/cs1/versions/dir?version_id={}&path=/", enc(&vid)), None);
    let n = all.as_array().unwrap().len();
    assert!(n > 10);
    let page = s.ok(
        "GET",
        &format!("/elcc_api/ccstores/cs1/versions/dir?version_id={}&path=/&count=3&offset=2", enc(&vid)),
        None,
    );
    assert_eq!(page.as_array().unwrap(), &all.as_array().unwrap()[2..5]);
    let hard = s.ok("GET", "/elcc_api/ccstores/cs1/versions/dir?path=/hard", None);
    assert_eq!(hard[0]["nlinks"], "3");
    assert_eq!(hard[0]["type"], "-");

    // download: whole file and a range
    let url = format!(
        "{}/elcc_api/ccstores/cs1/download/file?version_id={}&src_path=/large/text.log&filename=t.log",
        s.base,
        enc(&vid)
    );
    let auth = format!("Bearer {}", s.token.as_ref().unwrap());
    let r = ureq::get(&url).set("Authorization", &auth).call().unwrap();
    assert_eq!(r.header("Content-Disposition").unwrap(), "attachment; filename=\"t.log\"");
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut body).unwrap();
    let truth = std::fs::read(data.join("src/large/text.log")).unwrap();
    assert!(body == truth, "download differs");
    let r = ureq::get(&url).set("Authorization", &auth).set("Range", "bytes=1000-1999").call().unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.header("Content-Range").unwrap(), format!("bytes 1000-1999/{}", truth.len()));
    let mut part = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut part).unwrap();
    assert_eq!(part, &truth[1000..2000]);
    match ureq::get(&url).set("Authorization", &auth).set("Range", "bytes=999999999-").call() {
        Err(ureq::Error::Status(416, _)) => {}
        other => panic!("unsatisfiable range: {other:?}"),
    }

    let downloads = s.ok("GET", "/elcc_api/operations?include_all_statuses=true&include_scan=false&include_commit=false&include_checkout=false&include_delete=false&include_bucket_clear=false&verbose=true", None);
    assert_eq!(downloads.as_array().unwrap().len(), 3, "every download is an operation: {downloads}");
    assert!(downloads.as_array().unwrap().iter().all(|o| o["operation_type"] == "download_file"));
    assert_eq!(downloads[0]["operation_status"], "complete");
    assert_eq!(downloads[0]["operation_result"]["bytes_sent"], truth.len());
    for d in downloads.as_array().unwrap() {
        s.ok("DELETE", &format!("/elcc_api/operations/history/{}", d["id"]), None);
    }

    // checkout into a new directory inside fs_path, compared with the source
    let co = s.ok(
        "POST",
        "/elcc_api/ccstores/cs1/versions/checkout",
        Some(json!({"fs_dest": "/restored", "version_id": vid})),
    );
    assert!(co["fs_dest"].as_str().unwrap().ends_with("/data/restored"));
    let done = s.wait_op(co["id"].as_i64().unwrap());
    assert_eq!(done["operation_status"], "complete", "{done}");
    assert_same_tree(&data.join("src"), &data.join("restored"));
    // sub-path checkout
    let co =
        s.ok("POST", "/elcc_api/ccstores/cs1/versions/checkout", Some(json!({"fs_dest": "/sub", "path": "/nested/a"})));
    assert_eq!(s.wait_op(co["id"].as_i64().unwrap())["operation_status"], "complete");
    assert_eq!(std::fs::read(data.join("sub/b/c/deep.txt")).unwrap(), b"deep file");
    // policies: reruns into the restored tree with an extra file; the request's policy wins,
    // else the connection's default
    let checkout = |body: Value| -> Value {
        let co = s.ok("POST", "/elcc_api/ccstores/cs1/versions/checkout", Some(body));
        let done = s.wait_op(co["id"].as_i64().unwrap());
        assert_eq!(done["operation_status"], "complete", "{done}");
        done["operation_result"].clone()
    };
    write(&data.join("restored/extra.txt"), b"not in the version");
    let r = checkout(json!({"fs_dest": "/restored", "checkout_absent_policy": "absent_archive"}));
    assert_eq!(r["archived"], 1, "{r}");
    assert!(r["unchanged"].as_u64().unwrap() > 20, "a rerun rewrites nothing: {r}");
    assert!(!data.join("restored/extra.txt").exists());
    write(&data.join("restored/extra2.txt"), b"not in the version");
    s.ok("PUT", "/elcc_api/ccstores/cs1", Some(json!({"checkout_absent_policy": "absent_delete"})));
    let r = checkout(json!({"fs_dest": "/restored"}));
    assert_eq!(r["deleted"], 1, "the connection's policy applies; the archive folder is kept: {r}");
    assert!(!data.join("restored/extra2.txt").exists() && data.join("restored/.ccfs_archive").exists());
    s.ok("PUT", "/elcc_api/ccstores/cs1", Some(json!({"checkout_absent_policy": "absent_preserve"})));
    let (st, v) = s.call(
        "POST",
        "/elcc_api/ccstores/cs1/versions/checkout",
        Some(json!({"fs_dest": "/x", "checkout_modified_policy": "modified_shred"})),
    );
    assert_eq!(st, 422, "{v}");

    // delete: the version leaves the listing; the summary counts it
    let del = s.ok("DELETE", "/elcc_api/ccstores/cs1/versions", Some(json!({"version_id": vid, "threads": 4})));
    let done = s.wait_op(del["id"].as_i64().unwrap());
    assert_eq!(done["operation_status"], "complete");
    // the delete runs gc: the version's packs are younger than the grace window, so they stay
    let gc = &done["operation_result"]["gc"];
    assert_eq!(gc["versions"], 0, "{done}");
    assert!(gc["packs_young"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(gc["packs_deleted"], 0, "{done}");
    assert!(s.ok("GET", "/elcc_api/ccstores/cs1/versions", None).as_array().unwrap().is_empty());
    assert_eq!(s.ok("GET", "/elcc_api/ccstores/cs1/stats?no_cache=true", None)["summary"]["deleted_versions_num"], 1);

    // operations listing filters and history
    assert!(s.ok("GET", "/elcc_api/operations", None).as_array().unwrap().is_empty(), "running only by default");
    let all_ops = s.ok("GET", "/elcc_api/operations?include_all_statuses=true", None);
    assert_eq!(all_ops.as_array().unwrap().len(), 6, "create, four checkouts, delete");
    assert!(all_ops[0].get("operation_progress").is_none(), "not verbose by default");
    let checkouts = s.ok("GET", "/elcc_api/operations?include_complete=true&include_scan=false&include_commit=false&include_delete=false&verbose=true", None);
    assert_eq!(checkouts.as_array().unwrap().len(), 4);
    assert!(checkouts[0].get("operation_progress").is_some());
    assert_eq!(s.ok("DELETE", "/elcc_api/operations/history/1", None)["status"], "ok");
    assert_eq!(s.call("GET", "/elcc_api/operations/1", None).0, 404);
    assert_eq!(s.ok("DELETE", "/elcc_api/operations/history/old", None)["purged"], 0);
    assert_eq!(s.ok("DELETE", "/elcc_api/operations/history/all", None)["purged"], 5);
    assert_eq!(s.ok("PUT", "/elcc_api/operations/periodic-update", None)["status"], "ok");
    assert_eq!(s.ok("PUT", "/elcc_api/ccweb/cache/clear", None)["status"], "OK");

    // clear and delete the store: wrong bucket name refused, right one deletes the bucket
    let (st, _) = s.call("DELETE", "/elcc_api/ccstores/cs1", Some(json!({"bucket_name": "other"})));
    assert_eq!(st, 422);
    let clr = s.ok("DELETE", "/elcc_api/ccstores/cs1", Some(json!({"bucket_name": "bucket-one", "threads": 4})));
    let done = s.wait_op(clr["id"].as_i64().unwrap());
    assert_eq!(done["operation_status"], "complete", "{done}");
    assert!(!s.state.join("buckets/bucket-one").exists());
    assert!(s.ok("GET", "/elcc_api/ccstores", None).as_array().unwrap().is_empty());

    // logout ends the session
    s.ok("DELETE", "/api/sessions", None);
    assert_eq!(s.call("GET", "/elcc_api/ccstores", None).0, 401);
    s.stop();
}

#[test]
fn abort_restart_and_history_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for i in 0..10 {
        write(&data.join(format!("big/f{i}")), &random_bytes(24 << 20, 40 + i));
    }
    let state = tmp.path().join("state");
    let mut s = Server::start(&state, &[]);
    s.login();
    connect(&s, "cs", "bucket-two", &data);
    // abort a long create mid-way: no version appears
    let op = s.ok(
        "POST",
        "/elcc_api/ccstores/cs/versions",
        Some(json!({"fs_src": "/big", "threads": 1, "progressrate": 1})),
    );
    let id = op["id"].as_i64().unwrap();
    // Abort as soon as the create has read something (well before its 240 MiB are done).
    let t0 = Instant::now();
    loop {
        let o = s.ok("GET", &format!("/elcc_api/operations/{id}"), None);
        let read = o["operation_progress"]["progress"]["fs_files_bytes_read"].as_u64().unwrap_or(0);
        if read > 0 || o["operation_status"] != "running" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "create never started: {o}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ab = s.ok("PUT", &format!("/elcc_api/operations/{id}/abort"), None);
    assert_eq!(ab["did_abort"], true);
    let done = s.wait_op(id);
    assert_eq!(done["operation_status"], "aborted", "{done}");
    assert!(s.ok("GET", "/elcc_api/ccstores/cs/versions?no_cache=true", None).as_array().unwrap().is_empty());
    assert_eq!(s.ok("PUT", &format!("/elcc_api/operations/{id}/abort"), None)["did_abort"], false);
    let (st, _) = s.call("DELETE", &format!("/elcc_api/operations/history/{}", id + 100), None);
    assert_eq!(st, 404);

    // a second create is killed with the server: after a restart it is failed, the rest is kept
    let op2 = s.ok("POST", "/elcc_api/ccstores/cs/versions", Some(json!({"fs_src": "/big", "threads": 1})));
    let id2 = op2["id"].as_i64().unwrap();
    let (st, _) = s.call("DELETE", &format!("/elcc_api/operations/history/{id2}"), None);
    assert_eq!(st, 409, "a running operation's history cannot be deleted");
    std::thread::sleep(Duration::from_millis(200));
    drop(s); // SIGKILL
    let mut s = Server::start(&state, &[]);
    s.login();
    let o1 = s.ok("GET", &format!("/elcc_api/operations/{id}"), None);
    assert_eq!(o1["operation_status"], "aborted");
    let o2 = s.ok("GET", &format!("/elcc_api/operations/{id2}"), None);
    assert_eq!(o2["operation_status"], "failed", "{o2}");
    assert!(o2["operation_result"]["error"].as_str().unwrap().contains("server stopped"));
    // the connection survived too, and a create now completes (reusing uploaded packs)
    let op3 = s.ok("POST", "/elcc_api/ccstores/cs/versions", Some(json!({"fs_src": "/big"})));
    assert_eq!(s.wait_op(op3["id"].as_i64().unwrap())["operation_status"], "complete");
    assert_eq!(s.ok("GET", "/elcc_api/ccstores/cs/versions?no_cache=true", None).as_array().unwrap().len(), 1);
    s.stop();
}

#[test]
fn unreadable_files_are_listed_as_skipped() {
    if !unsafe_is_root() {
        eprintln!(
            "!!! SKIPPED unreadable_files_are_listed_as_skipped: needs root to run the server as another user !!!"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    write(&data.join("src/ok.txt"), b"ok");
    write(&data.join("src/secret"), b"no");
    std::fs::set_permissions(data.join("src/secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let mut s = Server::start_as(&state, &[], Some(65534), &[]);
    s.login();
    connect(&s, "cs", "bucket-three", &data);
    let op = s.ok("POST", "/elcc_api/ccstores/cs/versions", Some(json!({"fs_src": "/src"})));
    let id = op["id"].as_i64().unwrap();
    assert_eq!(s.wait_op(id)["operation_status"], "complete");
    let sk = s.ok("GET", &format!("/elcc_api/operations/{id}/skipped-files"), None);
    assert_eq!(sk["num_skipped"], 1);
    let (path, reason) = sk["skipped_list"].as_object().unwrap().iter().next().unwrap();
    assert!(path.ends_with("/src/secret"), "{path}");
    assert_eq!(reason, "no read access to file");
    s.stop();
}

#[test]
fn bad_requests_are_refused_with_the_right_status() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write(&data.join("f"), b"x");
    let mut s = Server::start(&tmp.path().join("state"), &[]);
    // state files are private
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.path().join("state/ccfs.sqlite")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "database must not be readable by others");
    // no session: 401 everywhere under /elcc_api, the OpenAPI document is public
    for (m, p) in
        [("GET", "/elcc_api/ccstores"), ("GET", "/elcc_api/operations"), ("PUT", "/elcc_api/ccweb/cache/clear")]
    {
        assert_eq!(s.call(m, p, None).0, 401, "{m} {p}");
    }
    s.token = Some("forged".into());
    assert_eq!(s.call("GET", "/elcc_api/ccstores", None).0, 401);
    s.token = None;
    assert_eq!(s.call("GET", "/elcc_api/openapi.json", None).0, 200);
    // wrong password, malformed login
    let (st, v) = s.call("POST", "/api/sessions", Some(json!({"user": {"login": "admin", "password": "nope"}})));
    assert_eq!(st, 401);
    assert_eq!(v["status"], "error");
    assert_eq!(s.call("POST", "/api/sessions", Some(json!({"user": {}}))).0, 400);
    s.login();
    let r = |p: &str| format!("/elcc_api/ccstores/{p}");
    // malformed JSON
    let resp = ureq::post(&format!("{}{}", s.base, r("a/connect")))
        .set("Authorization", &format!("Bearer {}", s.token.as_ref().unwrap()))
        .set("Content-Type", "application/json")
        .send_string("{not json");
    assert!(matches!(resp, Err(ureq::Error::Status(400, _))));
    // validation
    let conn = |body: Value| s.call("POST", &r("cs/connect"), Some(body)).0;
    assert_eq!(conn(json!({"bucket_name": "b-1"})), 400, "missing cloud_service");
    assert_eq!(conn(json!({"cloud_service": "local", "bucket_name": "Bad_Bucket", "create_if_not_found": true})), 422);
    assert_eq!(conn(json!({"cloud_service": "local", "bucket_name": "../x", "create_if_not_found": true})), 422);
    assert_eq!(conn(json!({"cloud_service": "nope", "bucket_name": "b-1"})), 422);
    assert_eq!(conn(json!({"cloud_service": "local", "bucket_name": "b-1"})), 404, "missing bucket without create");
    assert_eq!(conn(json!({"cloud_service": "local", "bucket_name": "b-1", "create_if_not_found": "maybe"})), 400);
    assert_eq!(
        conn(
            json!({"cloud_service": "local", "bucket_name": "b-1", "create_if_not_found": true, "fs_path": "/a/../.."})
        ),
        422
    );
    assert_eq!(
        conn(json!({"cloud_service": "local", "bucket_name": "b-1", "create_if_not_found": true, "nfserver": "h"})),
        400
    );
    assert_eq!(
        conn(
            json!({"cloud_service": "local", "bucket_name": "b-1", "create_if_not_found": true, "checkout_absent_policy": "x"})
        ),
        422
    );
    assert_eq!(
        s.call(
            "POST",
            "/elcc_api/ccstores/bad%20ref/connect",
            Some(json!({"cloud_service": "local", "bucket_name": "b-1"}))
        )
        .0,
        400
    );
    connect(&s, "cs", "b-1", &data);
    let (st, v) = s.call(
        "POST",
        &r("cs/connect"),
        Some(json!({"cloud_service": "local", "bucket_name": "b-1", "create_if_not_found": true})),
    );
    assert_eq!(st, 409, "{v}");
    // unknown ccstore, version, operation; traversal
    assert_eq!(s.call("GET", &r("nope/versions"), None).0, 404);
    assert_eq!(s.call("GET", &format!("{}?version_id=b-1%2FVersion_main%2F1", r("cs/versions/stats")), None).0, 404);
    assert_eq!(s.call("GET", "/elcc_api/operations/999", None).0, 404);
    assert_eq!(s.call("GET", "/elcc_api/operations/abc", None).0, 400);
    assert_eq!(s.call("POST", &r("cs/versions"), Some(json!({"fs_src": "../../etc"}))).0, 422);
    assert_eq!(s.call("POST", &r("cs/versions"), Some(json!({"fs_src": "/missing"}))).0, 422);
    assert_eq!(s.call("POST", &r("cs/versions"), Some(json!({"threads": "many"}))).0, 400);
    assert_eq!(s.call("POST", &r("cs/versions"), Some(json!({"branch": "../x"}))).0, 422);
    assert_eq!(s.call("GET", &format!("{}?path=/../x", r("cs/versions/dir")), None).0, 404, "no version yet");
    let op = s.ok("POST", &r("cs/versions"), Some(json!({})));
    s.wait_op(op["id"].as_i64().unwrap());
    assert_eq!(s.call("GET", &format!("{}?path=/../x", r("cs/versions/dir")), None).0, 422);
    assert_eq!(s.call("GET", &format!("{}?path=/f", r("cs/versions/dir")), None).0, 422, "not a directory");
    assert_eq!(s.call("POST", &r("cs/versions/checkout"), Some(json!({"fs_dest": "/../../tmp/x"}))).0, 422);
    assert_eq!(s.call("POST", &r("cs/versions/checkout"), Some(json!({"path": "relative"}))).0, 422);
    assert_eq!(s.call("POST", "/elcc_api/ccstores/upload_google_json", Some(json!({"content": "not json"}))).0, 422);
    assert_eq!(
        s.call("POST", "/elcc_api/ccstores/upload_google_json", Some(json!({"content": "{}", "filename": "../evil"})))
            .0,
        422
    );
    let up = s.ok(
        "POST",
        "/elcc_api/ccstores/upload_google_json",
        Some(json!({"content": "{\"type\":\"service_account\"}", "filename": "creds1.json"})),
    );
    assert_eq!(up["filename"], "creds1.json");
    let mode = std::fs::metadata(s.state.join("gc_credentials/creds1.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Google Cloud Storage connections: the key must be named, uploaded and a service-account
    // key; with a well-formed key whose token endpoint cannot be reached, connect fails at once
    // with the cause (no GCS emulator works here, so no wire round trip: see docs/API.md)
    let gcs = |extra: Value| {
        let mut b = json!({"cloud_service": "gcp", "bucket_name": "ccfs-gcs"});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        s.call("POST", &r("g/connect"), Some(b))
    };
    assert_eq!(gcs(json!({})).0, 400, "gc_credentials_filename is required");
    assert_eq!(gcs(json!({"gc_credentials_filename": "never-uploaded.json"})).0, 422);
    let (st, v) = gcs(json!({"gc_credentials_filename": "creds1.json"}));
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("not a service-account key"), "{v}");
    let key = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .unwrap();
    assert!(key.status.success());
    let sa = json!({"type": "service_account", "project_id": "p", "private_key_id": "k1",
                    "private_key": String::from_utf8(key.stdout).unwrap(),
                    "client_email": "ccfs@p.iam.gserviceaccount.com", "client_id": "1",
                    "token_uri": "http://127.0.0.1:1/token"});
    s.ok(
        "POST",
        "/elcc_api/ccstores/upload_google_json",
        Some(json!({"content": sa.to_string(), "filename": "sa.json"})),
    );
    let t0 = Instant::now();
    let (st, v) = gcs(json!({"gc_credentials_filename": "sa.json"}));
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("cannot reach"), "{v}");
    assert!(t0.elapsed() < Duration::from_secs(45), "a clear error, not a hang");
    // unknown routes and verbs
    assert_eq!(s.call("GET", "/elcc_api/nope", None).0, 404);
    assert_eq!(s.call("PATCH", "/elcc_api/ccstores", None).0, 405);
    s.stop();

    // with a data root, fs_path must lie inside it (not be re-rooted under it)
    let mut s = Server::start(&tmp.path().join("state2"), &["--fs-root", data.to_str().unwrap()]);
    s.login();
    let (st, v) = s.call(
        "POST",
        &r("x/connect"),
        Some(json!({"cloud_service": "local", "bucket_name": "b-2", "create_if_not_found": true, "fs_path": "/etc"})),
    );
    assert_eq!(st, 422, "{v}");
    connect(&s, "x", "b-2", &data);
    let op = s.ok("POST", &r("x/versions"), Some(json!({})));
    assert_eq!(s.wait_op(op["id"].as_i64().unwrap())["operation_status"], "complete");
    assert_eq!(s.ok("GET", &format!("{}?path=/", r("x/versions/dir")), None)[0]["name"], "f");
    s.stop();
}

#[test]
fn every_route_of_the_guide_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write(&data.join("dir/file.txt"), b"content");
    let mut s = Server::start(&tmp.path().join("state"), &[]);
    s.login();
    let doc = s.ok("GET", "/elcc_api/openapi.json", None);
    connect(&s, "cs", "bucket-r", &data);
    connect(&s, "gone", "bucket-gone", &data);
    let op = s.ok("POST", "/elcc_api/ccstores/cs/versions", Some(json!({})));
    let id = op["id"].as_i64().unwrap();
    let vid = s.wait_op(id)["operation_result"]["version_id"].as_str().unwrap().to_string();
    // a second version to delete
    let op2 = s.ok("POST", "/elcc_api/ccstores/cs/versions", Some(json!({"branch": "other"})));
    let vid2 = s.wait_op(op2["id"].as_i64().unwrap())["operation_result"]["version_id"].as_str().unwrap().to_string();
    let v = enc(&vid);
    let mut seen = 0;
    let mut paths: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            paths.push((m.to_uppercase(), path.clone()));
        }
    }
    // logout and store deletion last
    paths.sort_by_key(|(m, p)| {
        (
            p == "/api/sessions" && m == "DELETE",
            p.contains("{ccstore_ref}") && m == "DELETE" && !p.ends_with("versions"),
            p.ends_with("/history/all") || p.ends_with("/history/old"),
        )
    });
    for (m, p) in paths {
        let (path, body): (String, Option<Value>) = match (m.as_str(), p.as_str()) {
            ("POST", "/api/sessions") => {
                (p.clone(), Some(json!({"user": {"login": "admin", "password": "s3cret-pw"}})))
            }
            ("POST", "/elcc_api/ccstores/upload_google_json") => (p.clone(), Some(json!({"content": "{}"}))),
            ("POST", "/elcc_api/ccstores/{ccstore_ref}/connect") => (
                p.replace("{ccstore_ref}", "new"),
                Some(json!({"cloud_service": "local", "bucket_name": "bucket-new", "create_if_not_found": true})),
            ),
            ("DELETE", "/elcc_api/ccstores/{ccstore_ref}") => {
                (p.replace("{ccstore_ref}", "gone"), Some(json!({"bucket_name": "bucket-gone"})))
            }
            ("PUT", "/elcc_api/ccstores/{ccstore_ref}") => {
                (p.replace("{ccstore_ref}", "cs"), Some(json!({"name": "renamed"})))
            }
            ("PUT", "/elcc_api/ccstores/{ccstore_ref}/disconnect") => (p.replace("{ccstore_ref}", "new"), None),
            ("GET", "/elcc_api/ccstores/{ccstore_ref}/download/file") => {
                (format!("/elcc_api/ccstores/cs/download/file?version_id={v}&src_path=/dir/file.txt&filename=f"), None)
            }
            ("GET", "/elcc_api/ccstores/{ccstore_ref}/versions/stats") => {
                (format!("/elcc_api/ccstores/cs/versions/stats?version_id={v}"), None)
            }
            ("GET", "/elcc_api/ccstores/{ccstore_ref}/versions/dir") => {
                (format!("/elcc_api/ccstores/cs/versions/dir?version_id={v}&path=/dir"), None)
            }
            ("POST", "/elcc_api/ccstores/{ccstore_ref}/versions") => {
                (p.replace("{ccstore_ref}", "cs"), Some(json!({})))
            }
            ("DELETE", "/elcc_api/ccstores/{ccstore_ref}/versions") => {
                (p.replace("{ccstore_ref}", "cs"), Some(json!({"version_id": vid2})))
            }
            ("POST", "/elcc_api/ccstores/{ccstore_ref}/versions/checkout") => {
                (p.replace("{ccstore_ref}", "cs"), Some(json!({"fs_dest": "/out"})))
            }
            ("DELETE", "/elcc_api/operations/history/{id}") => (p.replace("{id}", &id.to_string()), None),
            _ => (p.replace("{ccstore_ref}", "cs").replace("{id}", &(id + 1).to_string()), None),
        };
        let (st, body) = s.call(&m, &path, body);
        assert!(st != 404 && st != 405, "{m} {p} answered {st}: {body}");
        assert!(st < 500, "{m} {p} answered {st}: {body}");
        seen += 1;
    }
    assert_eq!(seen, 27, "the guide's surface: 26 routes plus the OpenAPI document");
    s.stop();
}

#[test]
fn cache_semantics_and_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write(&data.join("f"), b"x");
    let state = tmp.path().join("state");
    let bucket = state.join("buckets/bucket-c");
    let outside_create = || ccfs_ok(&bucket, &["version", "create", data.to_str().unwrap()]);
    // default: listings are cached; no_cache and cache/clear see changes made behind the server
    let mut s = Server::start(&state, &[]);
    s.login();
    connect(&s, "cs", "bucket-c", &data);
    let n = |s: &Server, q: &str| {
        s.ok("GET", &format!("/elcc_api/ccstores/cs/versions{q}"), None).as_array().unwrap().len()
    };
    assert_eq!(n(&s, ""), 0);
    outside_create();
    assert_eq!(n(&s, ""), 0, "cached");
    assert_eq!(n(&s, "?allow_cache=true"), 0, "cached");
    assert_eq!(n(&s, "?no_cache=true"), 1, "fresh");
    outside_create();
    assert_eq!(n(&s, ""), 1, "the fresh answer was cached");
    s.ok("PUT", "/elcc_api/ccweb/cache/clear", None);
    assert_eq!(n(&s, ""), 2, "cleared");
    s.stop();
    // with lookup off: fresh by default, allow_cache may answer from the cache
    let mut s = Server::start(&state, &["--no-cache-lookup"]);
    s.login();
    assert_eq!(n(&s, ""), 2);
    outside_create();
    assert_eq!(n(&s, ""), 3, "fresh without lookup");
    outside_create();
    assert_eq!(n(&s, "?allow_cache=true"), 3, "allow_cache answers from the cache");
    assert_eq!(n(&s, ""), 4);
    s.stop();
}

#[test]
fn s3_connections_over_http() {
    let Ok(ep) = std::env::var("CCFS_TEST_S3_ENDPOINT") else {
        eprintln!("!!! SKIPPED s3_connections_over_http: CCFS_TEST_S3_ENDPOINT not set (scripts/test.sh sets it) !!!");
        return;
    };
    let bucket = format!("ccfs-api-{:016x}", rand::random::<u64>());
    ureq::put(&format!("{ep}/{bucket}")).send_bytes(&[]).expect("create bucket");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_rich_tree(&data.join("src"));
    let allow = format!("{ep}/");
    let mut s = Server::start(&tmp.path().join("state"), &["--allow-endpoint", &allow]);
    s.login();
    let body = |b: &str, service: &str, endpoint: &str| {
        json!({"cloud_service": service, "bucket_name": b, "endpoint": endpoint, "access_key": "test",
               "secret_key": "test", "fs_path": data.to_str().unwrap()})
    };
    let c = s.ok("POST", "/elcc_api/ccstores/s3c/connect", Some(body(&bucket, "s3_generic", &ep)));
    assert_eq!(c["action_performed"], "format");
    let stores = s.ok("GET", "/elcc_api/ccstores", None);
    assert_eq!(stores[0]["user_key"], "XXXX");
    assert_eq!(stores[0]["user_password"], "XXXX");
    assert!(!stores.to_string().contains("\"test\""), "secrets never echoed: {stores}");
    let op = s.ok("POST", "/elcc_api/ccstores/s3c/versions", Some(json!({"fs_src": "/src"})));
    assert_eq!(s.wait_op(op["id"].as_i64().unwrap())["operation_status"], "complete");
    let co = s.ok("POST", "/elcc_api/ccstores/s3c/versions/checkout", Some(json!({"fs_dest": "/out"})));
    assert_eq!(s.wait_op(co["id"].as_i64().unwrap())["operation_status"], "complete");
    assert_same_tree(&data.join("src"), &data.join("out"));
    // a restart reopens the connection with its stored credentials
    s.stop();
    let mut s = Server::start(&tmp.path().join("state"), &["--allow-endpoint", &allow]);
    s.login();
    assert_eq!(s.ok("GET", "/elcc_api/ccstores/s3c/versions", None).as_array().unwrap().len(), 1);
    // distinct errors: missing bucket, bad name, endpoint not allowed, endpoint required
    let missing = format!("ccfs-new-{:016x}", rand::random::<u64>());
    assert_eq!(s.call("POST", "/elcc_api/ccstores/m/connect", Some(body(&missing, "s3_generic", &ep))).0, 404);
    let mut bad = body("Bad_Name", "s3_generic", &ep);
    bad["create_if_not_found"] = json!(true);
    assert_eq!(s.call("POST", "/elcc_api/ccstores/m/connect", Some(bad)).0, 422);
    // create_if_not_found creates the bucket (signed CreateBucket), formats it; clearing it
    // without keep_bucket deletes the bucket too
    let mut create = body(&missing, "ecs", &ep);
    create["create_if_not_found"] = json!(true);
    let c = s.ok("POST", "/elcc_api/ccstores/m/connect", Some(create));
    assert_eq!(c["action_performed"], "create+format");
    assert_eq!(ureq::get(&format!("{ep}/{missing}?list-type=2")).call().unwrap().status(), 200);
    let clr = s.ok("DELETE", "/elcc_api/ccstores/m", Some(json!({"bucket_name": missing, "keep_bucket": false})));
    let done = s.wait_op(clr["id"].as_i64().unwrap());
    assert_eq!(done["operation_status"], "complete", "{done}");
    assert_eq!(done["operation_result"]["bucket_deleted"], true);
    match ureq::get(&format!("{ep}/{missing}?list-type=2")).call() {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("bucket should be gone: {other:?}"),
    }
    assert_eq!(
        s.call("POST", "/elcc_api/ccstores/m/connect", Some(body(&bucket, "s3_generic", "http://127.0.0.2:1"))).0,
        422
    );
    assert_eq!(
        s.call("POST", "/elcc_api/ccstores/m/connect", Some(body(&bucket, "s3", ""))).0,
        422,
        "AWS itself is outside the allow-list"
    );
    assert_eq!(
        s.call("POST", "/elcc_api/ccstores/m/connect", Some(json!({"cloud_service": "swift", "bucket_name": bucket})))
            .0,
        400
    );
    // clear with keep_bucket: the objects go, the cloud bucket stays
    let clr = s.ok("DELETE", "/elcc_api/ccstores/s3c", Some(json!({"bucket_name": bucket, "keep_bucket": true})));
    let done = s.wait_op(clr["id"].as_i64().unwrap());
    assert_eq!(done["operation_status"], "complete", "{done}");
    assert_eq!(done["operation_result"]["bucket_deleted"], false);
    let listing = ureq::get(&format!("{ep}/{bucket}?list-type=2")).call().unwrap().into_string().unwrap();
    assert!(!listing.contains("<Key>"), "bucket emptied: {listing}");
    s.stop();
}

#[test]
fn store_faults_fail_the_operation_with_its_cause_and_leave_no_version() {
    // Every pack upload is refused by the store (a persistent fault injected under the real
    // local store): the create operation ends `failed`, says why, and commits nothing.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_rich_tree(&data.join("src"));
    let mut s = Server::start_as(&tmp.path().join("state"), &[], None, &[("CCFS_FAULTS", "fail_writes_under=packs/")]);
    s.login();
    connect(&s, "cs1", "faulty", &data);
    let op = s.ok("POST", "/elcc_api/ccstores/cs1/versions", Some(json!({"fs_src": "/src"})));
    let done = s.wait_op(op["id"].as_i64().unwrap());
    assert_eq!(done["operation_status"], "failed", "{done}");
    let why = done.to_string();
    assert!(why.contains("packs/") && why.contains("injected persistent fault"), "the cause is named: {done}");
    assert!(s.ok("GET", "/elcc_api/ccstores/cs1/versions", None).as_array().unwrap().is_empty());
    s.stop();

    // Transient faults (every 4th request fails once) are retried: the create completes and
    // restores identical.
    let mut s = Server::start_as(&tmp.path().join("state"), &[], None, &[("CCFS_FAULTS", "fail_every=4")]);
    s.login();
    let op = s.ok("POST", "/elcc_api/ccstores/cs1/versions", Some(json!({"fs_src": "/src"})));
    let done = s.wait_op(op["id"].as_i64().unwrap());
    assert_eq!(done["operation_status"], "complete", "{done}");
    let vid = done["operation_result"]["version_id"].as_str().unwrap().to_string();
    let op = s.ok(
        "POST",
        "/elcc_api/ccstores/cs1/versions/checkout",
        Some(json!({"version_id": vid, "fs_dest": "/restored"})),
    );
    assert_eq!(s.wait_op(op["id"].as_i64().unwrap())["operation_status"], "complete");
    assert_same_tree(&data.join("src"), &data.join("restored"));
    s.stop();
}
