//! Typed ids: every name in the bucket has its own type, made by one macro, never a bare string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        /// Hex in human-readable formats (JSON), raw bytes in binary ones (bincode).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; $len]>::deserialize(d).map($name)
                }
            }
        }

        impl $name {
            /// Lower-case hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12])
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|e| {
                    Error::InvalidArgument(format!("{} {s:?}: {e}", stringify!($name)))
                })?;
                Ok($name(out))
            }
        }
    };
}

hash_id!(
    /// SHA-256 of a block's raw (uncompressed) bytes.
    BlockId, 32
);
hash_id!(
    /// SHA-256 of a tree object's raw (uncompressed) encoding.
    TreeId, 32
);
hash_id!(
    /// Random name of a pack object.
    PackId, 16
);

impl BlockId {
    /// Hash raw block bytes.
    pub fn of(data: &[u8]) -> Self {
        BlockId(Sha256::digest(data).into())
    }
}

impl TreeId {
    /// Hash a raw tree encoding.
    pub fn of(data: &[u8]) -> Self {
        TreeId(Sha256::digest(data).into())
    }
}

impl PackId {
    /// A fresh random pack name.
    pub fn random() -> Self {
        PackId(rand::random())
    }
}

/// What a pack holds: file data or tree (directory) objects. Kept apart so browsing a version
/// never downloads file data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PackKind {
    Data,
    Tree,
}

impl PackKind {
    pub fn dir(self) -> &'static str {
        match self {
            PackKind::Data => "data",
            PackKind::Tree => "tree",
        }
    }
}

/// Object path of a pack in the bucket.
pub fn pack_path(kind: PackKind, id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{}/{}", kind.dir(), &hex[..2], hex)
}

/// A version id as the API guide spells it: `<bucket>/Version_<branch>/<unix-microseconds>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionId {
    pub bucket: String,
    pub branch: String,
    pub micros: u64,
}

impl VersionId {
    /// Object path of this version's manifest.
    pub fn manifest_path(&self) -> String {
        format!("versions/{}/{:020}", self.branch, self.micros)
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/Version_{}/{}", self.bucket, self.branch, self.micros)
    }
}

impl fmt::Debug for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for VersionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad =
            || Error::InvalidArgument(format!("version id {s:?} is not <bucket>/Version_<branch>/<microseconds>"));
        let (rest, micros) = s.rsplit_once('/').ok_or_else(bad)?;
        let (bucket, branch) = rest.rsplit_once("/Version_").ok_or_else(bad)?;
        let micros = micros.parse().map_err(|_| bad())?;
        validate_branch(branch)?;
        if bucket.is_empty() {
            return Err(bad());
        }
        Ok(VersionId { bucket: bucket.to_string(), branch: branch.to_string(), micros })
    }
}

impl TryFrom<String> for VersionId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<VersionId> for String {
    fn from(v: VersionId) -> String {
        v.to_string()
    }
}

/// Branch names are one path segment of letters, digits, `.`, `_` and `-`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the rule.
pub fn validate_branch(branch: &str) -> Result<(), Error> {
    let ok = !branch.is_empty()
        && branch.len() <= 64
        && branch != "."
        && branch != ".."
        && branch.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("branch {branch:?}: use 1-64 letters, digits, '.', '_' or '-'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_id_round_trip() {
        let v: VersionId = "my-bucket/Version_main/1494835926422777".parse().unwrap();
        assert_eq!(v.bucket, "my-bucket");
        assert_eq!(v.branch, "main");
        assert_eq!(v.micros, 1494835926422777);
        assert_eq!(v.to_string(), "my-bucket/Version_main/1494835926422777");
        assert_eq!(v.manifest_path(), "versions/main/00001494835926422777");
    }

    #[test]
    fn version_id_rejects_garbage() {
        for s in ["", "x", "b/Version_/1", "b/Version_main/x", "/Version_main/1", "b/Version_../1"] {
            assert!(s.parse::<VersionId>().is_err(), "{s}");
        }
    }

    #[test]
    fn hex_ids() {
        let b = BlockId::of(b"abc");
        assert_eq!(b.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(b.to_hex().parse::<BlockId>().unwrap(), b);
        assert!("zz".parse::<BlockId>().is_err());
    }
}
