//! A Server-Sent Events parser (the WHATWG `text/event-stream` format), incremental and
//! bounded: bytes go in as they arrive, complete frames come out. Lines end with LF, CRLF or
//! CR, possibly split across chunks; `:` lines are comments (keep-alives); a frame ends at a
//! blank line and is only dispatched when it carried data.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    /// The last `id:` seen in this frame, if any.
    pub id: Option<String>,
    /// The `event:` type; `None` means the default type `message`.
    pub event: Option<String>,
    /// All `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("event stream line over the {0} byte limit")]
    LineTooLong(usize),
    #[error("event over the {0} byte limit")]
    FrameTooLarge(usize),
    #[error("event stream is not UTF-8")]
    NotUtf8,
}

#[derive(Debug)]
pub struct SseParser {
    max_line: usize,
    max_frame: usize,
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF starting the next chunk belongs to that CR.
    after_cr: bool,
    frame: SseFrame,
    has_data: bool,
}

impl SseParser {
    /// `max_line` bounds one line, `max_frame` the data of one event.
    pub fn new(max_line: usize, max_frame: usize) -> SseParser {
        SseParser {
            max_line,
            max_frame,
            line: Vec::new(),
            after_cr: false,
            frame: SseFrame::default(),
            has_data: false,
        }
    }

    /// Feeds a chunk and returns the frames it completed. After an error the stream is
    /// unusable (the peer is not speaking the format, or is hostile).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseFrame>, SseError> {
        let mut out = Vec::new();
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(frame) = self.line_done(&line)? {
                        out.push(frame);
                    }
                }
                _ => {
                    if self.line.len() >= self.max_line {
                        return Err(SseError::LineTooLong(self.max_line));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseFrame>, SseError> {
        if line.is_empty() {
            let frame = std::mem::take(&mut self.frame);
            return Ok(std::mem::take(&mut self.has_data).then_some(frame));
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                let sep = usize::from(self.has_data);
                if self.frame.data.len() + sep + value.len() > self.max_frame {
                    return Err(SseError::FrameTooLarge(self.max_frame));
                }
                if self.has_data {
                    self.frame.data.push('\n');
                }
                self.frame.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.frame.event = Some(value.to_owned()),
            // Per the spec an id with NUL is ignored.
            "id" if !value.contains('\0') => self.frame.id = Some(value.to_owned()),
            // `retry` and unknown fields: nothing for us to do.
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseFrame> {
        let mut p = SseParser::new(1024, 4096);
        chunks.iter().flat_map(|c| p.push(c).unwrap()).collect()
    }

    fn frame(id: &str, event: &str, data: &str) -> SseFrame {
        SseFrame {
            id: Some(id.into()),
            event: Some(event.into()),
            data: data.into(),
        }
    }

    #[test]
    fn one_frame() {
        let f = parse_all(&[b"id: 3\nevent: state_changed\ndata: {\"seq\":3}\n\n"]);
        assert_eq!(f, vec![frame("3", "state_changed", "{\"seq\":3}")]);
    }

    #[test]
    fn frames_split_anywhere() {
        let text = b"id: 1\nevent: a\ndata: x\n\nid: 2\r\nevent: b\r\ndata: y\r\n\r\n";
        let whole = parse_all(&[text]);
        assert_eq!(whole, vec![frame("1", "a", "x"), frame("2", "b", "y")]);
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(parse_all(&[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    #[test]
    fn lone_cr_and_crlf_split_across_chunks() {
        assert_eq!(
            parse_all(&[b"data: a\r", b"\ndata: b\r\r"]),
            vec![SseFrame {
                data: "a\nb".into(),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn multi_line_data_and_comments() {
        let f = parse_all(&[b": keep-alive\n\n:another\ndata:one\ndata: two\ndata\n\n"]);
        assert_eq!(
            f,
            vec![SseFrame {
                id: None,
                event: None,
                data: "one\ntwo\n".into()
            }]
        );
    }

    #[test]
    fn frame_without_data_is_not_dispatched() {
        assert!(parse_all(&[b"id: 9\nevent: x\n\n", b"retry: 100\n\n"]).is_empty());
        // Fields do not leak into the next frame.
        assert_eq!(
            parse_all(&[b"event: x\n\ndata: d\n\n"]),
            vec![SseFrame {
                data: "d".into(),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn bounds() {
        let mut p = SseParser::new(16, 20);
        assert_eq!(
            p.push(b"data: 0123456789abcdef"),
            Err(SseError::LineTooLong(16))
        );
        let mut p = SseParser::new(16, 20);
        assert!(p.push(b"data: 0123456789\n").is_ok());
        assert_eq!(
            p.push(b"data: 0123456789\n"),
            Err(SseError::FrameTooLarge(20))
        );
        // A long comment is still a long line: the bound protects memory, not semantics.
        let mut p = SseParser::new(16, 20);
        match p.push(&[b':'; 17]) {
            Err(e) => assert_eq!(format!("{e:?}"), r#"LineTooLong(16)"#),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn rejects_invalid_utf8() {
        let mut p = SseParser::new(16, 20);
        assert_eq!(p.push(b"data: \xff\n"), Err(SseError::NotUtf8));
    }
}
