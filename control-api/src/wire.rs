//! Wire types of the CloudConnect API guide: field names, string-typed numbers and shapes as the
//! guide shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `{"status": "OK"}` and friends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub status: String,
}

impl Status {
    pub fn ok() -> Self {
        Status { status: "ok".into() }
    }
}

/// `POST /elcc_api/ccstores/:ref/connect`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectRequest {
    pub name: String,
    pub cloud_service: String,
    pub bucket_name: String,
    pub fs_path: String,
    pub direction: String,
    pub create_if_not_found: bool,
    pub block_size_kb: Option<u32>,
    pub hash_type: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub endpoint: Option<String>,
    pub gc_credentials_filename: Option<String>,
    pub nfserver: Option<String>,
    pub nfsexport: Option<String>,
    pub checkout_modified_policy: Option<String>,
    pub checkout_absent_policy: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConnectResponse {
    pub status: String,
    /// The newest version of the main branch, or "" for an empty store.
    pub version_id: String,
    pub bucket_name: String,
    /// `create+format`, `format` or `connect`.
    pub action_performed: String,
}

/// `PUT /elcc_api/ccstores/:ref`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateRequest {
    pub name: Option<String>,
    pub fs_path: Option<String>,
    pub direction: Option<String>,
    pub nfserver: Option<String>,
    pub nfsexport: Option<String>,
    pub checkout_modified_policy: Option<String>,
    pub checkout_absent_policy: Option<String>,
}

/// `DELETE /elcc_api/ccstores/:ref`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeleteStoreRequest {
    pub bucket_name: String,
    pub keep_bucket: bool,
    pub threads: Option<u32>,
    pub progressrate: Option<u32>,
}

/// The answer to every call that starts an operation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OperationStarted {
    pub status: String,
    pub pid: u32,
    pub uuid: String,
    pub id: i64,
    pub state: String,
}

/// One entry of `GET /elcc_api/ccstores`; secrets are always `XXXX`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CcstoreInfo {
    pub ccstore_ref: String,
    pub name: String,
    pub cloud_service: String,
    pub bucket_name: String,
    pub fs_path: String,
    pub direction: String,
    pub cred_path: String,
    pub endpoint: String,
    pub region: String,
    pub user_key: String,
    pub user_password: String,
    pub format_version: u32,
    pub compression_method: String,
    pub hash_type: String,
    pub nfserver: String,
    pub nfsexport: String,
    pub checkout_modified_policy: String,
    pub checkout_absent_policy: String,
}

/// The CCStore summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StoreSummary {
    pub deleted_versions_num: u64,
    pub fs_num_dirs: u64,
    pub fs_num_files: u64,
    pub fs_total_data: u64,
    pub total_data_reduction: f64,
    pub total_object_data: u64,
    pub uniq_file_data: u64,
    pub uniq_files_data_reduction: f64,
    pub uniq_num_dirs: u64,
    pub uniq_num_files: u64,
    pub versions_num: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SummaryResponse {
    pub summary: StoreSummary,
    pub status: String,
}

/// One version in `GET …/versions` (numbers as strings, as in the guide).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    pub push_end_time: String,
    pub ccfs_srv_uid: String,
    pub version_desc: String,
    pub version_id: String,
    pub stat_file_id: String,
    pub push_start_time: String,
    pub format_version: String,
    pub parent_id: String,
    pub branch_name: String,
    pub block_size: String,
    pub index_file_id: String,
    pub version_uid: String,
    pub catalog_file_id: String,
    pub hash_type: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VersionSummary {
    pub diff_data_reduction: f64,
    pub diff_file_data: u64,
    pub diff_num_dirs: u64,
    pub diff_num_files: u64,
    pub fs_num_dirs: u64,
    pub fs_num_files: u64,
    pub fs_total_data: u64,
    pub total_data_reduction: f64,
    pub version_object_data: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionStatsResponse {
    pub summary: VersionSummary,
    pub status: String,
}

/// `POST …/versions`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateRequest {
    pub nfserver: Option<String>,
    pub nfsexport: Option<String>,
    pub fs_src: Option<String>,
    pub branch: Option<String>,
    pub parent_version_id: Option<String>,
    pub threads: Option<u32>,
    pub progressrate: Option<u32>,
    pub version_desc: Option<String>,
}

/// `POST …/versions/checkout`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckoutRequest {
    pub nfserver: Option<String>,
    pub nfsexport: Option<String>,
    pub fs_dest: Option<String>,
    pub branch: Option<String>,
    pub version_id: Option<String>,
    pub threads: Option<u32>,
    pub progressrate: Option<u32>,
    pub checkout_modified_policy: Option<String>,
    pub checkout_absent_policy: Option<String>,
    pub path: Option<String>,
}

/// The checkout answer: the guide's two objects merged into one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckoutStarted {
    pub fs_dest: String,
    pub version_id: String,
    pub status: String,
    pub pid: u32,
    pub uuid: String,
    pub id: i64,
    pub state: String,
}

/// `DELETE …/versions`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeleteVersionRequest {
    pub version_id: String,
    pub threads: Option<u32>,
    pub progressrate: Option<u32>,
}

/// `GET …/versions/dir`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirRequest {
    pub version_id: Option<String>,
    pub branch: Option<String>,
    pub path: String,
    pub count: usize,
    pub offset: usize,
}

/// One directory entry, all strings, as in the guide.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DirEntry {
    pub date: String,
    pub uid: String,
    pub gid: String,
    pub nlinks: String,
    pub permissions: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub symlink_to: String,
    pub file_size: String,
}

/// Filters of `GET /elcc_api/operations`, with the guide's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationFilter {
    pub include_scan: bool,
    pub include_commit: bool,
    pub include_checkout: bool,
    pub include_delete: bool,
    pub include_bucket_clear: bool,
    pub include_download_file: bool,
    pub include_running: bool,
    pub include_complete: bool,
    pub include_failed: bool,
    pub include_aborted: bool,
    pub include_all_statuses: bool,
    pub verbose: bool,
}

impl Default for OperationFilter {
    fn default() -> Self {
        OperationFilter {
            include_scan: true,
            include_commit: true,
            include_checkout: true,
            include_delete: true,
            include_bucket_clear: true,
            include_download_file: true,
            include_running: true,
            include_complete: false,
            include_failed: false,
            include_aborted: false,
            include_all_statuses: false,
            verbose: false,
        }
    }
}

/// Progress counters: the guide's `progress` (file system) and `bucket` groups.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OperationProgress {
    pub progress: BTreeMap<String, serde_json::Value>,
    pub bucket: BTreeMap<String, serde_json::Value>,
}

/// An operation record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Operation {
    pub id: i64,
    pub uuid: String,
    /// `scan`, `commit`, `checkout`, `delete`, `bucket_clear`, `download_file`.
    pub operation_type: String,
    pub ccstore_ref: String,
    pub description: String,
    /// `running`, `complete`, `failed`, `aborted`.
    pub operation_status: String,
    pub operation_pid: u32,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_command_output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_progress: Option<OperationProgress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_result: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AbortResponse {
    pub status: String,
    pub did_abort: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SkippedFiles {
    pub num_skipped: u64,
    pub elapsed_sec: u64,
    pub skipped_list: BTreeMap<String, String>,
    pub update_time: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Purged {
    pub purged: u64,
}

/// Which operation history to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    All,
    /// Finished more than a week ago.
    Old,
    One(i64),
}

/// `no_cache` / `allow_cache` of the stats and list calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheMode {
    pub no_cache: bool,
    pub allow_cache: bool,
}
