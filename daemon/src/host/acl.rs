//! POSIX access ACLs through the `system.posix_acl_access` extended attribute: enough to give
//! one user access to a device node (`/dev/kvm`, a VFIO group) or search access to one of our
//! directories, keeping every entry already there (`setfacl -m u:USER:PERMS` / `-x u:USER`).
//!
//! The crates that wrap ACLs (posix-acl, exacl) link libacl; the attribute's format is small
//! and stable kernel ABI (`linux/posix_acl_xattr.h`), so it is encoded here instead.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The attribute holding a file's access ACL.
const XATTR: &str = "system.posix_acl_access";
const VERSION: u32 = 2;
/// The id of entries that name no user or group.
const UNDEFINED_ID: u32 = u32::MAX;
/// Attribute values are at most 64 KiB (`XATTR_SIZE_MAX`).
const MAX_XATTR: usize = 64 * 1024;

pub const READ: u16 = 4;
pub const WRITE: u16 = 2;
pub const EXECUTE: u16 = 1;

/// Entry tags, in the order the kernel requires them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u16)]
pub enum Tag {
    UserObj = 0x01,
    User = 0x02,
    GroupObj = 0x04,
    Group = 0x08,
    Mask = 0x10,
    Other = 0x20,
}

impl Tag {
    fn from_u16(v: u16) -> Option<Tag> {
        Some(match v {
            0x01 => Tag::UserObj,
            0x02 => Tag::User,
            0x04 => Tag::GroupObj,
            0x08 => Tag::Group,
            0x10 => Tag::Mask,
            0x20 => Tag::Other,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub tag: Tag,
    /// rwx as 4/2/1.
    pub perm: u16,
    /// The uid or gid of `User`/`Group` entries; `UNDEFINED_ID` otherwise.
    pub id: u32,
}

/// An access ACL, entries in the kernel's order (tag, then id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("{path}: cannot read its ACL: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: malformed ACL attribute ({reason})")]
    Malformed { path: String, reason: &'static str },
    #[error("{path}: cannot set its ACL (does the filesystem support POSIX ACLs?): {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl Acl {
    /// The ACL a file without the attribute has: its mode bits.
    pub fn from_mode(mode: u32) -> Acl {
        let bits = |shift: u32| ((mode >> shift) & 7) as u16;
        Acl {
            entries: vec![
                Entry {
                    tag: Tag::UserObj,
                    perm: bits(6),
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: Tag::GroupObj,
                    perm: bits(3),
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: Tag::Other,
                    perm: bits(0),
                    id: UNDEFINED_ID,
                },
            ],
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Acl, &'static str> {
        let (header, body) = bytes.split_at_checked(4).ok_or("shorter than its header")?;
        if u32::from_le_bytes([header[0], header[1], header[2], header[3]]) != VERSION {
            return Err("unknown version");
        }
        if body.len() % 8 != 0 {
            return Err("not a whole number of entries");
        }
        let mut entries = Vec::with_capacity(body.len() / 8);
        for e in body.chunks_exact(8) {
            entries.push(Entry {
                tag: Tag::from_u16(u16::from_le_bytes([e[0], e[1]])).ok_or("unknown tag")?,
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            });
        }
        Ok(Acl { entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&(e.tag as u16).to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The permissions a named user entry gives `uid`, if there is one.
    pub fn user(&self, uid: u32) -> Option<u16> {
        self.entries
            .iter()
            .find(|e| e.tag == Tag::User && e.id == uid)
            .map(|e| e.perm)
    }

    /// Adds `perm` to the named entry of `uid` (creating it), then recomputes the mask as
    /// `setfacl -m` does. Returns whether anything changed.
    pub fn grant_user(&mut self, uid: u32, perm: u16) -> bool {
        let before = self.clone();
        match self
            .entries
            .iter_mut()
            .find(|e| e.tag == Tag::User && e.id == uid)
        {
            Some(e) => e.perm |= perm,
            None => self.entries.push(Entry {
                tag: Tag::User,
                perm,
                id: uid,
            }),
        }
        self.normalise();
        *self != before
    }

    /// Removes the named entry of `uid`, as `setfacl -x u:UID`. Returns whether it was there.
    pub fn revoke_user(&mut self, uid: u32) -> bool {
        let len = self.entries.len();
        self.entries
            .retain(|e| !(e.tag == Tag::User && e.id == uid));
        let removed = self.entries.len() != len;
        if removed {
            self.normalise();
        }
        removed
    }

    /// Sorts the entries and keeps the mask the union of the group class (a mask is required
    /// exactly when there are named entries).
    fn normalise(&mut self) {
        let named = self
            .entries
            .iter()
            .any(|e| matches!(e.tag, Tag::User | Tag::Group));
        self.entries.retain(|e| e.tag != Tag::Mask);
        if named {
            let perm = self
                .entries
                .iter()
                .filter(|e| matches!(e.tag, Tag::User | Tag::Group | Tag::GroupObj))
                .fold(0, |acc, e| acc | e.perm);
            self.entries.push(Entry {
                tag: Tag::Mask,
                perm,
                id: UNDEFINED_ID,
            });
        }
        self.entries.sort_by_key(|e| (e.tag, e.id));
    }
}

/// Reads `path`'s access ACL (its mode bits when it has none). Follows symlinks.
pub fn read(path: &Path) -> Result<Acl, AclError> {
    let shown = || path.display().to_string();
    let mut buf = vec![0u8; MAX_XATTR];
    match rustix::fs::getxattr(path, XATTR, &mut buf[..]) {
        Ok(len) => Acl::decode(&buf[..len]).map_err(|reason| AclError::Malformed {
            path: shown(),
            reason,
        }),
        // No attribute (or none supported): the ACL is the mode.
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::OPNOTSUPP) => {
            let mode = std::fs::metadata(path)
                .map_err(|source| AclError::Read {
                    path: shown(),
                    source,
                })?
                .mode();
            Ok(Acl::from_mode(mode))
        }
        Err(e) => Err(AclError::Read {
            path: shown(),
            source: e.into(),
        }),
    }
}

fn write(path: &Path, acl: &Acl) -> Result<(), AclError> {
    rustix::fs::setxattr(path, XATTR, &acl.encode(), rustix::fs::XattrFlags::empty()).map_err(|e| {
        AclError::Write {
            path: path.display().to_string(),
            source: e.into(),
        }
    })
}

/// Gives `uid` at least `perm` on `path` through a named ACL entry, keeping every other
/// entry. Returns whether the ACL changed.
pub fn grant_user(path: &Path, uid: u32, perm: u16) -> Result<bool, AclError> {
    let mut acl = read(path)?;
    if !acl.grant_user(uid, perm) {
        return Ok(false);
    }
    write(path, &acl)?;
    Ok(true)
}

/// Removes `uid`'s named entry from `path`'s ACL, if it has one. Returns whether it had.
pub fn revoke_user(path: &Path, uid: u32) -> Result<bool, AclError> {
    let mut acl = read(path)?;
    if !acl.revoke_user(uid) {
        return Ok(false);
    }
    write(path, &acl)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn e(tag: Tag, perm: u16, id: u32) -> Entry {
        Entry { tag, perm, id }
    }
    const U: u32 = UNDEFINED_ID;

    #[test]
    fn mode_0600_grant_then_revoke() {
        let mut acl = Acl::from_mode(0o20600);
        assert!(acl.grant_user(998, READ | WRITE));
        assert_eq!(
            acl.entries(),
            [
                e(Tag::UserObj, 6, U),
                e(Tag::User, 6, 998),
                e(Tag::GroupObj, 0, U),
                e(Tag::Mask, 6, U),
                e(Tag::Other, 0, U),
            ]
        );
        // Granting again is no change.
        assert!(!acl.grant_user(998, READ));
        assert!(acl.revoke_user(998));
        assert_eq!(acl, Acl::from_mode(0o600));
        assert!(!acl.revoke_user(998));
    }

    #[test]
    fn keeps_other_entries_and_sorts_by_id() {
        let mut acl = Acl::from_mode(0o750);
        acl.grant_user(2000, READ);
        acl.entries.push(e(Tag::Group, WRITE, 50));
        acl.normalise();
        assert!(acl.grant_user(1000, EXECUTE));
        assert_eq!(
            acl.entries(),
            [
                e(Tag::UserObj, 7, U),
                e(Tag::User, 1, 1000),
                e(Tag::User, 4, 2000),
                e(Tag::GroupObj, 5, U),
                e(Tag::Group, 2, 50),
                e(Tag::Mask, 7, U),
                e(Tag::Other, 0, U),
            ]
        );
        assert!(acl.revoke_user(1000));
        assert_eq!(acl.user(2000), Some(READ));
        assert_eq!(acl.user(1000), None);
        // The mask shrinks back to the remaining group class.
        assert!(acl.entries().contains(&e(Tag::Mask, 7, U)));
    }

    #[test]
    fn encoding_is_the_kernel_format() {
        // `setfacl -m u:998:rw` on a 0600 file, as getfattr --hex shows it.
        let mut acl = Acl::from_mode(0o600);
        acl.grant_user(998, READ | WRITE);
        let bytes = acl.encode();
        let want: Vec<u8> = [
            &[2u8, 0, 0, 0][..],
            &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff],
            &[2, 0, 6, 0, 0xe6, 3, 0, 0],
            &[4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            &[0x10, 0, 6, 0, 0xff, 0xff, 0xff, 0xff],
            &[0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        assert_eq!(bytes, want);
        assert_eq!(Acl::decode(&bytes).unwrap(), acl);
        assert!(Acl::decode(&bytes[..7]).is_err());
        assert!(Acl::decode(&[3, 0, 0, 0]).is_err());
        let mut bad = bytes.clone();
        bad[4] = 0x40;
        assert!(Acl::decode(&bad).is_err());
    }

    /// Through the kernel: it accepts what we write (it validates order and the mask) and
    /// shows the mask in the group bits of the mode.
    #[test]
    fn real_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dev");
        std::fs::write(&f, b"").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(grant_user(&f, 4242, READ | WRITE).unwrap());
        assert!(!grant_user(&f, 4242, READ).unwrap());
        let acl = read(&f).unwrap();
        assert_eq!(acl.user(4242), Some(READ | WRITE));
        let mode = std::fs::metadata(&f).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o660, "the group bits show the mask");
        assert!(revoke_user(&f, 4242).unwrap());
        assert_eq!(read(&f).unwrap(), Acl::from_mode(0o600));
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
    }
}
