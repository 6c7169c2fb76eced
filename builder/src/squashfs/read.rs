//! The squashfs reader behind `fledge inspect` and `fledge verify` of a root file system disk:
//! walks any squashfs 4.0 image (gzip, xz, lz4 or zstd; ours or mksquashfs's) and hands each
//! entry to the same callback the newc reader feeds ([`crate::inspect::reader::Entry`]),
//! parents before children and names in byte order.
//!
//! The image is untrusted: every table must lie inside `bytes_used`, every metadata block
//! decompresses to at most 8 KiB and every data block to at most the block size, every
//! reference must point into its table, a directory is entered once (no loops), and paths stay
//! below `PATH_MAX`. The inode and directory tables are read whole (their compressed size is
//! bounded by the file); file bodies are read only when hashed or kept for the boot check.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom};

use sha2::Digest as _;

use crate::compress::Compression;
use crate::inspect::reader::{Entry, Summary, WalkError, KEPT_BODIES};

/// Longest path Linux accepts.
const PATH_MAX: usize = 4096;
const META: usize = 8192;

fn bad(m: impl Into<String>) -> WalkError {
    WalkError::Format(m.into())
}

struct Super {
    inodes: u32,
    block_size: u32,
    fragments: u32,
    compression: Compression,
    ids: u16,
    root: u64,
    bytes_used: u64,
    id_table: u64,
    inode_table: u64,
    directory_table: u64,
    fragment_table: u64,
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn superblock(b: &[u8; 96], file_len: u64) -> Result<Super, WalkError> {
    if &b[..4] != super::MAGIC {
        return Err(bad("not a squashfs image (no hsqs magic)"));
    }
    let (major, minor) = (le16(b, 28), le16(b, 30));
    if (major, minor) != (4, 0) {
        return Err(bad(format!("squashfs {major}.{minor}: only 4.0 is read")));
    }
    let id = le16(b, 20);
    let Some(compression) = Compression::from_squashfs_id(id) else {
        return Err(bad(format!(
            "compressor {id} is not one fledge reads (gzip, xz, lz4, zstd)"
        )));
    };
    let s = Super {
        inodes: le32(b, 4),
        block_size: le32(b, 12),
        fragments: le32(b, 16),
        compression,
        ids: le16(b, 26),
        root: le64(b, 32),
        bytes_used: le64(b, 40),
        id_table: le64(b, 48),
        inode_table: le64(b, 64),
        directory_table: le64(b, 72),
        fragment_table: le64(b, 80),
    };
    let log = le16(b, 22);
    if !s.block_size.is_power_of_two()
        || !(4096..=1 << 20).contains(&s.block_size)
        || u32::from(log) != s.block_size.trailing_zeros()
    {
        return Err(bad(format!("block size {} is not valid", s.block_size)));
    }
    if s.bytes_used > file_len {
        return Err(bad(format!(
            "the superblock says {} bytes, the file has {file_len}",
            s.bytes_used
        )));
    }
    if !(96 <= s.inode_table
        && s.inode_table < s.directory_table
        && s.directory_table <= s.bytes_used
        && s.id_table < s.bytes_used)
    {
        return Err(bad(
            "the tables are not in the order and place squashfs puts them",
        ));
    }
    Ok(s)
}

/// The image being read.
struct Disk<R> {
    r: R,
    s: Super,
    hash: bool,
}

impl<R: Read + Seek> Disk<R> {
    fn read_at(&mut self, pos: u64, n: usize) -> Result<Vec<u8>, WalkError> {
        if pos
            .checked_add(n as u64)
            .is_none_or(|end| end > self.s.bytes_used)
        {
            return Err(bad(format!(
                "{n} bytes at {pos} are past the end of the image ({})",
                self.s.bytes_used
            )));
        }
        self.r.seek(SeekFrom::Start(pos)).map_err(WalkError::Read)?;
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b).map_err(WalkError::Read)?;
        Ok(b)
    }

    fn decompress(&self, raw: &[u8], max: usize) -> Result<Vec<u8>, WalkError> {
        let c = self.s.compression;
        let Some(block) = &c.format().block else {
            return Err(bad(format!("{} is not a squashfs compressor", c.name())));
        };
        let out = (block.decode)(raw, max)
            .map_err(|e| bad(format!("a compressed {} block is corrupt: {e}", c.name())))?;
        if out.len() > max {
            return Err(bad(format!(
                "a block decompresses to more than {max} bytes"
            )));
        }
        Ok(out)
    }

    /// One metadata block at `pos`: its bytes and the position after it.
    fn meta_block(&mut self, pos: u64) -> Result<(Vec<u8>, u64), WalkError> {
        let h = le16(&self.read_at(pos, 2)?, 0);
        let len = usize::from(h & 0x7fff);
        if len == 0 || len > META {
            return Err(bad(format!("metadata block at {pos}: bad length {len}")));
        }
        let raw = self.read_at(pos.saturating_add(2), len)?;
        let data = if h & 0x8000 != 0 {
            raw
        } else {
            self.decompress(&raw, META)?
        };
        // read_at saw pos + 2 + len within the image, so this cannot overflow.
        Ok((data, pos + 2 + len as u64))
    }

    /// A whole metadata table between `start` and `end`, with where each block begins in it.
    fn table(&mut self, start: u64, end: u64) -> Result<Table, WalkError> {
        let mut t = Table::default();
        let mut pos = start;
        while pos < end {
            let (data, next) = self.meta_block(pos)?;
            t.blocks.insert(pos - start, t.data.len());
            t.data.extend_from_slice(&data);
            pos = next;
        }
        Ok(t)
    }

    /// A lookup table (`count` entries of `size` bytes) whose block index is at `index`.
    fn lookup(&mut self, index: u64, count: usize, size: usize) -> Result<Vec<u8>, WalkError> {
        let blocks = (count * size).div_ceil(META);
        let idx = self.read_at(index, blocks * 8)?;
        let mut out = Vec::with_capacity(count * size);
        for i in 0..blocks {
            let (data, _) = self.meta_block(le64(&idx, i * 8))?;
            out.extend_from_slice(&data);
        }
        if out.len() < count * size {
            return Err(bad("a lookup table is shorter than its count"));
        }
        out.truncate(count * size);
        Ok(out)
    }
}

/// A decompressed metadata table.
#[derive(Default)]
struct Table {
    data: Vec<u8>,
    /// Compressed offset of each block (from the table start) -> its offset in `data`.
    blocks: BTreeMap<u64, usize>,
}

impl Table {
    /// The bytes from reference (`block`, `offset`) on.
    fn at(&self, block: u64, offset: usize, what: &str) -> Result<&[u8], WalkError> {
        let start = self
            .blocks
            .get(&block)
            .ok_or_else(|| bad(format!("{what}: no metadata block at {block}")))?;
        self.data
            .get(start + offset..)
            .ok_or_else(|| bad(format!("{what}: offset {offset} is past its table")))
    }
}

/// Takes `n` bytes from `b`, or says what was cut short.
fn take<'a>(b: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], WalkError> {
    if b.len() < n {
        return Err(bad(format!("{what} is cut short")));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

/// An inode as read.
struct Inode {
    kind: u16,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: u32,
    number: u32,
    nlink: u32,
    size: u64,
    /// Directory: listing block, offset; file: data start.
    start: u64,
    offset: usize,
    sizes: Vec<u32>,
    fragment: Option<(u32, u32)>,
    target: Vec<u8>,
    rdev: u32,
}

fn inode(t: &Table, r: u64, ids: &[u32], block_size: u32) -> Result<Inode, WalkError> {
    let what = "an inode";
    let mut b = t.at(r >> 16, (r & 0xffff) as usize, what)?;
    let h = take(&mut b, 16, what)?;
    let id = |i: u16| {
        ids.get(usize::from(i))
            .copied()
            .ok_or_else(|| bad(format!("owner index {i} is past the id table")))
    };
    let mut n = Inode {
        kind: le16(h, 0),
        perm: le16(h, 2) & 0o7777,
        uid: id(le16(h, 4))?,
        gid: id(le16(h, 6))?,
        mtime: le32(h, 8),
        number: le32(h, 12),
        nlink: 1,
        size: 0,
        start: 0,
        offset: 0,
        sizes: Vec::new(),
        fragment: None,
        target: Vec::new(),
        rdev: 0,
    };
    let blocks = |size: u64, frag: bool| -> Result<usize, WalkError> {
        let bs = u64::from(block_size);
        let n = if frag { size / bs } else { size.div_ceil(bs) };
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= t.data.len() / 4)
            .ok_or_else(|| {
                bad(format!(
                    "a file of {size} bytes lists more blocks than its table holds"
                ))
            })
    };
    match n.kind {
        1 => {
            let d = take(&mut b, 16, what)?;
            n.start = u64::from(le32(d, 0));
            n.nlink = le32(d, 4);
            n.size = u64::from(le16(d, 8));
            n.offset = usize::from(le16(d, 10));
        }
        8 => {
            let d = take(&mut b, 24, what)?;
            n.nlink = le32(d, 0);
            n.size = u64::from(le32(d, 4));
            n.start = u64::from(le32(d, 8));
            n.offset = usize::from(le16(d, 18));
        }
        2 | 9 => {
            let (frag_index, frag_offset);
            if n.kind == 2 {
                let d = take(&mut b, 16, what)?;
                n.start = u64::from(le32(d, 0));
                frag_index = le32(d, 4);
                frag_offset = le32(d, 8);
                n.size = u64::from(le32(d, 12));
            } else {
                let d = take(&mut b, 40, what)?;
                n.start = le64(d, 0);
                n.size = le64(d, 8);
                n.nlink = le32(d, 24);
                frag_index = le32(d, 28);
                frag_offset = le32(d, 32);
            }
            let frag = frag_index != u32::MAX;
            n.fragment = frag.then_some((frag_index, frag_offset));
            let count = blocks(n.size, frag)?;
            let s = take(&mut b, count * 4, what)?;
            n.sizes = (0..count).map(|i| le32(s, i * 4)).collect();
        }
        3 | 10 => {
            let d = take(&mut b, 8, what)?;
            n.nlink = le32(d, 0);
            let len = le32(d, 4) as usize;
            if len > PATH_MAX {
                return Err(bad(format!("a symlink target of {len} bytes")));
            }
            n.target = take(&mut b, len, what)?.to_vec();
            n.size = len as u64;
        }
        4 | 5 | 11 | 12 => {
            let d = take(&mut b, 8, what)?;
            n.nlink = le32(d, 0);
            n.rdev = le32(d, 4);
        }
        6 | 7 | 13 | 14 => {
            n.nlink = le32(take(&mut b, 4, what)?, 0);
        }
        other => return Err(bad(format!("inode type {other} is not a squashfs type"))),
    }
    Ok(n)
}

/// Walks the disk in `r`, calling `sink` for each entry (the root excepted); with `hash`, every
/// regular file's sha256 is in its entry.
pub fn walk<R: Read + Seek>(
    mut r: R,
    hash: bool,
    sink: &mut dyn FnMut(&Entry<'_>) -> io::Result<()>,
) -> Result<Summary, WalkError> {
    let file_len = r.seek(SeekFrom::End(0)).map_err(WalkError::Read)?;
    let mut sb = [0u8; 96];
    r.seek(SeekFrom::Start(0)).map_err(WalkError::Read)?;
    r.read_exact(&mut sb)
        .map_err(|_| bad("shorter than a squashfs superblock"))?;
    let s = superblock(&sb, file_len)?;
    let mut d = Disk { r, s, hash };
    let ids: Vec<u32> = {
        let raw = d.lookup(d.s.id_table, usize::from(d.s.ids), 4)?;
        (0..usize::from(d.s.ids))
            .map(|i| le32(&raw, i * 4))
            .collect()
    };
    let fragments: Vec<(u64, u32)> = if d.s.fragments == 0 {
        Vec::new()
    } else {
        let count = d.s.fragments as usize;
        if count > (d.s.bytes_used / 16) as usize {
            return Err(bad(format!("{count} fragments cannot fit the image")));
        }
        let raw = d.lookup(d.s.fragment_table, count, 16)?;
        (0..count)
            .map(|i| (le64(&raw, i * 16), le32(&raw, i * 16 + 8)))
            .collect()
    };
    let inodes = d.table(d.s.inode_table, d.s.directory_table)?;
    let dir_end = [d.s.fragment_table, d.s.id_table]
        .into_iter()
        .filter(|t| *t >= d.s.directory_table)
        .min()
        .unwrap_or(d.s.bytes_used);
    let dirs = d.table(d.s.directory_table, dir_end)?;
    let block_size = d.s.block_size;

    let mut summary = Summary {
        segments: vec![d.s.compression],
        entries: 0,
    };
    let mut entered = HashSet::new();
    let mut frag_cache: Option<(u32, Vec<u8>)> = None;
    // Entries still to hand over, depth first (so reversed): parents before their children.
    let mut stack = children(
        &inodes,
        &dirs,
        &ids,
        block_size,
        &[],
        d.s.root,
        &mut entered,
        d.s.inodes,
    )?;
    stack.reverse();
    while let Some((p, child)) = stack.pop() {
        let n = inode(&inodes, child, &ids, block_size)?;
        let (type_bits, is_dir) = match n.kind {
            1 | 8 => (0o040000, true),
            2 | 9 => (0o100000, false),
            3 | 10 => (0o120000, false),
            4 | 11 => (0o060000, false),
            5 | 12 => (0o020000, false),
            6 | 13 => (0o010000, false),
            _ => (0o140000, false),
        };
        let keep = type_bits == 0o100000
            && KEPT_BODIES
                .iter()
                .any(|(k, max)| k.as_bytes() == &p[..] && n.size <= *max);
        let body = if type_bits == 0o100000 && (d.hash || keep) {
            Some(read_body(&mut d, &n, &fragments, &mut frag_cache)?)
        } else {
            None
        };
        let rdev = matches!(n.kind, 4 | 5 | 11 | 12).then(|| {
            let major = (n.rdev >> 8) & 0xfff;
            let minor = (n.rdev & 0xff) | ((n.rdev >> 12) & 0xfff00);
            (major, minor)
        });
        let entry = Entry {
            path: &p,
            mode: type_bits | u32::from(n.perm),
            uid: n.uid,
            gid: n.gid,
            size: if is_dir { 0 } else { n.size },
            ino: n.number,
            nlink: n.nlink,
            mtime: n.mtime,
            rdev,
            target: (type_bits == 0o120000).then_some(&n.target[..]),
            body: if keep { body.as_deref() } else { None },
            link_group: (type_bits == 0o100000 && n.nlink > 1).then_some((0, n.number, 0, 0)),
            sha256: match (&body, d.hash) {
                (Some(b), true) => Some(sha2::Sha256::digest(b).into()),
                _ => None,
            },
        };
        summary.entries += 1;
        sink(&entry).map_err(WalkError::Sink)?;
        if is_dir {
            let mut below = children(
                &inodes,
                &dirs,
                &ids,
                block_size,
                &p,
                child,
                &mut entered,
                d.s.inodes,
            )?;
            below.reverse();
            stack.extend(below);
        }
    }
    Ok(summary)
}

/// The entries of the directory at inode reference `r` (whose path is `path`), by name.
#[allow(clippy::too_many_arguments)]
fn children(
    inodes: &Table,
    dirs: &Table,
    ids: &[u32],
    block_size: u32,
    path: &[u8],
    r: u64,
    entered: &mut HashSet<u64>,
    inode_count: u32,
) -> Result<Vec<(Vec<u8>, u64)>, WalkError> {
    if !entered.insert(r) || entered.len() > inode_count as usize {
        return Err(bad("a directory is listed twice (a loop)"));
    }
    let dir = inode(inodes, r, ids, block_size)?;
    if dir.kind != 1 && dir.kind != 8 {
        return Err(bad(
            "a directory entry names a directory inode that is not one",
        ));
    }
    let len = usize::try_from(dir.size.saturating_sub(3)).unwrap_or(usize::MAX);
    let mut listing = dirs
        .at(dir.start, dir.offset, "a directory listing")?
        .get(..len)
        .ok_or_else(|| bad("a directory listing is past its table"))?;
    let mut out = Vec::new();
    while !listing.is_empty() {
        let h = take(&mut listing, 12, "a directory header")?;
        // The header stores one less than its count; the kernel allows 256 entries at most.
        let (count, start) = (u64::from(le32(h, 0)) + 1, le32(h, 4));
        if count > 256 {
            return Err(bad(format!("a directory header of {count} entries")));
        }
        for _ in 0..count {
            let e = take(&mut listing, 8, "a directory entry")?;
            let offset = le16(e, 0);
            let name_len = usize::from(le16(e, 6)) + 1;
            let name = take(&mut listing, name_len, "a directory entry")?;
            if name.contains(&b'/') || name == b"." || name == b".." || name.contains(&0) {
                return Err(bad(format!(
                    "the name {:?} is not a file name",
                    String::from_utf8_lossy(name)
                )));
            }
            let mut p = path.to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            if p.len() >= PATH_MAX {
                return Err(bad("a path longer than PATH_MAX"));
            }
            out.push((p, (u64::from(start) << 16) | u64::from(offset)));
        }
    }
    out.sort();
    Ok(out)
}

/// A regular file's bytes: its blocks (holes as zeros), then its tail from its fragment.
fn read_body<R: Read + Seek>(
    d: &mut Disk<R>,
    n: &Inode,
    fragments: &[(u64, u32)],
    cache: &mut Option<(u32, Vec<u8>)>,
) -> Result<Vec<u8>, WalkError> {
    let bs = d.s.block_size as usize;
    let size = usize::try_from(n.size).map_err(|_| bad("a file too large to read"))?;
    if n.size > d.s.bytes_used.saturating_mul(1 << 10).max(64 << 20) {
        return Err(bad(format!(
            "a file of {} bytes in a smaller image",
            n.size
        )));
    }
    let mut out = Vec::with_capacity(size.min(64 << 20));
    let mut pos = n.start;
    for &s in &n.sizes {
        let want = bs.min(size - out.len());
        let len = (s & !(1 << 24)) as usize;
        if s == 0 {
            out.resize(out.len() + want, 0);
            continue;
        }
        let raw = d.read_at(pos, len)?;
        pos += len as u64;
        let block = if s & (1 << 24) != 0 {
            raw
        } else {
            d.decompress(&raw, bs)?
        };
        if block.len() < want {
            return Err(bad("a data block is shorter than its file says"));
        }
        out.extend_from_slice(&block[..want]);
    }
    if let Some((index, offset)) = n.fragment {
        let &(start, fsize) = fragments
            .get(index as usize)
            .ok_or_else(|| bad(format!("fragment {index} is past the fragment table")))?;
        if cache.as_ref().is_none_or(|(i, _)| *i != index) {
            let len = (fsize & !(1 << 24)) as usize;
            let raw = d.read_at(start, len)?;
            let block = if fsize & (1 << 24) != 0 {
                raw
            } else {
                d.decompress(&raw, bs)?
            };
            *cache = Some((index, block));
        }
        let block = &cache.as_ref().expect("filled above").1;
        let tail = size - out.len();
        let from = offset as usize;
        let piece = block
            .get(from..from.saturating_add(tail))
            .ok_or_else(|| bad("a file's tail is past its fragment"))?;
        out.extend_from_slice(piece);
    }
    if out.len() != size {
        return Err(bad("a file's blocks do not add up to its size"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One metadata table holding `data` in a single block.
    fn table(data: Vec<u8>) -> Table {
        Table {
            data,
            blocks: BTreeMap::from([(0, 0)]),
        }
    }

    /// A basic directory inode (type 1) whose listing is `size` bytes at the start of the
    /// directory table.
    fn dir_inode(size: u16) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [1u16, 0o755, 0, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0u32, 1, 0, 2] {
            b.extend_from_slice(&v.to_le_bytes()); // mtime, number, start block, nlink
        }
        b.extend_from_slice(&(size + 3).to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b
    }

    fn refused(header: [u32; 3], names: &[&[u8]]) -> String {
        match listing(header, names) {
            Err(WalkError::Format(m)) => m,
            other => panic!("not refused as malformed: {:?}", other.map(|v| v.len())),
        }
    }

    fn listing(header: [u32; 3], names: &[&[u8]]) -> Result<Vec<(Vec<u8>, u64)>, WalkError> {
        let mut l: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
        for (i, n) in names.iter().enumerate() {
            let at = u16::try_from(i * 32).unwrap();
            for v in [at, 0, 2, u16::try_from(n.len() - 1).unwrap()] {
                l.extend_from_slice(&v.to_le_bytes());
            }
            l.extend_from_slice(n);
        }
        let inodes = table(dir_inode(u16::try_from(l.len()).unwrap()));
        children(
            &inodes,
            &table(l),
            &[0],
            4096,
            b"",
            0,
            &mut HashSet::new(),
            8,
        )
    }

    #[test]
    fn a_directory_header_is_read_within_its_bounds() {
        let got = listing([1, 0, 2], &[b"a", b"bc"]).unwrap();
        let names: Vec<&[u8]> = got.iter().map(|(p, _)| &p[..]).collect();
        assert_eq!(names, [&b"/a"[..], b"/bc"]);
        assert_eq!(got[1].1, 32, "block 0, offset 32");

        // The header's count is stored minus one: u32::MAX means 2^32 entries, not zero.
        let e = refused([u32::MAX, 0, 2], &[b"a"]);
        assert!(
            e.contains("a directory header of 4294967296 entries"),
            "{e}"
        );
        let e = refused([256, 0, 2], &[b"a"]);
        assert!(e.contains("of 257 entries"), "{e}");
        let e = refused([1, 0, 2], &[b"a"]);
        assert!(e.contains("a directory entry is cut short"), "{e}");
    }
}
