//! FUSE adapter (issue 3): a thin fuser layer over a read-only tree trait.
