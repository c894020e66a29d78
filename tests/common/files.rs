//! Support for the `files_*` tests: whether GNU tar and python3 are there
//! (a test without them is skipped with a message, except under CI, where it
//! fails), snapshots of trees on disk to compare what different tools
//! extracted, and a raw tar builder for hostile archives that no honest
//! writer would produce.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Whether `sh -c check` succeeds; when it does not, the calling test is
/// skipped with a message, or fails when `CI` is set.
pub fn have(what: &str, check: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("this test needs {what} (`{check}` failed)");
        }
        println!("SKIPPED: this test needs {what} (`{check}` failed)");
    }
    ok
}

pub fn gnu_tar() -> bool {
    have("GNU tar", "tar --version | grep -q 'GNU tar'")
}

pub fn python() -> bool {
    have("python3", "python3 -c 'import tarfile, gzip, hashlib'")
}

pub fn gzip() -> bool {
    have("gzip", "gzip --version")
}

/// Runs `cmd`, which must succeed; its output.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `python3 -c script args...`, which must succeed; its stdout.
pub fn python_run(script: &str, args: &[&Path]) -> String {
    let out = run(Command::new("python3").arg("-c").arg(script).args(args));
    String::from_utf8(out.stdout).unwrap()
}

/// Deterministic bytes: `n` of them from `seed`.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = super::rng::Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..n).map(|_| rng.next() as u8).collect()
}

/// Writes `data` at `root/rel` with `mode`, creating the parents.
pub fn put(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        mode: u32,
        mtime: i64,
        data: Vec<u8>,
    },
    Dir {
        mode: u32,
    },
    Link(Vec<u8>),
    Other,
}

/// Everything below `root` by relative path, links not followed; file
/// contents, permission bits and mtimes, directory permission bits (their
/// mtimes change as entries are added), link targets.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            let name = String::from_utf8_lossy(name.as_bytes());
            let rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let m = fs::symlink_metadata(e.path()).unwrap();
            let node = if m.file_type().is_symlink() {
                Node::Link(
                    fs::read_link(e.path())
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if m.is_dir() {
                todo.push(rel.clone());
                Node::Dir {
                    mode: m.mode() & 0o7777,
                }
            } else if m.is_file() {
                Node::File {
                    mode: m.mode() & 0o7777,
                    mtime: m.mtime(),
                    data: fs::read(e.path()).unwrap(),
                }
            } else {
                Node::Other
            };
            out.insert(rel, node);
        }
    }
    out
}

/// Asserts two snapshots are equal, naming the first difference (file
/// contents are too long to print whole).
pub fn assert_same(got: &BTreeMap<String, Node>, want: &BTreeMap<String, Node>, what: &str) {
    for (k, w) in want {
        match got.get(k) {
            None => panic!("{what}: {k:?} is missing"),
            Some(g) if g != w => {
                let short = |n: &Node| match n {
                    Node::File { mode, mtime, data } => {
                        format!("file mode {mode:o} mtime {mtime} {} bytes", data.len())
                    }
                    other => format!("{other:?}"),
                };
                panic!("{what}: {k:?} differs: got {}, want {}", short(g), short(w));
            }
            _ => {}
        }
    }
    for k in got.keys() {
        assert!(want.contains_key(k), "{what}: {k:?} is extra");
    }
}

/// Makes every directory below `root` writable and removes `root` (an
/// extraction may leave read-only directories behind). Links are removed,
/// never followed.
pub fn clear(root: &Path) {
    fn open_up(p: &Path) {
        if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
            for e in fs::read_dir(p).into_iter().flatten().flatten() {
                open_up(&e.path());
            }
        }
    }
    open_up(root);
    match fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(root).unwrap(),
        Ok(_) => fs::remove_file(root).unwrap(),
        Err(_) => {}
    }
}

/// A tar archive put together header by header, for archives that only an
/// attacker (or a broken writer) would make. Written independently of the
/// runner's writer.
#[derive(Default, Clone)]
pub struct RawTar(pub Vec<u8>);

impl RawTar {
    /// A header declaring `size` bytes, without the data.
    pub fn header(&mut self, name: &[u8], kind: u8, size: u64, link: &[u8]) -> &mut RawTar {
        self.0
            .extend_from_slice(&ustar_header(name, kind, size, link));
        self
    }

    /// A whole entry: header, data, padding.
    pub fn entry(&mut self, name: &str, kind: u8, data: &[u8], link: &str) -> &mut RawTar {
        self.header(name.as_bytes(), kind, data.len() as u64, link.as_bytes());
        self.data(data)
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut RawTar {
        self.entry(name, b'0', data, "")
    }

    pub fn dir(&mut self, name: &str) -> &mut RawTar {
        self.entry(name, b'5', b"", "")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut RawTar {
        self.entry(name, b'2', b"", target)
    }

    /// A pax extended header (`x`) with these records for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut RawTar {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.header(b"PaxHeader", b'x', body.len() as u64, b"");
        self.data(&body)
    }

    /// `data`, padded to a block.
    pub fn data(&mut self, data: &[u8]) -> &mut RawTar {
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    /// The two zero blocks that end an archive.
    pub fn end(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0.clone()
    }
}

/// A POSIX ustar header with a correct checksum; the name is cut at 100
/// bytes, so long names need `pax`.
pub fn ustar_header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    if size < 1 << 33 {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        // GNU's base-256 for sizes octal cannot hold.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[136..148].copy_from_slice(b"14727401000\0");
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..265].copy_from_slice(b"ustar\x0000");
    fix_checksum(&mut h);
    h
}

/// Recomputes a header block's checksum after it was altered.
pub fn fix_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}
