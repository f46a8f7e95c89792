//! Sizes: libvirt's units (`unit='GiB'`, `bytes`...) and virsh's size strings (`64M`, `10G`:
//! binary, as `virsh vol-create-as` reads them).

/// The largest volume anyone may ask for (64 TiB, well under QEMU's qcow2 limit): a request
/// beyond it is a typo or an attack, refused before the free-space check.
pub const MAX_VOLUME_BYTES: u64 = 64 << 40;

/// Bytes per `unit` (libvirt's table: `KB` = 1000, `K`/`KiB` = 1024 ...).
pub fn parse_unit(unit: &str) -> Option<u64> {
    Some(match unit {
        "" | "b" | "B" | "bytes" => 1,
        "KB" => 1_000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "m" | "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "g" | "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "t" | "T" | "TiB" => 1 << 40,
        "PB" => 1_000_000_000_000_000,
        "p" | "P" | "PiB" => 1 << 50,
        "EB" => 1_000_000_000_000_000_000,
        "e" | "E" | "EiB" => 1 << 60,
        _ => return None,
    })
}

/// `64M`, `1G`, `4096`, `10GiB` -> bytes; the refusal says why.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "{s:?} is not a size (a number with an optional unit: 64M, 10G)"
        ));
    }
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: number too large"))?;
    let mult = parse_unit(unit.trim()).ok_or_else(|| {
        format!("{s:?}: unknown unit {unit:?} (B, K, M, G, T, P, E, KiB..., KB...)")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is over 2^64 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1EiB").unwrap(), 1 << 60);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert!(parse_size("20E").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("-1").is_err());
    }
}
