//! An archive on its way out: named entries packed into a tar file in a
//! private directory, gzip-compressed where the system has gzip, with the
//! length and SHA-256 of the bytes as they will be sent; and the trip to the
//! orchestrator (or to a local directory when there is none).

use super::private::PrivateDir;
use super::sha256::{self, HashingWriter, Sha256};
use super::{gzip, io_words, tar};
use crate::http::{self, Client, PutFile};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A packed archive, ready to send.
pub struct Packed {
    pub path: PathBuf,
    /// Entries in it: files, directories and links.
    pub entries: u64,
    /// Its length as sent.
    pub len: u64,
    pub sha256: [u8; 32],
    pub gzip: bool,
    /// Files that changed or vanished while being packed.
    pub warnings: Vec<String>,
}

/// Packs `entries` (the name stored, the path on disk) into `name.tar` in
/// `dir`, then compresses it when gzip is there.
pub fn pack(dir: &PrivateDir, name: &str, entries: &[(String, PathBuf)]) -> Result<Packed, String> {
    let tar_path = dir.path().join(format!("{name}.tar"));
    let file = File::create(&tar_path).map_err(|e| io_words("", &tar_path, e))?;
    let mut w = tar::Writer::new(BufWriter::new(HashingWriter::new(file)));
    for (stored, on_disk) in entries {
        w.append(stored, on_disk)?;
    }
    let (count, warnings) = (w.entries, std::mem::take(&mut w.warnings));
    let hashing = w
        .finish()?
        .into_inner()
        .map_err(|e| format!("{}: {}", tar_path.display(), e.error()))?;
    let (mut len, mut sha256) = (hashing.bytes, hashing.sha.finish());
    let mut path = tar_path;
    let gz = gzip::available();
    if gz {
        let gz_path = dir.path().join(format!("{name}.tar.gz"));
        gzip::compress(&path, &gz_path)?;
        let _ = std::fs::remove_file(&path);
        path = gz_path;
        (len, sha256) = digest(&path)?;
    }
    Ok(Packed {
        path,
        entries: count,
        len,
        sha256,
        gzip: gz,
        warnings,
    })
}

/// The length and SHA-256 of a file.
fn digest(path: &Path) -> Result<(u64, [u8; 32]), String> {
    let mut sha = Sha256::new();
    let len = sha256::hash_file(&mut sha, path).map_err(|e| io_words("", path, e))?;
    Ok((len, sha.finish()))
}

/// Where archives go: the orchestrator, or a local directory.
pub enum Destination<'a> {
    Orchestrator {
        client: &'a mut Client,
        job_id: &'a str,
        /// How long one upload may keep retrying.
        deadline: Duration,
    },
    Local(PathBuf),
}

/// Sends `packed` to `target` (from `Client::artifact_target` or
/// `cache_target`). Returns the answer's status, or why none came.
pub fn send(
    client: &mut Client,
    target: &str,
    packed: &Packed,
    deadline: Duration,
) -> Result<u16, String> {
    let file = File::open(&packed.path).map_err(|e| io_words("", &packed.path, e))?;
    let how = PutFile {
        content_type: "application/x-tar",
        gzip: packed.gzip,
        sha256: &packed.sha256,
    };
    let until = Instant::now() + deadline;
    http::put_file(client, target, &file, packed.len, &how, until).map_err(|e| e.msg.clone())
}

/// `bytes` for people: "512 B", "12.3 MB".
pub fn size_words(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut tenths = bytes / 100;
    let mut unit = 0;
    while tenths >= 10_000 && unit < UNITS.len() - 1 {
        tenths /= 1000;
        unit += 1;
    }
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

/// A duration for people: "0.4 s".
pub fn secs_words(d: Duration) -> String {
    format!("{}.{} s", d.as_secs(), d.subsec_millis() / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(size_words(512), "512 B");
        assert_eq!(size_words(12_345_678), "12.3 MB");
        assert_eq!(size_words(1_000), "1.0 kB");
        assert_eq!(size_words(999_999), "999.9 kB");
        assert_eq!(secs_words(Duration::from_millis(450)), "0.4 s");
    }
}
