//! Pool and volume names: one path component inside the pool directory, never anything that
//! could leave it or hide in it.

/// A name is a file name: at most this many bytes (`NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// Whether `name` may name a pool or a volume; the refusal says why (the caller names the
/// field). No `/`, NUL or other control characters, not `.`/`..`, no leading dot (hidden and
/// temporary files of the daemon live there), at most [`MAX_NAME_BYTES`] bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes, over the {MAX_NAME_BYTES} byte limit",
            name.len()
        ));
    }
    if name.contains('/') {
        return Err(format!(
            "{name:?} contains '/' (a name is one file name inside the pool)"
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "{name:?} starts with '.' ('.', '..' and hidden names are not volumes)"
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{name:?} contains the control character U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["", "a/b", "..", ".", ".hidden", "../x", "a\0b", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"x".repeat(256))
            .unwrap_err()
            .contains("256 bytes"));
        for good in ["web1.qcow2", "data disk", "a..b", &"x".repeat(255)] {
            check_name(good).unwrap();
        }
    }
}
