//! placeholder until the spool lands
#[derive(Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
    Runner,
}
pub struct Spool {
    f: std::fs::File,
    len: u64,
    seq: u64,
    buf: Vec<u8>,
}
impl Spool {
    pub fn create(path: &std::path::Path) -> std::io::Result<Spool> {
        Ok(Spool {
            f: std::fs::File::create(path)?,
            len: 0,
            seq: 0,
            buf: Vec::new(),
        })
    }
    pub fn append(&mut self, _s: Stream, _step: Option<&str>, text: &[u8]) {
        self.buf.extend_from_slice(text);
        self.buf.push(b'\n');
        self.seq += 1;
    }
    pub fn flush(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.f.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn seq(&self) -> u64 {
        self.seq
    }
}
pub fn rfc3339_millis(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}
