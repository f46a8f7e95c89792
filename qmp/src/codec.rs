//! Splits the QMP byte stream into lines, with a bound on line length.
//!
//! QEMU ends every JSON message with `\r\n`. A peer that never sends a newline must not make us
//! buffer without limit, so a line longer than `max_line` is an error, not an allocation.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// Default bound: the largest legitimate reply, `query-qmp-schema`, is ~200 KiB on QEMU 7.2.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("a line exceeds {max} bytes")]
    TooLong { max: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A `Decoder` yielding one QMP line (without its line ending); empty lines are skipped.
#[derive(Debug)]
pub struct LineCodec {
    max_line: usize,
    /// Bytes at the front of the buffer already searched for a newline.
    scanned: usize,
}

impl LineCodec {
    pub fn new(max_line: usize) -> Self {
        LineCodec {
            max_line,
            scanned: 0,
        }
    }
}

impl Decoder for LineCodec {
    type Item = BytesMut;
    type Error = LineError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, LineError> {
        loop {
            let newline = buf
                .get(self.scanned..)
                .and_then(memchr_newline)
                .map(|i| i + self.scanned);
            let Some(end) = newline else {
                if buf.len() > self.max_line {
                    return Err(LineError::TooLong { max: self.max_line });
                }
                self.scanned = buf.len();
                return Ok(None);
            };
            self.scanned = 0;
            if end > self.max_line {
                return Err(LineError::TooLong { max: self.max_line });
            }
            let mut line = buf.split_to(end);
            buf.advance(1);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(line));
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, buf: &mut BytesMut) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = codec.decode(buf).unwrap() {
            out.push(String::from_utf8(line.to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn splits_crlf_and_lf_lines_and_skips_blank_ones() {
        let mut codec = LineCodec::new(64);
        let mut buf = BytesMut::from(&b"{\"a\":1}\r\n\r\n{\"b\":2}\n{\"c\""[..]);
        assert_eq!(decode_all(&mut codec, &mut buf), ["{\"a\":1}", "{\"b\":2}"]);
        buf.extend_from_slice(b":3}\r\n");
        assert_eq!(decode_all(&mut codec, &mut buf), ["{\"c\":3}"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_line_over_the_bound_is_an_error_even_without_a_newline() {
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(LineError::TooLong { max: 8 })
        ));
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"0123456789\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(LineError::TooLong { max: 8 })
        ));
    }

    #[test]
    fn a_line_of_exactly_the_bound_passes() {
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"01234567\n"[..]);
        assert_eq!(decode_all(&mut codec, &mut buf), ["01234567"]);
    }
}
