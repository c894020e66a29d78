//! Directories of the runner's own: step scripts, the files steps write to
//! talk back, archives on their way out and in. Outside the checkout, so
//! the job's tree stays exactly the commit; under TMPDIR with an
//! unpredictable name, created exclusively with mode 0700, so no other user
//! can plant or read anything in them; removed with everything in them at
//! the end.

use crate::error::{Error, Result};
use std::io;
use std::path::{Path, PathBuf};

/// "cannot {what} {path}: {e}", an internal error: the runner's own files.
fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::internal(format!("cannot {what} {}: {e}", path.display()))
}

/// One private directory, removed when dropped.
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    pub fn create(what: &str) -> Result<PrivateDir> {
        use std::io::Read;
        use std::os::unix::fs::DirBuilderExt;
        let tmp = std::env::temp_dir();
        let mut last = None;
        for _ in 0..16 {
            // From the kernel's random source, as std seeds its hashes:
            // no other user can guess the name and create it first.
            let mut random = [0u8; 8];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut random))
                .map_err(|e| io_error("read", Path::new("/dev/urandom"), e))?;
            let name = u64::from_ne_bytes(random);
            let dir = tmp.join(format!("solstice-{what}-{name:016x}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(PrivateDir(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_error("create a private directory in", &tmp, e)),
            }
        }
        let e = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
        Err(io_error("create a private directory in", &tmp, e))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates the file `name` in the directory, which must not exist yet.
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<PathBuf> {
        use std::io::Write;
        let path = self.0.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(contents))
            .map_err(|e| io_error("write", &path, e))?;
        Ok(path)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            warn!("cannot remove {}: {e}", self.0.display());
        }
    }
}
