//! The tar writer and extractor against independent implementations: GNU
//! tar and Python's tarfile read and extract what we write, we extract what
//! they write (ustar, pax and GNU formats), and hostile archives are refused
//! without anything written outside the declared roots.

mod common;

use common::files::{
    assert_same, bytes, clear, fix_checksum, gnu_tar, put, python, python_run, run, snapshot,
    ustar_header, Node, RawTar,
};
use common::rng::Rng;
use common::tmp::TempDir;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use workflow_runner::files::tar::{extract, Summary, Writer, MAX_DEPTH, MAX_NAME};

// ---------------------------------------------------------------- trees

/// A tree with what an archive must carry: empty, block-sized and
/// block-and-a-byte files, a large one, modes, nesting, an empty directory,
/// non-ASCII names, links inside, outside and upwards. `long` adds what
/// only pax or GNU can hold: a name over 255 bytes, a component over 100,
/// a link target over 100.
fn tree(dir: &Path, outside: &Path, long: bool) {
    put(dir, "empty", b"", 0o644);
    put(dir, "exact512", &bytes(512, 1), 0o644);
    put(dir, "b513", &bytes(513, 2), 0o600);
    put(dir, "large.bin", &bytes((5 << 20) + 123, 3), 0o755);
    put(dir, "nested/a/b/c/deep.txt", b"deep\n", 0o644);
    put(dir, "bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    put(dir, "ünïcødé/日本語.txt", "データ".as_bytes(), 0o644);
    fs::create_dir(dir.join("emptydir")).unwrap();
    fs::set_permissions(dir.join("emptydir"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("nested/a", dir.join("link_in")).unwrap();
    symlink(outside, dir.join("link_out")).unwrap();
    symlink("../../../escape", dir.join("nested/a/up")).unwrap();
    // Over 100 bytes, but ustar's prefix and name fields can split it.
    let split = format!("split/{}/{}", "d".repeat(90), "f".repeat(90));
    put(dir, &split, b"split", 0o644);
    if long {
        let deep = format!(
            "long/{}/{}/{}",
            "p".repeat(120),
            "q".repeat(120),
            "r".repeat(150)
        );
        put(dir, &deep, b"pax", 0o644);
        put(
            dir,
            &format!("long/{}", "s".repeat(200)),
            b"one component",
            0o640,
        );
        symlink(
            format!("{}/target", "t".repeat(150)),
            dir.join("long/longlink"),
        )
        .unwrap();
    }
}

/// Writes `entries` (name, path) with our writer into `archive`.
fn write_ours(archive: &Path, entries: &[(&str, &Path)]) -> (u64, u64) {
    let mut w = Writer::new(BufWriter::new(File::create(archive).unwrap()));
    for (name, path) in entries {
        w.append(name, path).unwrap();
    }
    assert!(w.warnings.is_empty(), "{:?}", w.warnings);
    let counts = (w.entries, w.bytes);
    w.finish().unwrap().flush().unwrap();
    counts
}

fn extract_file(archive: &Path, roots: &[(&str, &Path)]) -> Result<Summary, String> {
    extract(File::open(archive).unwrap(), roots)
}

/// What `snapshot` would find under `root` plus the root itself, by the
/// archive's entry names (`prefix/...`), as a tar listing names them.
fn names(root: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = snapshot(root)
        .keys()
        .map(|k| format!("{prefix}/{k}"))
        .collect();
    v.push(prefix.to_string());
    v.sort();
    v
}

/// The sizes and counts a snapshot implies: entries (with the root) and
/// file bytes.
fn counts(snap: &BTreeMap<String, Node>) -> (u64, u64) {
    let bytes = snap
        .values()
        .map(|n| match n {
            Node::File { data, .. } => data.len() as u64,
            _ => 0,
        })
        .sum();
    (snap.len() as u64 + 1, bytes)
}

const PY_LIST_EXTRACT: &str = r#"
import sys, tarfile
with tarfile.open(sys.argv[1]) as tf:
    for m in tf.getmembers():
        print("\t".join([m.name, m.type.decode(), oct(m.mode), str(m.size), str(m.uid), str(m.gid), m.uname, m.gname, m.linkname]))
    kw = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    tf.extractall(sys.argv[2], **kw)
"#;

// ------------------------------------------------- ours, read by others

#[test]
fn gnu_tar_and_python_read_what_we_write() {
    let t = TempDir::new("files-tar-ours");
    let src = t.join("src/tree");
    tree(&src, &t.join("outside"), true);
    let want = snapshot(&src);
    let archive = t.join("ours.tar");
    let written = write_ours(&archive, &[("tree", &src)]);
    assert_eq!(written, counts(&want));
    let len = fs::metadata(&archive).unwrap().len();
    assert_eq!(len % 512, 0);

    // Ours, back again.
    let back = t.join("back");
    let sum = extract_file(&archive, &[("tree", &back.join("tree"))]).unwrap();
    assert_eq!((sum.entries, sum.bytes), written);
    assert_same(&snapshot(&back.join("tree")), &want, "our extraction");

    if gnu_tar() {
        let out = run(Command::new("tar")
            .arg("-tvf")
            .arg(&archive)
            .env("LC_ALL", "C"));
        let listing = String::from_utf8_lossy(&out.stdout);
        assert_eq!(listing.lines().count() as u64, written.0, "{listing}");
        for line in listing.lines() {
            // No user or group names: GNU tar shows the numeric ids.
            assert!(line.contains(" 0/0 "), "{line}");
        }
        assert!(listing.contains(&format!(
            "{} -> {}",
            "tree/link_out",
            t.join("outside").display()
        )));
        let dest = t.join("gnu");
        fs::create_dir(&dest).unwrap();
        run(Command::new("tar")
            .arg("-xpf")
            .arg(&archive)
            .arg("-C")
            .arg(&dest));
        assert_same(&snapshot(&dest.join("tree")), &want, "GNU tar's extraction");
    }
    if python() {
        let dest = t.join("py");
        let listing = python_run(PY_LIST_EXTRACT, &[&archive, &dest]);
        let mut listed = Vec::new();
        for line in listing.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(&f[4..8], ["0", "0", "", ""], "{line}");
            listed.push(f[0].to_string());
        }
        listed.sort();
        assert_eq!(listed, names(&src, "tree"));
        assert_same(&snapshot(&dest.join("tree")), &want, "Python's extraction");
    }
}

/// A file of 8 GiB and more needs pax's `size`; a sparse file makes one
/// without the disk space, and only the archive's start is kept.
#[test]
fn sizes_over_8_gib_are_read_by_gnu_tar_and_python() {
    struct Head(Vec<u8>, u64);
    impl Write for Head {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let keep = b.len().min(4096usize.saturating_sub(self.0.len()));
            self.0.extend_from_slice(&b[..keep]);
            self.1 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let t = TempDir::new("files-tar-big");
    let size = (8u64 << 30) + 1;
    let big = File::create(t.join("big")).unwrap();
    big.set_len(size).unwrap();
    let mut w = Writer::new(Head(Vec::new(), 0));
    w.append("big", &t.join("big")).unwrap();
    assert_eq!((w.entries, w.bytes), (1, size));
    let head = w.finish().unwrap();
    // pax header + its records + header + data + padding + end marker.
    assert_eq!(head.1, 3 * 512 + size.div_ceil(512) * 512 + 1024);
    let start = t.join("start.tar");
    fs::write(&start, &head.0).unwrap();
    if gnu_tar() {
        // The data is cut off, so tar fails after listing the entry.
        let out = Command::new("tar")
            .arg("-tvf")
            .arg(&start)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains(&format!(" {size} ")) && listing.contains(" big"),
            "{listing}"
        );
    }
    if python() {
        let got = python_run(
            "import sys, tarfile\nm = tarfile.open(sys.argv[1]).firstmember\nprint(m.name, m.size)",
            &[&start],
        );
        assert_eq!(got.trim(), format!("big {size}"));
    }
}

// ------------------------------------------------- others', read by us

#[test]
fn we_extract_what_gnu_tar_writes() {
    if !gnu_tar() {
        return;
    }
    for (format, long) in [("ustar", false), ("pax", true), ("gnu", true)] {
        let t = TempDir::new("files-tar-gnu");
        let src = t.join("src");
        tree(&src.join("tree"), &t.join("outside"), long);
        let archive = t.join("a.tar");
        run(Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg("tree"));
        let dest = t.join("dest/tree");
        let sum =
            extract_file(&archive, &[("tree", &dest)]).unwrap_or_else(|e| panic!("{format}: {e}"));
        let want = snapshot(&src.join("tree"));
        assert_eq!((sum.entries, sum.bytes), counts(&want), "{format}");
        assert_same(
            &snapshot(&dest),
            &want,
            &format!("GNU tar --format={format}"),
        );
    }
}

#[test]
fn we_extract_what_python_writes() {
    if !python() {
        return;
    }
    for (format, long) in [
        ("USTAR_FORMAT", false),
        ("PAX_FORMAT", true),
        ("GNU_FORMAT", true),
    ] {
        let t = TempDir::new("files-tar-py");
        let src = t.join("src/tree");
        tree(&src, &t.join("outside"), long);
        let archive = t.join("a.tar");
        python_run(
            &format!(
                "import sys, tarfile\nwith tarfile.open(sys.argv[1], 'w', format=tarfile.{format}) as tf:\n    tf.add(sys.argv[2], arcname='tree')"
            ),
            &[&archive, &src],
        );
        let dest = t.join("dest/tree");
        let sum =
            extract_file(&archive, &[("tree", &dest)]).unwrap_or_else(|e| panic!("{format}: {e}"));
        let want = snapshot(&src);
        assert_eq!((sum.entries, sum.bytes), counts(&want), "{format}");
        assert_same(&snapshot(&dest), &want, &format!("Python tarfile {format}"));
    }
}

/// A cache's entries are named as declared: workspace-relative, or `~/`
/// for home; each root maps its names to its own directory.
#[test]
fn cache_roots_in_workspace_and_home() {
    let t = TempDir::new("files-tar-roots");
    let (ws, home) = (t.join("ws"), t.join("home"));
    put(&ws, "deps/x/lib.a", b"lib", 0o644);
    put(&ws, "deps/x/sub/y.o", b"obj", 0o644);
    put(&ws, "deps/other", b"not cached", 0o644);
    put(&home, ".cargo/registry/index/cfg.json", b"{}", 0o600);
    let archive = t.join("cache.tar");
    write_ours(
        &archive,
        &[
            ("deps/x", &ws.join("deps/x")),
            ("~/.cargo/registry", &home.join(".cargo/registry")),
        ],
    );
    let (ws2, home2) = (t.join("ws2"), t.join("home2"));
    let x2 = ws2.join("deps/x");
    let reg2 = home2.join(".cargo/registry");
    extract_file(&archive, &[("deps/x", &x2), ("~/.cargo/registry", &reg2)]).unwrap();
    assert_same(&snapshot(&x2), &snapshot(&ws.join("deps/x")), "deps/x");
    assert_same(
        &snapshot(&reg2),
        &snapshot(&home.join(".cargo/registry")),
        "registry",
    );
    assert!(!ws2.join("deps/other").exists());

    // Only one of the roots declared: the other's entries are refused.
    let e = extract_file(&archive, &[("deps/x", &t.join("ws3/deps/x"))]).unwrap_err();
    assert!(
        e.contains("~/.cargo/registry") && e.contains("outside"),
        "{e}"
    );
}

#[test]
fn names_with_dot_components_and_old_style_directories() {
    let t = TempDir::new("files-tar-dots");
    let root = t.join("c");
    let archive = RawTar::default()
        .file("./c/./a", b"a")
        .entry("c/olddir/", 0, b"", "")
        .file("c//olddir//b", b"b")
        .end();
    extract(&archive[..], &[("c", &root)]).unwrap();
    assert_eq!(fs::read(root.join("a")).unwrap(), b"a");
    assert_eq!(fs::read(root.join("olddir/b")).unwrap(), b"b");
}

/// Directories without the owner's write bit (Go's module cache has them)
/// get their mode only after their entries are written.
#[test]
fn read_only_directories_are_filled_first() {
    let t = TempDir::new("files-tar-ro");
    let src = t.join("src/c");
    put(&src, "ro/inner/file", b"x", 0o444);
    for d in ["ro/inner", "ro"] {
        fs::set_permissions(src.join(d), fs::Permissions::from_mode(0o555)).unwrap();
    }
    let archive = t.join("a.tar");
    write_ours(&archive, &[("c", &src)]);
    let dest = t.join("dest/c");
    extract_file(&archive, &[("c", &dest)]).unwrap();
    assert_same(&snapshot(&dest), &snapshot(&src), "read-only tree");
    clear(&t.join("src"));
    clear(&t.join("dest"));
}

/// An existing link at an entry's own path is replaced, never written
/// through; an existing file too.
#[test]
fn existing_links_and_files_at_an_entry_are_replaced() {
    let j = Jail::new();
    fs::create_dir_all(&j.root).unwrap();
    symlink(j.outside.join("victim"), j.root.join("f")).unwrap();
    symlink(j.outside.join("victim"), j.root.join("l")).unwrap();
    fs::write(j.root.join("g"), b"old").unwrap();
    let archive = RawTar::default()
        .file("cache/f", b"new")
        .file("cache/g", b"newer")
        .symlink("cache/l", "elsewhere")
        .end();
    j.extract(&archive).unwrap();
    assert_eq!(fs::read(j.root.join("f")).unwrap(), b"new");
    assert!(!fs::symlink_metadata(j.root.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(j.root.join("g")).unwrap(), b"newer");
    assert_eq!(
        fs::read_link(j.root.join("l")).unwrap(),
        Path::new("elsewhere")
    );
    j.assert_outside_untouched();
}

// ------------------------------------------------------------- hostile

/// A temporary directory holding the cache root `ws/cache` (entries named
/// `cache/...`) and, beside it, `outside/victim`, which must never change.
struct Jail {
    t: TempDir,
    root: PathBuf,
    outside: PathBuf,
    before: BTreeMap<String, Node>,
}

impl Jail {
    fn new() -> Jail {
        let t = TempDir::new("files-tar-jail");
        let outside = t.join("outside");
        put(&outside, "victim", b"untouched", 0o644);
        fs::create_dir(t.join("ws")).unwrap();
        let before = snapshot(t.path());
        Jail {
            root: t.join("ws/cache"),
            outside,
            before,
            t,
        }
    }

    fn extract(&self, archive: &[u8]) -> Result<Summary, String> {
        extract(archive, &[("cache", &self.root)])
    }

    /// Everything but the root and what is below it is as it was.
    fn assert_outside_untouched(&self) {
        let mut now = snapshot(self.t.path());
        now.retain(|k, _| k != "ws/cache" && !k.starts_with("ws/cache/"));
        assert_same(&now, &self.before, "outside the root");
    }
}

fn refused(what: &str, archive: &[u8], expect: &str, setup: impl FnOnce(&Jail)) {
    let j = Jail::new();
    setup(&j);
    match j.extract(archive) {
        Ok(s) => panic!("{what}: extracted {s:?}, should be refused"),
        Err(e) => assert!(e.contains(expect), "{what}: {e:?} should say {expect:?}"),
    }
    j.assert_outside_untouched();
}

#[test]
fn hostile_names_are_refused() {
    let none = |_: &Jail| {};
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "parent",
            RawTar::default().file("../evil", b"x").end(),
            "`..`",
        ),
        (
            "parent inside",
            RawTar::default().file("cache/a/../../x", b"x").end(),
            "`..`",
        ),
        (
            "parent at the end",
            RawTar::default().dir("cache/..").end(),
            "`..`",
        ),
        (
            "absolute",
            RawTar::default().file("/abs", b"x").end(),
            "absolute",
        ),
        (
            "outside the roots",
            RawTar::default().file("other/x", b"x").end(),
            "outside every path",
        ),
        (
            "a root's name as a prefix",
            RawTar::default().file("cachex/y", b"x").end(),
            "outside every path",
        ),
        (
            "above the root",
            RawTar::default().dir("ws").end(),
            "outside every path",
        ),
        (
            "empty name",
            RawTar::default().file("", b"x").end(),
            "empty name",
        ),
        (
            "only dots",
            RawTar::default().file("./", b"x").end(),
            "empty name",
        ),
        (
            "too deep",
            RawTar::default()
                .pax(&[(
                    "path",
                    format!("cache/{}f", "d/".repeat(MAX_DEPTH)).as_bytes(),
                )])
                .file("short", b"x")
                .end(),
            "levels deep",
        ),
        (
            "too long",
            RawTar::default()
                .pax(&[("path", format!("cache/{}", "n".repeat(MAX_NAME)).as_bytes())])
                .file("short", b"x")
                .end(),
            "bytes",
        ),
    ];
    for (what, archive, expect) in cases {
        refused(what, &archive, expect, none);
    }
    // The message shows a hostile name escaped, not raw control bytes.
    let j = Jail::new();
    let e = j
        .extract(&RawTar::default().file("\x1b[2J../x", b"x").end())
        .unwrap_err();
    assert!(e.contains("\\u{1b}[2J../x"), "{e}");
}

#[test]
fn writing_through_links_is_refused() {
    let j = Jail::new();
    let out = j.outside.to_str().unwrap().to_string();
    // A link in the archive, then an entry below it.
    refused(
        "absolute link, then below it",
        &RawTar::default()
            .symlink("cache/link", &out)
            .file("cache/link/victim", b"pwned")
            .end(),
        "symbolic link",
        |_| {},
    );
    refused(
        "relative link upwards, then below it",
        &RawTar::default()
            .dir("cache")
            .symlink("cache/up", "../../outside")
            .file("cache/up/victim", b"pwned")
            .end(),
        "symbolic link",
        |_| {},
    );
    refused(
        "link as a directory below it",
        &RawTar::default()
            .symlink("cache/l", &out)
            .dir("cache/l/new")
            .end(),
        "symbolic link",
        |_| {},
    );
    refused(
        "the root itself as a link",
        &RawTar::default()
            .symlink("cache", &out)
            .file("cache/victim", b"pwned")
            .end(),
        "symbolic link",
        |_| {},
    );
    // Links that were on disk before.
    refused(
        "a link on disk in the path",
        &RawTar::default().file("cache/sub/victim", b"pwned").end(),
        "symbolic link",
        |j| {
            fs::create_dir_all(&j.root).unwrap();
            symlink(&j.outside, j.root.join("sub")).unwrap();
        },
    );
    refused(
        "a link on disk deeper in the path",
        &RawTar::default()
            .file("cache/a/sub/b/victim", b"pwned")
            .end(),
        "symbolic link",
        |j| {
            fs::create_dir_all(j.root.join("a")).unwrap();
            symlink(&j.outside, j.root.join("a/sub")).unwrap();
        },
    );
    // The root given with a trailing `/`, which makes lstat follow links.
    let j = Jail::new();
    let slashed = format!("{}/", j.root.display());
    let archive = RawTar::default()
        .symlink("cache", &out)
        .file("cache/victim", b"pwned")
        .end();
    let e = extract(&archive[..], &[("cache", Path::new(&slashed))]).unwrap_err();
    assert!(e.contains("symbolic link"), "{e}");
    j.assert_outside_untouched();
    let j = Jail::new();
    symlink(&j.outside, &j.root).unwrap();
    let archive = RawTar::default().file("cache/victim", b"pwned").end();
    let e = extract(&archive[..], &[("cache", Path::new(&slashed))]).unwrap_err();
    assert!(e.contains("symbolic link"), "{e}");
    j.assert_outside_untouched();
    refused(
        "the root on disk is a link",
        &RawTar::default().file("cache/victim", b"pwned").end(),
        "symbolic link",
        |j| symlink(&j.outside, &j.root).unwrap(),
    );
    refused(
        "a file in the path",
        &RawTar::default().file("cache/f/x", b"x").end(),
        "not a directory",
        |j| put(&j.root, "f", b"", 0o644),
    );
    refused(
        "a file where a directory is",
        &RawTar::default().dir("cache/d").file("cache/d", b"x").end(),
        "is a directory",
        |_| {},
    );
    refused(
        "a link where a directory is",
        &RawTar::default()
            .dir("cache/d")
            .symlink("cache/d", &out)
            .end(),
        "is a directory",
        |_| {},
    );
    refused(
        "the root replaced by a link",
        &RawTar::default().symlink("cache", &out).end(),
        "is a directory",
        |j| fs::create_dir_all(&j.root).unwrap(),
    );
}

#[test]
fn unsupported_entry_types_are_refused() {
    let none = |_: &Jail| {};
    for (what, kind, expect) in [
        ("hard link", b'1', "hard links"),
        ("character device", b'3', "device"),
        ("block device", b'4', "device"),
        ("fifo", b'6', "FIFO"),
        ("GNU sparse", b'S', "sparse"),
        ("unknown", b'Z', "not supported"),
        ("GNU volume label", b'V', "not supported"),
    ] {
        let archive = RawTar::default()
            .file("cache/x", b"x")
            .entry("cache/y", kind, b"", "cache/x")
            .end();
        refused(what, &archive, expect, none);
    }
    refused(
        "pax sparse",
        &RawTar::default()
            .pax(&[("GNU.sparse.major", b"1")])
            .file("cache/s", b"x")
            .end(),
        "sparse",
        none,
    );
    refused(
        "directory with data",
        &RawTar::default().entry("cache/d", b'5', b"data", "").end(),
        "with data",
        none,
    );
    refused(
        "link with data",
        &RawTar::default().entry("cache/l", b'2', b"data", "x").end(),
        "with data",
        none,
    );
    refused(
        "link without target",
        &RawTar::default().symlink("cache/l", "").end(),
        "without a target",
        none,
    );
}

#[test]
fn broken_archives_are_refused() {
    let none = |_: &Jail| {};
    let mut bad_sum = RawTar::default().file("cache/x", b"x").end();
    bad_sum[0] = b'C';
    refused("bad checksum", &bad_sum, "checksum", none);
    let mut not_ustar = RawTar::default().file("cache/x", b"x").end();
    not_ustar[257..265].copy_from_slice(b"garbage!");
    fix_checksum(&mut not_ustar[..512]);
    refused("no ustar magic", &not_ustar, "not a ustar", none);
    let mut bad_number = RawTar::default().file("cache/x", b"x").end();
    bad_number[124..136].copy_from_slice(b"0000000009x\0");
    fix_checksum(&mut bad_number[..512]);
    refused("bad size digits", &bad_number, "bad number", none);
    refused(
        "no end marker",
        &RawTar::default().file("cache/x", b"x").0,
        "without its end marker",
        none,
    );
    refused(
        "half an end marker",
        &[
            RawTar::default().file("cache/x", b"x").0.clone(),
            vec![0; 512],
        ]
        .concat(),
        "inside its end marker",
        none,
    );
    refused(
        "a zero block then more",
        &[vec![0; 512], RawTar::default().file("cache/x", b"x").end()].concat(),
        "zero block",
        none,
    );
    refused("empty input", b"", "without its end marker", none);
    refused("garbage", &bytes(3000, 9), "checksum", none);
    for size in [(1u64 << 33) - 1, 1 << 40, u64::MAX >> 1] {
        let mut t = RawTar::default();
        t.header(b"cache/big", b'0', size, b"");
        t.0.extend_from_slice(&[7; 1000]);
        let j = Jail::new();
        let e = j.extract(&t.0).unwrap_err();
        assert!(e.contains("ends inside"), "size {size}: {e}");
        // The cut-short file is not left behind.
        assert!(!j.root.join("big").exists(), "size {size}");
        j.assert_outside_untouched();
    }
    let mut absurd = RawTar::default();
    absurd.header(b"PaxHeader", b'x', 1 << 40, b"");
    refused("pax header of a TiB", &absurd.end(), "limit", none);
    let mut big_pax = RawTar::default();
    big_pax.header(b"PaxHeader", b'x', 2 << 20, b"");
    refused("pax header of 2 MiB", &big_pax.end(), "limit", none);
    let mut long_l = RawTar::default();
    long_l.header(b"././@LongLink", b'L', 1 << 20, b"");
    refused("GNU long name of 1 MiB", &long_l.end(), "limit", none);
    let lying_pax = RawTar::default()
        .header(b"PaxHeader", b'x', 18, b"")
        .data(b"99999999 path=x\n\0\0")
        .file("cache/x", b"x")
        .end();
    refused(
        "pax record longer than its header",
        &lying_pax,
        "malformed",
        none,
    );
    let no_newline = RawTar::default()
        .header(b"PaxHeader", b'x', 10, b"")
        .data(b"10 path=xy")
        .file("cache/x", b"x")
        .end();
    refused(
        "pax record without its newline",
        &no_newline,
        "malformed",
        none,
    );
    refused(
        "pax size that is not a number",
        &RawTar::default()
            .pax(&[("size", b"12x")])
            .file("cache/x", b"x")
            .end(),
        "malformed",
        none,
    );
    refused(
        "pax size past the data",
        &RawTar::default()
            .pax(&[("size", b"100000")])
            .file("cache/x", b"x")
            .end(),
        "ends inside",
        none,
    );
}

/// Every prefix of a small archive is an error (never a hang, a panic or
/// a success), and no file is left cut short.
#[test]
fn every_truncation_is_an_error() {
    let t = TempDir::new("files-tar-trunc");
    let src = t.join("src/c");
    put(&src, "a", &bytes(700, 4), 0o644);
    put(&src, "dir/b", b"", 0o644);
    put(
        &src,
        &format!("dir/{}", "l".repeat(150)),
        b"long name",
        0o644,
    );
    symlink("a", src.join("link")).unwrap();
    let archive = t.join("a.tar");
    write_ours(&archive, &[("c", &src)]);
    let full = fs::read(&archive).unwrap();
    let want = snapshot(&src);
    let dest = t.join("dest/c");
    let files: Vec<(&String, &Vec<u8>)> = want
        .iter()
        .filter_map(|(name, node)| match node {
            Node::File { data, .. } => Some((name, data)),
            _ => None,
        })
        .collect();
    for len in 0..full.len() {
        let _ = fs::remove_dir_all(t.join("dest"));
        let r = extract(&full[..len], &[("c", &dest)]);
        assert!(
            r.is_err(),
            "a prefix of {len} of {} bytes was accepted",
            full.len()
        );
        for (name, whole) in &files {
            if let Ok(data) = fs::read(dest.join(name)) {
                assert_eq!(&&data, whole, "{name} left cut short at prefix {len}");
            }
        }
    }
    fs::remove_dir_all(t.join("dest")).unwrap();
    extract(&full[..], &[("c", &dest)]).unwrap();
    assert_same(&snapshot(&dest), &want, "the whole archive");
}

/// Random corruption of a valid archive (with checksums repaired, so the
/// damage reaches the parser) gives an error or an extraction, never a
/// panic, and never a write outside the root.
#[test]
fn corrupted_archives_never_escape() {
    let j = Jail::new();
    let mut base = RawTar::default();
    base.dir("cache")
        .file("cache/a", b"hello")
        .pax(&[("path", b"cache/long/name"), ("mtime", b"1700000000.5")])
        .file("x", b"pax")
        .symlink("cache/in", "a")
        .header(b"././@LongLink", b'L', 12, b"")
        .data(b"cache/gnu/n\0")
        .file("ignored", b"gnu");
    let base = base.end();
    let mut rng = Rng(0x5eed_f11e);
    for round in 0..3000 {
        let mut a = base.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(a.len());
            a[i] = match rng.below(4) {
                0 => b'/',
                1 => b'.',
                2 => 0,
                _ => rng.next() as u8,
            };
            if rng.below(2) == 0 {
                let h = i / 512 * 512;
                fix_checksum(&mut a[h..h + 512]);
            }
        }
        let _ = j.extract(&a);
        j.assert_outside_untouched();
        clear(&j.root);
        assert!(round < 3000);
    }
}

/// A header built by the test's own independent builder reads back, so
/// the hostile cases above fail for the reason they name.
#[test]
fn raw_builder_archives_are_valid() {
    let j = Jail::new();
    let archive = RawTar::default()
        .dir("cache")
        .file("cache/a", b"hello")
        .pax(&[("path", "cache/ü/long".as_bytes())])
        .file("x", b"pax")
        .end();
    let sum = j.extract(&archive).unwrap();
    assert_eq!(
        sum,
        Summary {
            entries: 3,
            bytes: 8
        }
    );
    assert_eq!(fs::read(j.root.join("ü/long")).unwrap(), b"pax");
    assert_eq!(ustar_header(b"n", b'0', 0, b"").len(), 512);
}

// ------------------------------------------------------- writer's edges

/// Files whose size is not their length (procfs says 0 and has more, sysfs
/// says 4096 and has less) stand for files that change while archived: the
/// header's size is kept, the data cut or padded, a warning says so, and
/// the archive stays readable.
#[test]
fn files_changing_size_keep_the_archive_whole() {
    let t = TempDir::new("files-tar-change");
    let mut w = Writer::new(Vec::new());
    w.append("status", Path::new("/proc/self/status")).unwrap();
    let sysfs = Path::new("/sys/kernel/mm/transparent_hugepage/enabled");
    let shrinks = fs::metadata(sysfs).is_ok_and(|m| m.len() > 0)
        && fs::read(sysfs).is_ok_and(|d| (d.len() as u64) < fs::metadata(sysfs).unwrap().len());
    if shrinks {
        w.append("enabled", sysfs).unwrap();
    } else {
        println!("no sysfs file shorter than its size here; only growth is checked");
    }
    let warnings = w.warnings.clone();
    assert!(warnings[0].contains("grew while archived"), "{warnings:?}");
    if shrinks {
        assert!(
            warnings[1].contains("shrank") && warnings[1].contains("padded"),
            "{warnings:?}"
        );
    }
    let archive = w.finish().unwrap();
    let dest = t.join("x");
    let mut roots = vec![("status", dest.join("status"))];
    if shrinks {
        roots.push(("enabled", dest.join("enabled")));
    }
    let roots: Vec<(&str, &Path)> = roots.iter().map(|(n, p)| (*n, p.as_path())).collect();
    extract(&archive[..], &roots).unwrap();
    assert_eq!(fs::metadata(dest.join("status")).unwrap().len(), 0);
    if shrinks {
        let data = fs::read(dest.join("enabled")).unwrap();
        assert_eq!(data.len() as u64, fs::metadata(sysfs).unwrap().len());
        assert!(data.ends_with(&[0; 100]));
    }
    if gnu_tar() {
        fs::write(t.join("a.tar"), &archive).unwrap();
        run(Command::new("tar").arg("-tvf").arg(t.join("a.tar")));
    }
}

#[test]
fn writer_warns_about_what_it_cannot_store_and_refuses_bad_names() {
    let t = TempDir::new("files-tar-warn");
    let src = t.join("src");
    put(&src, "f", b"x", 0o644);
    let sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let mut w = Writer::new(Vec::new());
    w.append("src", &src).unwrap();
    w.append("gone", &t.join("missing")).unwrap();
    // A link named with a trailing `/` is still stored as the link.
    symlink(&src, t.join("link")).unwrap();
    let mut links = Writer::new(Vec::new());
    links.append("link", &t.join("link/")).unwrap();
    assert_eq!((links.entries, links.bytes), (1, 0));
    assert_eq!(links.finish().unwrap()[156], b'2');
    assert_eq!(w.entries, 2, "the directory and the file");
    assert_eq!(w.warnings.len(), 2, "{:?}", w.warnings);
    assert!(w.warnings[0].contains("sock") && w.warnings[0].contains("skipped"));
    assert!(w.warnings[1].contains("missing") && w.warnings[1].contains("not found"));
    drop(sock);
    for bad in ["", "/abs", "a/../b", ".."] {
        let e = w.append(bad, &src).unwrap_err();
        assert!(e.contains("entry name"), "{bad}: {e}");
    }
    // Deeper than the extractor accepts: refused when written, not later.
    let deep = src.join(vec!["d"; MAX_DEPTH].join("/"));
    fs::create_dir_all(&deep).unwrap();
    let e = w.append("src", &src).unwrap_err();
    assert!(e.contains("too long or too deep"), "{e}");
}
