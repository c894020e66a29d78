//! gzip through the system `gzip`, for archives on their way out and in.
//! The runner carries no deflate of its own; where `gzip` is missing,
//! `available` says so and the caller sends plain tar.
//!
//! Decompression is capped: a small gzip body can expand to fill the VM's
//! disk, so output beyond the caller's limit stops it with an error.

use super::io_words;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Whether an executable `gzip` is on PATH.
pub fn available() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| super::is_executable(&dir.join("gzip")))
    })
}

/// Compresses the file `src` into `dst` (created or truncated). `-n`
/// leaves out a name and timestamp, so equal input gives equal output.
pub fn compress(src: &Path, dst: &Path) -> Result<(), String> {
    let input = File::open(src).map_err(|e| io_words("", src, e))?;
    let output = File::create(dst).map_err(|e| io_words("", dst, e))?;
    let child = spawn("-nc", input, Stdio::from(output))?;
    finish(child, "gzip")
}

/// Decompresses the file `src` into `dst`, refusing more than `limit`
/// bytes of output; returns the output's length. After an error `dst`
/// holds whatever was written so far.
pub fn decompress(src: &Path, dst: &Path, limit: u64) -> Result<u64, String> {
    let input = File::open(src).map_err(|e| io_words("", src, e))?;
    let mut output = File::create(dst).map_err(|e| io_words("", dst, e))?;
    let mut child = spawn("-dc", input, Stdio::piped())?;
    let mut stdout = child.stdout.take().ok_or("gzip -d: no output pipe")?;
    let copied = super::copy(&mut stdout, &mut output, limit);
    drop(stdout);
    let fail = match copied {
        Ok((_, true)) => format!("gzip -d: the content is over the {limit}-byte limit"),
        Ok((n, false)) => {
            finish(child, "gzip -d")?;
            return Ok(n);
        }
        Err(e) => io_words("gzip -d into", dst, e),
    };
    let _ = child.kill();
    let _ = child.wait();
    Err(fail)
}

fn spawn(flags: &str, input: File, output: Stdio) -> Result<Child, String> {
    Command::new("gzip")
        .env_clear()
        .envs(crate::config::child_env(&[]))
        .arg(flags)
        .stdin(input)
        .stdout(output)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run gzip: {e}"))
}

/// Waits for gzip; a failure carries the start of what it said.
fn finish(mut child: Child, what: &str) -> Result<(), String> {
    let mut said = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = super::copy(&mut err, &mut said, 1024);
    }
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&said);
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) if status.core_dumped() => format!("signal {sig}, core dumped"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "no exit code".into(),
    };
    Err(format!("{what} failed ({how}): {}", said.trim()))
}
