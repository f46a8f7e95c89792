//! The byte streams of upload and download, sparse-aware both ways: zero blocks arriving are
//! punched as holes instead of written (the file keeps its size), holes are found with
//! `SEEK_DATA`/`SEEK_HOLE` on the way out and sent as zeros without reading the disk.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use nix::fcntl::FallocateFlags;
use nix::unistd::Whence;

/// Pieces a stream is cut into: zero detection, holes and reads work per block.
pub const BLOCK: usize = 64 << 10;
/// One download chunk (the most a hole yields at once, and the largest read).
pub const CHUNK: usize = 1 << 20;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

pub fn is_zero(b: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY-free: align_to on u8 -> u64 is sound for any bytes.
        #[allow(unsafe_code)]
        // SAFETY: every bit pattern is a valid u64.
        unsafe {
            b.align_to::<u64>()
        }
    };
    head.iter().all(|x| *x == 0) && words.iter().all(|x| *x == 0) && tail.iter().all(|x| *x == 0)
}

/// Writes a stream into a volume file from an offset.
pub struct Writer {
    file: File,
    at: u64,
    /// Whether the file system punches holes (else zero blocks are written).
    punch: bool,
}

impl Writer {
    pub fn new(file: File, offset: u64) -> Writer {
        Writer {
            file,
            at: offset,
            punch: true,
        }
    }

    pub fn position(&self) -> u64 {
        self.at
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(BLOCK) {
            let len = piece.len() as u64;
            if self.punch && is_zero(piece) {
                match nix::fcntl::fallocate(
                    self.file.as_fd(),
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    self.at as i64,
                    len as i64,
                ) {
                    Ok(()) => {
                        self.at += len;
                        continue;
                    }
                    Err(nix::errno::Errno::EOPNOTSUPP) => self.punch = false,
                    Err(e) => return Err(e.into()),
                }
            }
            self.file.write_all_at(piece, self.at)?;
            self.at += len;
        }
        Ok(())
    }

    /// Extends the file over trailing holes (a punched hole keeps the size) and syncs it;
    /// the end offset.
    pub fn finish(self) -> io::Result<u64> {
        if self.file.metadata()?.len() < self.at {
            self.file.set_len(self.at)?;
        }
        self.file.sync_all()?;
        Ok(self.at)
    }
}

/// Reads a volume file from `at` to `end`, holes as zeros without touching the disk.
pub struct Reader {
    file: File,
    at: u64,
    end: u64,
}

impl Reader {
    pub fn new(file: File, at: u64, end: u64) -> Reader {
        Reader { file, at, end }
    }

    /// The next chunk, `None` at the end.
    pub fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.at >= self.end {
            return Ok(None);
        }
        let limit = (self.end - self.at).min(CHUNK as u64);
        let fd = self.file.as_fd();
        let data = match nix::unistd::lseek(fd, self.at as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            // No data after `at`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => self.end,
            Err(e) => return Err(e.into()),
        };
        if data > self.at {
            let n = (data - self.at).min(limit) as usize;
            self.at += n as u64;
            return Ok(Some(Bytes::from_static(&ZEROS[..n])));
        }
        let hole = match nix::unistd::lseek(fd, self.at as i64, Whence::SeekHole) {
            Ok(h) => h as u64,
            Err(_) => self.end,
        };
        let n = (hole.max(self.at + 1) - self.at).min(limit) as usize;
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.file.read_at(&mut buf[got..], self.at + got as u64) {
                // The file shrank under us: zeros (QEMU's view of a short raw file).
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.at += n as u64;
        Ok(Some(Bytes::from(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zeros_become_holes_and_come_back_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        let f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let mut data = vec![0u8; 8 << 20];
        data[3 << 20..(3 << 20) + 5].copy_from_slice(b"hello");
        let mut w = Writer::new(f.try_clone().unwrap(), 0);
        for piece in data.chunks(100_000) {
            w.write(piece).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 8 << 20);
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), 8 << 20);
        assert!(
            meta.blocks() * 512 <= 256 << 10,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        let mut r = Reader::new(f, 0, 8 << 20);
        let mut back = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            back.extend_from_slice(&c);
        }
        assert_eq!(back, data);
    }
}
