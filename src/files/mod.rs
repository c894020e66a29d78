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
