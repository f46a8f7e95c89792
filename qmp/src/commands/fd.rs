//! Commands that receive a file descriptor over SCM_RIGHTS. Send them with
//! [`Client::execute_with_fds`](crate::Client::execute_with_fds), or the helpers
//! [`Client::send_fd`](crate::Client::send_fd) and [`Client::add_fd`](crate::Client::add_fd).

use serde::{Deserialize, Serialize};

use super::{Command, Empty};

/// `getfd`: names the passed descriptor for later use (e.g. `migrate fd:NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GetFd {
    pub fdname: String,
}

impl Command for GetFd {
    const NAME: &'static str = "getfd";
    type Output = Empty;
}

/// `add-fd`: adds the passed descriptor to an fd set (`/dev/fdset/N` paths).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AddFd {
    #[serde(rename = "fdset-id", skip_serializing_if = "Option::is_none")]
    pub fdset_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
}

impl Command for AddFd {
    const NAME: &'static str = "add-fd";
    type Output = AddFdInfo;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct AddFdInfo {
    #[serde(rename = "fdset-id")]
    pub fdset_id: u64,
    pub fd: i64,
}
