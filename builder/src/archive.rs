//! The newc (`070701`) cpio writer: turns normalised [`Entry`] values into the exact bytes the
//! Linux kernel's initramfs unpacker reads.
//!
//! This module owns the on-disk format and nothing else: it never decides owners, times, inode
//! numbers or order (that is [`crate::normalise`]), so the bytes it writes are a pure
//! function of the entries it is given.
//!
//! Format (see the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`): each
//! entry is a 110-byte ASCII header of 13 eight-digit hex fields after the magic, the NUL
//! terminated name, padding to a multiple of 4, the body, padding to a multiple of 4. The archive
//! ends with an entry named `TRAILER!!!` and is padded to a multiple of 512 bytes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// Where a regular file's body comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// No body: an empty file, or a hardlink that is not the last of its group.
    Empty,
    /// Bytes held in memory (the embedded init, generated files).
    Bytes(Arc<[u8]>),
    /// A host file of a known size, read when the entry is written.
    Path { path: PathBuf, size: u64 },
}

impl Content {
    /// Body size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Empty => 0,
            Content::Bytes(b) => b.len() as u64,
            Content::Path { size, .. } => *size,
        }
    }

    /// True when there is no body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Content),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// One archive entry, already normalised: every field is written as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image without the leading `/` (`bin/busybox`).
    pub path: String,
    pub kind: Kind,
    /// Permission bits (`0o7777` at most); the type bits come from `kind`.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u32,
    pub nlink: u32,
    pub mtime: u32,
}

impl Entry {
    /// Full `st_mode`: type bits plus permission bits.
    pub fn mode(&self) -> u32 {
        let ty = match self.kind {
            Kind::Dir => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
            Kind::CharDev { .. } => S_IFCHR,
        };
        ty | (self.perm & 0o7777)
    }

    /// Size of the body as written in the header.
    pub fn body_len(&self) -> u64 {
        match &self.kind {
            Kind::File(c) => c.len(),
            Kind::Symlink(target) => target.len() as u64,
            Kind::Dir | Kind::CharDev { .. } => 0,
        }
    }

    /// Bytes this entry occupies in the archive, padding included.
    pub fn encoded_len(&self) -> u64 {
        pad4(110 + self.path.len() as u64 + 1) + pad4(self.body_len())
    }
}

/// Errors while writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {path} while writing the archive: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} changed size while the image was being built (expected {expected} bytes, found {actual})")]
    SizeChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("entry {path}: {what} does not fit the newc format (limit 4 GiB - 1)")]
    TooLarge { path: String, what: &'static str },
    #[error("cannot write the archive: {0}")]
    Write(#[from] io::Error),
}

/// Exact size in bytes of the archive [`NewcWriter`] writes for `entries`: every entry, the
/// trailer and the padding to 512 bytes.
pub fn archive_len(entries: &[Entry]) -> u64 {
    let body: u64 = entries.iter().map(Entry::encoded_len).sum();
    let trailer = pad4(110 + TRAILER.len() as u64 + 1);
    (body + trailer).div_ceil(512) * 512
}

/// Rounds `n` up to a multiple of 4.
fn pad4(n: u64) -> u64 {
    (n + 3) & !3
}

const ZEROS: [u8; 512] = [0; 512];

/// Streams newc entries into `W`, tracking the offset for padding.
pub struct NewcWriter<W: Write> {
    out: W,
    offset: u64,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W) -> Self {
        NewcWriter { out, offset: 0 }
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends one entry: header, name, body, padding.
    pub fn append(&mut self, e: &Entry) -> Result<(), ArchiveError> {
        let size = e.body_len();
        let size32 = u32::try_from(size).map_err(|_| ArchiveError::TooLarge {
            path: e.path.clone(),
            what: "file size",
        })?;
        let (rmaj, rmin) = match e.kind {
            Kind::CharDev { major, minor } => (major, minor),
            _ => (0, 0),
        };
        self.header(
            &e.path,
            [
                e.ino,
                e.mode(),
                e.uid,
                e.gid,
                e.nlink,
                e.mtime,
                size32,
                0,
                0,
                rmaj,
                rmin,
            ],
        )?;
        match &e.kind {
            Kind::File(Content::Empty) | Kind::Dir | Kind::CharDev { .. } => {}
            Kind::File(Content::Bytes(b)) => self.put(b)?,
            Kind::Symlink(target) => self.put(target.as_bytes())?,
            Kind::File(Content::Path { path, size }) => self.copy_file(path, *size)?,
        }
        self.pad_to(4)
    }

    /// Writes the trailer, pads to 512 bytes and returns the sink.
    pub fn finish(mut self) -> Result<W, ArchiveError> {
        self.header(TRAILER, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])?;
        self.pad_to(512)?;
        Ok(self.out)
    }

    /// Header fields in order: ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    /// rdevmajor, rdevminor; namesize and check are derived here.
    fn header(&mut self, name: &str, f: [u32; 11]) -> Result<(), ArchiveError> {
        let namesize = u32::try_from(name.len() + 1).map_err(|_| ArchiveError::TooLarge {
            path: name.to_string(),
            what: "name",
        })?;
        let mut h = [0u8; 110];
        h[..6].copy_from_slice(b"070701");
        for (i, v) in f.iter().chain([namesize, 0].iter()).enumerate() {
            write_hex8(&mut h[6 + i * 8..14 + i * 8], *v);
        }
        self.put(&h)?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad_to(4)
    }

    fn copy_file(&mut self, path: &PathBuf, size: u64) -> Result<(), ArchiveError> {
        let read_err = |source| ArchiveError::Read {
            path: path.clone(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mut limited = file.take(size);
        let mut buf = vec![0u8; 256 * 1024];
        let mut copied = 0u64;
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            self.put(&buf[..n])?;
            copied += n as u64;
        }
        // A file that grew is caught by reading one byte past the promised size.
        let grew = limited.into_inner().read(&mut [0u8; 1]).map_err(read_err)? > 0;
        if copied != size || grew {
            return Err(ArchiveError::SizeChanged {
                path: path.clone(),
                expected: size,
                actual: copied + u64::from(grew),
            });
        }
        Ok(())
    }

    fn put(&mut self, b: &[u8]) -> Result<(), ArchiveError> {
        self.out.write_all(b)?;
        self.offset += b.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, align: u64) -> Result<(), ArchiveError> {
        let rem = self.offset % align;
        if rem != 0 {
            let n = (align - rem) as usize;
            self.put(&ZEROS[..n])?;
        }
        Ok(())
    }
}

fn write_hex8(dst: &mut [u8], v: u32) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, d) in dst.iter_mut().enumerate() {
        *d = HEX[((v >> (28 - 4 * i)) & 0xf) as usize];
    }
}
