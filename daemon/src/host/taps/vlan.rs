//! `<vlan><tag id='N'/></vlan>` on a tap's bridge port: the port becomes an untagged member
//! of VLAN N with N as its PVID (`bridge vlan add dev TAP vid N pvid untagged`), sent as an
//! AF_BRIDGE RTM_SETLINK with IFLA_AF_SPEC/IFLA_BRIDGE_VLAN_INFO. Needs the bridge's
//! vlan_filtering on. Bridge VLAN filtering is the bridge's own code (CONFIG_BRIDGE_VLAN_
//! FILTERING), not 8021q; this build host's kernel has neither (a filtering bridge cannot be
//! made, and the message answers EOPNOTSUPP), so the messages are golden-tested here and the
//! daemon refuses a tag on a bridge that does not filter. The port then leaves the bridge's
//! default VLAN (1), so it only carries VLAN N.

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::link::{
    BridgeVlanInfoFlags, InfoBridge, InfoData, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::LinkBridgeVlan;

/// The RTM_DELLINK payload taking port `index` out of `vid` (the bridge's default VLAN).
pub fn leave(index: u32, vid: u16) -> LinkMessage {
    LinkBridgeVlan::new(index)
        .vlan(vid, BridgeVlanInfoFlags::empty())
        .build()
}

/// Whether a bridge's link message says it filters VLANs (`IFLA_BR_VLAN_FILTERING`).
pub fn filters(m: &LinkMessage) -> bool {
    m.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::Data(InfoData::Bridge(b)) => b
                .iter()
                .any(|x| matches!(x, InfoBridge::VlanFiltering(true))),
            _ => false,
        }),
        _ => false,
    })
}

/// The bridge's default PVID (`IFLA_BR_VLAN_DEFAULT_PVID`; 1 unless changed, 0 = none).
pub fn default_pvid(m: &LinkMessage) -> u16 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Bridge(b)) => b.iter().find_map(|x| match x {
                    InfoBridge::VlanDefaultPvid(v) => Some(*v),
                    _ => None,
                }),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or(1)
}

impl super::link::Netlink {
    /// Whether bridge `index` filters VLANs, and its default PVID.
    pub async fn bridge_vlan_facts(&self, index: u32) -> std::io::Result<(bool, u16)> {
        let m = self
            .handle()
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .map_err(super::link::io_err)?
            .ok_or_else(|| std::io::Error::other("the bridge vanished"))?;
        Ok((filters(&m), default_pvid(&m)))
    }

    /// `bridge vlan add dev PORT vid VID pvid untagged` then, when the bridge put the port in
    /// its default VLAN `default` (≠ VID), `bridge vlan del dev PORT vid DEFAULT`.
    pub async fn set_access_vlan(&self, port: u32, vid: u16, default: u16) -> std::io::Result<()> {
        self.handle()
            .link()
            .set(access_port(port, vid))
            .execute()
            .await
            .map_err(super::link::io_err)?;
        if default != 0 && default != vid {
            self.handle()
                .link()
                .del_with_message(leave(port, default))
                .execute()
                .await
                .map_err(super::link::io_err)?;
        }
        Ok(())
    }
}

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

    #[test]
    fn a_bridge_filters_only_when_its_link_info_says_so() {
        let bridge = |data: Vec<InfoBridge>| {
            let mut m = LinkMessage::default();
            m.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(rtnetlink::packet_route::link::InfoKind::Bridge),
                LinkInfo::Data(InfoData::Bridge(data)),
            ]));
            m
        };
        let on = bridge(vec![
            InfoBridge::VlanFiltering(true),
            InfoBridge::VlanDefaultPvid(7),
        ]);
        assert!(filters(&on));
        assert_eq!(default_pvid(&on), 7);
        let off = bridge(vec![InfoBridge::VlanFiltering(false)]);
        assert!(!filters(&off));
        assert_eq!(default_pvid(&off), 1);
        assert!(!filters(&LinkMessage::default()));
    }

    #[test]
    fn leave_message_is_bridge_vlan_del() {
        let m = leave(7, 1);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        // Same shape, no flags, vid 1: sent as RTM_DELLINK (bridge vlan del dev 7 vid 1).
        assert_eq!(
            hex,
            concat!(
                "07", "00", "0000", "07000000", "00000000", "00000000", // ifinfomsg
                "0c00", "1a00", "0800", "0200", "0000", "0100",
            )
        );
    }
}
