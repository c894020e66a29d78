//! Files out of and into the VM: the primitives under artifacts and the
//! cache. Globs name what to pack, tar packs and restores it, gzip
//! compresses it through the system tool, and SHA-256 gives the digests of
//! uploads and cache keys. Nothing here logs; each returns what happened
//! (or why not) for the caller to report.

pub mod glob;
pub mod gzip;
pub mod sha256;
pub mod tar;
