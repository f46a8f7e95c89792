//! SPICE pieces beside `<graphics type='spice'>`: where it listens, image compression, USB
//! redirection (`<redirdev>`), and the sound devices and audio backends SPICE guests carry.

use serde::{Deserialize, Serialize};

use super::devices::Address;

pub const MAX_REDIRDEVS: usize = 8;
pub const MAX_SOUNDS: usize = 8;
pub const MAX_AUDIOS: usize = 4;

/// `<graphics type='spice'><listen type=...>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum SpiceListen {
    /// A TCP listener; no address means localhost, like VNC.
    Address { address: Option<String> },
    /// No network listener at all (clients attach through the monitor).
    None,
}

impl Default for SpiceListen {
    fn default() -> Self {
        Self::Address { address: None }
    }
}

/// `<image compression=...>`, QEMU's `image-compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpiceImageCompression {
    AutoGlz,
    AutoLz,
    Quic,
    Glz,
    Lz,
    Off,
}

impl SpiceImageCompression {
    pub const ALL: [Self; 6] = [
        Self::AutoGlz,
        Self::AutoLz,
        Self::Quic,
        Self::Glz,
        Self::Lz,
        Self::Off,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AutoGlz => "auto_glz",
            Self::AutoLz => "auto_lz",
            Self::Quic => "quic",
            Self::Glz => "glz",
            Self::Lz => "lz",
            Self::Off => "off",
        }
    }
}

/// The SPICE session tuning libvirt writes as children of `<graphics type='spice'>`; each
/// `None` leaves QEMU's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct SpiceOptions {
    /// `<jpeg compression>`: JPEG over WAN links.
    pub jpeg_compression: Option<SpiceWanCompression>,
    /// `<zlib compression>`: zlib over GLZ on WAN links.
    pub zlib_compression: Option<SpiceWanCompression>,
    /// `<playback compression='on|off'>`: audio stream compression.
    pub playback_compression: Option<bool>,
    /// `<streaming mode>`: video stream detection.
    pub streaming: Option<SpiceStreaming>,
    /// `<clipboard copypaste='yes|no'>`: guest/client clipboard sharing through the agent.
    pub copypaste: Option<bool>,
    /// `<mouse mode>`: `client` lets the agent drive the pointer.
    pub mouse: Option<SpiceMouse>,
    /// `<filetransfer enable='yes|no'>`: drag-and-drop file transfer through the agent.
    pub filetransfer: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpiceWanCompression {
    Auto,
    Never,
    Always,
}

impl SpiceWanCompression {
    pub const ALL: [Self; 3] = [Self::Auto, Self::Never, Self::Always];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Never => "never",
            Self::Always => "always",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpiceStreaming {
    Filter,
    All,
    Off,
}

impl SpiceStreaming {
    pub const ALL: [Self; 3] = [Self::Filter, Self::All, Self::Off];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::All => "all",
            Self::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpiceMouse {
    Server,
    Client,
}

impl SpiceMouse {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

/// `<redirdev bus='usb' type='spicevmc'>`: a USB port the SPICE client forwards a device to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Redirdev {
    pub address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Sound {
    pub model: SoundModel,
    /// HDA codecs (`ich6`/`ich9` only); none means one duplex codec, as libvirt does.
    #[serde(default)]
    pub codecs: Vec<SoundCodec>,
    /// `<audio id=...>`: the backend this device plays to; `None` means the first one.
    pub audio_id: Option<u32>,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoundModel {
    Ich9,
    Ich6,
    Ac97,
    Es1370,
    Sb16,
    Usb,
}

impl SoundModel {
    pub const ALL: [Self; 6] = [
        Self::Ich9,
        Self::Ich6,
        Self::Ac97,
        Self::Es1370,
        Self::Sb16,
        Self::Usb,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ich9 => "ich9",
            Self::Ich6 => "ich6",
            Self::Ac97 => "ac97",
            Self::Es1370 => "es1370",
            Self::Sb16 => "sb16",
            Self::Usb => "usb",
        }
    }
    /// Intel HDA controllers, the only ones with codecs.
    pub const fn is_hda(self) -> bool {
        matches!(self, Self::Ich9 | Self::Ich6)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoundCodec {
    Duplex,
    Micro,
    Output,
}

impl SoundCodec {
    pub const ALL: [Self; 3] = [Self::Duplex, Self::Micro, Self::Output];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Duplex => "duplex",
            Self::Micro => "micro",
            Self::Output => "output",
        }
    }
}

/// `<audio id=... type=...>` (libvirt >= 7.2): a host-side audio backend (`-audiodev`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Audio {
    pub id: u32,
    pub backend: AudioBackend,
}

/// Only backends that touch nothing on the host: sound servers and sound cards belong to a
/// desktop session or to root, not to an unprivileged QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioBackend {
    /// Audio is emulated and discarded.
    None,
    /// Audio travels over the SPICE connection to the client.
    Spice,
}

impl AudioBackend {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Spice => "spice",
        }
    }
}
