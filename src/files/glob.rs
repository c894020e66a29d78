//! Path patterns of artifacts and caches: expands a pattern against a base
//! directory (the workspace, or the home directory for `~/` cache paths)
//! into the entries it names.
//!
//! `*` and `?` match within one path component (a leading dot is not
//! special: these patterns name build outputs, not shell arguments), `**` as
//! a whole component matches zero or more directories, anything else is
//! literal. A match that is a directory stands for its whole tree; the tar
//! writer adds that tree, so the result lists only the matches themselves,
//! never something below another match. Symbolic links are never followed:
//! a link is matched by its own name and is stored as a link. Matches are
//! returned as strings, so a match whose name is not UTF-8 is an error (one
//! walked through is not).

use std::fs;
use std::path::{Path, PathBuf};

/// A pattern matching more entries than this is refused: it names a
/// directory's contents one by one, and its directory is the better pattern.
pub const MAX_MATCHES: usize = 100_000;

/// The entries under `base` that `pattern` names, as `prefix` followed by
/// their `/`-separated path relative to `base`, sorted. An empty result is
/// not an error (the caller warns). `prefix` is how the caller spells
/// `base` in names and messages: `""` for the workspace, `"~/"` for home.
pub fn expand(base: &Path, prefix: &str, pattern: &str) -> Result<Vec<String>, String> {
    let shown = format!("{prefix}{pattern}");
    let fail = |why: String| format!("path {shown:?}: {why}");
    if pattern.trim().is_empty() {
        // Not "everything": a blank line in a list of patterns is a slip.
        return Err(fail("an empty pattern is refused".into()));
    }
    if pattern.starts_with('/') {
        return Err(fail(
            "an absolute path is refused; paths are relative".into(),
        ));
    }
    let mut comps: Vec<&str> = Vec::new();
    for c in pattern.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(fail(
                    "a `..` component is refused: it could leave the directory".into(),
                ))
            }
            // `**/**` means what `**` means; collapsing keeps the state sets small.
            "**" if comps.last() == Some(&"**") => {}
            _ => comps.push(c),
        }
    }
    if comps.is_empty() {
        // "." names the whole directory: all of its entries.
        comps.push("**");
    }
    let mut start = Vec::new();
    add(&mut start, &comps, 0);
    let mut out = Vec::new();
    // The walk is a set of pattern positions per directory (an NFA), so each
    // directory is read once however many `**` the pattern holds.
    let mut todo: Vec<(PathBuf, Vec<usize>)> = vec![(PathBuf::new(), start)];
    while let Some((dir, states)) = todo.pop() {
        let listing =
            |e: std::io::Error| fail(format!("cannot list {prefix}{}: {e}", dir.display()));
        let entries = match fs::read_dir(base.join(&dir)) {
            Ok(e) => e,
            Err(e) if dir.as_os_str().is_empty() && e.kind() == std::io::ErrorKind::NotFound => {
                break
            }
            Err(e) => return Err(listing(e)),
        };
        for entry in entries {
            let entry = entry.map_err(listing)?;
            let name = entry.file_name();
            let lossy = name.to_string_lossy();
            let mut matched = false;
            let mut next = Vec::new();
            for &i in &states {
                let (c, last) = (comps.get(i).copied().unwrap_or(""), i + 1 == comps.len());
                if c == "**" {
                    // `**` last: everything below the directory, which the
                    // entries at this level already cover as trees.
                    if last {
                        matched = true;
                    } else {
                        add(&mut next, &comps, i);
                    }
                } else if component_matches(c, &lossy) {
                    if last {
                        matched = true;
                    } else {
                        add(&mut next, &comps, i + 1);
                    }
                }
            }
            let path = dir.join(&name);
            if matched {
                // Only a match must be UTF-8: the names go into strings.
                let Some(path) = path.to_str() else {
                    return Err(fail(format!(
                        "{prefix}{:?}: the name is not UTF-8",
                        path.display()
                    )));
                };
                if out.len() == MAX_MATCHES {
                    return Err(fail(format!(
                        "more than {MAX_MATCHES} matches; name their directory instead"
                    )));
                }
                out.push(format!("{prefix}{path}"));
            } else if !next.is_empty() && entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push((path, next));
            }
        }
    }
    super::heapsort(&mut out);
    Ok(out)
}

/// The results of several `expand` calls as one list for the tar writer:
/// sorted, each name once, and without names below another name in the
/// list (that one's tree already holds them).
pub fn union(mut names: Vec<String>) -> Vec<String> {
    super::heapsort(&mut names);
    names.dedup();
    let covered = |n: &String| {
        n.match_indices('/').any(|(i, _)| {
            n.get(..i)
                .is_some_and(|up| names.binary_search_by(|x| x.as_str().cmp(up)).is_ok())
        })
    };
    let keep: Vec<bool> = names.iter().map(|n| !covered(n)).collect();
    let mut keep = keep.into_iter();
    names.retain(|_| keep.next().unwrap_or(true));
    names
}

/// The base directory and the `prefix` of `expand`, for a cache or artifact
/// path as declared: `~/x` is `x` in `home`, anything else is in `workspace`.
pub fn base_of<'a>(
    path: &'a str,
    workspace: &'a Path,
    home: &'a Path,
) -> (&'a Path, &'static str, &'a str) {
    match path.strip_prefix("~/") {
        Some(rest) => (home, "~/", rest),
        None => (workspace, "", path),
    }
}

/// Adds the pattern position `i` to `states` once, and after a `**` also
/// the position that follows it (`**` may match no directory at all).
fn add(states: &mut Vec<usize>, comps: &[&str], i: usize) {
    for i in [i, i + 1] {
        if !states.contains(&i) && i < comps.len() {
            states.push(i);
        }
        if comps.get(i) != Some(&"**") {
            return;
        }
    }
}

/// Whether `name` matches the component pattern `pat`: `*` is any run of
/// characters, `?` exactly one. Backtracking only to the latest `*` keeps
/// this O(len(pat) * len(name)).
fn component_matches(pat: &str, name: &str) -> bool {
    let (mut p, mut n) = (pat, name);
    let mut star: Option<(&str, &str)> = None;
    loop {
        let mut pc = p.chars();
        let mut nc = n.chars();
        match (pc.next(), nc.next()) {
            (Some('*'), _) => {
                p = pc.as_str();
                star = Some((p, n));
                continue;
            }
            (Some(c), Some(d)) if c == '?' || c == d => {
                p = pc.as_str();
                n = nc.as_str();
                continue;
            }
            (None, None) => return true,
            _ => {}
        }
        // Mismatch: let the latest `*` swallow one more character.
        let Some((sp, sn)) = star else { return false };
        let mut sc = sn.chars();
        if sc.next().is_none() {
            return false;
        }
        star = Some((sp, sc.as_str()));
        (p, n) = (sp, sc.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::component_matches as m;

    #[test]
    fn components() {
        assert!(m("*", ""));
        assert!(m("*", ".hidden"));
        assert!(m("*.rs", "main.rs"));
        assert!(!m("*.rs", "main.rs.bak"));
        assert!(m("a?c", "abc"));
        assert!(m("a?c", "aéc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("*a*b*c*", "xxaxxcxxbxx"));
        assert!(m("lit", "lit"));
        assert!(!m("lit", "lit2"));
        assert!(m("**", "anything"));
        // Quadratic at worst, not exponential.
        let name = "a".repeat(300);
        assert!(!m(
            &"*a"
                .repeat(50)
                .chars()
                .chain("b".chars())
                .collect::<String>(),
            &name
        ));
    }
}
