//! The newc reader: walks an image the way the kernel's `init/initramfs.c` unpacks it and hands
//! each entry to a callback, holding no more than one entry at a time.
//!
//! The kernel's rules, followed here: the image is a run of segments, each found by its own
//! magic (`070701`/`070702` for plain cpio, gzip, zstd, xz, lz4 legacy); NUL bytes before,
//! between and after segments are skipped; a compressed segment ends where its decoder stops
//! (one gzip member, one zstd frame, one xz stream, lz4 blocks up to a zero size or the end) and
//! what follows is looked at afresh, so plain and compressed segments and different
//! compressions mix in any order. Inside one decompressed segment, entries follow each other
//! with NUL padding allowed between them, and the segment must end between two entries.

use std::io::{self, BufRead, BufReader, Read};

use sha2::Digest as _;

use fledge_abi::paths;

use super::{file_type, FileType};
use crate::archive::TRAILER;
use crate::compress::{self, Compression};
use crate::hashing::Hashing;

/// Longest path Linux accepts, NUL included.
const PATH_MAX: usize = 4096;
/// Length of a newc header.
const HEADER_LEN: usize = 110;
/// Files whose body the reader hands over (the boot check reads them), with their largest size:
/// small files the check reads, and the programs PID 1 starts, for the check that they can
/// (their interpreter and libraries are in the image).
pub(crate) const KEPT_BODIES: &[(&str, u64)] = &[
    (paths::VOLANT_INIT, 4096),
    (paths::MODULES_LOAD, fledge_abi::modules::MAX_LEN as u64),
    ("/etc/ld-musl-x86_64.path", 4096),
    ("/etc/ld-musl-aarch64.path", 4096),
    (paths::INIT, KEPT_PROGRAM_MAX),
    (paths::AGENT, KEPT_PROGRAM_MAX),
    (paths::CUSTOM_INIT, KEPT_PROGRAM_MAX),
    // What fledge-init reads: whether it supervises, and whether it starts the agent.
    (paths::INIT_CONF, 64 << 10),
    (paths::WORKLOAD, fledge_abi::workload::MAX_LEN as u64),
];
const KEPT_PROGRAM_MAX: u64 = 32 << 20;

/// One entry as read, borrowed from the reader's buffers until the callback returns.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Path with a leading `/`, without `./`, empty or `.` components (bytes: newc names need
    /// not be UTF-8).
    pub path: &'a [u8],
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Body size as the header says (for a hardlink group, only one member carries the body).
    pub size: u64,
    pub ino: u32,
    pub nlink: u32,
    pub mtime: u32,
    /// Device numbers of a device node.
    pub rdev: Option<(u32, u32)>,
    /// Target of a symlink.
    pub target: Option<&'a [u8]>,
    /// Body of a small file the boot check reads (`/.volant_init`, the module load list).
    pub body: Option<&'a [u8]>,
    /// Which hardlink group a regular file with `nlink > 1` belongs to: the kernel links members
    /// by inode and device numbers until the next `TRAILER!!!`.
    pub link_group: Option<LinkGroup>,
    /// The sha256 of a regular file's body as written in this entry, with [`walk_hashing`].
    pub sha256: Option<[u8; 32]>,
}

/// A hardlink group: trailer generation, inode, device major and minor.
pub type LinkGroup = (u64, u32, u32, u32);

/// What [`walk`] found besides the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The segments in order (`none` for a plain one).
    pub segments: Vec<Compression>,
    /// Entries seen, trailers excluded.
    pub entries: u64,
}

/// Why a walk stopped.
#[derive(Debug)]
pub enum WalkError {
    /// Reading the image failed.
    Read(io::Error),
    /// The bytes are not what the kernel would unpack: one sentence, with the offset.
    Format(String),
    /// The callback failed (writing the listing).
    Sink(io::Error),
}

type Sink<'s> = dyn FnMut(&Entry<'_>) -> io::Result<()> + 's;

/// Reads every segment of `image`, calling `sink` for each entry in archive order.
pub fn walk<R: Read>(image: R, sink: &mut Sink<'_>) -> Result<Summary, WalkError> {
    walk_with(image, false, sink)
}

/// [`walk`], with the sha256 of every regular file's body in [`Entry::sha256`].
pub fn walk_hashing<R: Read>(image: R, sink: &mut Sink<'_>) -> Result<Summary, WalkError> {
    walk_with(image, true, sink)
}

fn walk_with<R: Read>(image: R, hash: bool, sink: &mut Sink<'_>) -> Result<Summary, WalkError> {
    let mut raw = Counted::new(BufReader::with_capacity(1 << 16, image));
    let mut parser = Parser {
        hash,
        ..Parser::default()
    };
    let mut summary = Summary::default();
    loop {
        raw.skip_zeros().map_err(WalkError::Read)?;
        let at = raw.offset;
        let head = raw.peek(6).map_err(WalkError::Read)?;
        if head.is_empty() {
            break;
        }
        match compress::detect(head) {
            Some(Compression::None) => {
                summary.segments.push(Compression::None);
                // A plain run ends where something other than a header follows an entry.
                while raw.peek(1).map_err(WalkError::Read)?.first() == Some(&b'0') {
                    parser.offset = raw.offset;
                    parser.entry(&mut raw, sink, &mut summary)?;
                    raw.skip_zeros().map_err(WalkError::Read)?;
                }
            }
            Some(c) => {
                summary.segments.push(c);
                let mut d =
                    BufReader::with_capacity(1 << 16, (c.format().member)(Box::new(&mut raw)));
                parser
                    .decompressed(&mut d, sink, &mut summary)
                    .map_err(|e| in_segment(e, c, at))?;
            }
            None => return Err(WalkError::Format(unknown_data(head, at, summary.entries))),
        }
    }
    if summary.entries == 0 {
        return Err(WalkError::Format("holds no entries".into()));
    }
    Ok(summary)
}

fn in_segment(e: WalkError, c: Compression, at: u64) -> WalkError {
    match e {
        WalkError::Format(m) => {
            WalkError::Format(format!("in the {} segment at byte {at}: {m}", c.name()))
        }
        WalkError::Read(e) => WalkError::Format(format!(
            "in the {} segment at byte {at}: the data does not decode: {e}",
            c.name()
        )),
        sink => sink,
    }
}

/// The sentence for bytes that start no segment the kernel knows.
fn unknown_data(head: &[u8], at: u64, entries: u64) -> String {
    const OTHERS: [(&[u8], &str); 4] = [
        (b"BZh", "bzip2"),
        (&[0x5d, 0, 0], "lzma"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
        (b"070707", "old-format (odc) cpio"),
    ];
    if let Some((_, name)) = OTHERS.iter().find(|(m, _)| head.starts_with(m)) {
        return format!(
            "the segment at byte {at} is {name}, which fledge inspect does not read (plain newc, gzip, zstd, xz and lz4 only)"
        );
    }
    let what = if entries == 0 {
        "not an initramfs"
    } else {
        "junk after the last segment"
    };
    format!(
        "{what}: unknown data at byte {at} starting {:02x?} (expected a newc cpio archive, plain or compressed with gzip, zstd, xz or lz4)",
        &head[..head.len().min(6)]
    )
}

/// The entry parser: reusable buffers and the hardlink generation (bumped at each trailer).
#[derive(Default)]
struct Parser {
    name: Vec<u8>,
    path: Vec<u8>,
    target: Vec<u8>,
    body: Vec<u8>,
    generation: u64,
    /// Bytes read in the current decompressed segment, for messages.
    offset: u64,
    /// Hash regular files' bodies.
    hash: bool,
    /// The sha256 of the last body read, when hashed.
    digest: Option<[u8; 32]>,
}

impl Parser {
    /// Entries of one decompressed segment, with NUL padding between them, to its end.
    fn decompressed<R: BufRead>(
        &mut self,
        r: &mut R,
        sink: &mut Sink<'_>,
        summary: &mut Summary,
    ) -> Result<(), WalkError> {
        self.offset = 0;
        loop {
            let buf = r.fill_buf().map_err(WalkError::Read)?;
            let zeros = buf.iter().take_while(|b| **b == 0).count();
            let (empty, first) = (buf.is_empty(), buf.get(zeros).copied());
            r.consume(zeros);
            self.offset += zeros as u64;
            match first {
                _ if empty => return Ok(()),
                None => continue,
                Some(b'0') => self.entry(r, sink, summary)?,
                Some(b) => {
                    return Err(WalkError::Format(format!(
                        "junk (byte {b:#04x}) at offset {} where an entry or padding should be",
                        self.offset
                    )))
                }
            }
        }
    }

    /// Reads a header and the name after it (into `self.name`), checked.
    fn header<R: BufRead>(&mut self, r: &mut R) -> Result<Fields, WalkError> {
        let at = self.offset;
        let fmt = |m: String| WalkError::Format(m);
        let mut h = [0u8; HEADER_LEN];
        r.read_exact(&mut h)
            .map_err(|e| fmt(format!("truncated header at offset {at}: {e}")))?;
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return Err(fmt(format!(
                "bad cpio magic {:?} at offset {at} (only newc is supported)",
                String::from_utf8_lossy(&h[..6])
            )));
        }
        let f =
            Fields::parse(&h).map_err(|s| fmt(format!("bad header field {s:?} at offset {at}")))?;
        let is_link = file_type(f.mode) == FileType::Symlink;
        // Names and link targets are paths: a header claiming more is damage, not data.
        if f.namesize == 0 || f.namesize > PATH_MAX || (is_link && f.size > PATH_MAX as u64) {
            return Err(fmt(format!(
                "entry at offset {at} claims a {}-byte name or link target (1 to {PATH_MAX})",
                f.namesize.max(if is_link { f.size as usize } else { 0 })
            )));
        }
        self.name.resize(f.namesize, 0);
        r.read_exact(&mut self.name)
            .map_err(|e| fmt(format!("truncated name at offset {at}: {e}")))?;
        self.name.pop();
        skip(
            r,
            pad4(HEADER_LEN as u64 + f.namesize as u64) - (HEADER_LEN + f.namesize) as u64,
        )
        .map_err(WalkError::Read)?;
        self.offset += pad4(HEADER_LEN as u64 + f.namesize as u64);
        Ok(f)
    }

    /// Reads one entry (header, name, body) and hands it to `sink`; a trailer is not handed on.
    fn entry<R: BufRead>(
        &mut self,
        r: &mut R,
        sink: &mut Sink<'_>,
        summary: &mut Summary,
    ) -> Result<(), WalkError> {
        let f = self.header(r)?;
        let is_link = file_type(f.mode) == FileType::Symlink;
        if self.name == TRAILER.as_bytes() {
            self.generation += 1;
            return self.body(r, f.size, None);
        }
        normalise(&self.name, &mut self.path);
        let kept = !is_link
            && KEPT_BODIES
                .iter()
                .any(|(k, max)| k.as_bytes() == self.path.as_slice() && f.size <= *max);
        let mut body = std::mem::take(&mut self.body);
        let mut target = std::mem::take(&mut self.target);
        let keep = if is_link {
            Some(&mut target)
        } else if kept {
            Some(&mut body)
        } else {
            None
        };
        let kind = file_type(f.mode);
        self.digest = None;
        let result = if self.hash && kind == FileType::File && keep.is_none() {
            self.hashed_body(r, f.size)
        } else {
            self.body(r, f.size, keep)
        };
        if self.hash && kind == FileType::File && kept {
            self.digest = Some(sha2::Sha256::digest(&body).into());
        }
        let e = Entry {
            path: &self.path,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            size: f.size,
            ino: f.ino,
            nlink: f.nlink,
            mtime: f.mtime,
            rdev: matches!(kind, FileType::CharDev | FileType::BlockDev).then_some(f.rdev),
            target: is_link.then_some(target.as_slice()),
            body: kept.then_some(body.as_slice()),
            link_group: (kind == FileType::File && f.nlink > 1).then_some((
                self.generation,
                f.ino,
                f.dev.0,
                f.dev.1,
            )),
            sha256: self.digest,
        };
        let sent = result.and_then(|()| {
            summary.entries += 1;
            sink(&e).map_err(WalkError::Sink)
        });
        self.body = body;
        self.target = target;
        sent
    }

    /// Reads a body of `size` bytes and its padding into a hash, kept in `self.digest`.
    fn hashed_body<R: BufRead>(&mut self, r: &mut R, size: u64) -> Result<(), WalkError> {
        let mut h = Hashing::sink();
        let n = io::copy(&mut r.take(size), &mut h).map_err(WalkError::Read)?;
        if n != size {
            let name = String::from_utf8_lossy(&self.name);
            return Err(WalkError::Format(format!(
                "truncated body of {name} ({n} of {size} bytes)"
            )));
        }
        skip(r, pad4(size) - size).map_err(WalkError::Read)?;
        self.offset += pad4(size);
        self.digest = Some(h.digest());
        Ok(())
    }

    /// Reads a body of `size` bytes and its padding, into `keep` or nowhere.
    fn body<R: BufRead>(
        &mut self,
        r: &mut R,
        size: u64,
        keep: Option<&mut Vec<u8>>,
    ) -> Result<(), WalkError> {
        let name = String::from_utf8_lossy(&self.name).into_owned();
        let cut =
            |n: u64| WalkError::Format(format!("truncated body of {name} ({n} of {size} bytes)"));
        match keep {
            Some(buf) => {
                buf.clear();
                let n = r.take(size).read_to_end(buf).map_err(WalkError::Read)? as u64;
                if n != size {
                    return Err(cut(n));
                }
            }
            None => {
                let n = io::copy(&mut r.take(size), &mut io::sink()).map_err(WalkError::Read)?;
                if n != size {
                    return Err(cut(n));
                }
            }
        }
        skip(r, pad4(size) - size).map_err(WalkError::Read)?;
        self.offset += pad4(size);
        Ok(())
    }
}

/// The numeric fields of a newc header.
struct Fields {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u64,
    dev: (u32, u32),
    rdev: (u32, u32),
    namesize: usize,
}

impl Fields {
    /// Parses the 13 hex fields after the magic; the error is the field that is not hex.
    fn parse(h: &[u8; HEADER_LEN]) -> Result<Fields, String> {
        let mut v = [0u32; 13];
        for (i, slot) in v.iter_mut().enumerate() {
            let raw = &h[6 + i * 8..14 + i * 8];
            *slot = std::str::from_utf8(raw)
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or_else(|| String::from_utf8_lossy(raw).into_owned())?;
        }
        Ok(Fields {
            ino: v[0],
            mode: v[1],
            uid: v[2],
            gid: v[3],
            nlink: v[4],
            mtime: v[5],
            size: v[6] as u64,
            dev: (v[7], v[8]),
            rdev: (v[9], v[10]),
            namesize: v[11] as usize,
        })
    }
}

/// `./a//b/.` -> `/a/b`; the root is `/`.
fn normalise(name: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for c in name
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
    {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
}

fn pad4(n: u64) -> u64 {
    (n + 3) & !3
}

fn skip<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    io::copy(&mut r.take(n), &mut io::sink()).map(|_| ())
}

/// The raw image: a buffered reader that counts what was consumed and can look ahead a few
/// bytes across its buffer's edge.
pub struct Counted<R> {
    inner: BufReader<R>,
    ahead: Vec<u8>,
    offset: u64,
}

impl<R: Read> Counted<R> {
    fn new(inner: BufReader<R>) -> Self {
        Counted {
            inner,
            ahead: Vec::new(),
            offset: 0,
        }
    }

    /// Up to `n` next bytes without consuming them (fewer only at the end).
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.ahead.len() < n {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let take = buf.len().min(n - self.ahead.len());
            self.ahead.extend_from_slice(&buf[..take]);
            self.inner.consume(take);
        }
        Ok(&self.ahead[..self.ahead.len().min(n)])
    }

    fn skip_zeros(&mut self) -> io::Result<()> {
        loop {
            let buf = self.fill_buf()?;
            let zeros = buf.iter().take_while(|b| **b == 0).count();
            let done = zeros < buf.len() || buf.is_empty();
            self.consume(zeros);
            if done {
                return Ok(());
            }
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.ahead.is_empty() {
            self.inner.fill_buf()
        } else {
            Ok(&self.ahead)
        }
    }

    fn consume(&mut self, n: usize) {
        self.offset += n as u64;
        if self.ahead.is_empty() {
            self.inner.consume(n);
        } else {
            self.ahead.drain(..n.min(self.ahead.len()));
        }
    }
}
