//! Store-wide summary (the API guide's CCStore summary).

use serde::Serialize;

use crate::error::Result;
use crate::format::ratio;
use crate::repo::Repo;

/// The store summary, with exactly the API guide's fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StoreSummary {
    pub deleted_versions_num: u64,
    /// Sums over the live versions.
    pub fs_num_dirs: u64,
    pub fs_num_files: u64,
    pub fs_total_data: u64,
    /// `fs_total_data / total_object_data`.
    pub total_data_reduction: f64,
    /// Bytes of every object in the bucket.
    pub total_object_data: u64,
    /// Logical bytes of file content first stored by each live version (new or changed files).
    pub uniq_file_data: u64,
    /// `uniq_file_data / total_object_data`.
    pub uniq_files_data_reduction: f64,
    /// Directories and files first stored by each live version.
    pub uniq_num_dirs: u64,
    pub uniq_num_files: u64,
    pub versions_num: u64,
}

/// Compute the store summary from the version stats objects and one listing of the bucket.
///
/// # Errors
/// Store errors and corrupt stats objects.
pub fn store_summary(repo: &Repo) -> Result<StoreSummary> {
    let mut s = StoreSummary::default();
    for m in repo.versions(None)? {
        let st = repo.version_stats(&m)?;
        s.versions_num += 1;
        s.fs_num_dirs += st.fs_num_dirs;
        s.fs_num_files += st.fs_num_files;
        s.fs_total_data += st.fs_total_data;
        s.uniq_file_data += st.diff_file_data;
        s.uniq_num_dirs += st.diff_num_dirs;
        s.uniq_num_files += st.diff_num_files;
    }
    s.deleted_versions_num = repo.store().list("deleted")?.len() as u64;
    s.total_object_data = repo.store().list("")?.iter().map(|m| m.size).sum();
    s.total_data_reduction = ratio(s.fs_total_data, s.total_object_data);
    s.uniq_files_data_reduction = ratio(s.uniq_file_data, s.total_object_data);
    Ok(s)
}
