//! How long a command may wait for its reply, by command.

use std::collections::HashMap;
use std::time::Duration;

/// The timeout table. Queries answer from QEMU's main loop at once, so a slow one means QEMU is
/// hung; hot-plug, `quit` and migration commands legitimately take longer.
#[derive(Debug, Clone)]
pub struct Timeouts {
    query: Duration,
    action: Duration,
    long: Duration,
    overrides: HashMap<String, Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            query: Duration::from_secs(5),
            action: Duration::from_secs(10),
            long: Duration::from_secs(60),
            overrides: HashMap::new(),
        }
    }
}

/// Commands that may take long: hot-plug waits for the guest, `quit` flushes disks, migration
/// commands and HMP can wait behind the main loop while it is busy migrating.
const LONG: &[&str] = &[
    "device_add",
    "device_del",
    "quit",
    "migrate",
    "migrate-incoming",
    "migrate_cancel",
    "migrate-set-capabilities",
    "migrate-set-parameters",
    "migrate-start-postcopy",
    "query-migrate",
    "human-monitor-command",
    "blockdev-add",
    "blockdev-del",
];

impl Timeouts {
    /// The timeout for `command`: an override if one was set, else by class.
    pub fn for_command(&self, command: &str) -> Duration {
        if let Some(d) = self.overrides.get(command) {
            return *d;
        }
        if LONG.contains(&command) {
            self.long
        } else if command.starts_with("query-") {
            self.query
        } else {
            self.action
        }
    }

    pub fn with_query(mut self, d: Duration) -> Self {
        self.query = d;
        self
    }

    pub fn with_action(mut self, d: Duration) -> Self {
        self.action = d;
        self
    }

    pub fn with_long(mut self, d: Duration) -> Self {
        self.long = d;
        self
    }

    /// Sets the timeout of one command, whatever its class.
    pub fn with_command(mut self, command: &str, d: Duration) -> Self {
        self.overrides.insert(command.to_owned(), d);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_overrides() {
        let t = Timeouts::default()
            .with_query(Duration::from_secs(1))
            .with_command("query-block", Duration::from_secs(9));
        assert_eq!(t.for_command("query-status"), Duration::from_secs(1));
        assert_eq!(t.for_command("query-block"), Duration::from_secs(9));
        assert_eq!(t.for_command("query-migrate"), Duration::from_secs(60));
        assert_eq!(t.for_command("device_add"), Duration::from_secs(60));
        assert_eq!(t.for_command("cont"), Duration::from_secs(10));
    }
}
