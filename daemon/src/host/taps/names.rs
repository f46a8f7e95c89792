//! Interface names: what the kernel accepts, and the names the daemon generates.

use std::fmt;

/// IFNAMSIZ minus the NUL.
pub const MAX_LEN: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName {
    pub name: String,
    pub why: &'static str,
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "interface name '{}' {}",
            self.name.escape_debug(),
            self.why
        )
    }
}

impl std::error::Error for BadName {}

/// Whether the kernel would take `name` as an interface name (`dev_valid_name`), kept to the
/// characters a shell and a netlink dump print without surprise.
pub fn check(name: &str) -> Result<(), BadName> {
    let bad = |why| {
        Err(BadName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_LEN {
        return bad("is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("is reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return bad("may only hold ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// The generated name of a guest's NIC `slot`: `nc` + 8 hex digits of the guest's UUID +
/// `t`ap or `m`acvtap + the slot in hex (at most 15 bytes for slots below 16^4).
pub fn generated(uuid: &[u8; 16], macvtap: bool, slot: u32) -> String {
    let kind = if macvtap { 'm' } else { 't' };
    format!(
        "nc{:02x}{:02x}{:02x}{:02x}{kind}{slot:x}",
        uuid[0], uuid[1], uuid[2], uuid[3]
    )
}

/// [`generated`] for `variant` 0, else the same with `n` + the variant's hex digit in place of
/// `nc` (same length): the names tried when the first is taken on this host.
pub fn generated_variant(uuid: &[u8; 16], macvtap: bool, slot: u32, variant: u8) -> String {
    let name = generated(uuid, macvtap, slot);
    match variant {
        0 => name,
        v => format!("n{:x}{}", v & 0xf, &name[2..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_keep_the_length() {
        let uuid = [0xab; 16];
        assert_eq!(generated_variant(&uuid, false, 1, 0), "ncababababt1");
        assert_eq!(generated_variant(&uuid, false, 1, 1), "n1ababababt1");
        assert_eq!(
            generated_variant(&uuid, true, 0xffff, 15),
            "nfababababmffff"
        );
    }

    #[test]
    fn generated_names_are_valid_and_short() {
        let n = generated(&[0xab; 16], false, 0xffff);
        assert_eq!(n, "ncababababtffff");
        assert!(check(&n).is_ok());
        assert_eq!(generated(&[1; 16], true, 2), "nc01010101m2");
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        assert_eq!(
            check("a-very-long-name0").unwrap_err().why,
            "is longer than 15 bytes"
        );
        assert!(check("").is_err());
        assert!(check("eth0/x").is_err());
        assert!(check("..").is_err());
        assert!(check("br0").is_ok());
    }
}
