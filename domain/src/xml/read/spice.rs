//! `<graphics type='spice'>`, `<redirdev>`, `<sound>` and `<audio>`, as virt-install and
//! virt-manager write them.

use super::devices::address;
use super::{R, YES_NO};
use crate::model::*;
use crate::xml::tree::Element;

/// Why a fixed `tlsPort` is refused: TLS needs a server certificate directory, and this
/// daemon configures none (libvirt refuses it the same way with `spice_tls = 0`).
const NO_TLS: &str = "SPICE TLS needs server certificates and no SPICE TLS directory is \
    configured on this host (libvirt refuses the same with spice_tls = 0); use autoport, \
    which gives a plain port only, or drop tlsPort";

pub(super) fn graphics(e: &Element) -> R<Graphics> {
    e.allow(
        &["type", "port", "autoport", "tlsPort", "listen", "keymap"],
        &[
            "listen",
            "image",
            "jpeg",
            "zlib",
            "playback",
            "streaming",
            "clipboard",
            "mouse",
            "filetransfer",
            "gl",
        ],
    )?;
    let autoport = e.attr_enum("autoport", YES_NO)?.unwrap_or(false);
    // port/tlsPort '-1' ask for allocation; with autoport libvirt discards both numbers at
    // define and allocates at start, where with spice_tls off only a plain port is given.
    let port = match e.attr("port") {
        None | Some("-1") => VncPort::Auto,
        Some(_) if autoport => VncPort::Auto,
        Some(_) => VncPort::Fixed(e.req_attr_int("port")?),
    };
    match e.attr("tlsPort") {
        None | Some("0") => {}
        Some(_) if autoport => {}
        Some(_) => return Err(e.invalid_attr("tlsPort", NO_TLS)),
    }
    let mut address = e.attr("listen").map(str::to_owned);
    let mut none = false;
    for l in e.children_named("listen") {
        l.allow(&["type", "address"], &[])?;
        match l.req_attr("type")? {
            "address" => match (l.attr("address"), &address) {
                (Some(a), Some(cur)) if a != cur => {
                    return Err(l.invalid_attr("address", "differs from graphics@listen"))
                }
                (Some(a), None) => address = Some(a.to_owned()),
                _ => {}
            },
            "none" => {
                if l.attr("address").is_some() {
                    return Err(l.invalid_attr("address", "listen type 'none' has no address"));
                }
                none = true;
            }
            other => {
                return Err(l.unsupported_value(Some("type"), other, &["address", "none"]));
            }
        }
    }
    let listen = if none {
        if address.is_some() {
            return Err(e.invalid_attr("listen", "given together with <listen type='none'>"));
        }
        SpiceListen::None
    } else {
        SpiceListen::Address { address }
    };
    let image_compression = match e.child("image")? {
        Some(i) => {
            i.allow(&["compression"], &[])?;
            let table: Vec<(&str, SpiceImageCompression)> = SpiceImageCompression::ALL
                .iter()
                .map(|c| (c.as_str(), *c))
                .collect();
            Some(i.req_attr_enum("compression", &table)?)
        }
        None => None,
    };
    let gl = match e.child("gl")? {
        Some(g) => {
            g.allow(&["enable"], &[])?;
            Some(g.req_attr_enum("enable", YES_NO)?)
        }
        None => None,
    };
    Ok(Graphics::Spice {
        port,
        listen,
        image_compression,
        gl,
        options: options(e)?,
        keymap: e.attr("keymap").map(str::to_owned),
    })
}

/// `<child attr=...>` mapped through `table`, when the child is there.
fn setting<T: Copy>(e: &Element, child: &str, attr: &str, table: &[(&str, T)]) -> R<Option<T>> {
    match e.child(child)? {
        Some(c) => {
            c.allow(&[attr], &[])?;
            Ok(Some(c.req_attr_enum(attr, table)?))
        }
        None => Ok(None),
    }
}

fn options(e: &Element) -> R<SpiceOptions> {
    let wan: Vec<(&str, SpiceWanCompression)> = SpiceWanCompression::ALL
        .iter()
        .map(|c| (c.as_str(), *c))
        .collect();
    let streaming: Vec<(&str, SpiceStreaming)> = SpiceStreaming::ALL
        .iter()
        .map(|c| (c.as_str(), *c))
        .collect();
    Ok(SpiceOptions {
        jpeg_compression: setting(e, "jpeg", "compression", &wan)?,
        zlib_compression: setting(e, "zlib", "compression", &wan)?,
        playback_compression: setting(e, "playback", "compression", super::ON_OFF)?,
        streaming: setting(e, "streaming", "mode", &streaming)?,
        copypaste: setting(e, "clipboard", "copypaste", YES_NO)?,
        mouse: setting(
            e,
            "mouse",
            "mode",
            &[
                ("server", SpiceMouse::Server),
                ("client", SpiceMouse::Client),
            ],
        )?,
        filetransfer: setting(e, "filetransfer", "enable", YES_NO)?,
    })
}

pub(super) fn redirdev(e: &Element) -> R<Redirdev> {
    e.allow(&["bus", "type"], &["address"])?;
    e.attr_only("bus", &["usb"])?;
    e.req_attr("bus")?;
    // tcp redirection would make QEMU connect to a host-side peer: a host resource.
    e.attr_only("type", &["spicevmc"])?;
    e.req_attr("type")?;
    Ok(Redirdev {
        address: address(e)?,
    })
}

pub(super) fn sound(e: &Element) -> R<Sound> {
    e.allow(&["model"], &["codec", "audio", "address"])?;
    let models: Vec<(&str, SoundModel)> =
        SoundModel::ALL.iter().map(|m| (m.as_str(), *m)).collect();
    let model = e.req_attr_enum("model", &models)?;
    let codecs: Vec<(&str, SoundCodec)> =
        SoundCodec::ALL.iter().map(|c| (c.as_str(), *c)).collect();
    let mut list = Vec::new();
    for c in e.children_named("codec") {
        c.allow(&["type"], &[])?;
        if !model.is_hda() {
            return Err(c.unsupported());
        }
        list.push(c.req_attr_enum("type", &codecs)?);
    }
    let audio_id = match e.child("audio")? {
        Some(a) => {
            a.allow(&["id"], &[])?;
            Some(a.req_attr_int("id")?)
        }
        None => None,
    };
    Ok(Sound {
        model,
        codecs: list,
        audio_id,
        address: address(e)?,
    })
}

/// Backends that open host sound servers or devices, with why they are refused.
const HOST_AUDIO: &str = "none, spice (pulseaudio, pipewire, alsa, oss, jack, sdl and \
    coreaudio open a desktop session's sound server or a host sound device, which the \
    unprivileged QEMU has no access to; file and dbus name host paths)";

pub(super) fn audio(e: &Element) -> R<Audio> {
    // Per-direction <input>/<output> tuning is not modelled: refused by the allow list.
    e.allow(&["id", "type"], &[])?;
    let backend = match e.req_attr("type")? {
        "none" => AudioBackend::None,
        "spice" => AudioBackend::Spice,
        other => return Err(e.unsupported_value(Some("type"), other, &[HOST_AUDIO])),
    };
    Ok(Audio {
        id: e.attr_int("id")?.unwrap_or(1),
        backend,
    })
}
