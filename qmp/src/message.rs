//! Parsing what the server sends: the greeting, command replies and events.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::QmpError;
use crate::event::{Event, Timestamp};
use crate::qapi::{ErrorClass, QmpCapability};

/// The first message QEMU sends on a new QMP connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Greeting {
    pub version: VersionInfo,
    #[serde(default)]
    pub capabilities: Vec<QmpCapability>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionInfo {
    pub qemu: QemuVersion,
    #[serde(default)]
    pub package: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// One parsed line from the server.
#[derive(Debug)]
pub enum ServerMessage {
    Greeting(Greeting),
    /// A reply to the command with this id; the payload stays raw until the caller decodes it
    /// into the command's own output type, so it is parsed once, in the caller's task.
    Reply {
        id: Option<u64>,
        result: Result<Box<RawValue>, QmpError>,
    },
    Event(Event),
    /// A JSON object that is none of the above (kept for logging; the client ignores it).
    Unknown,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

#[derive(Deserialize)]
struct WireMessage {
    #[serde(rename = "QMP")]
    greeting: Option<Greeting>,
    #[serde(rename = "return")]
    ret: Option<Box<RawValue>>,
    error: Option<WireError>,
    event: Option<String>,
    data: Option<Value>,
    timestamp: Option<Timestamp>,
    id: Option<Value>,
}

#[derive(Deserialize)]
struct WireError {
    class: ErrorClass,
    #[serde(default)]
    desc: String,
}

/// Parses one line. Fails only when the line is not a JSON object of a plausible shape.
pub fn parse_line(line: &[u8]) -> Result<ServerMessage, ParseError> {
    let msg: WireMessage = serde_json::from_slice(line).map_err(|e| {
        ParseError(format!(
            "not a QMP JSON object ({e}): {}",
            preview(line, 120)
        ))
    })?;
    if let Some(greeting) = msg.greeting {
        return Ok(ServerMessage::Greeting(greeting));
    }
    if let Some(name) = msg.event {
        return Ok(ServerMessage::Event(Event::new(
            name,
            msg.data.unwrap_or(Value::Null),
            msg.timestamp.unwrap_or_default(),
        )));
    }
    // Our ids are always unsigned integers; anything else cannot belong to a pending command.
    let id = msg.id.as_ref().and_then(Value::as_u64);
    if let Some(err) = msg.error {
        return Ok(ServerMessage::Reply {
            id,
            result: Err(QmpError {
                class: err.class,
                desc: err.desc,
            }),
        });
    }
    if let Some(ret) = msg.ret {
        return Ok(ServerMessage::Reply {
            id,
            result: Ok(ret),
        });
    }
    Ok(ServerMessage::Unknown)
}

/// A short, printable excerpt of untrusted bytes for error messages and logs.
pub(crate) fn preview(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let mut s: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if bytes.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn parses_a_real_greeting() {
        let line = br#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;
        let ServerMessage::Greeting(g) = parse_line(line).unwrap() else {
            panic!("not a greeting")
        };
        assert_eq!(g.version.qemu.to_string(), "7.2.22");
        assert_eq!(g.capabilities, vec![QmpCapability::Oob]);
    }

    #[test]
    fn parses_replies_with_and_without_ids() {
        match parse_line(br#"{"return": {"status": "running"}, "id": 7}"#).unwrap() {
            ServerMessage::Reply { id, result } => {
                assert_eq!(id, Some(7));
                assert_eq!(result.unwrap().get(), r#"{"status": "running"}"#);
            }
            other => panic!("{other:?}"),
        }
        match parse_line(br#"{"error": {"class": "GenericError", "desc": "JSON parse error"}}"#)
            .unwrap()
        {
            ServerMessage::Reply { id: None, result } => {
                assert_eq!(result.unwrap_err().class, ErrorClass::GenericError)
            }
            other => panic!("{other:?}"),
        }
        // An id we could never have sent does not match a pending command.
        assert!(matches!(
            parse_line(br#"{"return": {}, "id": "x"}"#).unwrap(),
            ServerMessage::Reply { id: None, .. }
        ));
    }

    #[test]
    fn parses_events() {
        let line = br#"{"timestamp": {"seconds": 1795448608, "microseconds": 729015}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#;
        let ServerMessage::Event(ev) = parse_line(line).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(ev.name(), "SHUTDOWN");
        assert_eq!(ev.timestamp.seconds, 1795448608);
        assert!(matches!(ev.kind, EventKind::Shutdown { guest: false, .. }));
    }

    #[test]
    fn rejects_non_objects_and_garbage() {
        for line in [
            &b"[1,2]"[..],
            b"42",
            b"{\"return\":",
            b"\xff\xfe",
            b"nonsense",
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.0.starts_with("not a QMP JSON object ("), "{line:?}: {e}");
        }
    }

    #[test]
    fn preview_is_bounded_and_printable() {
        let p = preview(b"ab\x1bc\ndef", 5);
        assert_eq!(p, "ab?c?…");
    }
}
