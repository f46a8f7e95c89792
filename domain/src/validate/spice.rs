//! SPICE graphics, its agent channel, USB redirection, QXL, sound devices and audio backends.

use std::collections::BTreeSet;

use super::{Problem, V};
use crate::model::*;

const SPICE_AGENT_CHANNEL: &str = "com.redhat.spice.0";

fn has_spice(dv: &Devices) -> bool {
    matches!(dv.graphics, Some(Graphics::Spice { .. }))
}

/// Any USB controller that exists (`model='none'` is the absence of one).
fn has_usb(dv: &Devices) -> bool {
    dv.controllers
        .iter()
        .any(|c| matches!(c.kind, ControllerKind::Usb { model, .. } if model != UsbModel::None))
}

pub(super) fn spice(v: &mut V, dv: &Devices) {
    for (p, n, max) in [
        ("devices.redirdevs", dv.redirdevs.len(), MAX_REDIRDEVS),
        ("devices.sounds", dv.sounds.len(), MAX_SOUNDS),
        ("devices.audios", dv.audios.len(), MAX_AUDIOS),
    ] {
        if n > max {
            v.err(p, Problem::TooLong { max });
        }
    }
    graphics(v, dv);
    let spice = has_spice(dv);
    let need_spice = |v: &mut V, p: String| {
        if !spice {
            v.err(
                p,
                Problem::DanglingReference("<graphics type='spice'>".into()),
            );
        }
    };
    for (i, c) in dv.channels.iter().enumerate() {
        if c.kind != ChannelKind::Spicevmc {
            continue;
        }
        let p = format!("devices.channels[{i}]");
        need_spice(v, p.clone());
        if c.name != SPICE_AGENT_CHANNEL {
            v.err(
                format!("{p}.name"),
                Problem::Unsupported(format!(
                    "spicevmc channel '{}': QEMU's SPICE agent serves only '{SPICE_AGENT_CHANNEL}'",
                    c.name
                )),
            );
        }
        if c.path.is_some() {
            v.err(
                format!("{p}.path"),
                Problem::Inconsistent("a spicevmc channel has no socket path".into()),
            );
        }
    }
    let usb = has_usb(dv);
    for (i, r) in dv.redirdevs.iter().enumerate() {
        let p = format!("devices.redirdevs[{i}]");
        need_spice(v, p.clone());
        if !usb {
            v.err(
                p.clone(),
                Problem::DanglingReference("a USB controller".into()),
            );
        }
        if matches!(r.address, Some(a) if !matches!(a, Address::Usb { .. })) {
            v.err(
                format!("{p}.address"),
                Problem::Inconsistent("a USB redirection port needs a usb address".into()),
            );
        }
    }
    let mut ids = BTreeSet::new();
    for (i, a) in dv.audios.iter().enumerate() {
        let p = format!("devices.audios[{i}]");
        v.range(format!("{p}.id"), a.id, 1, 255);
        if !ids.insert(a.id) {
            v.err(
                format!("{p}.id"),
                Problem::Duplicate(format!("audio id {}", a.id)),
            );
        }
        if a.backend == AudioBackend::Spice {
            need_spice(v, format!("{p}.backend"));
        }
    }
    for (i, s) in dv.sounds.iter().enumerate() {
        let p = format!("devices.sounds[{i}]");
        if !s.model.is_hda() && !s.codecs.is_empty() {
            v.err(
                format!("{p}.codecs"),
                Problem::Inconsistent(format!("model '{}' has no HDA codecs", s.model.as_str())),
            );
        }
        if s.codecs.len() > 4 {
            v.err(format!("{p}.codecs"), Problem::TooLong { max: 4 });
        }
        if let Some(id) = s.audio_id {
            if !ids.contains(&id) {
                v.err(
                    format!("{p}.audio_id"),
                    Problem::DanglingReference(format!("audio id {id}")),
                );
            }
        }
        let address_ok = match (s.model, s.address) {
            (_, None) => true,
            (SoundModel::Usb, Some(a)) => matches!(a, Address::Usb { .. }),
            // ISA: no address at all.
            (SoundModel::Sb16, Some(_)) => false,
            (_, Some(a)) => matches!(a, Address::Pci { .. }),
        };
        if !address_ok {
            v.err(
                format!("{p}.address"),
                Problem::Inconsistent(format!(
                    "address type does not fit a '{}' sound device",
                    s.model.as_str()
                )),
            );
        }
        if s.model == SoundModel::Usb && !usb {
            v.err(
                format!("{p}.model"),
                Problem::DanglingReference("a USB controller".into()),
            );
        }
    }
    for (i, vid) in dv.videos.iter().enumerate() {
        if let VideoModel::Qxl {
            ram_kib,
            vram_kib,
            vgamem_kib,
            heads,
        } = vid.model
        {
            let p = format!("devices.videos[{i}].model");
            for (f, val) in [("ram", ram_kib), ("vram", vram_kib), ("vgamem", vgamem_kib)] {
                let Some(k) = val else { continue };
                // QEMU maps these as PCI BARs: powers of two, 1 MiB to 1 GiB.
                if !k.is_power_of_two() || !(1024..=1 << 20).contains(&k) {
                    v.err(
                        format!("{p}.{f}_kib"),
                        Problem::Inconsistent(format!(
                            "{k} KiB is not a power of two between 1024 and 1048576 KiB"
                        )),
                    );
                }
            }
            if let Some(h) = heads {
                v.range(format!("{p}.heads"), h, 1, 4);
            }
        }
    }
}

fn graphics(v: &mut V, dv: &Devices) {
    let Some(Graphics::Spice {
        port, listen, gl, ..
    }) = &dv.graphics
    else {
        return;
    };
    let p = "devices.graphics";
    if let VncPort::Fixed(n) = port {
        // QEMU runs unprivileged: it cannot bind below 1024.
        v.range(format!("{p}.port"), *n, 1024, 65535);
    }
    match listen {
        SpiceListen::Address { address: Some(l) } => {
            if l.parse::<std::net::IpAddr>().is_err() {
                v.err(
                    format!("{p}.listen.address"),
                    Problem::Inconsistent(format!("'{l}' is not an IP address")),
                );
            }
        }
        SpiceListen::Address { address: None } => {}
        SpiceListen::None => {
            if matches!(port, VncPort::Fixed(_)) {
                v.err(
                    format!("{p}.port"),
                    Problem::Inconsistent("a port with listen type 'none'".into()),
                );
            }
        }
    }
    if *gl == Some(true) {
        v.err(
            format!("{p}.gl"),
            Problem::Unsupported(
                "SPICE OpenGL (gl enable='yes') renders on a host DRM render node through EGL; \
                 this daemon gives QEMU no /dev/dri access and runs no local SPICE client"
                    .into(),
            ),
        );
    }
}
