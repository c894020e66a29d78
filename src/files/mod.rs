//! Files out of and into the VM: the primitives under artifacts and the
//! cache. Globs name what to pack, tar packs and restores it, gzip
//! compresses it through the system tool, and SHA-256 gives the digests of
//! uploads and cache keys. Nothing here logs; each returns what happened
//! (or why not) for the caller to report.
//!
//! Safe code only: the tar extractor handles archives other jobs wrote.
#![forbid(unsafe_code)]

pub mod archive;
pub mod artifacts;
pub mod cache;
pub mod glob;
pub mod gzip;
pub mod private;
pub mod sha256;
pub mod tar;

/// An I/O error on `path` in words: "{what} {path}: {e}" ("creating
/// /w/x: Permission denied"), or "{path}: {e}" when `what` is empty. The
/// one wording of such errors in this module, and one place formatting it.
pub(crate) fn io_words(what: &str, path: &std::path::Path, e: std::io::Error) -> String {
    let space = if what.is_empty() { "" } else { " " };
    format!("{what}{space}{}: {e}", path.display())
}

/// Copies `from` to `to` until `from` ends, through a 64 KiB buffer, but
/// never more than `limit` bytes: returns the bytes copied, and whether
/// `from` had more than `limit` (what is past it is not written).
pub(crate) fn copy(
    from: &mut dyn std::io::Read,
    to: &mut dyn std::io::Write,
    limit: u64,
) -> std::io::Result<(u64, bool)> {
    let mut buf = vec![0u8; 64 << 10];
    let mut done = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok((done, false)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let room = limit - done;
        let take = room.min(n as u64);
        to.write_all(buf.get(..take as usize).unwrap_or_default())?;
        done += take;
        if take < n as u64 {
            return Ok((done, true));
        }
    }
}

/// The file at `path`, at most `cap` bytes of it, and whether it holds
/// more. What is past `cap` is not read: a huge file, or /dev/zero, costs
/// no more than `cap`.
pub fn read_capped(path: &std::path::Path, cap: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut bytes = Vec::new();
    let (_, more) = copy(&mut std::fs::File::open(path)?, &mut bytes, cap)?;
    Ok((bytes, more))
}

/// Whether `path` is an executable file (any execute bit).
pub fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Sorts `v` ascending. The std sorts cost kilobytes of code for each type
/// they sort; a heapsort is a few hundred bytes and O(n log n) all the same.
/// (The masker sorts its secrets' forms with it, and the workflow checker
/// its names.)
pub(crate) fn heapsort<T: Ord>(v: &mut [T]) {
    fn sift<T: Ord>(v: &mut [T], mut root: usize, end: usize) {
        loop {
            let mut c = 2 * root + 1;
            if c + 1 < end && v[c] < v[c + 1] {
                c += 1;
            }
            if c >= end || v[root] >= v[c] {
                return;
            }
            v.swap(root, c);
            root = c;
        }
    }
    for i in (0..v.len() / 2).rev() {
        sift(v, i, v.len());
    }
    for end in (1..v.len()).rev() {
        v.swap(0, end);
        sift(v, 0, end);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn heapsort_sorts() {
        let mut seed = 1u64;
        for len in 0..200 {
            let mut v: Vec<u64> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed % 50
                })
                .collect();
            let mut want = v.clone();
            want.sort();
            super::heapsort(&mut v);
            assert_eq!(v, want);
        }
    }
}
