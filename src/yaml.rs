//! YAML subset reader (placeholder until the reader lands).
pub struct Entry { pub key: String, pub value: String, pub plain: bool, pub line: usize, pub col: usize, pub value_col: usize }
pub fn parse(path: &str, src: &[u8]) -> crate::error::Result<Vec<Entry>> {
    let text = std::str::from_utf8(src).map_err(|_| crate::error::Error::at(path, 1, 1, "not UTF-8"))?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() || l.starts_with('#') { continue; }
        let (k, v) = l.split_once(':').ok_or_else(|| crate::error::Error::at(path, i + 1, 1, "expected key: value"))?;
        out.push(Entry { key: k.trim().into(), value: v.trim().trim_matches('"').into(), plain: true, line: i + 1, col: 1, value_col: k.len() + 3 });
    }
    Ok(out)
}
