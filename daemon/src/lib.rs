//! The NovaCron host daemon. Empty until the daemon-core issue: it will compose `novacron-qmp`
//! and `novacron-domain` into the service behind the HTTP and D-Bus faces (see ARCHITECTURE.md).
