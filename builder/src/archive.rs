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
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File type bits of `st_mode`: the mask and each type newc images hold.
pub mod file_type {
    pub const MASK: u32 = 0o170000;
    pub const DIR: u32 = 0o040000;
    pub const REG: u32 = 0o100000;
    pub const LNK: u32 = 0o120000;
    pub const CHR: u32 = 0o020000;
    pub const BLK: u32 = 0o060000;
    pub const FIFO: u32 = 0o010000;
}

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
    /// `size` bytes at `offset` of a file (a file's body inside a cached image layer).
    Slice {
        path: Arc<Path>,
        offset: u64,
        size: u64,
    },
}

impl Content {
    /// Body size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Empty => 0,
            Content::Bytes(b) => b.len() as u64,
            Content::Path { size, .. } | Content::Slice { size, .. } => *size,
        }
    }

    /// True when there is no body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file the body is read from, if any.
    pub fn source(&self) -> Option<&Path> {
        match self {
            Content::Path { path, .. } => Some(path),
            Content::Slice { path, .. } => Some(path),
            Content::Empty | Content::Bytes(_) => None,
        }
    }

    /// The body as a reader that seeks within it (offset 0 is its first byte); a file is read
    /// where it lies, nothing is copied into memory first.
    pub fn open(&self) -> io::Result<Body> {
        Ok(match self {
            Content::Empty => Body::Bytes(io::Cursor::new(Arc::from(&[][..]))),
            Content::Bytes(b) => Body::Bytes(io::Cursor::new(b.clone())),
            Content::Path { path, size } => Body::File(Window::new(File::open(path)?, 0, *size)?),
            Content::Slice { path, offset, size } => {
                Body::File(Window::new(File::open(path)?, *offset, *size)?)
            }
        })
    }
}

/// A body being read: see [`Content::open`].
pub enum Body {
    Bytes(io::Cursor<Arc<[u8]>>),
    File(Window),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Bytes(c) => c.read(buf),
            Body::File(w) => w.read(buf),
        }
    }
}

impl Seek for Body {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match self {
            Body::Bytes(c) => c.seek(to),
            Body::File(w) => w.seek(to),
        }
    }
}

/// `len` bytes of a file from `start` on, read and sought as a file of their own; the file
/// past them is never read.
pub struct Window {
    file: File,
    start: u64,
    len: u64,
    /// From `start`; the file is positioned at `start + pos`.
    pos: u64,
}

impl Window {
    fn new(mut file: File, start: u64, len: u64) -> io::Result<Window> {
        file.seek(SeekFrom::Start(start))?;
        Ok(Window {
            file,
            start,
            len,
            pos: 0,
        })
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start"))?;
        let at = self
            .start
            .checked_add(pos)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek past 2^64"))?;
        self.file.seek(SeekFrom::Start(at))?;
        self.pos = pos;
        Ok(pos)
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Content),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
}

/// A path inside the image as the archive names it: without the leading `/` (`bin/busybox`).
/// It is kept as the plan's `/bin/busybox`, so an entry and the plan share one copy of it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

impl Name {
    /// A name from a path with or without its leading `/`.
    pub fn new(path: &str) -> Name {
        Name(format!("/{}", path.strip_prefix('/').unwrap_or(path)).into())
    }

    /// A name sharing an absolute path (`/bin/busybox`); copied when it is not absolute.
    pub fn shared(path: &Arc<str>) -> Name {
        if path.starts_with('/') {
            Name(Arc::clone(path))
        } else {
            Name::new(path)
        }
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0[1..]
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        **self == *other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

/// One archive entry, already normalised: every field is written as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image without the leading `/` (`bin/busybox`).
    pub path: Name,
    pub kind: Kind,
    /// Permission bits (`0o7777` at most); the type bits come from `kind`.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u32,
    pub nlink: u32,
    pub mtime: u32,
}

impl Kind {
    /// The `st_mode` file type bits of this kind.
    pub fn type_bits(&self) -> u32 {
        match self {
            Kind::Dir => file_type::DIR,
            Kind::File(_) => file_type::REG,
            Kind::Symlink(_) => file_type::LNK,
            Kind::CharDev { .. } => file_type::CHR,
            Kind::BlockDev { .. } => file_type::BLK,
            Kind::Fifo => file_type::FIFO,
        }
    }
}

impl Entry {
    /// An entry owned by 0:0.
    pub fn new(path: &str, kind: Kind, perm: u32, ino: u32, nlink: u32, mtime: u32) -> Entry {
        Entry {
            path: Name::new(path),
            kind,
            perm,
            uid: 0,
            gid: 0,
            ino,
            nlink,
            mtime,
        }
    }

    /// Full `st_mode`: type bits plus permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.type_bits() | (self.perm & 0o7777)
    }

    /// Size of the body as written in the header.
    pub fn body_len(&self) -> u64 {
        match &self.kind {
            Kind::File(c) => c.len(),
            Kind::Symlink(target) => target.len() as u64,
            Kind::Dir | Kind::CharDev { .. } | Kind::BlockDev { .. } | Kind::Fifo => 0,
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
    #[error("entry {TRAILER}: the newc format ends an archive at an entry of that name, so the kernel would not create it")]
    ReservedName,
    #[error("cannot write the archive: {0}")]
    Write(#[from] io::Error),
}

/// Bytes the trailer entry occupies (header, name, padding).
pub const TRAILER_LEN: u64 = pad4(110 + TRAILER.len() as u64 + 1);

/// Exact size in bytes of the archive [`NewcWriter`] writes for `entries`: every entry, the
/// trailer and the padding to 512 bytes.
pub fn archive_len(entries: &[Entry]) -> u64 {
    let body: u64 = entries.iter().map(Entry::encoded_len).sum();
    (body + TRAILER_LEN).div_ceil(512) * 512
}

/// Rounds `n` up to a multiple of 4.
const fn pad4(n: u64) -> u64 {
    (n + 3) & !3
}

const ZEROS: [u8; 512] = [0; 512];

/// Streams newc entries into `W`, tracking the offset for padding.
pub struct NewcWriter<W: Write> {
    out: W,
    offset: u64,
    /// The block host files are read through, allocated once per writer.
    block: Vec<u8>,
}

/// How much of a host file is read at a time.
const READ_BLOCK: usize = 256 * 1024;

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W) -> Self {
        NewcWriter {
            out,
            offset: 0,
            block: Vec::new(),
        }
    }

    /// Appends one entry: header, name, body, padding.
    pub fn append(&mut self, e: &Entry) -> Result<(), ArchiveError> {
        if e.path == TRAILER {
            return Err(ArchiveError::ReservedName);
        }
        let size = e.body_len();
        let size32 = u32::try_from(size).map_err(|_| ArchiveError::TooLarge {
            path: e.path.to_string(),
            what: "file size",
        })?;
        let (rmaj, rmin) = match e.kind {
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => (major, minor),
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
            Kind::File(Content::Empty)
            | Kind::Dir
            | Kind::CharDev { .. }
            | Kind::BlockDev { .. }
            | Kind::Fifo => {}
            Kind::File(Content::Bytes(b)) => self.put(b)?,
            Kind::Symlink(target) => self.put(target.as_bytes())?,
            Kind::File(Content::Path { path, size }) => self.copy_file(path, 0, *size)?,
            Kind::File(Content::Slice { path, offset, size }) => {
                self.copy_file(path, *offset, *size)?
            }
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

    fn copy_file(&mut self, path: &Path, offset: u64, size: u64) -> Result<(), ArchiveError> {
        let read_err = |source| ArchiveError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).map_err(read_err)?;
        }
        let mut limited = file.take(size);
        // Taken while `put` borrows the writer; an error drops it with the build.
        let mut buf = std::mem::take(&mut self.block);
        buf.resize(READ_BLOCK, 0);
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
        self.block = buf;
        // A file that grew is caught by reading one byte past the promised size (a slice of a
        // larger file is followed by more bytes by design).
        let grew = offset == 0 && limited.into_inner().read(&mut [0u8; 1]).map_err(read_err)? > 0;
        if copied != size || grew {
            return Err(ArchiveError::SizeChanged {
                path: path.to_path_buf(),
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

#[cfg(test)]
mod tests {
    //! Golden bytes: every header spelled out field by field (magic, ino, mode, uid, gid, nlink,
    //! mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check).
    use super::*;

    const MTIME: u32 = 0x6592_0080;

    fn entry(path: &str, kind: Kind, perm: u32, ino: u32, nlink: u32) -> Entry {
        Entry::new(path, kind, perm, ino, nlink, MTIME)
    }

    fn bytes(kind: &str) -> Kind {
        Kind::File(Content::Bytes(Arc::from(kind.as_bytes())))
    }

    fn written(entries: &[Entry]) -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new());
        for e in entries {
            w.append(e).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn a_body_opens_as_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer");
        std::fs::write(&path, b"0123456789").unwrap();
        let slice = Content::Slice {
            path: Arc::from(path.as_path()),
            offset: 2,
            size: 5,
        };
        let mut body = slice.open().unwrap();
        let mut all = Vec::new();
        body.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"23456", "the bytes of the slice and no more");
        assert_eq!(body.seek(SeekFrom::End(-2)).unwrap(), 3);
        let mut tail = [0u8; 8];
        assert_eq!(body.read(&mut tail).unwrap(), 2);
        assert_eq!(&tail[..2], b"56");
        assert_eq!(body.seek(SeekFrom::Current(-4)).unwrap(), 1);
        assert_eq!(body.read(&mut tail[..1]).unwrap(), 1);
        assert_eq!(tail[0], b'3');
        assert!(
            body.seek(SeekFrom::Current(-3)).is_err(),
            "before the start"
        );
        assert_eq!(body.seek(SeekFrom::Start(9)).unwrap(), 9);
        assert_eq!(
            body.read(&mut tail).unwrap(),
            0,
            "past the end reads nothing"
        );

        let mut bytes = Content::Bytes(Arc::from(&b"abc"[..])).open().unwrap();
        bytes.seek(SeekFrom::Start(1)).unwrap();
        let mut rest = String::new();
        bytes.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "bc");
    }

    #[rustfmt::skip]
    const GOLDEN: &[&[u8]] = &[
        // directory "bin", 040755, nlink 2: name padded 114 -> 116
        b"070701", b"00000001", b"000041ED", b"00000000", b"00000000", b"00000002", b"65920080",
        b"00000000", b"00000000", b"00000000", b"00000000", b"00000000", b"00000004", b"00000000",
        b"bin\0", b"\0\0",
        // file "bin/a", 0100644, owner 1000:100, body "hello" padded to 8
        b"070701", b"00000002", b"000081A4", b"000003E8", b"00000064", b"00000001", b"65920080",
        b"00000005", b"00000000", b"00000000", b"00000000", b"00000000", b"00000006", b"00000000",
        b"bin/a\0", b"hello", b"\0\0\0",
        // symlink "bin/sh" -> "busybox", 0120777: name padded 117 -> 120, target 7 -> 8
        b"070701", b"00000003", b"0000A1FF", b"00000000", b"00000000", b"00000001", b"65920080",
        b"00000007", b"00000000", b"00000000", b"00000000", b"00000000", b"00000007", b"00000000",
        b"bin/sh\0", b"\0\0\0", b"busybox", b"\0",
        // character device "dev/console" 5,1, 020600: rdev in fields 10 and 11
        b"070701", b"00000004", b"00002180", b"00000000", b"00000000", b"00000001", b"65920080",
        b"00000000", b"00000000", b"00000000", b"00000005", b"00000001", b"0000000C", b"00000000",
        b"dev/console\0", b"\0\0",
        // hardlink pair "x", "y": one inode, nlink 2, the body on the last only
        b"070701", b"00000005", b"000081A4", b"00000000", b"00000000", b"00000002", b"65920080",
        b"00000000", b"00000000", b"00000000", b"00000000", b"00000000", b"00000002", b"00000000",
        b"x\0",
        b"070701", b"00000005", b"000081A4", b"00000000", b"00000000", b"00000002", b"65920080",
        b"00000002", b"00000000", b"00000000", b"00000000", b"00000000", b"00000002", b"00000000",
        b"y\0", b"ab", b"\0\0",
        // trailer: all zero but nlink 1 and namesize 11; name padded 121 -> 124
        b"070701", b"00000000", b"00000000", b"00000000", b"00000000", b"00000001", b"00000000",
        b"00000000", b"00000000", b"00000000", b"00000000", b"00000000", b"0000000B", b"00000000",
        b"TRAILER!!!\0", b"\0\0\0",
    ];

    #[test]
    fn an_entry_named_as_the_trailer_is_refused() {
        let mut w = NewcWriter::new(Vec::new());
        let e = Entry::new(TRAILER, Kind::Dir, 0o755, 1, 2, 0);
        assert!(matches!(w.append(&e), Err(ArchiveError::ReservedName)));
        let nested = Entry::new(&format!("usr/{TRAILER}"), Kind::Dir, 0o755, 2, 2, 0);
        assert!(
            w.append(&nested).is_ok(),
            "only the root name is the trailer"
        );
    }

    #[test]
    fn newc_bytes_of_each_kind_hardlinks_trailer_and_padding() {
        let mut file = entry("bin/a", bytes("hello"), 0o644, 2, 1);
        (file.uid, file.gid) = (1000, 100);
        let entries = [
            entry("bin", Kind::Dir, 0o755, 1, 2),
            file,
            entry("bin/sh", Kind::Symlink("busybox".into()), 0o777, 3, 1),
            entry(
                "dev/console",
                Kind::CharDev { major: 5, minor: 1 },
                0o600,
                4,
                1,
            ),
            entry("x", Kind::File(Content::Empty), 0o644, 5, 2),
            entry("y", bytes("ab"), 0o644, 5, 2),
        ];
        let mut want: Vec<u8> = GOLDEN.concat();
        assert_eq!(want.len(), 844, "the golden entries themselves");
        want.resize(1024, 0);
        let got = written(&entries);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "newc bytes"
        );
        assert_eq!(got, want);
        assert_eq!(archive_len(&entries), 1024);
    }

    #[test]
    fn an_empty_archive_is_the_trailer_padded_to_512() {
        let got = written(&[]);
        let trailer = &GOLDEN[GOLDEN.len() - 16..].concat();
        assert_eq!(&got[..trailer.len()], &trailer[..]);
        assert_eq!(got.len(), 512);
        assert!(got[trailer.len()..].iter().all(|&b| b == 0));
        assert_eq!(TRAILER_LEN, 124);
    }

    #[test]
    fn a_host_file_that_changed_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"longer than promised").unwrap();
        let e = entry(
            "f",
            Kind::File(Content::Path { path, size: 4 }),
            0o644,
            1,
            1,
        );
        let err = NewcWriter::new(Vec::new()).append(&e).unwrap_err();
        assert!(
            matches!(err, ArchiveError::SizeChanged { expected: 4, .. }),
            "{err}"
        );
    }
}
