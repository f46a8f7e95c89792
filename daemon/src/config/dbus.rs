//! `[dbus]` in the configuration: on which bus the D-Bus face is served. Owned here, below the
//! faces, so the configuration never imports a face.

/// Which bus the face is served on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    /// The system bus when the daemon runs as root, else none. A bus that cannot be reached
    /// (or a name that cannot be owned) is logged and the daemon runs without D-Bus.
    #[default]
    Auto,
    /// The system bus; failing to serve there stops the daemon.
    System,
    /// The user's session bus; failing to serve there stops the daemon.
    Session,
    /// No D-Bus face.
    None,
}

/// `[dbus]` in the configuration.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbusConfig {
    pub bus: BusKind,
    /// Connect to this bus address (e.g. `unix:path=/run/x/bus`) instead of the system or
    /// session bus; like an explicit `bus`, failing to serve there stops the daemon. Ignored
    /// with `bus = "none"`.
    pub address: Option<String>,
}
