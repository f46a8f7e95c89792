//! Writer for `<graphics type='spice'>`, `<redirdev>`, `<sound>` and `<audio>`.

use super::{on_off, s, yes_no, W};
use crate::model::*;

pub(super) fn graphics(
    w: &mut W,
    port: &VncPort,
    listen: &SpiceListen,
    image_compression: Option<SpiceImageCompression>,
    gl: Option<bool>,
    o: &SpiceOptions,
    keymap: &Option<String>,
) {
    let (p, auto) = match port {
        VncPort::Auto => ("-1".to_owned(), "yes"),
        VncPort::Fixed(p) => (p.to_string(), "no"),
        // The live XML: the port allocated at start (libvirt's form).
        VncPort::Assigned(p) => (p.to_string(), "yes"),
    };
    let address = match listen {
        SpiceListen::Address { address } => address.clone(),
        SpiceListen::None => None,
    };
    let attrs = [
        ("type", s("spice")),
        ("port", s(p)),
        ("autoport", s(auto)),
        ("listen", address.clone()),
        ("keymap", keymap.clone()),
    ];
    let has_children = address.is_some()
        || *listen == SpiceListen::None
        || image_compression.is_some()
        || gl.is_some()
        || *o != SpiceOptions::default();
    if !has_children {
        w.empty("graphics", &attrs);
        return;
    }
    w.open("graphics", &attrs);
    match (listen, &address) {
        (SpiceListen::None, _) => w.empty("listen", &[("type", s("none"))]),
        (_, Some(a)) => w.empty("listen", &[("type", s("address")), ("address", s(a))]),
        _ => {}
    }
    if let Some(c) = image_compression {
        w.empty("image", &[("compression", s(c.as_str()))]);
    }
    let one = |w: &mut W, child: &str, attr: &str, v: Option<String>| {
        if v.is_some() {
            w.empty(child, &[(attr, v)]);
        }
    };
    let text = |v: Option<&'static str>| v.map(str::to_owned);
    one(
        w,
        "jpeg",
        "compression",
        text(o.jpeg_compression.map(|c| c.as_str())),
    );
    one(
        w,
        "zlib",
        "compression",
        text(o.zlib_compression.map(|c| c.as_str())),
    );
    one(
        w,
        "playback",
        "compression",
        o.playback_compression.and_then(on_off),
    );
    one(
        w,
        "streaming",
        "mode",
        text(o.streaming.map(|c| c.as_str())),
    );
    one(w, "clipboard", "copypaste", o.copypaste.and_then(yes_no));
    one(w, "mouse", "mode", text(o.mouse.map(|c| c.as_str())));
    one(w, "filetransfer", "enable", o.filetransfer.and_then(yes_no));
    if let Some(g) = gl {
        w.empty("gl", &[("enable", yes_no(g))]);
    }
    w.close("graphics");
}

pub(super) fn sounds(w: &mut W, d: &Devices) {
    for snd in &d.sounds {
        let attrs = [("model", s(snd.model.as_str()))];
        if snd.codecs.is_empty() && snd.audio_id.is_none() && snd.address.is_none() {
            w.empty("sound", &attrs);
            continue;
        }
        w.open("sound", &attrs);
        for c in &snd.codecs {
            w.empty("codec", &[("type", s(c.as_str()))]);
        }
        if let Some(id) = snd.audio_id {
            w.empty("audio", &[("id", s(id))]);
        }
        super::address(w, &snd.address);
        w.close("sound");
    }
    for a in &d.audios {
        w.empty("audio", &[("id", s(a.id)), ("type", s(a.backend.as_str()))]);
    }
}

pub(super) fn redirdevs(w: &mut W, d: &Devices) {
    for r in &d.redirdevs {
        let attrs = [("bus", s("usb")), ("type", s("spicevmc"))];
        if r.address.is_none() {
            w.empty("redirdev", &attrs);
        } else {
            w.open("redirdev", &attrs);
            super::address(w, &r.address);
            w.close("redirdev");
        }
    }
}
