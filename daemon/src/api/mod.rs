//! The daemon's faces. They translate requests into service calls and service results into
//! responses; no behaviour lives here.

pub mod dbus;
pub mod http;
