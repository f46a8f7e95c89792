//! `net.ipv4.ip_forward`: read and set (blocking).

use std::path::Path;

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

pub fn read(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

pub fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{value}\n"))
}
