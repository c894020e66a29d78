//! The gzip filter against the real tool and Python's gzip module: what we
//! compress they decompress, what they compress we decompress, and a
//! decompression bomb stops at the limit.

mod common;

use common::files::{bytes, gzip, python, python_run, run};
use common::tmp::TempDir;
use std::fs;
use std::process::Command;
use workflow_runner::files::gzip::{available, compress, decompress};

#[test]
fn round_trips_through_gzip_and_python() {
    if !gzip() {
        assert!(!available());
        return;
    }
    assert!(available());
    let t = TempDir::new("files-gzip");
    for (i, len) in [0usize, 1, 512, 100_000, 3 << 20].into_iter().enumerate() {
        // Half compressible, half random.
        let mut data = bytes(len / 2, i as u64);
        data.extend(std::iter::repeat_n(b'z', len - len / 2));
        let (plain, gz, back) = (t.join("plain"), t.join("plain.gz"), t.join("back"));
        fs::write(&plain, &data).unwrap();
        compress(&plain, &gz).unwrap();
        // The same input gives the same bytes (no name, no timestamp).
        let first = fs::read(&gz).unwrap();
        compress(&plain, &gz).unwrap();
        assert_eq!(fs::read(&gz).unwrap(), first, "{len} bytes");

        assert_eq!(decompress(&gz, &back, len as u64).unwrap(), len as u64);
        assert_eq!(fs::read(&back).unwrap(), data, "ours, {len} bytes");
        let out = run(Command::new("gzip").arg("-dc").arg(&gz));
        assert_eq!(out.stdout, data, "gzip -d, {len} bytes");
        if python() {
            let pygz = t.join("py.gz");
            python_run(
                "import sys, gzip\nd = gzip.decompress(open(sys.argv[1], 'rb').read())\nassert d == open(sys.argv[2], 'rb').read()\nopen(sys.argv[3], 'wb').write(gzip.compress(d))",
                &[&gz, &plain, &pygz],
            );
            assert_eq!(decompress(&pygz, &back, u64::MAX).unwrap(), len as u64);
            assert_eq!(fs::read(&back).unwrap(), data, "Python's gzip, {len} bytes");
        }
    }
}

#[test]
fn bombs_and_garbage_are_errors() {
    if !gzip() {
        return;
    }
    let t = TempDir::new("files-gzip-bad");
    let (plain, gz, out) = (t.join("plain"), t.join("plain.gz"), t.join("out"));
    fs::write(&plain, vec![0u8; 10 << 20]).unwrap();
    compress(&plain, &gz).unwrap();
    assert!(fs::metadata(&gz).unwrap().len() < 100_000);
    let e = decompress(&gz, &out, 1 << 20).unwrap_err();
    assert!(e.contains("limit"), "{e}");
    assert!(fs::metadata(&out).unwrap().len() <= 1 << 20);
    assert_eq!(decompress(&gz, &out, 10 << 20).unwrap(), 10 << 20);

    fs::write(&gz, b"this is not gzip at all").unwrap();
    let e = decompress(&gz, &out, 1 << 20).unwrap_err();
    assert!(
        e.contains("gzip -d failed") && e.contains("not in gzip format"),
        "{e}"
    );

    // Cut short: gzip notices the missing trailer.
    compress(&plain, &gz).unwrap();
    let whole = fs::read(&gz).unwrap();
    fs::write(&gz, &whole[..whole.len() - 10]).unwrap();
    assert!(decompress(&gz, &out, u64::MAX).is_err());

    let e = compress(&t.join("missing"), &gz).unwrap_err();
    assert!(e.contains("missing"), "{e}");
}
