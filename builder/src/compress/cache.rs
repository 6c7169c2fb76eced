//! The segment cache: compressed members of earlier builds, found again by what they hold.
//!
//! A build renders and hashes every segment (so it reads every input, each time), then looks
//! the segment up here and compresses only those it does not find. A key is the sha256 of
//! [`FORMAT_VERSION`], fledge's version, the versions of the compressor crates it was built
//! with (from `Cargo.lock`), the compression, the level, the piece size and the digest of the
//! segment's uncompressed archive bytes (`digest`): whatever could change the compressed bytes is in it,
//! so a member found here is the member a cold build writes, byte for byte.
//!
//! Layout: `<cache dir>/segments/<key in hex>`, each file [`MAGIC`], the member as it goes into
//! the image, then a trailer of the member's length (u64 LE) and the CRC-32 of the key and the
//! member (u32 LE; computed as the member is written, the key's part combined in when the key
//! is known). A file that fails that check is removed with a warning and its segment
//! compressed again. The trailer only shows a file is whole (anyone who can write the cache
//! can compute it, so it needs no cryptographic hash): before
//! a member is used, it is decompressed and compared with the segment's bytes - byte for byte
//! when the segment fits one piece ([`Whole::proves`]: the member is read once, into memory),
//! else by digest ([`Hit::proves`]). Files are
//! written under a temporary name and renamed into place, so concurrent builds can share the
//! directory. Eviction is least recently used: a hit sets the file's mtime to now, and after a
//! build the oldest files go while the total is over the limit ([`LIMIT_ENV`], default
//! [`DEFAULT_LIMIT`]; 0 turns the cache off). The bound counts the uncompressed image layers
//! (`<cache dir>/layers/<diff_id>`, whose use also sets their mtime) with the segments: both
//! are derived data, shown, pruned and cleared together.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crc32fast::Hasher as Crc;
use sha2::{Digest, Sha256};

use super::{CompressError, Compression};

/// Bumped whenever the framing or the encoder settings of a member, or its cache file, change
/// without a crate version changing (4: zstd members of one piece with an 8 MiB window and,
/// at level 3, a smaller hash table).
pub const FORMAT_VERSION: u32 = 4;
/// First bytes of every cache file.
pub const MAGIC: &[u8; 8] = b"FLDGSEG1";
/// Length and check value after the member.
const TRAILER_LEN: u64 = 8 + 4;
/// Default bound on the cache's size in bytes.
pub const DEFAULT_LIMIT: u64 = 512 << 20;
/// Environment variable that sets the bound (`512M`, `2G`, bytes; 0 turns the cache off).
pub const LIMIT_ENV: &str = "FLEDGE_CACHE_MAX_SIZE";

/// The segment cache inside `cache_root`, fledge's cache directory.
pub fn segment_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("segments")
}

/// What identifies one compressed member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key([u8; 32]);

impl Key {
    /// The key of a segment whose archive bytes hash to `raw`, compressed as given.
    pub fn new(compression: Compression, level: i32, chunk: usize, raw: &[u8; 32]) -> Key {
        let mut h = Sha256::new();
        h.update(b"fledge segment\0");
        h.update(FORMAT_VERSION.to_le_bytes());
        for s in [
            env!("CARGO_PKG_VERSION"),
            env!("FLEDGE_CODEC_VERSIONS"),
            compression.name(),
        ] {
            h.update(s.as_bytes());
            h.update([0]);
        }
        h.update(level.to_le_bytes());
        h.update((chunk as u64).to_le_bytes());
        h.update(raw);
        Key(h.finalize().into())
    }

    fn file_name(&self) -> String {
        hex::encode(self.0)
    }
}

/// How much the cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
}

/// A directory of compressed segments with a size bound.
#[derive(Debug, Clone)]
pub struct SegmentCache {
    dir: PathBuf,
    /// `<cache dir>/layers`, counted in the same bound.
    layers: PathBuf,
    limit: u64,
}

impl SegmentCache {
    /// The cache in `cache_root` bounded to `limit` bytes (0: off).
    pub fn new(cache_root: &Path, limit: u64) -> SegmentCache {
        SegmentCache {
            dir: segment_dir(cache_root),
            layers: cache_root.join("layers"),
            limit,
        }
    }

    /// The cache in `cache_root` with the bound from [`LIMIT_ENV`] or [`DEFAULT_LIMIT`].
    pub fn from_env(cache_root: &Path) -> Result<SegmentCache, CompressError> {
        let limit = match std::env::var(LIMIT_ENV) {
            Ok(v) if !v.trim().is_empty() => {
                parse_size(&v).ok_or_else(|| CompressError::CacheLimit { value: v.clone() })?
            }
            _ => DEFAULT_LIMIT,
        };
        Ok(SegmentCache::new(cache_root, limit))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size bound in bytes; 0 means builds neither read nor write the cache.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Entries and bytes held now, segments and layers (a missing directory holds nothing).
    pub fn usage(&self) -> io::Result<Usage> {
        let (s, l) = self.usage_by_kind()?;
        Ok(Usage {
            entries: s.entries + l.entries,
            bytes: s.bytes + l.bytes,
        })
    }

    /// What the segments and what the image layers hold.
    pub fn usage_by_kind(&self) -> io::Result<(Usage, Usage)> {
        let (mut s, mut l) = (Usage::default(), Usage::default());
        for f in self.files()? {
            let u = if f.path.starts_with(&self.layers) {
                &mut l
            } else {
                &mut s
            };
            u.entries += 1;
            u.bytes += f.size;
        }
        Ok((s, l))
    }

    /// The entries last used (or written) at or after `since`, in name order: each path and
    /// whether it is an image layer (else a segment).
    pub fn used_since(&self, since: SystemTime) -> io::Result<Vec<(PathBuf, bool)>> {
        let mut out: Vec<(PathBuf, bool)> = self
            .files()?
            .into_iter()
            .filter(|f| f.used >= since)
            .map(|f| {
                let layer = f.path.starts_with(&self.layers);
                (f.path, layer)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The directory of the uncompressed image layers.
    pub fn layer_dir(&self) -> &Path {
        &self.layers
    }

    /// Removes the least recently used entries until at most the limit is held, and
    /// temporary files that killed builds left; returns what was removed.
    pub fn prune(&self) -> io::Result<Usage> {
        self.shrink_to(self.limit)
    }

    /// Removes every entry; returns what was removed.
    pub fn clear(&self) -> io::Result<Usage> {
        self.shrink_to(0)
    }

    fn shrink_to(&self, limit: u64) -> io::Result<Usage> {
        let mut files = self.files()?;
        // Oldest first; the name breaks ties so the order is the same on every run.
        files.sort_by(|a, b| (a.used, &a.path).cmp(&(b.used, &b.path)));
        let mut held: u64 = files.iter().map(|f| f.size).sum();
        let mut removed = Usage::default();
        for f in files {
            if held <= limit {
                break;
            }
            match fs::remove_file(&f.path) {
                Ok(()) => {}
                // Another build's prune got there first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            held -= f.size;
            removed.entries += 1;
            removed.bytes += f.size;
        }
        Ok(removed)
    }

    /// Cache entries (segments named by a key and starting with [`MAGIC`], layers named by
    /// their `diff_id`), with their size and last use; removes stale temporary files on the
    /// way. Files of other names or contents are left alone.
    fn files(&self) -> io::Result<Vec<CacheFile>> {
        let mut out = Vec::new();
        for (dir, segments) in [(&self.dir, true), (&self.layers, false)] {
            crate::output::sweep(dir);
            let list = match fs::read_dir(dir) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for item in list {
                let item = item?;
                let name = item.file_name();
                let name = name.to_string_lossy();
                let Ok(meta) = item.metadata() else { continue };
                let keyed = name.len() == 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !meta.is_file() || !keyed || (segments && !starts_with_magic(&item.path())) {
                    continue;
                }
                out.push(CacheFile {
                    path: item.path(),
                    size: meta.len(),
                    used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        Ok(out)
    }

    /// The member stored under `key`, checked whole; a damaged entry is removed.
    pub(crate) fn lookup(&self, key: &Key) -> Option<Hit> {
        let path = self.dir.join(key.file_name());
        let mut file = File::open(&path).ok()?;
        let (len, check) = checked(&path, check(&mut file, key))?;
        // Least recently used: a hit counts as a use. Failing to mark it only makes the entry
        // look older.
        let _ = file.set_modified(SystemTime::now());
        file.seek(SeekFrom::Start(MAGIC.len() as u64)).ok()?;
        Some(Hit {
            reader: Crcing {
                inner: file.take(len),
                crc: Crc::new(),
            },
            check,
            key: *key,
            path,
        })
    }

    /// The member stored under `key`, read whole into memory and checked like [`Self::lookup`]
    /// does, for a segment that fits one piece: its member is at most `max` bytes, and a larger
    /// file is damaged. A member read once cannot change between its proof and its use.
    pub(crate) fn lookup_whole(&self, key: &Key, max: u64) -> Option<Whole> {
        let path = self.dir.join(key.file_name());
        let mut file = File::open(&path).ok()?;
        let read = (|| -> io::Result<Option<Vec<u8>>> {
            let size = file.metadata()?.len();
            let overhead = MAGIC.len() as u64 + TRAILER_LEN;
            if size < overhead || size - overhead > max {
                return Ok(None);
            }
            let mut buf = Vec::with_capacity(size as usize);
            (&mut file).take(size).read_to_end(&mut buf)?;
            Ok(whole(buf, key))
        })();
        let member = checked(&path, read)?;
        let _ = file.set_modified(SystemTime::now());
        Some(Whole { member, path })
    }

    /// A writer that stores a member under `key` when committed; `None` when the directory
    /// cannot be written (the build goes on without caching).
    /// Whether the cache holds no segment at all: then no lookup can find one (a first build
    /// on a machine, or after `fledge cache clear`). A directory that cannot be read counts
    /// as not empty.
    pub(crate) fn is_empty(&self) -> bool {
        match fs::read_dir(&self.dir) {
            Ok(mut list) => !list.any(|item| {
                item.map_or(true, |i| {
                    let name = i.file_name();
                    name.len() == 64 && name.as_encoded_bytes().iter().all(u8::is_ascii_hexdigit)
                })
            }),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Starts storing a member under `key`, or (`None`) under the key given when it is
    /// committed ([`Store::commit_as`]).
    pub(crate) fn store(&self, key: Option<Key>) -> Option<Store> {
        let path = self
            .dir
            .join(key.as_ref().map_or("unkeyed".into(), Key::file_name));
        let tmp = match crate::output::Pending::cache_entry(&path) {
            Ok(t) => t,
            Err(e) => {
                log::debug!("segment cache {} not written: {e}", self.dir.display());
                return None;
            }
        };
        let mut s = Store {
            out: BufWriter::with_capacity(64 << 10, tmp),
            crc: Crc::new(),
            len: 0,
            key,
            path,
            failed: None,
        };
        s.put(MAGIC);
        Some(s)
    }
}

/// What a check of the cache file at `path` found: a damaged file (`Ok(None)`) is removed
/// with a warning, one that cannot be read is passed over.
fn checked<T>(path: &Path, found: io::Result<Option<T>>) -> Option<T> {
    match found {
        Ok(Some(t)) => Some(t),
        Ok(None) => {
            log::warn!(
                "cached segment {} is damaged; compressing it again",
                path.display()
            );
            let _ = fs::remove_file(path);
            None
        }
        Err(e) => {
            log::debug!("cannot read cached segment {}: {e}", path.display());
            None
        }
    }
}

fn starts_with_magic(path: &Path) -> bool {
    let mut magic = [0u8; MAGIC.len()];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == MAGIC)
}

struct CacheFile {
    path: PathBuf,
    size: u64,
    used: SystemTime,
}

/// The check value of a member whose bytes have the CRC `member`, stored under `key`: the
/// CRC-32 of the key then the member, so a file copied from another key does not pass for
/// this one.
fn keyed(key: &Key, member: &Crc) -> u32 {
    let mut h = Crc::new();
    h.update(&key.0);
    h.combine(member);
    h.finalize()
}

/// The check value in a trailer whose length field is `len`, or `None` when it is not `len`.
fn trailer_check(trailer: &[u8], len: u64) -> Option<u32> {
    let (stored_len, check) = trailer.split_at(8);
    let stored_len = u64::from_le_bytes(stored_len.try_into().expect("8 bytes"));
    (stored_len == len).then(|| u32::from_le_bytes(check.try_into().expect("4 bytes")))
}

/// A reader that takes the CRC-32 of what passes through it.
struct Crcing<R> {
    inner: R,
    crc: Crc,
}

impl<R: Read> Read for Crcing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a whole cache file: `Some((member length, check value))` when magic, length and
/// check value agree, `None` when they do not.
fn check(file: &mut File, key: &Key) -> io::Result<Option<(u64, u32)>> {
    let size = file.metadata()?.len();
    let overhead = MAGIC.len() as u64 + TRAILER_LEN;
    if size < overhead {
        return Ok(None);
    }
    let len = size - overhead;
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Ok(None);
    }
    let mut member = Crcing {
        inner: (&mut *file).take(len),
        crc: Crc::new(),
    };
    let copied = io::copy(&mut member, &mut io::sink())?;
    let value = keyed(key, &member.crc);
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact(&mut trailer)?;
    let ok = copied == len && trailer_check(&trailer, len) == Some(value);
    Ok(ok.then_some((len, value)))
}

/// The member in a whole cache file `buf` when magic, length and digest agree.
fn whole(mut buf: Vec<u8>, key: &Key) -> Option<Vec<u8>> {
    let overhead = (MAGIC.len() as u64 + TRAILER_LEN) as usize;
    if buf.len() < overhead || &buf[..MAGIC.len()] != MAGIC {
        return None;
    }
    let end = buf.len() - TRAILER_LEN as usize;
    let (member, trailer) = (&buf[MAGIC.len()..end], &buf[end..]);
    let mut crc = Crc::new();
    crc.update(member);
    if trailer_check(trailer, member.len() as u64) != Some(keyed(key, &crc)) {
        return None;
    }
    buf.truncate(end);
    buf.drain(..MAGIC.len());
    Some(buf)
}

/// A checked member read whole.
pub(crate) struct Whole {
    pub member: Vec<u8>,
    path: PathBuf,
}

impl Whole {
    /// Whether the member is the compression (as `compression`) of exactly `raw`: decompressed,
    /// every concatenated member to the end as the kernel reads it, and compared byte for byte.
    /// The trailer's digest only shows the file is whole; this is what keeps a shared cache
    /// from putting other files in an image.
    pub fn proves(&self, compression: Compression, raw: &[u8]) -> bool {
        let mut decoded = super::decoder(compression, Box::new(&self.member[..]));
        let mut buf = vec![0u8; 64 << 10];
        let mut at = 0;
        loop {
            match decoded.read(&mut buf) {
                Ok(0) => return at == raw.len(),
                Ok(n) if raw.len() - at >= n && buf[..n] == raw[at..at + n] => at += n,
                Ok(_) => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// The cache file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A checked member being read back.
pub(crate) struct Hit {
    /// Checks what is read, to be compared with `check` at the end.
    reader: Crcing<io::Take<File>>,
    check: u32,
    key: Key,
    path: PathBuf,
}

impl Hit {
    /// Whether the member is the compression (as `compression`) of exactly the `raw_len`
    /// bytes that hash to `raw`: it is decompressed, every concatenated member to the end as
    /// the kernel reads it, and compared. The trailer's digest only shows the file is whole:
    /// anyone who can write the cache can compute it, so this is what keeps a shared cache
    /// from putting other files in an image. Read through the same open file as the replay,
    /// so a file swapped in afterwards is not what was proven.
    pub fn proves(&self, compression: Compression, raw: &[u8; 32], raw_len: u64) -> bool {
        let member = At {
            file: self.reader.inner.get_ref(),
            pos: MAGIC.len() as u64,
            end: MAGIC.len() as u64 + self.reader.inner.limit(),
        };
        let decoded = super::decoder(compression, Box::new(member));
        let mut digest = super::digest::SegmentDigest::new(false);
        // One byte more than the segment is enough to know it is not the segment.
        match io::copy(&mut decoded.take(raw_len + 1), &mut digest) {
            Ok(n) if n == raw_len => digest.finish().0 == *raw,
            _ => false,
        }
    }

    /// The cache file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next at most `max` bytes of the member, hashed again on the way: the piece that
    /// ends the member is an error when the file changed since it was checked.
    pub fn next_piece(&mut self, max: usize) -> Result<Vec<u8>, CompressError> {
        let changed = |path: &Path, e: io::Error| CompressError::CacheRead {
            path: path.to_path_buf(),
            source: e,
        };
        let want = (max as u64).min(self.reader.inner.limit());
        let mut buf = Vec::with_capacity(want as usize);
        (&mut self.reader)
            .take(want)
            .read_to_end(&mut buf)
            .map_err(|e| changed(&self.path, e))?;
        if (buf.len() as u64) < want {
            return Err(changed(
                &self.path,
                io::Error::other("it shrank while it was read"),
            ));
        }
        if self.at_end() && keyed(&self.key, &self.reader.crc) != self.check {
            return Err(changed(
                &self.path,
                io::Error::other("it changed while it was read"),
            ));
        }
        Ok(buf)
    }

    /// Whether the whole member has been read.
    pub fn at_end(&self) -> bool {
        self.reader.inner.limit() == 0
    }
}

/// A range of a file read with `pread`, leaving the file's offset where it is.
struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A member being written to the cache; never fails the build: a write error drops the entry.
pub(crate) struct Store {
    out: BufWriter<crate::output::Pending>,
    /// The CRC and length of the member's bytes (not the magic before them), whatever was
    /// written.
    crc: Crc,
    len: u64,
    /// `None` until the key is known.
    key: Option<Key>,
    path: PathBuf,
    failed: Option<io::Error>,
}

impl Store {
    fn put(&mut self, b: &[u8]) {
        if self.failed.is_none() {
            if let Err(e) = self.out.write_all(b) {
                self.failed = Some(e);
            }
        }
    }

    /// Adds bytes of the member.
    pub fn write(&mut self, b: &[u8]) {
        self.crc.update(b);
        self.len += b.len() as u64;
        self.put(b);
    }

    /// Writes the trailer and renames the file into place.
    pub fn commit(mut self) {
        let Some(key) = self.key.take() else {
            log::debug!("cached segment {} not written: no key", self.path.display());
            return;
        };
        self.seal(&key);
    }

    /// [`Store::commit`] of a member whose key is known only now.
    pub fn commit_as(mut self, key: &Key) {
        if self.key.is_some() {
            return self.commit();
        }
        let path = self.dir().join(key.file_name());
        self.out.get_mut().rename_to(&path);
        self.path = path;
        self.seal(key);
    }

    fn dir(&self) -> &Path {
        self.path.parent().expect("a cache file has a directory")
    }

    /// Writes the trailer of the member stored under `key` and renames the file into place.
    fn seal(mut self, key: &Key) {
        let check = keyed(key, &self.crc);
        self.put(&self.len.to_le_bytes());
        self.put(&check.to_le_bytes());
        let done = match self.failed.take() {
            Some(e) => Err(e),
            None => self
                .out
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|tmp| crate::output::commit(vec![tmp]).map_err(|(_, e)| e)),
        };
        if let Err(e) = done {
            log::debug!("cached segment {} not written: {e}", self.path.display());
        }
    }
}

/// A size in bytes: digits with an optional `K`, `M`, `G` or `T` (powers of 1024, an optional
/// `B` or `iB` after it).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit = s[digits..].trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_is_empty_until_it_holds_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let c = SegmentCache::new(&dir.path().join("segments"), 1 << 20);
        assert!(c.is_empty(), "a missing directory");
        fs::create_dir_all(c.dir()).unwrap();
        fs::write(c.dir().join(".unkeyed.abcdef.tmp"), b"x").unwrap();
        assert!(c.is_empty(), "a temporary file is no segment");
        let key = Key::new(Compression::Gzip, 6, 1 << 20, &[7; 32]);
        let mut s = c.store(None).unwrap();
        s.write(b"member bytes");
        s.commit_as(&key);
        assert!(!c.is_empty(), "a segment stored under the key it got last");
        let whole = c.lookup_whole(&key, 1 << 10).expect("found under its key");
        assert_eq!(whole.member, b"member bytes");
    }
    use std::time::Duration;

    fn key(n: u8) -> Key {
        Key::new(Compression::Gzip, 9, 1 << 20, &[n; 32])
    }

    fn put(c: &SegmentCache, k: Key, member: &[u8]) {
        let mut s = c.store(Some(k)).expect("the cache is writable");
        s.write(member);
        s.commit();
    }

    fn read_all(mut hit: Hit, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !hit.at_end() {
            out.extend(hit.next_piece(piece).unwrap());
        }
        out
    }

    #[test]
    fn keys_differ_by_every_part() {
        let raw = [1u8; 32];
        let base = Key::new(Compression::Gzip, 9, 4096, &raw);
        let others = [
            Key::new(Compression::Zstd, 9, 4096, &raw),
            Key::new(Compression::Gzip, 8, 4096, &raw),
            Key::new(Compression::Gzip, 9, 8192, &raw),
            Key::new(Compression::Gzip, 9, 4096, &[2u8; 32]),
        ];
        for (i, k) in others.iter().enumerate() {
            assert_ne!(*k, base, "case {i}");
        }
        assert_eq!(base, Key::new(Compression::Gzip, 9, 4096, &raw));
    }

    #[test]
    fn a_stored_member_reads_back_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let c = SegmentCache::new(dir.path(), DEFAULT_LIMIT);
        assert!(c.lookup(&key(1)).is_none(), "empty cache");
        let member: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        put(&c, key(1), &member);
        assert_eq!(read_all(c.lookup(&key(1)).unwrap(), 30_000), member);
        assert!(c.lookup(&key(2)).is_none(), "another key");
        let u = c.usage().unwrap();
        assert_eq!(u.entries, 1);
        assert_eq!(u.bytes, member.len() as u64 + 8 + TRAILER_LEN);
    }

    #[test]
    fn a_whole_member_is_bounded_checked_and_proven_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let c = SegmentCache::new(dir.path(), DEFAULT_LIMIT);
        let raw: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let member = gz(&raw);
        put(&c, key(1), &member);
        let n = member.len() as u64;
        assert!(c.lookup_whole(&key(1), n - 1).is_none(), "over the bound");
        assert!(
            !c.dir().join(key(1).file_name()).exists(),
            "removed as damaged"
        );
        put(&c, key(1), &member);
        let whole = c.lookup_whole(&key(1), n).unwrap();
        assert_eq!(whole.member, member);
        assert!(whole.proves(Compression::Gzip, &raw));
        assert!(
            !whole.proves(Compression::Gzip, &raw[..raw.len() - 1]),
            "one byte more"
        );
        let mut longer = raw.clone();
        longer.push(0);
        assert!(!whole.proves(Compression::Gzip, &longer), "one byte less");
        let mut other = raw.clone();
        other[1000] ^= 1;
        assert!(!whole.proves(Compression::Gzip, &other), "one byte differs");
        // A file with a wrong trailer is damaged.
        let path = c.dir().join(key(2).file_name());
        let mut file = fs::read(c.dir().join(key(1).file_name())).unwrap();
        fs::write(&path, &file).unwrap();
        assert!(c.lookup_whole(&key(2), n).is_none(), "keyed to another key");
        assert!(!path.exists());
        *file.last_mut().unwrap() ^= 1;
        fs::write(c.dir().join(key(1).file_name()), &file).unwrap();
        assert!(c.lookup_whole(&key(1), n).is_none(), "a wrong digest");
    }

    #[test]
    fn a_damaged_entry_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = SegmentCache::new(dir.path(), DEFAULT_LIMIT);
        let path = c.dir().join(key(1).file_name());
        type Damage = fn(&mut Vec<u8>);
        let cases: [(&str, Damage); 4] = [
            ("flipped byte", |b| b[20] ^= 1),
            ("truncated", |b| b.truncate(b.len() - 1)),
            ("bad magic", |b| b[0] = b'X'),
            ("empty", |b| b.clear()),
        ];
        for (name, damage) in cases {
            put(&c, key(1), &[7u8; 5000]);
            let mut bytes = fs::read(&path).unwrap();
            damage(&mut bytes);
            fs::write(&path, bytes).unwrap();
            assert!(c.lookup(&key(1)).is_none(), "{name}: detected");
            assert!(!path.exists(), "{name}: removed");
        }
    }

    #[test]
    fn a_change_while_reading_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = SegmentCache::new(dir.path(), DEFAULT_LIMIT);
        put(&c, key(1), &[7u8; 5000]);
        let mut hit = c.lookup(&key(1)).unwrap();
        let path = c.dir().join(key(1).file_name());
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 1;
        // In place, as a faulty disk or another program would.
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        assert_eq!(hit.next_piece(4000).unwrap().len(), 4000);
        let err = hit.next_piece(4000).unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
    }

    #[test]
    fn prune_removes_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let entry = 1000 + 8 + TRAILER_LEN;
        let c = SegmentCache::new(dir.path(), 3 * entry);
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        for n in 0..5u8 {
            put(&c, key(n), &[n; 1000]);
            let f = File::open(c.dir().join(key(n).file_name())).unwrap();
            f.set_modified(t0 + Duration::from_secs(u64::from(n)))
                .unwrap();
        }
        // A hit makes the oldest the newest.
        assert!(c.lookup(&key(0)).is_some());
        let removed = c.prune().unwrap();
        assert_eq!(removed.entries, 2);
        assert_eq!(c.usage().unwrap().bytes, 3 * entry);
        let kept: Vec<bool> = (0..5).map(|n| c.lookup(&key(n)).is_some()).collect();
        assert_eq!(kept, [true, false, false, true, true]);
        assert_eq!(c.clear().unwrap().entries, 3);
        assert_eq!(c.usage().unwrap(), Usage::default());
    }

    #[test]
    fn sizes_parse_with_units() {
        let cases = [
            ("0", Some(0)),
            ("4096", Some(4096)),
            ("512M", Some(512 << 20)),
            ("2G", Some(2 << 30)),
            ("1 GiB", Some(1 << 30)),
            ("10kb", Some(10 << 10)),
            ("", None),
            ("M", None),
            ("5X", None),
            ("-1", None),
            ("99999999999T", None),
        ];
        for (i, (s, want)) in cases.into_iter().enumerate() {
            assert_eq!(parse_size(s), want, "case {i}: {s:?}");
        }
    }

    #[test]
    fn clear_removes_only_cache_entries() {
        let dir = tempfile::tempdir().unwrap();
        let c = SegmentCache::new(dir.path(), 1 << 20);
        put(&c, key(1), b"member");
        // A file of another program, named like an entry but not one.
        let foreign = c.dir().join("a".repeat(64));
        fs::write(&foreign, b"not a segment").unwrap();
        let layer = c.layer_dir().join("b".repeat(64));
        fs::create_dir_all(c.layer_dir()).unwrap();
        fs::write(&layer, b"tar bytes").unwrap();
        assert_eq!(c.usage_by_kind().unwrap().0.entries, 1);
        let removed = c.clear().unwrap();
        assert_eq!(removed.entries, 2, "the segment and the layer");
        assert!(foreign.exists() && !layer.exists());
    }
}
