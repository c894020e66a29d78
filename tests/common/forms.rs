//! The encoded forms of a secret, derived independently of src/mask.rs, so
//! the masking tests check the masker against their own arithmetic.

pub fn b64(data: &[u8]) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = [n >> 18, n >> 12, n >> 6, n].map(|x| A[(x & 63) as usize]);
        out.extend_from_slice(&chars[..c.len() + 1]);
        out.resize(out.len() + 3 - c.len(), b'=');
    }
    out
}

/// The chars of base64(prefix + secret + suffix) that no choice of the
/// `skip`-byte prefix or of the suffix can change, found by encoding with
/// opposite bits around the secret and keeping where the two agree.
pub fn b64_core(secret: &[u8], skip: usize) -> Option<Vec<u8>> {
    let wrap = |p: u8, s: u8| {
        let mut v = vec![p; skip];
        v.extend_from_slice(secret);
        // Whole groups, so no `=` padding agrees by accident.
        v.resize(v.len() + 3 + (3 - v.len() % 3) % 3, s);
        b64(&v)
    };
    let (a, b) = (wrap(0, 0xff), wrap(0xff, 0));
    let lo = a.iter().zip(&b).position(|(x, y)| x == y)?;
    let hi = a.len() - a.iter().zip(&b).rev().position(|(x, y)| x == y)?;
    Some(a[lo..hi].to_vec()).filter(|c| c.len() >= 4)
}

pub fn pct(v: &[u8], upper: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

pub fn json(v: &[u8], ascii: bool, upper: bool) -> Vec<u8> {
    let mut out = String::new();
    let mut raw = Vec::new();
    for chunk in v.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (ascii && c as u32 > 0x7f) => {
                    for u in c.encode_utf16(&mut [0; 2]) {
                        out.push_str(&if upper {
                            format!("\\u{u:04X}")
                        } else {
                            format!("\\u{u:04x}")
                        });
                    }
                }
                c => out.push(c),
            }
        }
        raw.extend_from_slice(out.as_bytes());
        raw.extend_from_slice(chunk.invalid());
        out.clear();
    }
    raw
}
