//! `-blockdev` protocol options for network disks, as libvirt builds them.

use super::argv::esc;
use crate::model::*;
use crate::validate::netdisk::{iscsi_target, rbd_parts};

/// `driver=nbd,server.type=inet,...`: the protocol node's options, without its node name.
pub(super) fn storage(n: &NetSource) -> String {
    let name = n.name.as_deref();
    let tcp = |h: &NetHost| match h {
        NetHost::Tcp { name, port } => (
            esc(name),
            port.unwrap_or(n.protocol.default_port()).to_string(),
        ),
        // Validation allows unix only for nbd; written as a host so this cannot panic.
        NetHost::Unix { socket } => (esc(socket), String::new()),
    };
    let first = n.hosts.first();
    match n.protocol {
        NetProtocol::Nbd => {
            let mut s = match first {
                Some(NetHost::Unix { socket }) => {
                    format!("driver=nbd,server.type=unix,server.path={}", esc(socket))
                }
                Some(h) => {
                    let (host, port) = tcp(h);
                    format!("driver=nbd,server.type=inet,server.host={host},server.port={port}")
                }
                None => "driver=nbd".to_owned(),
            };
            if let Some(e) = name {
                s.push_str(&format!(",export={}", esc(e)));
            }
            s
        }
        NetProtocol::Http | NetProtocol::Https => {
            let (host, port) = first.map(tcp).unwrap_or_default();
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            let path = name.unwrap_or("").trim_start_matches('/');
            format!(
                "driver={p},url={p}://{host}:{port}/{}",
                esc(path),
                p = n.protocol.as_str()
            )
        }
        NetProtocol::Iscsi => {
            let (host, port) = first.map(tcp).unwrap_or_default();
            let (target, lun) = name.and_then(iscsi_target).unwrap_or(("", 0));
            format!(
                "driver=iscsi,transport=tcp,portal={host}:{port},target={},lun={lun}",
                esc(target)
            )
        }
        NetProtocol::Rbd => {
            let (pool, ns, image) = name.and_then(rbd_parts).unwrap_or(("", None, ""));
            let mut s = format!("driver=rbd,pool={}", esc(pool));
            if let Some(ns) = ns {
                s.push_str(&format!(",namespace={}", esc(ns)));
            }
            s.push_str(&format!(",image={}", esc(image)));
            for (k, h) in n.hosts.iter().enumerate() {
                let (host, port) = tcp(h);
                s.push_str(&format!(",server.{k}.host={host},server.{k}.port={port}"));
            }
            // No <auth> (refused): connect without cephx, as libvirt does without a secret.
            s.push_str(",auth-client-required.0=none");
            s
        }
    }
}
