//! The local QEMU process layer: spawning, identity checks, logs.

pub mod emulator;
pub mod identity;
pub mod logs;
pub mod procinfo;
pub mod scope;
pub mod spawn;
