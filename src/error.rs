//! The one error type of the ccfs core.
//!
//! Rules every error follows:
//! - it names what failed (the object, version, path) and, where there is one, what the user
//!   can do about it;
//! - it says whether retrying can help ([`Error::is_retryable`]);
//! - storage errors keep their `object_store` source; nothing is stringly swallowed.

use std::path::PathBuf;

/// Result alias of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store URL could not be understood.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidStoreUrl { url: String, reason: String },

    /// No CCFS header was found at the store.
    #[error("no ccfs store at {store}: run `ccfs store init` first")]
    NotAStore { store: String },

    /// `store init` on a store that already holds a header.
    #[error("{store} is already a ccfs store; pass --force to re-format it (existing versions become unreadable)")]
    AlreadyFormatted { store: String },

    /// The bucket itself does not exist.
    #[error("bucket {bucket} does not exist at {store}: create it with your provider's tools, or connect with create_if_not_found")]
    BucketNotFound { bucket: String, store: String },

    /// The store's endpoint cannot be reached (DNS, refused connection, timeout).
    #[error("cannot reach {store}: {reason}")]
    Unreachable { store: String, reason: String },

    /// The store rejected the credentials.
    #[error("access to {store} denied: check the access key and secret ({reason})")]
    AccessDenied { store: String, reason: String },

    /// The store was written by a newer or unknown format.
    #[error("store {store} has format version {found}, this ccfs reads versions 1 to {supported}")]
    UnsupportedFormat { store: String, found: u32, supported: u32 },

    /// A bad argument from the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A version id that does not exist.
    #[error("version {0} not found")]
    VersionNotFound(String),

    /// A path inside a version that does not exist.
    #[error("{path} not found in version {version}")]
    PathNotFound { version: String, path: String },

    /// A path inside a version that is not a directory where one was needed.
    #[error("{path} in version {version} is not a directory")]
    NotADirectory { version: String, path: String },

    /// A path inside a version that is not a regular file where one was needed.
    #[error("{path} in version {version} is not a regular file")]
    NotAFile { version: String, path: String },

    /// An object whose bytes do not match its name or cannot be decoded.
    #[error("corrupt object {object}: {reason}")]
    Corrupt { object: String, reason: String },

    /// An object the format says must exist but does not.
    #[error("missing object {object}: {reason}")]
    MissingObject { object: String, reason: String },

    /// Local file-system I/O.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file system being read or written as a whole stopped answering (an NFS server that
    /// went away after the retries): the operation fails rather than skip every file.
    #[error("file system unavailable: {0}")]
    FsUnavailable(String),

    /// Object-store I/O.
    #[error("store {op} {object}: {source}")]
    Store {
        op: &'static str,
        object: String,
        #[source]
        source: object_store::Error,
    },

    /// A create or gc could not renew its lease in time: other processes may already treat it
    /// as gone, so it must not commit.
    #[error(
        "lease {lease} was last renewed {age_secs} s ago (TTL {ttl_secs} s): refusing to commit; run the command again"
    )]
    LeaseExpired { lease: String, age_secs: u64, ttl_secs: u64 },

    /// Another process holds what this operation needs (another gc is running).
    #[error("{0}")]
    Busy(String),

    /// The operation was cancelled by its caller.
    #[error("operation aborted")]
    Aborted,

    /// A bug or an impossible state; the message says where.
    #[error("internal error: {0}")]
    Internal(String),

    /// An error shared by several callers that waited on the same work (a joined block fetch).
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

impl Error {
    /// Whether retrying the same call can help (transient store or network errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Shared(e) => e.is_retryable(),
            Error::Store { source, .. } => matches!(source, object_store::Error::Generic { .. }),
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// The error itself, looking through [`Error::Shared`].
    pub fn root(&self) -> &Error {
        match self {
            Error::Shared(e) => e.root(),
            e => e,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    pub(crate) fn corrupt(object: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::Corrupt { object: object.to_string(), reason: reason.to_string() }
    }
}
