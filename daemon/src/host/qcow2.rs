//! The two names in a qcow2 header that make QEMU open another file by name: the backing file
//! and (qcow2 v3) the external data file. Read from the header directly: `qemu-img info` costs
//! a process per start.

use std::io::{self, Read, Seek, SeekFrom};

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// QEMU refuses longer backing file names (`BDRV_MAX... 1023`).
const MAX_NAME: u32 = 1023;
/// Header extension carrying the external data file name (`"DATA"`).
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Header extension carrying the backing file's format.
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
const EXT_END: u32 = 0;
/// Incompatible feature bit 2: the image's data lives in an external data file.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// Names a qcow2 image makes QEMU open.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Qcow2Refs {
    pub backing: Option<String>,
    /// The backing file's format as the header records it (`qcow2`, `raw`), if it does.
    pub backing_format: Option<String>,
    pub data_file: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    #[error("not a qcow2 image (no QFI\\xfb magic)")]
    NotQcow2,
    #[error("qcow2 header: {0}")]
    Bad(&'static str),
    #[error("cannot read the qcow2 header: {0}")]
    Io(#[from] io::Error),
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the backing and data file names of the qcow2 image in `f` (any position; it seeks).
pub fn refs(f: &mut (impl Read + Seek)) -> Result<Qcow2Refs, Qcow2Error> {
    let mut head = [0u8; 104];
    f.seek(SeekFrom::Start(0))?;
    let n = read_up_to(f, &mut head)?;
    let head = &head[..n];
    if head.get(..4) != Some(MAGIC.as_slice()) {
        return Err(Qcow2Error::NotQcow2);
    }
    let bad = Qcow2Error::Bad;
    let version = be32(head, 4).ok_or(bad("truncated"))?;
    let backing_offset = be64(head, 8).ok_or(bad("truncated"))?;
    let backing_size = be32(head, 16).ok_or(bad("truncated"))?;
    let cluster_bits = be32(head, 20).ok_or(bad("truncated"))?;
    if !(9..=21).contains(&cluster_bits) {
        return Err(bad("cluster size out of range"));
    }
    let mut refs = Qcow2Refs::default();
    if backing_offset != 0 {
        if backing_size == 0 || backing_size > MAX_NAME {
            return Err(bad("backing file name length out of range"));
        }
        refs.backing = Some(read_name(f, backing_offset, backing_size)?);
    }
    let header_len = match version {
        2 => 72,
        3 => be32(head, 100).ok_or(bad("truncated"))?,
        _ => return Err(bad("unknown version")),
    };
    if !(72..=(1 << cluster_bits)).contains(&header_len) {
        return Err(bad("header length out of range"));
    }
    let incompatible = if version >= 3 {
        be64(head, 72).ok_or(bad("truncated"))?
    } else {
        0
    };
    // Extensions follow the header up to the backing file name, or else to the end of the
    // first cluster, as QEMU reads them: every one of them, however many (a count cap would
    // let padding hide a data file from this check while QEMU still opens it). Read in one
    // go: at most one cluster (2 MiB).
    let cluster = 1u64 << cluster_bits;
    let end = if backing_offset != 0 && backing_offset < cluster {
        backing_offset
    } else {
        cluster
    };
    let start = u64::from(header_len);
    let mut area = vec![0u8; end.saturating_sub(start) as usize];
    f.seek(SeekFrom::Start(start))?;
    let got = read_up_to(f, &mut area)?;
    area.truncate(got);
    let mut at = 0usize;
    while at + 8 <= area.len() {
        let (kind, len) = (
            be32(&area, at).unwrap_or(0),
            be32(&area, at + 4).unwrap_or(0),
        );
        if kind == EXT_END {
            break;
        }
        let body = at + 8;
        let Some(body_end) = body.checked_add(len as usize).filter(|e| *e <= area.len()) else {
            return Err(bad("header extension past the end of the header area"));
        };
        let text = |what| {
            String::from_utf8(area[body..body_end].to_vec()).map_err(|_| Qcow2Error::Bad(what))
        };
        if kind == EXT_DATA_FILE {
            if len == 0 || len > MAX_NAME {
                return Err(bad("data file name length out of range"));
            }
            refs.data_file = Some(text("data file name is not UTF-8")?);
        }
        if kind == EXT_BACKING_FORMAT && (1..=32).contains(&len) {
            refs.backing_format = Some(text("backing format is not UTF-8")?);
        }
        at = body + (len as usize).div_ceil(8) * 8;
    }
    // The feature bit without a name: QEMU would want a data file from elsewhere. Fail closed.
    if incompatible & INCOMPAT_DATA_FILE != 0 && refs.data_file.is_none() {
        return Err(bad("external data file flagged but not named"));
    }
    Ok(refs)
}

fn read_name(f: &mut (impl Read + Seek), offset: u64, len: u32) -> Result<String, Qcow2Error> {
    let mut name = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(offset))?;
    if read_up_to(f, &mut name)? != name.len() {
        return Err(Qcow2Error::Bad("file name past the end of the image"));
    }
    String::from_utf8(name).map_err(|_| Qcow2Error::Bad("file name is not UTF-8"))
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::process::Command;

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .expect("qemu-img");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn reads_what_qemu_img_wrote() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n).to_str().unwrap().to_owned();
        qemu_img(&["create", "-q", "-f", "qcow2", &p("base.qcow2"), "1M"]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            "/etc/shadow",
            &p("over.qcow2"),
            "1M",
        ]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=1.1",
            "-F",
            "qcow2",
            "-b",
            "base.qcow2",
            &p("rel.qcow2"),
        ]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", p("data.raw")),
            &p("ext.qcow2"),
            "1M",
        ]);
        let read = |n: &str| refs(&mut std::fs::File::open(p(n)).unwrap()).unwrap();
        assert_eq!(read("base.qcow2"), Qcow2Refs::default());
        assert_eq!(read("over.qcow2").backing.as_deref(), Some("/etc/shadow"));
        assert_eq!(read("rel.qcow2").backing.as_deref(), Some("base.qcow2"));
        assert_eq!(read("rel.qcow2").backing_format.as_deref(), Some("qcow2"));
        assert_eq!(read("over.qcow2").backing_format.as_deref(), Some("raw"));
        let ext = read("ext.qcow2");
        assert_eq!(ext.backing, None);
        assert_eq!(ext.data_file, Some(p("data.raw")));
    }

    /// A v3 header (64 KiB clusters, no backing file) with `incompatible` features, followed
    /// by the given extensions and an end marker.
    fn v3_image(incompatible: u64, extensions: &[(u32, &[u8])]) -> Vec<u8> {
        let mut img = vec![0u8; 104];
        img[..4].copy_from_slice(MAGIC);
        img[4..8].copy_from_slice(&3u32.to_be_bytes());
        img[20..24].copy_from_slice(&16u32.to_be_bytes());
        img[72..80].copy_from_slice(&incompatible.to_be_bytes());
        img[100..104].copy_from_slice(&104u32.to_be_bytes());
        for (kind, body) in extensions {
            img.extend_from_slice(&kind.to_be_bytes());
            img.extend_from_slice(&(body.len() as u32).to_be_bytes());
            img.extend_from_slice(body);
            img.resize(img.len().div_ceil(8) * 8, 0);
        }
        img.extend_from_slice(&[0; 8]);
        img.resize(1 << 16, 0);
        img
    }

    #[test]
    fn a_data_file_behind_any_number_of_extensions_is_found() {
        // QEMU reads every extension: padding must not hide the data file (an attack that
        // passed a count-capped scan).
        let mut exts: Vec<(u32, &[u8])> = vec![(0x1234_5678, b""); 70];
        exts.push((EXT_DATA_FILE, b"/etc/hostname"));
        let r = refs(&mut Cursor::new(v3_image(INCOMPAT_DATA_FILE, &exts))).unwrap();
        assert_eq!(r.data_file.as_deref(), Some("/etc/hostname"));
        // The feature bit with no name: refused rather than read as "no data file".
        let e = refs(&mut Cursor::new(v3_image(INCOMPAT_DATA_FILE, &[]))).unwrap_err();
        assert!(e.to_string().contains("flagged but not named"), "{e}");
        assert_eq!(
            refs(&mut Cursor::new(v3_image(0, &[]))).unwrap(),
            Qcow2Refs::default()
        );
    }

    #[test]
    fn hostile_headers_are_errors_not_panics() {
        assert!(matches!(
            refs(&mut Cursor::new(b"RAW DATA".to_vec())),
            Err(Qcow2Error::NotQcow2)
        ));
        assert!(refs(&mut Cursor::new(b"QFI\xfb".to_vec())).is_err());
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        // A backing name pointing past the end of the file.
        h[8..16].copy_from_slice(&4096u64.to_be_bytes());
        h[16..20].copy_from_slice(&10u32.to_be_bytes());
        assert!(refs(&mut Cursor::new(h.clone())).is_err());
        // An oversized name length.
        h[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(refs(&mut Cursor::new(h.clone())).is_err());
        // An extension claiming more than the cluster.
        h[8..20].fill(0);
        h[104..108].copy_from_slice(&EXT_DATA_FILE.to_be_bytes());
        h[108..112].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(refs(&mut Cursor::new(h)).is_err());
    }
}
