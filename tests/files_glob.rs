//! Artifact and cache path patterns on a real tree: `*`, `?`, `**`,
//! literal paths, directories standing for their trees, links never
//! followed, patterns that would leave the base refused, the match cap.

mod common;

use common::files::put;
use common::tmp::TempDir;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use workflow_runner::files::glob::{base_of, expand, union, MAX_MATCHES};

fn tree() -> TempDir {
    let t = TempDir::new("files-glob");
    let w = t.path();
    for f in [
        "a.txt",
        "b.txt",
        ".hidden.txt",
        "c.rs",
        "a/x/c",
        "a/y/c/inside",
        "a/z/d",
        "src/main.rs",
        "src/lib/mod.rs",
        "src/lib/deep/x.rs",
        "dir/e.rs",
        "dir/sub/f",
        "q1",
        "q22",
        "sp ace/ü.txt",
    ] {
        put(w, f, b"x", 0o644);
    }
    fs::create_dir(w.join("empty")).unwrap();
    symlink("src", w.join("link_dir")).unwrap();
    symlink("/etc", w.join("dir/sub/abs_link")).unwrap();
    t
}

fn ok(base: &Path, pattern: &str) -> Vec<String> {
    expand(base, "", pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

#[test]
fn patterns() {
    let t = tree();
    let w = t.path();
    let cases: &[(&str, &[&str])] = &[
        // `*` within a component, dot files included.
        ("*.txt", &[".hidden.txt", "a.txt", "b.txt"]),
        ("a/*/c", &["a/x/c", "a/y/c"]),
        ("*/*/c", &["a/x/c", "a/y/c"]),
        ("a*", &["a", "a.txt"]),
        // `?` is one character.
        ("q?", &["q1"]),
        ("q??", &["q22"]),
        ("sp ace/?.txt", &["sp ace/ü.txt"]),
        // `**` is zero or more directories, never through the link.
        (
            "**/*.rs",
            &[
                "c.rs",
                "dir/e.rs",
                "src/lib/deep/x.rs",
                "src/lib/mod.rs",
                "src/main.rs",
            ],
        ),
        ("**/**/x.rs", &["src/lib/deep/x.rs"]),
        (
            "src/**/*.rs",
            &["src/lib/deep/x.rs", "src/lib/mod.rs", "src/main.rs"],
        ),
        ("src/**/deep/*", &["src/lib/deep/x.rs"]),
        // A directory match stands for its tree: nothing below it is listed.
        ("**/c", &["a/x/c", "a/y/c"]),
        ("a/**", &["a/x", "a/y", "a/z"]),
        ("src/**", &["src/lib", "src/main.rs"]),
        ("dir", &["dir"]),
        ("dir/", &["dir"]),
        ("./a//x/./c", &["a/x/c"]),
        ("empty", &["empty"]),
        // A link is matched by its own name and not descended.
        ("link_dir", &["link_dir"]),
        ("link_dir/*", &[]),
        ("link_dir/**", &[]),
        ("dir/sub/*", &["dir/sub/abs_link", "dir/sub/f"]),
        // No match is an empty result.
        ("nothing*", &[]),
        ("a/x/c/under_a_file", &[]),
        ("missing/dir/file", &[]),
    ];
    for (pattern, want) in cases {
        assert_eq!(ok(w, pattern), *want, "{pattern}");
    }
    // `**` and `.` name every top-level entry.
    let mut top: Vec<String> = fs::read_dir(w)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(ok(w, "**"), top);
    assert_eq!(ok(w, "."), top);
    assert_eq!(ok(w, "*"), top);
}

#[test]
fn leaving_the_base_is_refused() {
    let t = tree();
    for pattern in [
        "..",
        "../x",
        "a/../../etc",
        "a/..",
        "/etc/passwd",
        "/",
        "**/../x",
    ] {
        let e = expand(t.path(), "", pattern).unwrap_err();
        assert!(
            e.contains(&format!("{pattern:?}")),
            "{pattern}: the message names it: {e}"
        );
        assert!(e.contains("refused"), "{e}");
    }
    for blank in ["", "  "] {
        let e = expand(t.path(), "", blank).unwrap_err();
        assert!(e.contains("empty pattern"), "{e}");
    }
    let e = expand(t.path(), "~/", "../x").unwrap_err();
    assert!(e.contains("\"~/../x\""), "{e}");
}

#[test]
fn home_prefix() {
    let t = TempDir::new("files-glob-home");
    let home = t.join("home");
    put(&home, ".cargo/registry/index/x", b"", 0o644);
    put(&home, ".cargo/bin/cargo", b"", 0o755);
    let ws = t.join("ws");
    let (base, prefix, rest) = base_of("~/.cargo/*", &ws, &home);
    assert_eq!((base, prefix, rest), (home.as_path(), "~/", ".cargo/*"));
    assert_eq!(
        expand(base, prefix, rest).unwrap(),
        ["~/.cargo/bin", "~/.cargo/registry"]
    );
    assert_eq!(base_of("target", &ws, &home), (ws.as_path(), "", "target"));
    // A base that does not exist has no matches.
    assert_eq!(
        expand(&t.join("nowhere"), "~/", "**").unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn names_that_are_not_utf8() {
    let t = tree();
    let weird = t.join("weird");
    fs::create_dir(&weird).unwrap();
    fs::write(weird.join(OsStr::from_bytes(b"\xff.bin")), b"x").unwrap();
    fs::create_dir(weird.join(OsStr::from_bytes(b"\xfe"))).unwrap();
    fs::write(weird.join(OsStr::from_bytes(b"\xfe/ok.txt")), b"x").unwrap();
    // Not matched, or only walked through: no trouble.
    assert_eq!(ok(t.path(), "**/*.rs").len(), 5);
    assert_eq!(ok(t.path(), "weird"), ["weird"]);
    // Matched: a result cannot name it.
    let e = expand(t.path(), "", "weird/*").unwrap_err();
    assert!(e.contains("not UTF-8") && e.contains("weird/"), "{e}");
    let e = expand(t.path(), "", "**/?.bin").unwrap_err();
    assert!(e.contains("not UTF-8"), "{e}");
    let e = expand(t.path(), "", "**/ok.txt").unwrap_err();
    assert!(e.contains("not UTF-8") && e.contains("ok.txt"), "{e}");
}

/// Nested `**` over a deep chain is linear, not exponential.
#[test]
fn many_double_stars_stay_linear() {
    let t = TempDir::new("files-glob-deep");
    let chain = vec!["a"; 60].join("/");
    put(t.path(), &format!("{chain}/end"), b"", 0o644);
    let pattern = format!("{}end", "**/a/".repeat(20));
    let got = ok(t.path(), &pattern);
    assert_eq!(got, [format!("{chain}/end")]);
}

#[test]
fn too_many_matches_is_an_error() {
    let t = TempDir::new("files-glob-many");
    let d = t.join("d");
    fs::create_dir(&d).unwrap();
    for i in 0..=MAX_MATCHES {
        fs::File::create(d.join(format!("{i}"))).unwrap();
    }
    let e = expand(t.path(), "", "d/*").unwrap_err();
    assert!(
        e.contains(&format!("more than {MAX_MATCHES}")) && e.contains("\"d/*\""),
        "{e}"
    );
    assert_eq!(ok(t.path(), "d"), ["d"]);
    assert_eq!(ok(t.path(), "d/1234"), ["d/1234"]);
}

/// Several patterns of one artifact: the tar writer gets each tree once.
#[test]
fn union_of_several_patterns() {
    let t = tree();
    let mut all = Vec::new();
    for p in [
        "a/*/c", "a", "**/*.rs", "src/lib", "sp ace/*", "sp ace", "c.rs",
    ] {
        all.extend(ok(t.path(), p));
    }
    assert_eq!(
        union(all),
        ["a", "c.rs", "dir/e.rs", "sp ace", "src/lib", "src/main.rs"]
    );
    // "a b" sorts between "a" and "a/b"; "a/b" is still under "a".
    let names = [
        "a/b",
        "a b",
        "a",
        "a b/c",
        "ab/c",
        "~/.cargo",
        "~/.cargo/registry",
    ];
    let got = union(names.iter().map(|s| s.to_string()).collect());
    assert_eq!(got, ["a", "a b", "ab/c", "~/.cargo"]);
    assert_eq!(union(Vec::new()), Vec::<String>::new());
}
