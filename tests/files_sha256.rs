//! SHA-256 against the FIPS 180-4 / NIST example vectors, and against
//! `sha256sum` and Python's hashlib on random data of random lengths,
//! every length around the 64-byte block and its 56-byte padding edge
//! included, fed in one piece and in random pieces.

mod common;

use common::files::{bytes, have, python, python_run, run};
use common::rng::Rng;
use common::tmp::TempDir;
use std::io::Write;
use std::process::Command;
use workflow_runner::files::sha256::{hex, HashingWriter, Sha256};

fn digest(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    hex(&h.finish())
}

/// The same data fed in random pieces (empty ones included).
fn digest_in_pieces(data: &[u8], rng: &mut Rng) -> String {
    let mut h = Sha256::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.below(rest.len().min(200) + 1);
        let (piece, tail) = rest.split_at(n);
        h.update(piece);
        rest = tail;
    }
    hex(&h.finish())
}

#[test]
fn nist_vectors() {
    let cases: [(&[u8], &str); 4] = [
        (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
        (
            b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
        ),
    ];
    let mut rng = Rng(7);
    for (msg, want) in cases {
        assert_eq!(digest(msg), want, "{:?}", String::from_utf8_lossy(msg));
        assert_eq!(digest_in_pieces(msg, &mut rng), want);
    }
    let million = vec![b'a'; 1_000_000];
    let want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    assert_eq!(digest(&million), want);
    assert_eq!(digest_in_pieces(&million, &mut rng), want);
    let mut h = Sha256::new();
    for _ in 0..1_000_000 {
        h.update(b"a");
    }
    assert_eq!(hex(&h.finish()), want);
}

/// Lengths 0..=300 (every block and padding edge), then random lengths up
/// to 200 KB; each file hashed by one `sha256sum` call.
fn lengths() -> Vec<usize> {
    let mut rng = Rng(0x5a5a);
    let mut v: Vec<usize> = (0..=300).collect();
    v.extend([
        511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097, 65535, 65536, 65537,
    ]);
    v.extend((0..40).map(|_| rng.below(200_000)));
    v
}

#[test]
fn agrees_with_sha256sum() {
    if !have("sha256sum (coreutils)", "sha256sum --version") {
        return;
    }
    let t = TempDir::new("files-sha");
    let mut paths = Vec::new();
    for (i, len) in lengths().into_iter().enumerate() {
        let p = t.join(format!("{i}"));
        std::fs::write(&p, bytes(len, i as u64)).unwrap();
        paths.push(p);
    }
    let out = run(Command::new("sha256sum").args(&paths));
    let sums = String::from_utf8(out.stdout).unwrap();
    let mut rng = Rng(11);
    for (line, p) in sums.lines().zip(&paths) {
        let want = line.split(' ').next().unwrap();
        let data = std::fs::read(p).unwrap();
        assert_eq!(digest(&data), want, "{} bytes", data.len());
        assert_eq!(
            digest_in_pieces(&data, &mut rng),
            want,
            "{} bytes",
            data.len()
        );
    }
    assert_eq!(sums.lines().count(), paths.len());
}

#[test]
fn agrees_with_python_hashlib() {
    if !python() {
        return;
    }
    let t = TempDir::new("files-sha-py");
    let mut all = Vec::new();
    let mut index = String::new();
    for (i, len) in lengths().into_iter().enumerate() {
        let data = bytes(len, 1000 + i as u64);
        index.push_str(&format!("{} {}\n", all.len(), len));
        all.extend_from_slice(&data);
    }
    std::fs::write(t.join("data"), &all).unwrap();
    std::fs::write(t.join("index"), &index).unwrap();
    let got = python_run(
        "import sys, hashlib\ndata = open(sys.argv[1], 'rb').read()\nfor line in open(sys.argv[2]):\n    o, n = map(int, line.split())\n    print(hashlib.sha256(data[o:o + n]).hexdigest())",
        &[&t.join("data"), &t.join("index")],
    );
    let mut lines = got.lines();
    for line in index.lines() {
        let (o, n) = line.split_once(' ').unwrap();
        let (o, n): (usize, usize) = (o.parse().unwrap(), n.parse().unwrap());
        assert_eq!(digest(&all[o..o + n]), lines.next().unwrap(), "{n} bytes");
    }
    assert!(lines.next().is_none());
}

#[test]
fn hashing_writer_counts_and_hashes_what_passes() {
    let data = bytes(100_003, 5);
    let mut w = HashingWriter::new(Vec::new());
    for piece in data.chunks(777) {
        w.write_all(piece).unwrap();
    }
    w.flush().unwrap();
    assert_eq!(w.bytes, data.len() as u64);
    assert_eq!(w.inner, data);
    assert_eq!(hex(&w.sha.finish()), digest(&data));

    /// Accepts at most 3 bytes per write: only those are hashed.
    struct Slow(Vec<u8>);
    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = b.len().min(3);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashingWriter::new(Slow(Vec::new()));
    w.write_all(b"hello, world").unwrap();
    assert_eq!(w.bytes, 12);
    assert_eq!(hex(&w.sha.finish()), digest(b"hello, world"));
}

#[test]
fn hex_is_lower_case() {
    assert_eq!(hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
    assert_eq!(hex(&[]), "");
}
