//! `-spice`, `-audiodev`, sound devices and USB redirection, spelled as libvirt does.

use super::argv::Args;
use super::{ArgvError, LaunchContext};
use crate::model::*;

/// The backend a sound device plays to: its `<audio id>`, else the first backend, else the
/// one libvirt adds itself (`spice` with SPICE graphics, otherwise `none`) as `audio1`.
fn audio_id(dv: &Devices, s: &Sound) -> u32 {
    s.audio_id
        .or_else(|| dv.audios.first().map(|a| a.id))
        .unwrap_or(1)
}

pub(super) fn audiodevs(a: &mut Args, dv: &Devices) {
    for au in &dv.audios {
        a.push(
            "-audiodev",
            format!("{},id=audio{}", au.backend.as_str(), au.id),
        );
    }
    if dv.audios.is_empty() && !dv.sounds.is_empty() {
        let driver = if matches!(dv.graphics, Some(Graphics::Spice { .. })) {
            AudioBackend::Spice
        } else {
            AudioBackend::None
        };
        a.push("-audiodev", format!("{},id=audio1", driver.as_str()));
    }
}

pub(super) fn graphics(a: &mut Args, dv: &Devices, ctx: &LaunchContext) -> Result<(), ArgvError> {
    let Some(Graphics::Spice {
        port,
        listen,
        image_compression,
        gl,
        options: so,
        ..
    }) = &dv.graphics
    else {
        return Ok(());
    };
    let mut o = Vec::new();
    if let SpiceListen::Address { address } = listen {
        let port = match port {
            VncPort::Fixed(p) => *p,
            VncPort::Auto | VncPort::Assigned(_) => {
                ctx.spice_port.ok_or(ArgvError::MissingSpicePort)?
            }
        };
        o.push(format!("port={port}"));
        // Localhost unless the definition names an address, as for VNC.
        o.push(format!(
            "addr={}",
            address.as_deref().unwrap_or("127.0.0.1")
        ));
    }
    // No password is modelled: the port is as open as a VNC port without one.
    o.push("disable-ticketing=on".to_owned());
    if let Some(c) = image_compression {
        o.push(format!("image-compression={}", c.as_str()));
    }
    if let Some(c) = so.jpeg_compression {
        o.push(format!("jpeg-wan-compression={}", c.as_str()));
    }
    if let Some(c) = so.zlib_compression {
        o.push(format!("zlib-glz-wan-compression={}", c.as_str()));
    }
    if let Some(c) = so.playback_compression {
        o.push(format!("playback-compression={}", super::argv::on_off(c)));
    }
    if let Some(m) = so.streaming {
        o.push(format!("streaming-video={}", m.as_str()));
    }
    if let Some(m) = so.mouse {
        o.push(format!(
            "agent-mouse={}",
            super::argv::on_off(m == SpiceMouse::Client)
        ));
    }
    // Both are on in QEMU unless disabled; libvirt only ever says "disable".
    if so.copypaste == Some(false) {
        o.push("disable-copy-paste=on".to_owned());
    }
    if so.filetransfer == Some(false) {
        o.push("disable-agent-file-xfer=on".to_owned());
    }
    // Validation refuses gl=on; gl=off is QEMU's default, which libvirt leaves unsaid too.
    debug_assert!(*gl != Some(true));
    o.push("seamless-migration=on".to_owned());
    a.push("-spice", o.join(","));
    Ok(())
}

pub(super) fn sounds(a: &mut Args, dv: &Devices, pci: fn(&Option<Address>) -> String) {
    for (i, s) in dv.sounds.iter().enumerate() {
        let id = format!("sound{i}");
        let audio = format!("audio{}", audio_id(dv, s));
        let dev = match s.model {
            SoundModel::Ich9 => format!("ich9-intel-hda,id={id}{}", pci(&s.address)),
            SoundModel::Ich6 => format!("intel-hda,id={id}{}", pci(&s.address)),
            SoundModel::Ac97 => format!("AC97,id={id},audiodev={audio}{}", pci(&s.address)),
            SoundModel::Es1370 => format!("ES1370,id={id},audiodev={audio}{}", pci(&s.address)),
            SoundModel::Sb16 => format!("sb16,id={id},audiodev={audio}"),
            SoundModel::Usb => {
                let port = match s.address {
                    Some(Address::Usb { port, .. }) => format!(",port={port}"),
                    _ => String::new(),
                };
                format!("usb-audio,id={id},audiodev={audio},bus=usb.0{port}")
            }
        };
        a.push("-device", dev);
        if s.model.is_hda() {
            let codecs: &[SoundCodec] = if s.codecs.is_empty() {
                &[SoundCodec::Duplex]
            } else {
                &s.codecs
            };
            for (cad, c) in codecs.iter().enumerate() {
                a.push(
                    "-device",
                    format!(
                        "hda-{},id={id}-codec{cad},bus={id}.0,cad={cad},audiodev={audio}",
                        c.as_str()
                    ),
                );
            }
        }
    }
}

pub(super) fn redirdevs(a: &mut Args, dv: &Devices) {
    for (i, r) in dv.redirdevs.iter().enumerate() {
        a.push(
            "-chardev",
            format!("spicevmc,id=charredir{i},name=usbredir"),
        );
        let port = match r.address {
            Some(Address::Usb { port, .. }) => format!(",port={port}"),
            _ => String::new(),
        };
        a.push(
            "-device",
            format!("usb-redir,chardev=charredir{i},id=redir{i},bus=usb.0{port}"),
        );
    }
}
