//! Tar archives, POSIX.1-2001 (ustar headers, pax extended headers where
//! ustar falls short): the writer that packs artifacts and caches, and the
//! extractor that restores a cache.
//!
//! The writer stores regular files, directories and symbolic links (as
//! links, never followed), with permission bits and mtime but uid/gid 0 and
//! no user or group names, so archives are reproducible and say nothing
//! about the VM's accounts.
//!
//! A cache archive comes from the orchestrator, and another job may have
//! written it, so the extractor treats it as hostile: every entry must land
//! inside one of the roots the caller declares; absolute names, `..`, hard
//! links, devices and FIFOs are refused, nothing is written through a
//! symbolic link below a root, and no setuid, setgid or sticky bit comes
//! out. Headers are checksummed and everything read is bounded: names, pax
//! headers, and data sizes checked against the stream (a truncated archive
//! is an error, never a hang).

use super::io_words;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

const BLOCK: usize = 512;
const ZEROS: [u8; BLOCK] = [0; BLOCK];
/// Files are streamed through a buffer of this size, whatever their size.
const BUF: usize = 64 << 10;
/// Longest entry name either side accepts (Linux's PATH_MAX: a longer path
/// could not be opened anyway).
pub const MAX_NAME: usize = 4096;
/// Most components in an entry name; deeper trees are refused on both sides.
pub const MAX_DEPTH: usize = 256;
/// Largest pax extended header read; real ones hold a few names.
pub const MAX_PAX: u64 = 1 << 20;
/// At most this many warnings are kept by the writer.
const MAX_WARNINGS: usize = 100;
/// ustar's 11 octal digits: sizes from here on need pax; mtimes are
/// clamped below it (the year 2242).
const OCTAL11: u64 = 1 << 33;

const REGULAR: u8 = b'0';
const SYMLINK: u8 = b'2';
const DIR: u8 = b'5';

/// Writes a tar archive into `out`. Wrap `out` in a `BufWriter` when it is a
/// file: headers are written 512 bytes at a time.
pub struct Writer<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Entries written (files, directories, links).
    pub entries: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Files that changed or vanished while being archived, and entries
    /// skipped (sockets, devices); the archive stays well-formed. The first
    /// 100 are kept.
    pub warnings: Vec<String>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Writer<W> {
        Writer {
            out,
            buf: vec![0; BUF],
            entries: 0,
            bytes: 0,
            warnings: Vec::new(),
        }
    }

    /// Adds what is at `path` as the entry `name`: a directory with its
    /// whole tree below (children in byte order of their names), a symbolic
    /// link as a link, a file with several hard links as a file each time.
    /// Something missing (or vanished while the tree is walked) is a
    /// warning, not an error.
    pub fn append(&mut self, name: &str, path: &Path) -> Result<(), String> {
        // Only names the extractor would accept.
        components(name.as_bytes()).map_err(|why| format!("entry name {name:?}: {why}"))?;
        // Relative paths below `path` still to write; popped in name order,
        // depth first, so memory follows the tree's depth and fan-out, and
        // never a file's size.
        let mut todo = vec![PathBuf::new()];
        // Without a trailing `/`, which would make lstat follow a link.
        let path: PathBuf = path.components().collect();
        while let Some(rel) = todo.pop() {
            let mut entry = name.trim_end_matches('/').as_bytes().to_vec();
            let full = if rel.as_os_str().is_empty() {
                path.to_path_buf()
            } else {
                entry.push(b'/');
                entry.extend_from_slice(rel.as_os_str().as_bytes());
                path.join(&rel)
            };
            let fail = |e: io::Error| io_words("", &full, e);
            let meta = match fs::symlink_metadata(&full) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(format!("{}: not found, not archived", full.display()));
                    continue;
                }
                Err(e) => return Err(fail(e)),
            };
            if entry.len() >= MAX_NAME || entry.split(|&b| b == b'/').count() > MAX_DEPTH {
                return Err(format!(
                    "{}: the name is too long or too deep to archive (limits: {MAX_NAME} bytes, {MAX_DEPTH} levels)",
                    full.display()
                ));
            }
            let ft = meta.file_type();
            let mode = meta.mode() & 0o777;
            let mtime = meta.mtime().clamp(0, OCTAL11 as i64 - 1) as u64;
            if ft.is_dir() {
                entry.push(b'/');
                self.header(&entry, DIR, 0, mode, mtime, b"")?;
                let mut kids = Vec::new();
                for kid in fs::read_dir(&full).map_err(fail)? {
                    kids.push(kid.map_err(fail)?.file_name().into_vec());
                }
                super::heapsort(&mut kids);
                // Reversed, so that popping yields ascending order.
                todo.extend(kids.iter().rev().map(|k| rel.join(OsStr::from_bytes(k))));
            } else if ft.is_symlink() {
                let target = fs::read_link(&full).map_err(fail)?;
                self.header(
                    &entry,
                    SYMLINK,
                    0,
                    mode,
                    mtime,
                    target.as_os_str().as_bytes(),
                )?;
            } else if ft.is_file() {
                self.file(&entry, &full, mode, mtime)?;
            } else {
                self.warn(format!(
                    "{}: not a regular file, directory or symbolic link; skipped",
                    full.display()
                ));
            }
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the output, flushed.
    pub fn finish(mut self) -> Result<W, String> {
        self.write(&[0; 2 * BLOCK])?;
        self.out
            .flush()
            .map_err(|e| format!("writing the archive: {e}"))?;
        Ok(self.out)
    }

    fn file(&mut self, name: &[u8], path: &Path, mode: u32, mtime: u64) -> Result<(), String> {
        let fail = |e: io::Error| io_words("", path, e);
        // O_NOFOLLOW: the path was a regular file a moment ago; if it has
        // just become a link, it is not followed now either.
        let mut f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{}: vanished, not archived", path.display()));
                return Ok(());
            }
            Err(e) => return Err(fail(e)),
        };
        // The size of the file actually opened; the header promises exactly
        // this many bytes, so a file that changes now cannot break the archive.
        let meta = f.metadata().map_err(fail)?;
        if !meta.is_file() {
            self.warn(format!(
                "{}: replaced while archived; skipped",
                path.display()
            ));
            return Ok(());
        }
        let size = meta.len();
        self.header(name, REGULAR, size, mode, mtime, b"")?;
        let mut left = size;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let chunk = self.buf.get_mut(..want).unwrap_or_default();
            let n = match f.read(chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(e)),
            };
            let data = chunk.get(..n).unwrap_or_default();
            self.out
                .write_all(data)
                .map_err(|e| format!("writing the archive: {e}"))?;
            left -= data.len() as u64;
        }
        if left > 0 {
            self.warn(format!(
                "{}: shrank by {left} bytes while archived; padded with zeros",
                path.display()
            ));
            self.buf.fill(0);
            while left > 0 {
                let n = self
                    .buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                self.out
                    .write_all(self.buf.get(..n).unwrap_or_default())
                    .map_err(|e| format!("writing the archive: {e}"))?;
                left -= n as u64;
            }
        } else if matches!(f.read(&mut [0]), Ok(1)) {
            self.warn(format!(
                "{}: grew while archived; only its first {size} bytes are stored",
                path.display()
            ));
        }
        self.bytes += size;
        self.pad(size)
    }

    /// One entry's header, preceded by a pax header when a name, link
    /// target or size does not fit ustar's fields.
    fn header(
        &mut self,
        name: &[u8],
        kind: u8,
        size: u64,
        mode: u32,
        mtime: u64,
        link: &[u8],
    ) -> Result<(), String> {
        let mut pax = Vec::new();
        let (prefix, short) = split_name(name).unwrap_or_else(|| {
            record(&mut pax, "path", name);
            (b"", name)
        });
        if link.len() > 100 {
            record(&mut pax, "linkpath", link);
        }
        let field_size = if size < OCTAL11 {
            size
        } else {
            record(&mut pax, "size", size.to_string().as_bytes());
            0
        };
        if !pax.is_empty() {
            let len = pax.len() as u64;
            self.write(&raw(b"././@PaxHeader", b"", b'x', len, 0o644, mtime, b""))?;
            self.write(&pax)?;
            self.pad(len)?;
        }
        self.write(&raw(short, prefix, kind, field_size, mode, mtime, link))?;
        self.entries += 1;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.out
            .write_all(bytes)
            .map_err(|e| format!("writing the archive: {e}"))
    }

    /// Zeros from `size` up to the next block boundary.
    fn pad(&mut self, size: u64) -> Result<(), String> {
        let n = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.write(ZEROS.get(..n).unwrap_or_default())
    }

    fn warn(&mut self, w: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(w);
        }
    }
}

/// `name` as ustar's (prefix, name) fields: at most 155 and 100 bytes,
/// split at a `/`; `None` when no split fits and pax must carry the name.
fn split_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((b"", name));
    }
    let i = (name.len() - 101..name.len().min(156)).find(|&i| name.get(i) == Some(&b'/'))?;
    let (prefix, rest) = (name.get(..i)?, name.get(i + 1..)?);
    (!prefix.is_empty() && !rest.is_empty()).then_some((prefix, rest))
}

/// Appends the pax record `LEN key=value\n`, where LEN counts itself.
fn record(pax: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let digits = base.to_string().len();
    let mut len = base + digits;
    if len.to_string().len() > digits {
        len += 1;
    }
    pax.extend_from_slice(len.to_string().as_bytes());
    pax.push(b' ');
    pax.extend_from_slice(key.as_bytes());
    pax.push(b'=');
    pax.extend_from_slice(value);
    pax.push(b'\n');
}

/// A ustar header block; fields too long for their place are cut (the
/// caller has put them in a pax header first).
fn raw(
    name: &[u8],
    prefix: &[u8],
    kind: u8,
    size: u64,
    mode: u32,
    mtime: u64,
    link: &[u8],
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put(&mut h[0..100], name);
    octal(&mut h[100..108], mode.into());
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    put(&mut h[157..257], link);
    put(&mut h[257..265], b"ustar\x0000");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    put(&mut h[345..500], prefix);
    h[148..156].fill(b' ');
    let sum = h.iter().map(|&b| u64::from(b)).sum();
    // Six digits, NUL, and the space already there.
    octal(&mut h[148..155], sum);
    h
}

fn put(field: &mut [u8], value: &[u8]) {
    for (f, v) in field.iter_mut().zip(value) {
        *f = *v;
    }
}

/// Zero-padded octal digits in all but the last byte, which stays NUL.
fn octal(field: &mut [u8], mut v: u64) {
    if let Some((_, digits)) = field.split_last_mut() {
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v & 7) as u8;
            v >>= 3;
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Entries restored (files, directories, links).
    pub entries: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
}

/// Extracts the tar archive `input` (ustar, pax, GNU long names) under
/// `roots`: pairs of an entry name prefix, as the writer was given it
/// (`deps/x`, `~/.cargo/registry`), and the directory on disk it stands for.
/// An entry named by a root or below it lands in that directory.
///
/// The roots' parent directories are the caller's and are created when
/// missing; from each root down, every existing path component must be a
/// real directory (a symbolic link there is refused, never written
/// through), and an existing file or link at an entry's own path is
/// replaced. Hard links are refused (the writer never makes them).
///
/// Stops at the first refused or broken entry with a message naming it;
/// what was restored before stays (always inside the roots), but a file cut
/// short by a truncated archive is removed.
pub fn extract(input: impl Read, roots: &[(&str, &Path)]) -> Result<Summary, String> {
    let mut roots_split = Vec::with_capacity(roots.len());
    for &(name, dir) in roots {
        let comps =
            components(name.as_bytes()).map_err(|why| format!("cache path {name:?}: {why}"))?;
        // Without a trailing `/`, which would make lstat follow a link.
        roots_split.push((comps, dir.components().collect()));
    }
    Extractor {
        input: BufReader::with_capacity(BUF, input),
        roots: roots_split,
        buf: vec![0; BUF],
        verified: None,
        modes: Vec::new(),
    }
    .run()
}

/// One entry as its headers describe it.
struct Entry {
    name: Vec<u8>,
    link: Vec<u8>,
    kind: u8,
    size: u64,
    mode: u32,
    mtime: u64,
}

/// Overrides for the next entry, from pax `x` and GNU `L`/`K` headers.
#[derive(Default)]
struct Next {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<u64>,
}

/// Generic rather than `dyn Read`: a trait object's vtable would carry every
/// Read method, where only `read` and `read_exact` are used.
struct Extractor<'a, R> {
    input: R,
    roots: Vec<(Vec<&'a [u8]>, PathBuf)>,
    buf: Vec<u8>,
    /// The last directory checked to be a real directory from its root
    /// down (root index, path). Only this extraction changes the tree and
    /// it never replaces a directory, so the check stays true.
    verified: Option<(usize, PathBuf)>,
    /// Directories whose mode lacks the owner's rwx, set at the end so that
    /// their entries can be written first.
    modes: Vec<(PathBuf, u32)>,
}

impl<R: Read> Extractor<'_, R> {
    fn run(mut self) -> Result<Summary, String> {
        let mut sum = Summary::default();
        let mut next = Next::default();
        let mut h = [0u8; BLOCK];
        for index in 1u64.. {
            let at = |why: &str| format!("tar header {index}: {why}");
            self.read(&mut h, "the archive ends without its end marker")
                .map_err(|e| at(&e))?;
            if h == ZEROS {
                self.read(&mut h, "the archive ends inside its end marker")
                    .map_err(|e| at(&e))?;
                if h != ZEROS {
                    return Err(at("a zero block in the middle of the archive"));
                }
                break;
            }
            let stored = number(&h[148..156]);
            let sum_of = |f: fn(u8) -> i64| -> i64 {
                h.iter()
                    .enumerate()
                    .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { f(b) })
                    .sum()
            };
            let ok = stored.is_some_and(|s| {
                s as i64 == sum_of(i64::from) || s as i64 == sum_of(|b| i64::from(b as i8))
            });
            if !ok {
                return Err(at("bad header checksum (not a tar archive, or corrupt)"));
            }
            let posix = &h[257..263] == b"ustar\0";
            if !posix && &h[257..265] != b"ustar  \0" {
                return Err(at("not a ustar, pax or GNU tar header"));
            }
            let (Some(hsize), Some(mode), Some(hmtime)) = (
                number(&h[124..136]),
                number(&h[100..108]),
                number(&h[136..148]),
            ) else {
                return Err(at("bad number in a size, mode or mtime field"));
            };
            let kind = h[156];
            match kind {
                b'x' | b'g' => {
                    let data = self.meta(hsize, MAX_PAX).map_err(|e| at(&e))?;
                    // Global headers (git archive puts the commit there) set
                    // nothing we use; they are read and checked, not applied.
                    let mut global = Next::default();
                    let into = if kind == b'x' { &mut next } else { &mut global };
                    parse_pax(&data, into).map_err(at)?;
                    continue;
                }
                b'L' | b'K' => {
                    let data = self.meta(hsize, MAX_NAME as u64 + 1).map_err(|e| at(&e))?;
                    let value = Some(cstr(&data).to_vec());
                    if kind == b'L' {
                        next.path = value;
                    } else {
                        next.link = value;
                    }
                    continue;
                }
                _ => {}
            }
            let over = std::mem::take(&mut next);
            let e = Entry {
                name: over.path.unwrap_or_else(|| {
                    let (prefix, short) = (cstr(&h[345..500]), cstr(&h[0..100]));
                    if posix && !prefix.is_empty() {
                        [prefix, b"/", short].concat()
                    } else {
                        short.to_vec()
                    }
                }),
                link: over.link.unwrap_or_else(|| cstr(&h[157..257]).to_vec()),
                kind,
                size: over.size.unwrap_or(hsize),
                // Permission bits only: no setuid, setgid or sticky bit
                // comes out of a cache.
                mode: mode as u32 & 0o777,
                mtime: over.mtime.unwrap_or(hmtime),
            };
            let shown = String::from_utf8_lossy(e.name.get(..200).unwrap_or(&e.name)).into_owned();
            sum.bytes += self
                .entry(&e)
                .map_err(|why| format!("tar entry {shown:?}: {why}"))?;
            sum.entries += 1;
        }
        for (dir, mode) in &self.modes {
            fs::set_permissions(dir, Permissions::from_mode(*mode))
                .map_err(|e| io_words("", dir, e))?;
        }
        Ok(sum)
    }

    /// Restores one entry; the bytes of file data written.
    fn entry(&mut self, e: &Entry) -> Result<u64, String> {
        let Entry {
            ref name,
            ref link,
            kind,
            size,
            mode,
            mtime,
        } = *e;
        let kind = match kind {
            0 if name.ends_with(b"/") => DIR,
            0 | b'0' | b'7' => REGULAR,
            b'5' | b'2' => kind,
            b'1' => return Err("hard links are not restored".into()),
            b'3' | b'4' => return Err("device files are not restored".into()),
            b'6' => return Err("FIFOs are not restored".into()),
            b'S' => return Err("sparse files are not supported".into()),
            _ => return Err(format!("entry type {:?} is not supported", kind as char)),
        };
        if kind != REGULAR && size != 0 {
            return Err("a directory or link entry with data".into());
        }
        if name.len() > MAX_NAME {
            return Err(format!("the name is over {MAX_NAME} bytes"));
        }
        let comps = components(name)?;
        let Some((ri, depth, dir)) = self
            .roots
            .iter()
            .enumerate()
            .filter(|(_, (root, _))| comps.starts_with(root))
            .map(|(ri, (root, dir))| (ri, root.len(), dir.clone()))
            .max_by_key(|&(_, depth, _)| depth)
        else {
            return Err("outside every path of the cache; refused".into());
        };
        let rest = comps.get(depth..).unwrap_or_default();
        let mut target = dir.clone();
        for c in rest {
            target.push(OsStr::from_bytes(c));
        }
        if let Some(parent) = target.parent().filter(|_| !rest.is_empty()) {
            self.check_dirs(ri, &dir, parent)?;
        } else if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| io_words("creating", parent, e))?;
        }
        match kind {
            DIR => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&target).map_err(|e| io_words("replacing", &target, e))?;
                        fs::create_dir(&target).map_err(|e| io_words("creating", &target, e))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&target).map_err(|e| io_words("creating", &target, e))?
                    }
                    Err(e) => return Err(io_words("examining", &target, e)),
                }
                if mode & 0o700 != 0o700 {
                    self.modes.push((target.clone(), mode));
                }
                fs::set_permissions(&target, Permissions::from_mode(mode | 0o700))
                    .map_err(|e| io_words("setting the mode of", &target, e))?;
            }
            SYMLINK => {
                if link.is_empty() {
                    return Err("a symbolic link without a target".into());
                }
                remove_existing(&target)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(link), &target)
                    .map_err(|e| io_words("creating", &target, e))?;
            }
            _ => {
                remove_existing(&target)?;
                // create_new: O_EXCL, so even a link that appeared since
                // would not be followed.
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(|e| io_words("creating", &target, e))?;
                if let Err(e) = self.copy(&mut f, size, &target) {
                    drop(f);
                    let _ = fs::remove_file(&target);
                    return Err(e);
                }
                f.set_permissions(Permissions::from_mode(mode))
                    .map_err(|e| io_words("setting the mode of", &target, e))?;
                if let Some(t) = UNIX_EPOCH.checked_add(Duration::from_secs(mtime)) {
                    f.set_modified(t)
                        .map_err(|e| io_words("setting the mtime of", &target, e))?;
                }
                return Ok(size);
            }
        }
        Ok(0)
    }

    /// Makes sure every component from the root `dir` down to `parent` is
    /// a real directory, creating the missing ones; a symbolic link or any
    /// other file there is refused.
    fn check_dirs(&mut self, ri: usize, dir: &Path, parent: &Path) -> Result<(), String> {
        let mut at = match &self.verified {
            Some((vi, v)) if *vi == ri && parent.starts_with(v) => v.clone(),
            _ => {
                // The root's own parents are the caller's (the workspace,
                // home); the root itself is checked like what lies below.
                if let Some(up) = dir.parent() {
                    fs::create_dir_all(up).map_err(|e| io_words("creating", up, e))?;
                }
                real_dir(dir)?;
                dir.to_path_buf()
            }
        };
        let below = parent
            .strip_prefix(&at)
            .map_err(|_| format!("{} is not below {}", parent.display(), at.display()))?;
        for c in below.components() {
            at.push(c);
            real_dir(&at)?;
        }
        self.verified = Some((ri, at));
        Ok(())
    }

    /// A pax or GNU long-name header's data, refused over `cap` bytes.
    fn meta(&mut self, size: u64, cap: u64) -> Result<Vec<u8>, String> {
        if size > cap {
            return Err(format!(
                "an extended header of {size} bytes (the limit is {cap})"
            ));
        }
        let mut data = vec![0; size.div_ceil(BLOCK as u64) as usize * BLOCK];
        self.read(&mut data, "the archive ends inside an extended header")?;
        data.truncate(size as usize);
        Ok(data)
    }

    /// Exactly `size` bytes of the archive into `out`, then the padding.
    fn copy(&mut self, out: &mut File, size: u64, path: &Path) -> Result<(), String> {
        let mut left = size;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let chunk = self.buf.get_mut(..want).unwrap_or_default();
            let n = match self.input.read(chunk) {
                Ok(0) => return Err("the archive ends inside this file's data".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading the archive: {e}")),
            };
            let data = chunk.get(..n).unwrap_or_default();
            out.write_all(data)
                .map_err(|e| io_words("writing", path, e))?;
            left -= data.len() as u64;
        }
        let mut pad = [0; BLOCK];
        let n = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.read(
            pad.get_mut(..n).unwrap_or_default(),
            "the archive ends inside this file's padding",
        )
    }

    fn read(&mut self, into: &mut [u8], at_eof: &str) -> Result<(), String> {
        self.input.read_exact(into).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => at_eof.to_string(),
            _ => format!("reading the archive: {e}"),
        })
    }
}

/// Whether `p` is a real directory, creating it when missing.
fn real_dir(p: &Path) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "{} is a symbolic link on disk; nothing is written through it",
            p.display()
        )),
        Ok(_) => Err(format!("{} is not a directory on disk", p.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(p).map_err(|e| io_words("creating", p, e))
        }
        Err(e) => Err(io_words("examining", p, e)),
    }
}

/// Removes a file or link at `p` so the entry replaces it rather than
/// writing through it; a directory in the way is refused.
fn remove_existing(p: &Path) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Err(format!("{} is a directory on disk", p.display())),
        Ok(_) => fs::remove_file(p).map_err(|e| io_words("replacing", p, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_words("examining", p, e)),
    }
}

/// The components of an entry name: empty and `.` components dropped
/// (`./x`, `x/`), absolute names, `..` and over-deep names refused.
fn components(name: &[u8]) -> Result<Vec<&[u8]>, String> {
    if name.first() == Some(&b'/') {
        return Err("an absolute name is refused".into());
    }
    let comps: Vec<&[u8]> = name
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if comps.iter().any(|c| *c == b"..") {
        return Err("a `..` component is refused".into());
    }
    if comps.is_empty() {
        return Err("an empty name".into());
    }
    if comps.len() > MAX_DEPTH {
        return Err(format!("more than {MAX_DEPTH} levels deep"));
    }
    Ok(comps)
}

/// A NUL-terminated header field.
fn cstr(field: &[u8]) -> &[u8] {
    field.split(|&b| b == 0).next().unwrap_or_default()
}

/// A numeric header field: octal digits (leading spaces, ending at NUL or
/// space; empty is 0), or GNU's base-256 for values octal cannot hold.
/// Negative base-256 values are refused.
fn number(field: &[u8]) -> Option<u64> {
    if let Some((0x80, rest)) = field.split_first() {
        return rest
            .iter()
            .try_fold(0u64, |v, &b| v.checked_mul(256)?.checked_add(b.into()));
    }
    field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ')
        .try_fold(0u64, |v, &b| match b {
            b'0'..=b'7' => v.checked_mul(8)?.checked_add(u64::from(b - b'0')),
            _ => None,
        })
}

fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |v, &b| match b {
        b'0'..=b'9' => v.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// pax records, `LEN key=value\n` each; trailing NUL padding is tolerated.
fn parse_pax(mut rest: &[u8], next: &mut Next) -> Result<(), &'static str> {
    const BAD: &str = "malformed pax extended header";
    while rest.iter().any(|&b| b != 0) {
        let sp = rest.iter().take(20).position(|&b| b == b' ').ok_or(BAD)?;
        let len = rest.get(..sp).and_then(decimal).ok_or(BAD)?;
        let rec = rest
            .get(..usize::try_from(len).map_err(|_| BAD)?)
            .ok_or(BAD)?;
        let body = rec
            .get(sp + 1..)
            .and_then(|r| r.strip_suffix(b"\n"))
            .ok_or(BAD)?;
        let eq = body.iter().position(|&b| b == b'=').ok_or(BAD)?;
        let (key, value) = body.split_at(eq);
        let value = value.get(1..).unwrap_or_default();
        match key {
            b"path" => next.path = Some(value.to_vec()),
            b"linkpath" => next.link = Some(value.to_vec()),
            b"size" => next.size = Some(decimal(value).ok_or(BAD)?),
            // Fractions are dropped; negative times become the epoch.
            b"mtime" => {
                next.mtime = Some(
                    value
                        .split(|&b| b == b'.')
                        .next()
                        .and_then(decimal)
                        .unwrap_or(0),
                )
            }
            _ if key.starts_with(b"GNU.sparse") => return Err("sparse files are not supported"),
            _ => {}
        }
        rest = rest.get(rec.len()..).unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for n in 0..300 {
            let mut pax = Vec::new();
            record(&mut pax, "path", &vec![b'a'; n]);
            let sp = pax.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&pax[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, pax.len(), "value of {n} bytes");
            let mut next = Next::default();
            parse_pax(&pax, &mut next).unwrap();
            assert_eq!(next.path.unwrap().len(), n);
        }
    }

    #[test]
    fn ustar_name_split() {
        let name = [&[b'p'; 150][..], b"/", &[b'n'; 100]].concat();
        assert_eq!(split_name(&name), Some((&name[..150], &name[151..])));
        assert_eq!(split_name(&[b'x'; 101]), None);
        let too_long = [&[b'p'; 150][..], b"/", &[b'n'; 101]].concat();
        assert_eq!(split_name(&too_long), None);
        let dir = [&[b'p'; 100][..], b"/"].concat();
        assert_eq!(split_name(&dir), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"   644 \0"), Some(0o644));
        assert_eq!(number(b"\0\0\0"), Some(0));
        assert_eq!(number(b"0009\0"), None);
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0]),
            Some(0x20000)
        );
        assert_eq!(number(&[0xff; 12]), None);
        assert_eq!(
            number(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(number(b"77777777777777777777777"), None);
    }

    #[test]
    fn huge_sizes_go_to_pax() {
        let mut w = Writer::new(Vec::new());
        w.header(b"big", REGULAR, 9 << 30, 0o644, 0, b"").unwrap();
        let out = w.out;
        assert_eq!(out[156], b'x');
        let records = &out[BLOCK..];
        assert!(
            records.starts_with(b"19 size=9663676416\n"),
            "{:?}",
            &records[..30]
        );
        let entry = &out[2 * BLOCK..3 * BLOCK];
        assert_eq!(number(&entry[124..136]), Some(0));
    }

    #[test]
    fn malformed_pax_is_refused() {
        for bad in [
            &b"5 a=b\n"[..],
            b"100 path=x\n",
            b"x path=y\n",
            b"0 \n",
            b"9 pathx\n",
            b"12 size=1x\n",
            b"99999999999999999999999 path=x\n",
            b"10 path=x\n5 a=b\n",
        ] {
            assert!(parse_pax(bad, &mut Next::default()).is_err(), "{:?}", bad);
        }
        assert!(parse_pax(b"10 path=x\n\0\0\0", &mut Next::default()).is_ok());
    }
}
