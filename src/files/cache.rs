//! The keyed cache: directories a job declares (workspace-relative, or in
//! the home directory with `~/`) restored before its first step from the
//! orchestrator's store, and saved after a successful job that missed. The
//! key is the cache's name, the OS and architecture, and the SHA-256 of its
//! key files' contents, so a changed lock file makes a new entry.
//!
//! A cache archive may come from another job, so it is extracted as hostile
//! (see `tar::extract`): a refused or broken archive is a warning and
//! counts as a miss; the job goes on.

use super::archive::{self, Packed};
use super::private::PrivateDir;
use super::sha256::{self, Sha256};
use super::{gzip, io_words, tar};
use crate::http::{self, Client};
use crate::plan::workflow::Cache;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What became of a cache at the start: whether it was restored, under
/// which key, so the end knows whether to save it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub name: String,
    pub key: String,
    pub hit: bool,
}

/// The cache's key: `NAME-OS-ARCH-<sha256 of the key files, in order>`.
pub fn key(workspace: &Path, cache: &Cache) -> Result<String, String> {
    let mut sha = Sha256::new();
    for f in &cache.key_files {
        sha256::hash_file(&mut sha, &workspace.join(f))
            .map_err(|e| format!("key file \"{f}\": {e}"))?;
    }
    Ok(format!(
        "{}-{}-{}-{}",
        cache.name,
        std::env::consts::OS,
        std::env::consts::ARCH,
        sha256::hex(&sha.finish())
    ))
}

/// Where a declared path lives: `~/x` in `home`, anything else in the
/// workspace. `None` for a `~/` path without a home directory.
fn on_disk(path: &str, workspace: &Path, home: Option<&Path>) -> Option<PathBuf> {
    match path.strip_prefix("~/") {
        Some(rest) => home.map(|h| h.join(rest)),
        None => Some(workspace.join(path)),
    }
}

/// Restores `cache` from the orchestrator. Returns its key and whether it
/// was a hit; `None` when it cannot be keyed (a key file is missing).
pub fn restore(
    client: &mut Client,
    cache: &Cache,
    workspace: &Path,
    home: Option<&Path>,
    cap: u64,
    deadline: Duration,
) -> Option<Restored> {
    let name = &cache.name;
    let key = match key(workspace, cache) {
        Ok(k) => k,
        Err(e) => {
            warn!("cache {name}: cannot make its key ({e}); it is not used");
            return None;
        }
    };
    let miss = |why: &str| {
        warn!("cache {name}: {why}; counted as a miss");
        Some(Restored {
            name: name.clone(),
            key: key.clone(),
            hit: false,
        })
    };
    let dir = match PrivateDir::create("cache") {
        Ok(d) => d,
        Err(e) => return miss(&e.msg),
    };
    let started = Instant::now();
    let got = dir.path().join("got");
    let file = match File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&got)
    {
        Ok(f) => f,
        Err(e) => return miss(&io_words("", &got, e)),
    };
    let target = client.cache_target(&key);
    let len = match http::get_to_file(client, &target, &file, cap, Instant::now() + deadline) {
        Ok(Some(len)) => len,
        Ok(None) => {
            info!("cache {name}: miss");
            return Some(Restored {
                name: name.clone(),
                key,
                hit: false,
            });
        }
        Err(e) => return miss(&e.msg),
    };
    drop(file);
    let mut roots: Vec<(&str, PathBuf)> = Vec::new();
    for p in &cache.paths {
        match on_disk(p, workspace, home) {
            Some(d) => roots.push((p, d)),
            None => warn!("cache {name}: \"{p}\" is left out: there is no home directory (HOME)"),
        }
    }
    let roots: Vec<(&str, &Path)> = roots.iter().map(|(p, d)| (*p, d.as_path())).collect();
    let restored = open_archive(&dir, &got, cap).and_then(|f| tar::extract(f, &roots));
    match restored {
        Ok(summary) => {
            info!(
                "cache {name}: hit, {} in {}",
                archive::size_words(summary.bytes.max(len)),
                archive::secs_words(started.elapsed())
            );
            Some(Restored {
                name: name.clone(),
                key,
                hit: true,
            })
        }
        Err(e) => miss(&format!("the archive was refused: {e}")),
    }
}

/// The downloaded archive, decompressed first if it is gzip (by its magic
/// bytes: what was sent gzipped may come back either way).
fn open_archive(dir: &PrivateDir, got: &Path, cap: u64) -> Result<File, String> {
    let mut f = File::open(got).map_err(|e| io_words("", got, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| e.to_string())?;
    if n == 2 && magic == [0x1f, 0x8b] {
        let plain = dir.path().join("plain.tar");
        gzip::decompress(got, &plain, cap)?;
        return File::open(&plain).map_err(|e| io_words("", &plain, e));
    }
    File::open(got).map_err(|e| io_words("", got, e))
}

/// Saves `cache` under `key` after a successful job that missed it.
pub fn save(
    client: &mut Client,
    cache: &Cache,
    key: &str,
    workspace: &Path,
    home: Option<&Path>,
    limit: Option<u64>,
    deadline: Duration,
) {
    let name = &cache.name;
    let started = Instant::now();
    let mut entries = Vec::new();
    for p in &cache.paths {
        match on_disk(p, workspace, home) {
            Some(d) if d.symlink_metadata().is_ok() => entries.push((p.clone(), d)),
            Some(_) => warn!("cache {name}: \"{p}\" does not exist; it is not saved"),
            None => warn!("cache {name}: \"{p}\" is left out: there is no home directory (HOME)"),
        }
    }
    if entries.is_empty() {
        warn!("cache {name}: nothing to save");
        return;
    }
    let dir = match PrivateDir::create("cache") {
        Ok(d) => d,
        Err(e) => return warn!("cache {name}: not saved: {e}"),
    };
    let packed: Packed = match archive::pack(&dir, name, &entries) {
        Ok(p) => p,
        Err(e) => return warn!("cache {name}: not saved: {e}"),
    };
    let size = archive::size_words(packed.len);
    if let Some(max) = limit.filter(|&m| packed.len > m) {
        return warn!(
            "cache {name}: {size} is over SOLSTICE_ARTIFACT_LIMIT ({}); not saved",
            archive::size_words(max)
        );
    }
    let target = client.cache_target(key);
    match archive::send(client, &target, &packed, deadline) {
        Ok(200..=299) => info!(
            "cache {name}: saved {size} in {}",
            archive::secs_words(started.elapsed())
        ),
        Ok(status) => warn!("cache {name}: not saved: the orchestrator answered {status}"),
        Err(e) => warn!("cache {name}: not saved: {e}"),
    }
}
