//! `<disk type='network'>`: an image QEMU reads from a server (NBD, HTTP(S), iSCSI, Ceph RBD)
//! instead of a host file. QEMU itself connects where the definition says, from the host's
//! network position: the host layer decides who may define one (`host_refs`).

use serde::{Deserialize, Serialize};

/// The block protocol, libvirt's `<source protocol=...>` and QEMU's `-blockdev driver=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetProtocol {
    Nbd,
    Http,
    Https,
    Iscsi,
    Rbd,
}

impl NetProtocol {
    pub const ALL: [NetProtocol; 5] = [Self::Nbd, Self::Http, Self::Https, Self::Iscsi, Self::Rbd];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Nbd => "nbd",
            Self::Http => "http",
            Self::Https => "https",
            Self::Iscsi => "iscsi",
            Self::Rbd => "rbd",
        }
    }
    /// The port libvirt (and QEMU) use when `<host>` has none.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Nbd => 10809,
            Self::Http => 80,
            Self::Https => 443,
            Self::Iscsi => 3260,
            Self::Rbd => 6789,
        }
    }
}

/// `<source protocol=... name=...><host .../>...</source>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct NetSource {
    pub protocol: NetProtocol,
    /// Export (nbd), path on the server (http), `iqn/lun` (iscsi), `pool/image` (rbd).
    pub name: Option<String>,
    /// One server, except rbd: its monitors.
    pub hosts: Vec<NetHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "transport", deny_unknown_fields)]
pub enum NetHost {
    /// `<host name=... port=...>` (`transport='tcp'`, the default).
    Tcp { name: String, port: Option<u16> },
    /// `<host transport='unix' socket=...>` (nbd only).
    Unix { socket: String },
}

impl NetSource {
    /// How the disk is shown in a refusal: `nbd://host:port/export`, `nbd+unix:///export?socket=/p`.
    pub fn display(&self) -> String {
        let name = self.name.as_deref().unwrap_or("");
        let p = self.protocol.as_str();
        match self.hosts.first() {
            Some(NetHost::Tcp { name: h, port }) => {
                let port = port.unwrap_or(self.protocol.default_port());
                let h = if h.contains(':') {
                    format!("[{h}]")
                } else {
                    h.clone()
                };
                format!("{p}://{h}:{port}/{name}")
            }
            Some(NetHost::Unix { socket }) => format!("{p}+unix:///{name}?socket={socket}"),
            None => format!("{p}:///{name}"),
        }
    }
}
