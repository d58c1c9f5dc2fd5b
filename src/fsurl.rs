//! Where a create reads and a checkout writes, from a command-line argument: a local path, or
//! `nfs://SERVER[:PORT]/EXPORT/PATH?…` for an NFSv3 export spoken in user space (see
//! `ccfs_nfs::PARAMS` for the parameters).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use ccfs::source::{LocalSource, Source};
use ccfs::target::{LocalTarget, Target};
use ccfs_nfs::NfsUrl;

fn nfs_url(arg: &Path) -> Result<Option<NfsUrl>> {
    let s = arg.as_os_str().as_bytes();
    if !s.starts_with(b"nfs:") {
        return Ok(None);
    }
    let s = std::str::from_utf8(s).map_err(|_| anyhow::anyhow!("NFS URL {arg:?} is not UTF-8"))?;
    Ok(Some(NfsUrl::parse(s).map_err(ccfs::Error::InvalidArgument)?))
}

pub fn source(arg: &Path) -> Result<Arc<dyn Source>> {
    match nfs_url(arg)? {
        Some(u) => Ok(crate::nfs::source(&u)?),
        None => Ok(Arc::new(LocalSource::new(arg))),
    }
}

pub fn target(arg: &Path) -> Result<Arc<dyn Target>> {
    match nfs_url(arg)? {
        Some(u) => Ok(crate::nfs::target(&u)?),
        None => Ok(Arc::new(LocalTarget::new(arg))),
    }
}
