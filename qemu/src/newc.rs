//! A small newc (`070701`) reader and writer, kept apart from the builder's own archive code so
//! the harness can be proven with images the code under test did not write, and so tests can make
//! images the builder rightly refuses to make (an agent removed from a default-mode image).
//!
//! Only what those uses need: regular files, directories, symlinks and device nodes, all owned by
//! 0:0; the output is uncompressed (the kernel accepts that as it is).

use std::path::Path;

use crate::Error;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `mode`.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image, without a leading `/` (as the kernel expects, e.g. `bin/sh`).
    pub name: String,
    /// Type and permission bits.
    pub mode: u32,
    /// Inode number; 0 lets the writer assign one.
    pub ino: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
    /// Device numbers of a device node (major, minor).
    pub rdev: (u32, u32),
    /// File content, or the target of a symlink.
    pub data: Vec<u8>,
}

impl Entry {
    fn new(name: &str, mode: u32, data: Vec<u8>) -> Self {
        Self {
            name: name.trim_start_matches('/').to_owned(),
            mode,
            ino: 0,
            nlink: if mode & S_IFDIR == S_IFDIR { 2 } else { 1 },
            mtime: 0,
            rdev: (0, 0),
            data,
        }
    }

    /// A directory with permission bits `perm`.
    pub fn dir(name: &str, perm: u32) -> Self {
        Self::new(name, S_IFDIR | perm, Vec::new())
    }

    /// A regular file with permission bits `perm`.
    pub fn file(name: &str, perm: u32, data: impl Into<Vec<u8>>) -> Self {
        Self::new(name, S_IFREG | perm, data.into())
    }

    /// A symbolic link to `target`.
    pub fn symlink(name: &str, target: &str) -> Self {
        Self::new(name, S_IFLNK | 0o777, target.as_bytes().to_vec())
    }

    /// A character device node.
    pub fn char_dev(name: &str, perm: u32, major: u32, minor: u32) -> Self {
        let mut e = Self::new(name, S_IFCHR | perm, Vec::new());
        e.rdev = (major, minor);
        e
    }
}

/// A whole archive: its members in order (parents must come before children).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archive {
    /// The members, without the trailer.
    pub entries: Vec<Entry>,
}

impl Archive {
    /// Reads an uncompressed newc archive from a file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        Self::parse(&crate::read(path)?).map_err(|message| Error::Archive {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Writes the archive to a file.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        crate::write(path, self.to_bytes())
    }

    /// The member named `name` (a leading `/` is ignored).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        let name = name.trim_start_matches('/');
        self.entries.iter().find(|e| e.name == name)
    }

    /// Removes the member named `name`; returns whether it was there. (Hardlinked members share
    /// one copy of the data carried by the last of them: do not remove one of a group.)
    pub fn remove(&mut self, name: &str) -> bool {
        let name = name.trim_start_matches('/');
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        self.entries.len() != before
    }

    /// Parses an uncompressed newc image: one archive or several in a row, each up to its trailer.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            let header = bytes
                .get(at..at + HEADER_LEN)
                .ok_or_else(|| format!("truncated header at offset {at}"))?;
            if &header[..6] != MAGIC {
                return Err(format!("bad magic at offset {at}"));
            }
            let field = |i: usize| {
                let hex = &header[6 + 8 * i..14 + 8 * i];
                std::str::from_utf8(hex)
                    .ok()
                    .and_then(|s| u32::from_str_radix(s, 16).ok())
                    .ok_or_else(|| format!("bad header field {i} at offset {at}"))
            };
            let (namesize, filesize) = (field(11)? as usize, field(6)? as usize);
            let name_at = at + HEADER_LEN;
            let name = bytes
                .get(name_at..name_at + namesize.saturating_sub(1))
                .ok_or_else(|| format!("truncated name at offset {name_at}"))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let data_at = pad4(name_at + namesize);
            if name == TRAILER {
                // An image may be several archives in a row (one per segment), with NUL
                // padding between them, as the kernel reads it.
                let next = bytes[data_at.min(bytes.len())..]
                    .iter()
                    .position(|&b| b != 0)
                    .map(|n| data_at + n);
                match next {
                    Some(n) => {
                        at = n;
                        continue;
                    }
                    None => return Ok(Self { entries }),
                }
            }
            let data = bytes
                .get(data_at..data_at + filesize)
                .ok_or_else(|| format!("truncated data of {name} at offset {data_at}"))?
                .to_vec();
            entries.push(Entry {
                name: name.trim_start_matches("./").to_owned(),
                mode: field(1)?,
                ino: field(0)?,
                nlink: field(4)?,
                mtime: field(5)?,
                rdev: (field(9)?, field(10)?),
                data,
            });
            at = pad4(data_at + filesize);
        }
    }

    /// Serialises the archive with a trailer, padded to 512 bytes. Members with `ino == 0` get
    /// a number after the largest one present.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut next_ino = self.entries.iter().map(|e| e.ino).max().unwrap_or(0) + 1;
        for e in &self.entries {
            let ino = if e.ino == 0 {
                next_ino += 1;
                next_ino - 1
            } else {
                e.ino
            };
            push_member(&mut out, e, ino);
        }
        push_member(&mut out, &Entry::new(TRAILER, 0, Vec::new()), 0);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

fn push_member(out: &mut Vec<u8>, e: &Entry, ino: u32) {
    let nlink = if e.name == TRAILER { 1 } else { e.nlink };
    let fields = [
        ino,
        e.mode,
        0, // uid
        0, // gid
        nlink,
        e.mtime,
        e.data.len() as u32,
        0, // devmajor
        0, // devminor
        e.rdev.0,
        e.rdev.1,
        e.name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(e.name.as_bytes());
    out.push(0);
    out.resize(pad4(out.len()), 0);
    out.extend_from_slice(&e.data);
    out.resize(pad4(out.len()), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        Archive {
            entries: vec![
                Entry::dir("bin", 0o755),
                Entry::file("bin/tool", 0o755, b"abc".to_vec()),
                Entry::symlink("bin/sh", "tool"),
                Entry::dir("dev", 0o755),
                Entry::char_dev("/dev/console", 0o600, 5, 1),
                Entry::file("init", 0o755, b"#!/bin/sh\n".to_vec()),
            ],
        }
    }

    #[test]
    fn round_trip_keeps_every_member() {
        let bytes = sample().to_bytes();
        assert_eq!(bytes.len() % 512, 0, "padded to 512");
        let parsed = Archive::parse(&bytes).unwrap();
        assert_eq!(parsed.entries.len(), 6);
        for (i, (a, b)) in sample().entries.iter().zip(&parsed.entries).enumerate() {
            assert_eq!(
                (&a.name, a.mode, &a.data, a.rdev),
                (&b.name, b.mode, &b.data, b.rdev),
                "member {i}"
            );
            assert_eq!(b.ino, i as u32 + 1, "member {i} inode");
        }
    }

    #[test]
    fn archives_in_a_row_read_as_one_image() {
        let mut bytes = sample().to_bytes();
        bytes.extend_from_slice(&[0; 512]);
        bytes.extend(sample().to_bytes());
        assert_eq!(Archive::parse(&bytes).unwrap().entries.len(), 12);
    }

    #[test]
    fn header_layout_matches_newc() {
        let bytes = sample().to_bytes();
        assert_eq!(&bytes[..6], b"070701");
        // namesize of "bin" + NUL, at field 11.
        assert_eq!(&bytes[6 + 8 * 11..6 + 8 * 12], b"00000004");
        // Name then padding to a multiple of 4: 110 + 4 = 114 -> 116.
        assert_eq!(&bytes[110..114], b"bin\0");
        assert_eq!(&bytes[116..122], b"070701", "next header 4-aligned");
        let trailer = bytes
            .windows(TRAILER.len())
            .position(|w| w == TRAILER.as_bytes());
        assert!(trailer.is_some(), "trailer present");
    }

    #[test]
    fn remove_and_get() {
        let mut a = sample();
        assert!(a.get("/bin/tool").is_some());
        assert!(a.remove("/bin/tool"));
        assert!(!a.remove("bin/tool"), "second removal finds nothing");
        let again = Archive::parse(&a.to_bytes()).unwrap();
        assert!(again.get("bin/tool").is_none());
        assert_eq!(again.entries.len(), 5);
    }

    #[test]
    fn garbage_is_rejected_with_offset() {
        assert_eq!(
            Archive::parse(b"070707xxxx").unwrap_err(),
            "truncated header at offset 0"
        );
        let mut bytes = sample().to_bytes();
        bytes[116] = b'9';
        assert_eq!(
            Archive::parse(&bytes).unwrap_err(),
            "bad magic at offset 116"
        );
    }
}
