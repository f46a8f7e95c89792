//! The recent output of a console: the newest `cap` bytes, older ones dropped.

use std::collections::VecDeque;

pub(super) struct Ring {
    bytes: VecDeque<u8>,
    cap: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            bytes: VecDeque::new(),
            cap,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.cap)..];
        let over = (self.bytes.len() + data.len()).saturating_sub(self.cap);
        self.bytes.drain(..over);
        self.bytes.extend(data);
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let (a, b) = self.bytes.as_slices();
        [a, b].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes() {
        let mut r = Ring::new(8);
        r.push(b"abc");
        r.push(b"defgh");
        assert_eq!(r.snapshot(), b"abcdefgh");
        r.push(b"ij");
        assert_eq!(r.snapshot(), b"cdefghij");
        r.push(b"0123456789");
        assert_eq!(r.snapshot(), b"23456789");
    }
}
