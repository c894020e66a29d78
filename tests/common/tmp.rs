//! Temporary directories and loopback ports: a unique directory removed on
//! drop, a port nothing listens on, and whether something does.

use std::fs;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique directory under `std::env::temp_dir()`, removed on drop unless
/// the environment variable `KEEP_TEST_DIRS` is set (then its path is
/// printed, so a failing test's files can be inspected).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/solstice-<prefix>-<pid>-<counter>-<nanos>`.
    pub fn new(prefix: &str) -> TempDir {
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::SeqCst);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!(
                "solstice-{}-{}-{}-{}",
                prefix,
                std::process::id(),
                n,
                nanos
            ));
            match fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating temp dir {}: {}", path.display(), e),
            }
        }
        panic!(
            "could not create a unique temp dir under {}",
            base.display()
        );
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_some() {
            eprintln!("KEEP_TEST_DIRS: keeping {}", self.path.display());
            return;
        }
        // A checkout may hold read-only pack files; remove_dir_all copes on
        // unix because removal needs write permission on the directory only.
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound to :0 and
/// released). Nothing listens on it, so connecting is refused, unless
/// something else grabs it in between.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn accepts_connections(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        Ok(s) => {
            let _ = s.shutdown(Shutdown::Both);
            true
        }
        Err(_) => false,
    }
}
