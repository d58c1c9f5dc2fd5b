//! ccfs core: the CCFS bucket format, chunking, stores, version create / checkout / browse,
//! and the progress and cancellation of long operations.
//!
//! The core knows nothing of FUSE, HTTP or the command line: those are adapters
//! (`ccfs-fuse`, `control-api`) and the `ccfs` binary, which wires them to this library.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod admin;
pub mod bucket;
pub mod catalog;
pub mod check;
pub mod checkout;
pub mod chunker;
pub mod codec;
pub mod create;
pub mod diskcache;
pub mod error;
pub mod fault;
pub mod format;
pub mod fsmeta;
pub mod fsview;
pub mod gc;
pub mod ids;
pub mod lease;
pub mod pack;
pub mod progress;
pub mod repo;
pub mod source;
pub mod store;
pub mod summary;
pub mod target;
pub mod time;

pub use catalog::{DirEntryInfo, Version};
pub use checkout::{checkout, AbsentPolicy, CheckoutOptions, CheckoutOutcome, ModifiedPolicy};
pub use create::{create_version, CreateOptions, CreateOutcome};
pub use error::{Error, Result};
pub use progress::Progress;
pub use repo::{init, InitOptions, Repo};
pub use store::Store;
pub use summary::{store_summary, StoreSummary};
pub use tokio_util::sync::CancellationToken;
