//! One connection to a guest's qemu-ga: resync with `guest-sync-delimited`, then one command
//! at a time. Everything the agent sends is the guest's, so hostile: replies are bounded in
//! size and parsed, never trusted.

use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// The largest reply line taken from a guest (interface lists of big guests fit easily).
const MAX_REPLY: usize = 1 << 20;
/// qemu-ga resets its parser on this byte and prefixes the guest-sync-delimited reply with it.
const DELIMITER: u8 = 0xFF;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
    /// The agent's own error reply: its class and description.
    #[error("{class}: {desc}")]
    Agent { class: String, desc: String },
}

pub struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// False until a sync succeeded, and again while a command is in flight: a call that was
    /// abandoned (deadline) leaves its reply behind, so the next call resyncs first.
    synced: bool,
}

impl Session {
    pub async fn connect(socket: &Path) -> Result<Session, SessionError> {
        let (r, w) = UnixStream::connect(socket).await?.into_split();
        Ok(Session {
            reader: BufReader::new(r),
            writer: w,
            synced: false,
        })
    }

    /// Runs `command`; with `reply == false` (guest-shutdown and the like, which answer
    /// nothing on success) returns `Null` once it is sent.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<&Value>,
        reply: bool,
    ) -> Result<Value, SessionError> {
        if !self.synced {
            self.sync().await?;
        }
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a.clone();
        }
        self.synced = false;
        self.send(&msg).await?;
        if !reply {
            return Ok(Value::Null);
        }
        let answer = self.read_message().await?;
        self.synced = true;
        parse_reply(answer)
    }

    /// `guest-sync-delimited` with a fresh random id: the 0xFF we send drops any half-parsed
    /// input on the guest side; every reply before ours (stale ones from abandoned calls) is
    /// skipped.
    async fn sync(&mut self) -> Result<(), SessionError> {
        let id = random_id();
        self.writer.write_all(&[DELIMITER]).await?;
        self.send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}))
            .await?;
        loop {
            let msg = self.read_message().await?;
            if msg.get("return").and_then(Value::as_u64) == Some(id) {
                self.synced = true;
                return Ok(());
            }
        }
    }

    async fn send(&mut self, msg: &Value) -> Result<(), SessionError> {
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        Ok(())
    }

    /// The next JSON object from the agent (delimiter bytes and blank lines skipped).
    async fn read_message(&mut self) -> Result<Value, SessionError> {
        loop {
            let line = read_bounded_line(&mut self.reader, MAX_REPLY).await?;
            let text: &[u8] = trim(&line);
            if text.is_empty() {
                continue;
            }
            return serde_json::from_slice(text).map_err(|e| {
                SessionError::Protocol(format!(
                    "not a JSON reply ({e}): {:?}",
                    String::from_utf8_lossy(&text[..text.len().min(120)])
                ))
            });
        }
    }
}

fn parse_reply(msg: Value) -> Result<Value, SessionError> {
    if let Some(ret) = msg.get("return") {
        return Ok(ret.clone());
    }
    if let Some(err) = msg.get("error") {
        let field = |k: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(500)
                .collect::<String>()
        };
        return Err(SessionError::Agent {
            class: field("class"),
            desc: field("desc"),
        });
    }
    Err(SessionError::Protocol(
        "a reply with neither 'return' nor 'error'".into(),
    ))
}

fn trim(line: &[u8]) -> &[u8] {
    let is_junk = |b: &u8| *b == DELIMITER || b.is_ascii_whitespace();
    let start = line.iter().position(|b| !is_junk(b)).unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !is_junk(b))
        .map_or(start, |e| e + 1);
    &line[start..end.max(start)]
}

/// One line (up to and without `\n`), refusing more than `limit` bytes.
async fn read_bounded_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Vec<u8>, SessionError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(SessionError::Protocol(
                "the agent channel closed".to_owned(),
            ));
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() > limit {
            return Err(SessionError::Protocol(format!(
                "a reply longer than {limit} bytes"
            )));
        }
        line.extend_from_slice(chunk);
        let used = done.unwrap_or(buf.len());
        r.consume(used);
        if done.is_some() {
            return Ok(line);
        }
    }
}

/// A random id in JSON's exact-integer range (the std hasher's keys are random per process
/// and per `RandomState`).
fn random_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() & ((1 << 53) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_delimiters_trimmed() {
        let data: &[u8] = b"\xff{\"return\": 5}\nxxxxxxxxxx\n";
        let mut r = BufReader::new(data);
        let l = read_bounded_line(&mut r, 64).await.unwrap();
        assert_eq!(trim(&l), b"{\"return\": 5}");
        assert!(read_bounded_line(&mut r, 4).await.is_err());
        assert!(matches!(
            parse_reply(json!({"error": {"class": "GenericError", "desc": "no"}})),
            Err(SessionError::Agent { .. })
        ));
        assert_eq!(parse_reply(json!({"return": {}})).unwrap(), json!({}));
    }
}
