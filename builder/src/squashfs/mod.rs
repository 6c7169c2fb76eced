//! The squashfs 4.0 writer: turns normalised [`Entry`] values into a root file system disk the
//! Linux kernel mounts read-only (`rootfstype=squashfs`).
//!
//! This module owns the on-disk format, as the newc writer ([`crate::archive`]) owns its own: it
//! decides nothing about owners, times or order, so the bytes are a function of the entries
//! and the settings. Layout, in file order (the kernel's `fs/squashfs` checks this order):
//! the superblock, compressor options (lz4), data blocks and fragment blocks, the inode
//! table, the directory table, the fragment table, the id table; no export or xattr table.
//! The image is padded to 4 KiB, as a block device wants.
//!
//! - Files are cut into blocks of [`BLOCK_SIZE`]; each block is compressed on its own (the
//!   blocks of a batch in parallel, written in order, so the bytes never depend on the number
//!   of threads) and stored uncompressed when that is not smaller; an all-zero block is a hole
//!   (no bytes). A file's tail, and a file smaller than a block, goes into a shared fragment
//!   block.
//! - The inodes are written children first (a directory after everything under it), numbered
//!   in that order, so a directory's listing is written when the inodes it names are, and the
//!   root is the last inode.
//! - newc hardlink groups (entries sharing an inode number; only the last carries the body)
//!   become one inode with several names.
//! - Extended attributes an image's layers give (`user.`, `trusted.`, `security.`, e.g. a file
//!   capability) are kept: each distinct set once, after the id table, its index ending the
//!   image as the kernel expects; inodes with a set are the extended kinds.

pub mod read;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::archive::{ArchiveError, Content, Entry, Kind};
use crate::compress::codec::EncodeBlocks;
use crate::compress::format::{resolve_level, Level};
use crate::compress::{CompressError, Compression};

/// Data block size: 128 KiB, mksquashfs's default.
pub const BLOCK_SIZE: u32 = 128 << 10;
/// The magic at offset 0 (`hsqs`).
pub const MAGIC: &[u8; 4] = b"hsqs";
/// Bytes of uncompressed metadata per metadata block.
const META: usize = 8192;
/// A data block or fragment stored uncompressed.
const DATA_UNCOMPRESSED: u32 = 1 << 24;
/// A metadata block stored uncompressed.
const META_UNCOMPRESSED: u16 = 0x8000;
/// "None" for a 32-bit index or a 64-bit table position.
const NONE32: u32 = u32::MAX;
const NONE64: u64 = u64::MAX;
/// Superblock flags.
const NO_XATTRS: u16 = 0x0200;
const COMPRESSOR_OPTIONS: u16 = 0x0400;
const UNCOMPRESSED_ALL: u16 = 0x0001 | 0x0002 | 0x0008 | 0x0800;
/// Blocks compressed in parallel before they are written.
const BATCH_BYTES: usize = 16 << 20;

/// Inode types (basic; extended = basic + 7).
mod ty {
    pub const DIR: u16 = 1;
    pub const FILE: u16 = 2;
    pub const SYMLINK: u16 = 3;
    pub const BLOCK: u16 = 4;
    pub const CHAR: u16 = 5;
    pub const FIFO: u16 = 6;
    pub const EXT_DIR: u16 = 8;
    pub const EXT_FILE: u16 = 9;
}

/// Extended attributes by path (without the leading `/`), then by name.
pub type Xattrs = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// One attribute as squashfs stores it: the prefix's type (user 0, trusted 1, security 2), the
/// name after the prefix, the value.
type Attr = (u16, Vec<u8>, Vec<u8>);

/// The distinct attribute sets, numbered in order of first use, and each entry's set.
struct XattrSets {
    sets: Vec<Vec<Attr>>,
    of_entry: HashMap<usize, u32>,
}

impl XattrSets {
    fn new(entries: &[Entry], xattrs: &Xattrs) -> XattrSets {
        let mut ids: BTreeMap<Vec<Attr>, u32> = BTreeMap::new();
        let mut out = XattrSets {
            sets: Vec::new(),
            of_entry: HashMap::new(),
        };
        if xattrs.is_empty() {
            return out;
        }
        let mut skipped = BTreeSet::new();
        for (i, e) in entries.iter().enumerate() {
            let Some(a) = xattrs.get(e.path.trim_matches('/')) else {
                continue;
            };
            let set: Vec<Attr> = a
                .iter()
                .filter_map(|(k, v)| {
                    let kinds = [("user.", 0), ("trusted.", 1), ("security.", 2)];
                    let found = kinds
                        .iter()
                        .find_map(|(p, t)| k.strip_prefix(p).map(|n| (*t, n)));
                    if found.is_none() {
                        skipped.insert(k.clone());
                    }
                    let (t, name) = found?;
                    Some((t, name.as_bytes().to_vec(), v.clone()))
                })
                .collect();
            if set.is_empty() {
                continue;
            }
            let next = out.sets.len() as u32;
            let id = *ids.entry(set.clone()).or_insert_with(|| {
                out.sets.push(set);
                next
            });
            out.of_entry.insert(i, id);
        }
        if !skipped.is_empty() {
            let names: Vec<String> = skipped.into_iter().collect();
            log::warn!(
                "squashfs stores user., trusted. and security. attributes only; dropped: {}",
                names.join(", ")
            );
        }
        out
    }
}

/// How the disk is compressed.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub compression: Compression,
    /// `None`: the compressor's default (gzip 9, xz 6, zstd 15).
    pub level: Option<i32>,
    pub threads: usize,
    /// The superblock's modification time (`SOURCE_DATE_EPOCH`).
    pub mtime: u32,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub inodes: u32,
    pub bytes_used: u64,
}

/// One block compressor.
#[derive(Debug, Clone, Copy)]
struct Codec {
    compression: Compression,
    level: Level,
}

impl Codec {
    fn new(o: &Options) -> Result<Codec, CompressError> {
        Ok(Codec {
            compression: o.compression,
            level: resolve_level(o.compression, o.level, |l| l.squashfs)?,
        })
    }

    /// The squashfs compressor id (gzip for an uncompressed disk, whose flags say so).
    fn id(&self) -> u16 {
        self.compression
            .format()
            .squashfs_id
            .or(Compression::Gzip.format().squashfs_id)
            .expect("gzip has a squashfs id")
    }

    /// `Some(compressed)` when compressing makes `raw` smaller.
    fn compress(&self, raw: &[u8]) -> Result<Option<Vec<u8>>, CompressError> {
        self.compress_with(&mut self.engine()?, raw)
    }

    /// The compressor state a thread keeps from block to block; `None` when blocks are stored
    /// as they are.
    fn engine(&self) -> Result<Engine, CompressError> {
        match &self.compression.format().block {
            Some(b) => (b.encoder)(self.level, BLOCK_SIZE).map(Some),
            None => Ok(None),
        }
    }

    /// `Some(compressed)` when compressing makes `raw` smaller, with `engine` from
    /// [`Codec::engine`].
    fn compress_with(
        &self,
        engine: &mut Engine,
        raw: &[u8],
    ) -> Result<Option<Vec<u8>>, CompressError> {
        let Some(e) = engine else { return Ok(None) };
        let out = e.compress(raw)?;
        Ok((out.len() < raw.len()).then_some(out))
    }

    /// Compressor options written after the superblock, when the format must have them.
    fn options(&self) -> Option<Vec<u8>> {
        let block = self.compression.format().block.as_ref();
        block.and_then(|b| b.options).map(<[u8]>::to_vec)
    }
}

/// Per-thread compressor state.
type Engine = Option<Box<dyn EncodeBlocks>>;

fn encoder_err(what: &'static str, e: &dyn std::fmt::Display) -> CompressError {
    CompressError::Encoder {
        what,
        message: e.to_string(),
    }
}

/// A metadata stream: 8 KiB blocks, each behind a 2-byte length header.
struct Meta {
    out: Vec<u8>,
    buf: Vec<u8>,
    /// Where each block starts in `out` (for the lookup tables).
    starts: Vec<u64>,
}

impl Meta {
    fn new() -> Meta {
        Meta {
            out: Vec::new(),
            buf: Vec::with_capacity(META),
            starts: Vec::new(),
        }
    }

    /// The reference of the next byte: the block's start in the stream << 16 | the offset in it.
    fn pos(&self) -> (u64, u16) {
        (self.out.len() as u64, self.buf.len() as u16)
    }

    fn put(&mut self, codec: &Codec, mut b: &[u8]) -> Result<(), CompressError> {
        while !b.is_empty() {
            let n = (META - self.buf.len()).min(b.len());
            self.buf.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.buf.len() == META {
                self.flush(codec)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, codec: &Codec) -> Result<(), CompressError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.starts.push(self.out.len() as u64);
        match codec.compress(&self.buf)? {
            Some(c) => {
                self.out.extend_from_slice(&(c.len() as u16).to_le_bytes());
                self.out.extend_from_slice(&c);
            }
            None => {
                let h = self.buf.len() as u16 | META_UNCOMPRESSED;
                self.out.extend_from_slice(&h.to_le_bytes());
                self.out.extend_from_slice(&self.buf);
            }
        }
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self, codec: &Codec) -> Result<Meta, CompressError> {
        self.flush(codec)?;
        Ok(self)
    }
}

/// One node of the tree being written.
struct Inode {
    name: Vec<u8>,
    /// Index into the entries (`None`: a directory no entry names, or the root).
    entry: Option<usize>,
    children: Vec<usize>,
    is_dir: bool,
}

/// Where a file's data went.
#[derive(Default, Clone)]
struct Data {
    start: u64,
    size: u64,
    sizes: Vec<u32>,
    sparse: u64,
    fragment: Option<(u32, u32)>,
}

/// A block waiting for compression: of file `file`, or fragment block `Fragment`.
enum Job {
    Block { file: usize, raw: Vec<u8> },
    Fragment { raw: Vec<u8> },
}

/// Writes `entries` as a squashfs image into `out` (written from its current position 0).
pub fn write<W: Write + Seek>(
    entries: &[Entry],
    opts: &Options,
    xattrs: &Xattrs,
    out: &mut W,
) -> Result<Stats, CompressError> {
    let codec = Codec::new(opts)?;
    let attrs = XattrSets::new(entries, xattrs);
    let threads = opts.threads.max(1);
    let nodes = tree(entries);

    // Hardlink groups: entries of a file inode number; the body is on the one that has it.
    let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if matches!(e.kind, Kind::File(_)) && e.nlink > 1 {
            groups.entry(e.ino).or_default().push(i);
        }
    }
    // The entry that stands for each file inode (the one with the body, else the first).
    let owner = |i: usize| -> usize {
        let e = &entries[i];
        match groups.get(&e.ino) {
            Some(g) if matches!(e.kind, Kind::File(_)) && e.nlink > 1 => g
                .iter()
                .copied()
                .find(|&j| matches!(&entries[j].kind, Kind::File(c) if !c.is_empty()))
                .unwrap_or(g[0]),
            _ => i,
        }
    };

    // The superblock goes last; the options (lz4) right after it.
    let mut pos: u64 = 96;
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&[0u8; 96])?;
    let options = codec.options();
    if let Some(o) = &options {
        let h = o.len() as u16 | META_UNCOMPRESSED;
        out.write_all(&h.to_le_bytes())?;
        out.write_all(o)?;
        pos += 2 + o.len() as u64;
    }

    // Data: every file inode once, in entry order.
    let mut data: HashMap<usize, Data> = HashMap::new();
    let mut fragments: Vec<(u64, u32)> = Vec::new();
    let mut frag_buf: Vec<u8> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut batch = 0usize;
    let block = BLOCK_SIZE as usize;
    for (i, e) in entries.iter().enumerate() {
        let Kind::File(content) = &e.kind else {
            continue;
        };
        if owner(i) != i {
            continue;
        }
        let size = content.len();
        data.insert(
            i,
            Data {
                size,
                ..Data::default()
            },
        );
        let mut left = size;
        let mut reader = open(content)?;
        while left > 0 {
            let n = left.min(block as u64) as usize;
            let mut raw = vec![0u8; n];
            read_exact(&mut reader, &mut raw, content)?;
            left -= n as u64;
            if n == block {
                batch += n;
                jobs.push(Job::Block { file: i, raw });
            } else {
                // The tail: into the fragment block, a new one when it does not fit.
                if frag_buf.len() + n > block {
                    batch += frag_buf.len();
                    jobs.push(Job::Fragment {
                        raw: std::mem::take(&mut frag_buf),
                    });
                }
                let index = (fragments.len()
                    + jobs
                        .iter()
                        .filter(|j| matches!(j, Job::Fragment { .. }))
                        .count()) as u32;
                let d = data.get_mut(&i).expect("inserted above");
                d.fragment = Some((index, frag_buf.len() as u32));
                frag_buf.extend_from_slice(&raw);
            }
            if batch >= BATCH_BYTES {
                pos = flush(
                    &codec,
                    threads,
                    &mut jobs,
                    &mut data,
                    &mut fragments,
                    pos,
                    out,
                )?;
                batch = 0;
            }
        }
        check_end(&mut reader, content)?;
    }
    if !frag_buf.is_empty() {
        jobs.push(Job::Fragment { raw: frag_buf });
    }
    pos = flush(
        &codec,
        threads,
        &mut jobs,
        &mut data,
        &mut fragments,
        pos,
        out,
    )?;

    // Inode numbers, children first; the root last.
    let mut order = Vec::with_capacity(nodes.len());
    post_order(&nodes, 0, &mut order);
    let mut number: HashMap<usize, u32> = HashMap::new();
    let mut next = 0u32;
    let inode_of = |n: usize| -> Option<usize> { nodes[n].entry.map(owner) };
    let mut node_number = vec![0u32; nodes.len()];
    for &n in &order {
        let num = match inode_of(n) {
            Some(o) if !nodes[n].is_dir => *number.entry(o).or_insert_with(|| {
                next += 1;
                next
            }),
            _ => {
                next += 1;
                next
            }
        };
        node_number[n] = num;
    }
    let inode_count = next;

    // Owners: the id table.
    let ids: Vec<u32> = {
        let mut s = BTreeSet::new();
        s.insert(0);
        for e in entries {
            s.insert(e.uid);
            s.insert(e.gid);
        }
        s.into_iter().collect()
    };
    let id_index: HashMap<u32, u16> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i as u16))
        .collect();

    // Inodes and listings.
    let mut inodes = Meta::new();
    let mut dirs = Meta::new();
    let mut refs: HashMap<u32, (u64, u16)> = HashMap::new();
    let mut parent = vec![0usize; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for &c in &n.children {
            parent[c] = i;
        }
    }
    for &n in &order {
        let num = node_number[n];
        if refs.contains_key(&num) {
            continue;
        }
        let node = &nodes[n];
        let e = node.entry.map(|i| &entries[i]);
        // A file's attributes are its inode's: the hardlink group's owner's.
        let xid = node
            .entry
            .map(|i| if node.is_dir { i } else { owner(i) })
            .and_then(|i| attrs.of_entry.get(&i).copied());
        let (perm, uid, gid, mtime) = match e {
            Some(e) => (e.perm, e.uid, e.gid, e.mtime),
            None => (0o755, 0, 0, opts.mtime),
        };
        let head = |t: u16| -> Vec<u8> {
            let mut h = Vec::with_capacity(64);
            h.extend_from_slice(&t.to_le_bytes());
            h.extend_from_slice(&((perm & 0o7777) as u16).to_le_bytes());
            h.extend_from_slice(&id_index[&uid].to_le_bytes());
            h.extend_from_slice(&id_index[&gid].to_le_bytes());
            h.extend_from_slice(&mtime.to_le_bytes());
            h.extend_from_slice(&num.to_le_bytes());
            h
        };
        let body: Vec<u8> = if node.is_dir {
            let listing_at = dirs.pos();
            let listing = listing(&nodes, node, entries, &node_number, &refs)?;
            dirs.put(&codec, &listing)?;
            let subdirs = node.children.iter().filter(|&&c| nodes[c].is_dir).count() as u32;
            let parent_num = if n == 0 {
                inode_count + 1
            } else {
                node_number[parent[n]]
            };
            let file_size = listing.len() as u64 + 3;
            match u16::try_from(file_size).ok().filter(|_| xid.is_none()) {
                Some(fs) => {
                    let mut b = head(ty::DIR);
                    b.extend_from_slice(&(listing_at.0 as u32).to_le_bytes());
                    b.extend_from_slice(&(2 + subdirs).to_le_bytes());
                    b.extend_from_slice(&fs.to_le_bytes());
                    b.extend_from_slice(&listing_at.1.to_le_bytes());
                    b.extend_from_slice(&parent_num.to_le_bytes());
                    b
                }
                None => {
                    let mut b = head(ty::EXT_DIR);
                    b.extend_from_slice(&(2 + subdirs).to_le_bytes());
                    b.extend_from_slice(&(file_size as u32).to_le_bytes());
                    b.extend_from_slice(&(listing_at.0 as u32).to_le_bytes());
                    b.extend_from_slice(&parent_num.to_le_bytes());
                    b.extend_from_slice(&0u16.to_le_bytes()); // no index
                    b.extend_from_slice(&listing_at.1.to_le_bytes());
                    b.extend_from_slice(&xid.unwrap_or(NONE32).to_le_bytes());
                    b
                }
            }
        } else {
            let e = e.expect("a non-directory node is an entry");
            let nlink = e.nlink.max(1);
            match &e.kind {
                Kind::File(_) => {
                    let d = &data[&owner(node.entry.expect("an entry"))];
                    let (fi, fo) = d.fragment.unwrap_or((NONE32, 0));
                    let basic = nlink == 1
                        && d.start <= u64::from(u32::MAX)
                        && d.size <= u64::from(u32::MAX)
                        && d.sparse == 0
                        && xid.is_none();
                    let mut b;
                    if basic {
                        b = head(ty::FILE);
                        b.extend_from_slice(&(d.start as u32).to_le_bytes());
                        b.extend_from_slice(&fi.to_le_bytes());
                        b.extend_from_slice(&fo.to_le_bytes());
                        b.extend_from_slice(&(d.size as u32).to_le_bytes());
                    } else {
                        b = head(ty::EXT_FILE);
                        b.extend_from_slice(&d.start.to_le_bytes());
                        b.extend_from_slice(&d.size.to_le_bytes());
                        b.extend_from_slice(&d.sparse.to_le_bytes());
                        b.extend_from_slice(&nlink.to_le_bytes());
                        b.extend_from_slice(&fi.to_le_bytes());
                        b.extend_from_slice(&fo.to_le_bytes());
                        b.extend_from_slice(&xid.unwrap_or(NONE32).to_le_bytes());
                    }
                    for s in &d.sizes {
                        b.extend_from_slice(&s.to_le_bytes());
                    }
                    b
                }
                Kind::Symlink(target) => {
                    let mut b = head(ty::SYMLINK + if xid.is_some() { 7 } else { 0 });
                    b.extend_from_slice(&nlink.to_le_bytes());
                    b.extend_from_slice(&(target.len() as u32).to_le_bytes());
                    b.extend_from_slice(target.as_bytes());
                    with_xattr(&mut b, xid);
                    b
                }
                Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                    let t = if matches!(e.kind, Kind::CharDev { .. }) {
                        ty::CHAR
                    } else {
                        ty::BLOCK
                    };
                    let mut b = head(t + if xid.is_some() { 7 } else { 0 });
                    b.extend_from_slice(&nlink.to_le_bytes());
                    let dev = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12);
                    b.extend_from_slice(&dev.to_le_bytes());
                    with_xattr(&mut b, xid);
                    b
                }
                Kind::Fifo => {
                    let mut b = head(ty::FIFO + if xid.is_some() { 7 } else { 0 });
                    b.extend_from_slice(&nlink.to_le_bytes());
                    with_xattr(&mut b, xid);
                    b
                }
                Kind::Dir => unreachable!("directories are handled above"),
            }
        };
        refs.insert(num, inodes.pos());
        inodes.put(&codec, &body)?;
    }
    let root_ref = refs[&node_number[0]];
    let inodes = inodes.finish(&codec)?;
    let dirs = dirs.finish(&codec)?;

    // The tables.
    let inode_table = pos;
    out.write_all(&inodes.out)?;
    pos += inodes.out.len() as u64;
    let directory_table = pos;
    out.write_all(&dirs.out)?;
    pos += dirs.out.len() as u64;
    let mut frag_meta = Meta::new();
    for (start, size) in &fragments {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&start.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        frag_meta.put(&codec, &b)?;
    }
    let fragment_table = write_lookup(frag_meta.finish(&codec)?, &mut pos, out)?;
    let mut id_meta = Meta::new();
    for id in &ids {
        id_meta.put(&codec, &id.to_le_bytes())?;
    }
    let id_table = write_lookup(id_meta.finish(&codec)?, &mut pos, out)?;
    let xattr_table = write_xattrs(&codec, &attrs, &mut pos, out)?;
    let bytes_used = pos;
    let pad = (4096 - bytes_used % 4096) % 4096;
    out.write_all(&vec![0u8; pad as usize])?;

    let mut flags = if xattr_table == NONE64 { NO_XATTRS } else { 0 };
    if options.is_some() {
        flags |= COMPRESSOR_OPTIONS;
    }
    if opts.compression == Compression::None {
        flags |= UNCOMPRESSED_ALL;
    }
    let mut sb = Vec::with_capacity(96);
    sb.extend_from_slice(MAGIC);
    sb.extend_from_slice(&inode_count.to_le_bytes());
    sb.extend_from_slice(&opts.mtime.to_le_bytes());
    sb.extend_from_slice(&BLOCK_SIZE.to_le_bytes());
    sb.extend_from_slice(&(fragments.len() as u32).to_le_bytes());
    sb.extend_from_slice(&codec.id().to_le_bytes());
    sb.extend_from_slice(&(BLOCK_SIZE.trailing_zeros() as u16).to_le_bytes());
    sb.extend_from_slice(&flags.to_le_bytes());
    sb.extend_from_slice(&(ids.len() as u16).to_le_bytes());
    sb.extend_from_slice(&4u16.to_le_bytes());
    sb.extend_from_slice(&0u16.to_le_bytes());
    sb.extend_from_slice(&((root_ref.0 << 16) | u64::from(root_ref.1)).to_le_bytes());
    for v in [
        bytes_used,
        id_table,
        xattr_table,
        inode_table,
        directory_table,
        fragment_table,
        NONE64, // export table
    ] {
        sb.extend_from_slice(&v.to_le_bytes());
    }
    debug_assert_eq!(sb.len(), 96);
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&sb)?;
    out.seek(SeekFrom::Start(bytes_used + pad))?;
    Ok(Stats {
        inodes: inode_count,
        bytes_used,
    })
}

/// The extended inodes' last field: the attribute set, when there is one.
fn with_xattr(b: &mut Vec<u8>, xid: Option<u32>) {
    if let Some(x) = xid {
        b.extend_from_slice(&x.to_le_bytes());
    }
}

/// Writes the attribute sets (names and values, then one id entry per set, then the id
/// table's header and index, which the kernel wants to end the image); returns the header's
/// position, or [`NONE64`] without attributes.
fn write_xattrs<W: Write>(
    codec: &Codec,
    attrs: &XattrSets,
    pos: &mut u64,
    out: &mut W,
) -> Result<u64, CompressError> {
    if attrs.sets.is_empty() {
        return Ok(NONE64);
    }
    let mut kv = Meta::new();
    let mut ids = Meta::new();
    for set in &attrs.sets {
        let (block, offset) = kv.pos();
        let mut size = 0u32;
        for (t, name, value) in set {
            let mut b = Vec::with_capacity(8 + name.len() + value.len());
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&(name.len() as u16).to_le_bytes());
            b.extend_from_slice(name);
            b.extend_from_slice(&(value.len() as u32).to_le_bytes());
            b.extend_from_slice(value);
            size += b.len() as u32;
            kv.put(codec, &b)?;
        }
        let mut id = Vec::with_capacity(16);
        id.extend_from_slice(&((block << 16) | u64::from(offset)).to_le_bytes());
        id.extend_from_slice(&(set.len() as u32).to_le_bytes());
        id.extend_from_slice(&size.to_le_bytes());
        ids.put(codec, &id)?;
    }
    let kv = kv.finish(codec)?;
    let kv_start = *pos;
    out.write_all(&kv.out)?;
    *pos += kv.out.len() as u64;
    let ids = ids.finish(codec)?;
    let base = *pos;
    out.write_all(&ids.out)?;
    *pos += ids.out.len() as u64;
    let header = *pos;
    out.write_all(&kv_start.to_le_bytes())?;
    out.write_all(&(attrs.sets.len() as u32).to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?;
    *pos += 16;
    for s in &ids.starts {
        out.write_all(&(base + s).to_le_bytes())?;
        *pos += 8;
    }
    Ok(header)
}

/// Compresses the waiting blocks in parallel and writes them in order; returns the new
/// position.
fn flush<W: Write>(
    codec: &Codec,
    threads: usize,
    jobs: &mut Vec<Job>,
    data: &mut HashMap<usize, Data>,
    fragments: &mut Vec<(u64, u32)>,
    mut pos: u64,
    out: &mut W,
) -> Result<u64, CompressError> {
    let taken = std::mem::take(jobs);
    // A whole block of zeros is a hole: nothing to compress or store.
    let raws: Vec<(&[u8], bool)> = taken
        .iter()
        .map(|j| match j {
            Job::Block { raw, .. } => (&raw[..], raw.iter().all(|&b| b == 0)),
            Job::Fragment { raw } => (&raw[..], false),
        })
        .collect();
    // Each thread takes the next block not yet taken; the results go back in order.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<Option<Result<Option<Vec<u8>>, CompressError>>> =
        (0..raws.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(raws.len()).max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut engine = codec.engine();
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(r, hole)) = raws.get(i) else { break };
                        mine.push((
                            i,
                            match &mut engine {
                                _ if hole => Ok(None),
                                Ok(e) => codec.compress_with(e, r),
                                Err(e) => Err(encoder_err("block", e)),
                            },
                        ));
                    }
                    mine
                })
            })
            .collect();
        for w in workers {
            for (i, r) in w.join().expect("a compression thread panicked") {
                done[i] = Some(r);
            }
        }
    });
    for ((job, result), &(_, hole)) in taken.iter().zip(done).zip(&raws) {
        let compressed = result.expect("every job is done")?;
        let raw = match job {
            Job::Block { raw, .. } | Job::Fragment { raw } => raw,
        };
        let (bytes, size): (&[u8], u32) = match &compressed {
            Some(c) => (c, c.len() as u32),
            None => (raw, raw.len() as u32 | DATA_UNCOMPRESSED),
        };
        match job {
            Job::Block { file, raw } => {
                let d = data.get_mut(file).expect("a file's data is known");
                if d.sizes.is_empty() {
                    d.start = pos;
                }
                if hole {
                    d.sizes.push(0);
                    d.sparse += raw.len() as u64;
                    continue;
                }
                d.sizes.push(size);
            }
            Job::Fragment { .. } => fragments.push((pos, size)),
        }
        out.write_all(bytes)?;
        pos += bytes.len() as u64;
    }
    Ok(pos)
}

/// Writes a lookup table's metadata blocks, then the positions of those blocks; returns the
/// position of the positions (what the superblock points at).
fn write_lookup<W: Write>(meta: Meta, pos: &mut u64, out: &mut W) -> Result<u64, CompressError> {
    let base = *pos;
    out.write_all(&meta.out)?;
    *pos += meta.out.len() as u64;
    let at = *pos;
    for s in &meta.starts {
        out.write_all(&(base + s).to_le_bytes())?;
        *pos += 8;
    }
    Ok(at)
}

/// A directory's listing: runs of entries that share an inode metadata block and are within
/// an `i16` of the run's first inode number, at most 256 per run.
fn listing(
    nodes: &[Inode],
    dir: &Inode,
    entries: &[Entry],
    number: &[u32],
    refs: &HashMap<u32, (u64, u16)>,
) -> Result<Vec<u8>, CompressError> {
    let mut out = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    let mut run_len = 0u32;
    let mut run_block = 0u64;
    let mut run_base = 0u32;
    let end_run = |out: &mut Vec<u8>, run: &mut Vec<u8>, n: u32, block: u64, base: u32| {
        if n > 0 {
            out.extend_from_slice(&(n - 1).to_le_bytes());
            out.extend_from_slice(&(block as u32).to_le_bytes());
            out.extend_from_slice(&base.to_le_bytes());
            out.append(run);
        }
    };
    for &c in &dir.children {
        let child = &nodes[c];
        let num = number[c];
        let (block, offset) = refs[&num];
        let t = if child.is_dir {
            ty::DIR
        } else {
            match &entries[child.entry.expect("an entry")].kind {
                Kind::File(_) => ty::FILE,
                Kind::Symlink(_) => ty::SYMLINK,
                Kind::BlockDev { .. } => ty::BLOCK,
                Kind::CharDev { .. } => ty::CHAR,
                Kind::Fifo => ty::FIFO,
                Kind::Dir => ty::DIR,
            }
        };
        let delta = i64::from(num) - i64::from(run_base);
        if run_len == 0
            || run_len == 256
            || block != run_block
            || !(i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&delta)
        {
            end_run(&mut out, &mut run, run_len, run_block, run_base);
            run_len = 0;
            run_block = block;
            run_base = num;
        }
        let delta = (i64::from(num) - i64::from(run_base)) as i16;
        run.extend_from_slice(&offset.to_le_bytes());
        run.extend_from_slice(&delta.to_le_bytes());
        run.extend_from_slice(&t.to_le_bytes());
        run.extend_from_slice(&((child.name.len() - 1) as u16).to_le_bytes());
        run.extend_from_slice(&child.name);
        run_len += 1;
    }
    end_run(&mut out, &mut run, run_len, run_block, run_base);
    Ok(out)
}

/// The tree of `entries`: node 0 is the root; children sorted by name.
fn tree(entries: &[Entry]) -> Vec<Inode> {
    let mut nodes = vec![Inode {
        name: Vec::new(),
        entry: None,
        children: Vec::new(),
        is_dir: true,
    }];
    let mut by_path: HashMap<&str, usize> = HashMap::new();
    by_path.insert("", 0);
    let mut kids: Vec<BTreeMap<Vec<u8>, usize>> = vec![BTreeMap::new()];
    for (i, e) in entries.iter().enumerate() {
        let path = e.path.trim_matches('/');
        if path.is_empty() || path == "." {
            nodes[0].entry = Some(i);
            continue;
        }
        // Parents first (the normaliser's order has them; a missing one is made).
        let mut parent = 0usize;
        let mut at = 0usize;
        for (k, _) in path.match_indices('/') {
            let dir = &path[..k];
            parent = match by_path.get(dir) {
                Some(&n) => n,
                None => {
                    let n = nodes.len();
                    nodes.push(Inode {
                        name: path.as_bytes()[at..k].to_vec(),
                        entry: None,
                        children: Vec::new(),
                        is_dir: true,
                    });
                    kids.push(BTreeMap::new());
                    kids[parent].insert(path.as_bytes()[at..k].to_vec(), n);
                    by_path.insert(dir, n);
                    n
                }
            };
            at = k + 1;
        }
        let name = path.as_bytes()[at..].to_vec();
        let is_dir = matches!(e.kind, Kind::Dir);
        let n = match by_path.get(path) {
            Some(&n) => n,
            None => {
                let n = nodes.len();
                nodes.push(Inode {
                    name: name.clone(),
                    entry: None,
                    children: Vec::new(),
                    is_dir,
                });
                kids.push(BTreeMap::new());
                kids[parent].insert(name, n);
                by_path.insert(path, n);
                n
            }
        };
        nodes[n].entry = Some(i);
        nodes[n].is_dir = is_dir;
    }
    for (n, k) in kids.into_iter().enumerate() {
        nodes[n].children = k.into_values().collect();
    }
    nodes
}

fn post_order(nodes: &[Inode], n: usize, out: &mut Vec<usize>) {
    // Iterative: depth is bounded by the plan, but a stack of frames is cheaper than recursion.
    let mut stack = vec![(n, 0usize)];
    while let Some((node, next)) = stack.pop() {
        if let Some(&c) = nodes[node].children.get(next) {
            stack.push((node, next + 1));
            stack.push((c, 0));
        } else {
            out.push(node);
        }
    }
}

/// A reader of a file's body.
fn open(c: &Content) -> Result<Box<dyn Read + '_>, CompressError> {
    Ok(match c {
        Content::Empty => Box::new(io::empty()),
        Content::Bytes(b) => Box::new(&b[..]),
        Content::Path { path, .. } => {
            Box::new(File::open(path).map_err(|source| ArchiveError::Read {
                path: path.clone(),
                source,
            })?)
        }
        Content::Slice { path, offset, .. } => {
            let read = |source| ArchiveError::Read {
                path: path.to_path_buf(),
                source,
            };
            let mut f = File::open(path).map_err(read)?;
            f.seek(SeekFrom::Start(*offset)).map_err(read)?;
            Box::new(f)
        }
    })
}

fn source_path(c: &Content) -> std::path::PathBuf {
    match c {
        Content::Path { path, .. } => path.clone(),
        Content::Slice { path, .. } => path.to_path_buf(),
        _ => "(generated)".into(),
    }
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], c: &Content) -> Result<(), CompressError> {
    r.read_exact(buf).map_err(|e| {
        CompressError::Archive(if e.kind() == io::ErrorKind::UnexpectedEof {
            ArchiveError::SizeChanged {
                path: source_path(c),
                expected: c.len(),
                actual: 0,
            }
        } else {
            ArchiveError::Read {
                path: source_path(c),
                source: e,
            }
        })
    })
}

/// A host file that grew since it was planned is an error, as in the newc writer.
fn check_end(r: &mut dyn Read, c: &Content) -> Result<(), CompressError> {
    if !matches!(c, Content::Path { .. }) {
        return Ok(());
    }
    let mut one = [0u8; 1];
    match r.read(&mut one) {
        Ok(0) => Ok(()),
        Ok(_) => Err(CompressError::Archive(ArchiveError::SizeChanged {
            path: source_path(c),
            expected: c.len(),
            actual: c.len() + 1,
        })),
        Err(source) => Err(CompressError::Archive(ArchiveError::Read {
            path: source_path(c),
            source,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn e(path: &str, kind: Kind, ino: u32, nlink: u32) -> Entry {
        Entry::new(path, kind, 0o644, ino, nlink, 1)
    }

    fn opts(compression: Compression, threads: usize) -> Options {
        Options {
            compression,
            level: None,
            threads,
            mtime: 1,
        }
    }

    fn image(entries: &[Entry], o: &Options) -> Vec<u8> {
        let mut out = io::Cursor::new(Vec::new());
        write(entries, o, &Xattrs::new(), &mut out).unwrap();
        out.into_inner()
    }

    #[test]
    fn the_superblock_and_tables_are_where_the_kernel_looks() {
        let big: Arc<[u8]> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let entries = [
            e("a", Kind::Dir, 1, 2),
            e("a/big", Kind::File(Content::Bytes(big)), 2, 1),
            e("a/l", Kind::Symlink("big".into()), 3, 1),
        ];
        let img = image(&entries, &opts(Compression::Gzip, 2));
        assert_eq!(&img[..4], MAGIC);
        assert_eq!(img.len() % 4096, 0, "padded for a block device");
        let u32_at = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(4), 4, "root, a, big, l");
        assert_eq!(u32_at(12), BLOCK_SIZE);
        let (bytes_used, id, inode, dir, frag) =
            (u64_at(40), u64_at(48), u64_at(64), u64_at(72), u64_at(80));
        assert!(inode < dir && dir < frag && frag < id && id < bytes_used);
        assert!(bytes_used <= img.len() as u64);
        assert_eq!(u64_at(56), NONE64, "no xattrs");
        assert_eq!(u64_at(88), NONE64, "no export table");
    }

    #[test]
    fn the_bytes_depend_on_the_entries_only() {
        let data: Arc<[u8]> = (0..700_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let entries: Vec<Entry> = (0..40)
            .map(|i| {
                e(
                    &format!("f{i:02}"),
                    Kind::File(Content::Bytes(data.clone())),
                    i + 1,
                    1,
                )
            })
            .collect();
        for c in [Compression::Gzip, Compression::Zstd, Compression::Lz4] {
            let one = image(&entries, &opts(c, 1));
            assert!(
                one == image(&entries, &opts(c, 3)),
                "{c:?}: threads change nothing"
            );
        }
    }

    #[test]
    fn a_level_out_of_range_is_refused() {
        let o = Options {
            level: Some(30),
            ..opts(Compression::Zstd, 1)
        };
        let err = write(&[], &o, &Xattrs::new(), &mut io::Cursor::new(Vec::new())).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }
}
