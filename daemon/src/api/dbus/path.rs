//! Domain names as object path elements.
//!
//! An object path element may only hold `[A-Za-z0-9_]`, so names are escaped like systemd's
//! bus labels: ASCII letters and digits stay, every other byte (including `_`) becomes `_` and
//! two lowercase hex digits, and the empty string becomes `_`. The escaping is reversible.

use zbus::zvariant::OwnedObjectPath;

/// Parent of every domain object.
pub const DOMAIN_PREFIX: &str = "/org/novacron1/domain";

pub fn escape(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for text `escape` never produces.
pub fn unescape(label: &str) -> Option<String> {
    if label == "_" {
        return Some(String::new());
    }
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hex = label.get(i + 1..i + 3)?;
                if hex.bytes().any(|c| c.is_ascii_uppercase()) {
                    return None;
                }
                let b = u8::from_str_radix(hex, 16).ok()?;
                if b.is_ascii_alphanumeric() {
                    return None;
                }
                out.push(b);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// `/org/novacron1/domain/<escaped name>`.
pub fn domain_path(name: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("{DOMAIN_PREFIX}/{}", escape(name)))
        .expect("an escaped name is a valid path element")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd_and_round_trips() {
        assert_eq!(escape("vm1"), "vm1");
        assert_eq!(escape("web-01"), "web_2d01");
        assert_eq!(escape("a_b.c"), "a_5fb_2ec");
        assert_eq!(escape(""), "_");
        assert_eq!(escape("é"), "_c3_a9");
        for name in [
            "vm1", "web-01", "a_b.c", "", "é", "_", "__2d", "x y\tz", "Ab9",
        ] {
            let e = escape(name);
            assert!(
                e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{e}"
            );
            assert_eq!(unescape(&e).as_deref(), Some(name), "{name:?} -> {e}");
            // Always a valid object path.
            let _ = domain_path(name);
        }
    }

    #[test]
    fn unescape_rejects_what_escape_never_writes() {
        for bad in ["a-b", "_2", "_zz", "_41", "_2D", "a_", "_ff"] {
            assert_eq!(unescape(bad), None, "{bad}");
        }
    }
}
