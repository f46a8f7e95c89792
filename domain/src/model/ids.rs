//! Small value types parsed from strings: UUID, MAC address, CPU/node id sets, memory units.
//! They serialize to their canonical string form so JSON reads like the XML.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Largest CPU or NUMA node id accepted in a set: bounds the memory a set can take.
pub const MAX_SET_ID: u32 = 16_383;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseValueError(pub String);

fn perr<T>(msg: impl Into<String>) -> Result<T, ParseValueError> {
    Err(ParseValueError(msg.into()))
}

macro_rules! string_serde {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A 128-bit UUID in canonical lowercase dashed form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub const fn is_nil(&self) -> bool {
        u128::from_be_bytes(self.0) == 0
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Uuid {
    type Err = ParseValueError;
    /// Accepts what libvirt accepts: 32 hex digits, optionally with dashes anywhere.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
        if hex.len() != 32 || s.len() > 36 {
            return perr(format!("'{s}' is not a UUID"));
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let txt = std::str::from_utf8(pair)
                .map_err(|_| ParseValueError(format!("'{s}' is not a UUID")))?;
            let v = u8::from_str_radix(txt, 16)
                .map_err(|_| ParseValueError(format!("'{s}' is not a UUID")))?;
            if let Some(slot) = out.get_mut(i) {
                *slot = v;
            }
        }
        Ok(Uuid(out))
    }
}
string_serde!(Uuid);

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = ParseValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ParseValueError(format!(
                "'{s}' is not a MAC address (expected xx:xx:xx:xx:xx:xx)"
            ))
        };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            let slot = out.get_mut(n).ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
            n += 1;
        }
        if n != 6 {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}
string_serde!(MacAddr);

/// A set of CPU or NUMA node ids, libvirt syntax `0-3,^2,8`. Canonical form is sorted
/// ranges (`0-1,3,8`), so two equal sets always compare and print equal.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct IdSet(BTreeSet<u32>);

impl IdSet {
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Result<Self, ParseValueError> {
        let set: BTreeSet<u32> = ids.into_iter().collect();
        if let Some(max) = set.last() {
            if *max > MAX_SET_ID {
                return perr(format!("id {max} exceeds the maximum {MAX_SET_ID}"));
            }
        }
        Ok(IdSet(set))
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn max(&self) -> Option<u32> {
        self.0.last().copied()
    }
    pub fn is_disjoint(&self, other: &IdSet) -> bool {
        self.0.is_disjoint(&other.0)
    }
    /// Contiguous `(first, last)` runs, in order.
    pub fn ranges(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for id in self.iter() {
            match out.last_mut() {
                Some((_, hi)) if hi.checked_add(1) == Some(id) => *hi = id,
                _ => out.push((id, id)),
            }
        }
        out
    }
}

impl fmt::Debug for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdSet({self})")
    }
}

impl fmt::Display for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.ranges().into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for IdSet {
    type Err = ParseValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |t: &str| -> Result<u32, ParseValueError> {
            let v: u32 = t
                .trim()
                .parse()
                .map_err(|_| ParseValueError(format!("'{s}' is not an id set (e.g. 0-3,^2,8)")))?;
            if v > MAX_SET_ID {
                return perr(format!("id {v} in '{s}' exceeds the maximum {MAX_SET_ID}"));
            }
            Ok(v)
        };
        let mut set = BTreeSet::new();
        let mut excluded = BTreeSet::new();
        for part in s.split(',') {
            let part = part.trim();
            let (neg, body) = match part.strip_prefix('^') {
                Some(rest) => (true, rest),
                None => (false, part),
            };
            let (lo, hi) = match body.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let v = num(body)?;
                    (v, v)
                }
            };
            if lo > hi {
                return perr(format!("range {lo}-{hi} in '{s}' is reversed"));
            }
            let target = if neg { &mut excluded } else { &mut set };
            target.extend(lo..=hi);
        }
        for e in &excluded {
            set.remove(e);
        }
        if set.is_empty() {
            return perr(format!("id set '{s}' is empty"));
        }
        Ok(IdSet(set))
    }
}
string_serde!(IdSet);

/// Convert a libvirt `(value, unit)` pair to KiB, rounding bytes up as libvirt does.
/// Returns `None` on an unknown unit; `Err` on overflow.
pub fn to_kib(value: u64, unit: &str) -> Result<u64, ParseValueError> {
    const K: u64 = 1024;
    let (num, den): (u64, u64) = match unit {
        "b" | "bytes" => (1, K),
        "KB" => (1000, K),
        "k" | "K" | "KiB" => (1, 1),
        "MB" => (1_000_000, K),
        "M" | "MiB" => (K, 1),
        "GB" => (1_000_000_000, K),
        "G" | "GiB" => (K * K, 1),
        "TB" => (1_000_000_000_000, K),
        "T" | "TiB" => (K * K * K, 1),
        "PB" => (1_000_000_000_000_000, K),
        "P" | "PiB" => (K * K * K * K, 1),
        "EB" => (1_000_000_000_000_000_000, K),
        "E" | "EiB" => (K * K * K * K * K, 1),
        _ => return perr(format!("unknown memory unit '{unit}'")),
    };
    let overflow = || ParseValueError(format!("{value} {unit} overflows"));
    let scaled = (value as u128)
        .checked_mul(num as u128)
        .ok_or_else(overflow)?;
    let kib = scaled.div_ceil(den as u128);
    // Byte count must itself fit in u64, since QEMU takes bytes.
    if kib > (u64::MAX / K) as u128 {
        return Err(overflow());
    }
    u64::try_from(kib).map_err(|_| overflow())
}
