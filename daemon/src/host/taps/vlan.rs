//! `<vlan><tag id='N'/></vlan>` on a tap's bridge port: the port becomes an untagged member
//! of VLAN N with N as its PVID (`bridge vlan add dev TAP vid N pvid untagged`), sent as an
//! AF_BRIDGE RTM_SETLINK with IFLA_AF_SPEC/IFLA_BRIDGE_VLAN_INFO. Needs the bridge's
//! vlan_filtering on. (This build host's kernel lacks 8021q; the message is golden-tested.)
//! Not yet wired to the domain model: the model has no `<vlan>` element yet.

use rtnetlink::packet_route::link::{BridgeVlanInfoFlags, LinkMessage};
use rtnetlink::LinkBridgeVlan;

/// The RTM_SETLINK payload making port `index` an untagged PVID member of `vid`.
pub fn access_port(index: u32, vid: u16) -> LinkMessage {
    LinkBridgeVlan::new(index)
        .vlan(
            vid,
            BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
        )
        .build()
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::Emitable;

    use super::*;

    #[test]
    fn access_port_message_is_bridge_vlan_add_pvid_untagged() {
        let m = access_port(7, 100);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        // ifinfomsg: family AF_BRIDGE (7), type 0, index 7, flags 0, change 0;
        // IFLA_AF_SPEC (26) nesting IFLA_BRIDGE_VLAN_INFO (2) = {PVID|UNTAGGED (6), vid 100}.
        assert_eq!(
            hex,
            concat!(
                "07", "00", "0000", "07000000", "00000000", "00000000", // ifinfomsg
                "0c00", "1a00", // IFLA_AF_SPEC, 12 bytes
                "0800", "0200", "0600", "6400", // IFLA_BRIDGE_VLAN_INFO {flags 6, vid 100}
            )
        );
    }
}
