//! The destination names where the stream goes; we decide what QEMU connects to. Only
//! `tcp:HOST:PORT` is accepted, HOST being the host we contacted (as written, or one of its
//! addresses) or an address the admin listed in `migration.stream_hosts`; the URI handed to
//! QEMU is then built here from those parts, never passed on as received.

use std::net::IpAddr;

use crate::config::migration::MigrationConfig;

/// How much of a refused URI a message repeats (it came from the network).
const SHOWN: usize = 120;

/// The URI QEMU is given for the destination's `answer`, or why it is refused.
pub(super) async fn stream_uri(
    answer: &str,
    contacted: &str,
    config: &MigrationConfig,
) -> Result<String, String> {
    let refuse = |why: String| {
        let shown: String = answer.chars().take(SHOWN).collect();
        format!("refused the destination's migration URI {shown:?}: {why}")
    };
    let (host, port) = parse_tcp(answer).map_err(|why| refuse(why.into()))?;
    let ip = host.parse::<IpAddr>().ok();
    let allowed = if host.eq_ignore_ascii_case(contacted) {
        true
    } else if let Some(ip) = ip {
        config.stream_hosts.contains(&ip) || resolves_to(contacted, ip).await
    } else {
        // A name other than the one we contacted is not looked up on the peer's word.
        false
    };
    if !allowed {
        return Err(refuse(format!(
            "{host} is not the destination's host ({contacted}) nor listed in \
             migration.stream_hosts"
        )));
    }
    Ok(match ip {
        Some(IpAddr::V6(v6)) => format!("tcp:[{v6}]:{port}"),
        Some(IpAddr::V4(v4)) => format!("tcp:{v4}:{port}"),
        None => format!("tcp:{contacted}:{port}"),
    })
}

/// `tcp:HOST:PORT` (`[v6]` bracketed), nothing after the port, port 1..=65535.
fn parse_tcp(uri: &str) -> Result<(&str, u16), &'static str> {
    let rest = uri
        .strip_prefix("tcp:")
        .ok_or("only tcp:HOST:PORT is accepted")?;
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
        let port = after.strip_prefix(':').ok_or("no port")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "not an IPv6 address in '[...]'")?;
        (host, port)
    } else {
        rest.rsplit_once(':').ok_or("no port")?
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !host_ok {
        return Err("the host is not an address or host name");
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return Err("the port is not a number");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err("the port must be 1..=65535"),
    }
}

/// Whether the host we contacted resolves to `ip` (an address literal is only itself).
async fn resolves_to(contacted: &str, ip: IpAddr) -> bool {
    if let Ok(own) = contacted.parse::<IpAddr>() {
        return own == ip;
    }
    match tokio::net::lookup_host((contacted, 0)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).any(|a| a == ip),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_tcp_to_the_contacted_host_is_built() {
        let none = MigrationConfig::default();
        assert_eq!(
            stream_uri("tcp:127.0.0.1:4444", "127.0.0.1", &none)
                .await
                .unwrap(),
            "tcp:127.0.0.1:4444"
        );
        for bad in [
            "exec:touch /tmp/x",
            "fd:3",
            "file:/tmp/x",
            "rdma:127.0.0.1:4444",
            "unix:/tmp/s",
            "tcp:127.0.0.2:4444",
            "tcp:evil:4444",
            "tcp:127.0.0.1:0",
            "tcp:127.0.0.1:65536",
            "tcp:127.0.0.1:4444,ipv6=on",
            "tcp:127.0.0.1:",
            "tcp::4444",
            "garbage",
            "",
        ] {
            let e = stream_uri(bad, "127.0.0.1", &none).await.unwrap_err();
            assert!(
                e.contains("refused the destination's migration URI"),
                "{bad}: {e}"
            );
        }
        let listed = MigrationConfig {
            stream_hosts: vec!["10.0.0.7".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(
            stream_uri("tcp:10.0.0.7:9", "127.0.0.1", &listed)
                .await
                .unwrap(),
            "tcp:10.0.0.7:9"
        );
        assert_eq!(
            stream_uri("tcp:[::1]:9", "::1", &none).await.unwrap(),
            "tcp:[::1]:9"
        );
        assert_eq!(
            stream_uri("tcp:localhost:9", "localhost", &none)
                .await
                .unwrap(),
            "tcp:localhost:9"
        );
    }
}
