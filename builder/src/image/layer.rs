//! Layer blobs: from a (compressed) blob to the uncompressed tar in the cache, and from that tar
//! to entries of the [`RootFs`].
//!
//! A layer is decompressed once, while its compressed digest and its `diff_id` (the digest of
//! the uncompressed tar) are both checked, into `<cache>/layers/<diff_id hex>`; a build then
//! reads that file once more to list its entries (checking the `diff_id` again, so a damaged
//! cache is caught) and file bodies are streamed from it when the archive is written. Nothing
//! is extracted. The compression (none, gzip, zstd) is read from the blob's first bytes, so a
//! mislabelled media type does not matter.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::hashing::Hashing;

use super::tree::{NodeKind, RootFs, TarEntry, What};
use super::{Digest, Problem};
use crate::compress::{self, Compression};

/// Largest layer blob or uncompressed layer ever read.
pub const MAX_LAYER_BYTES: u64 = 32 << 30;
/// The variable bounding one uncompressed layer (a decompression bomb stops there).
pub const LIMIT_VAR: &str = "FLEDGE_LAYER_MAX_SIZE";
/// Its default.
pub const DEFAULT_LIMIT: u64 = 4 << 30;

/// The bound on one uncompressed layer: [`LIMIT_VAR`] (`4G`, `512M`, bytes) or the default.
pub fn limit() -> Result<u64, Problem> {
    match std::env::var(LIMIT_VAR) {
        Ok(v) if !v.trim().is_empty() => crate::compress::parse_size(&v)
            .filter(|n| *n > 0 && *n <= MAX_LAYER_BYTES)
            .ok_or_else(|| {
                Problem::Invalid(format!(
                    "{LIMIT_VAR}={v:?} is not a size between 1 byte and 32G (e.g. 4G, 512M); unset it for the default"
                ))
            }),
        _ => Ok(DEFAULT_LIMIT),
    }
}

/// Where the uncompressed tar of the layer with this `diff_id` lives in the cache.
pub fn cached_path(cache: &Path, diff_id: &Digest) -> PathBuf {
    cache.join("layers").join(diff_id.hex())
}

/// Decompresses a layer blob into the cache, checking the blob's digest (when known) and the
/// `diff_id`. Returns the cache path; nothing is left behind on failure.
pub fn unpack(
    blob: impl Read,
    digest: Option<&Digest>,
    diff_id: &Digest,
    cache: &Path,
) -> Result<PathBuf, Problem> {
    let dest = cached_path(cache, diff_id);
    let dir = dest.parent().expect("layers/ has a parent");
    let cache_err = |source| Problem::Cache {
        path: dir.to_path_buf(),
        source,
    };
    let limit = limit()?;
    let mut tmp = crate::output::Pending::cache_entry(&dest).map_err(cache_err)?;
    let mut packed = Hashing::limited(blob, MAX_LAYER_BYTES, format!("{MAX_LAYER_BYTES} bytes"));
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut packed, &mut magic).map_err(|e| read_fail(diff_id, e))?;
    let head = io::Cursor::new(magic[..got].to_vec()).chain(&mut packed);
    // The layer compressions of the OCI image spec; anything else is read as a plain tar.
    let stream: Box<dyn Read + '_> = match compress::detect(&magic[..got]) {
        Some(c @ (Compression::Gzip | Compression::Zstd)) => compress::decoder(c, Box::new(head)),
        _ => Box::new(head),
    };
    let limit_text = format!(
        "{} uncompressed ({LIMIT_VAR})",
        indicatif::HumanBytes(limit)
    );
    let actual = match copy_hashed(stream, tmp.file(), limit, &limit_text) {
        Ok(d) => Digest::from_bytes(d),
        Err(Copy::Read(e)) => return Err(read_fail(diff_id, e)),
        Err(Copy::Write(e)) => return Err(cache_err(e)),
    };
    let packed_actual = Digest::from_bytes(packed.finish().map_err(|e| read_fail(diff_id, e))?);
    if let Some(want) = digest {
        if packed_actual != *want {
            return Err(Problem::Digest {
                what: format!("layer blob {want}"),
                actual: packed_actual.to_string(),
            });
        }
    }
    if actual != *diff_id {
        return Err(Problem::Digest {
            what: format!("uncompressed layer (diff_id {diff_id})"),
            actual: actual.to_string(),
        });
    }
    crate::output::commit(vec![tmp]).map_err(|(_, e)| cache_err(e))?;
    Ok(dest)
}

/// A blob that goes on past its descriptor's size (bytes): not the blob the digest names.
#[derive(Debug)]
pub struct Oversized(pub u64);

impl std::fmt::Display for Oversized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "it is larger than its descriptor's size of {} bytes",
            self.0
        )
    }
}

impl std::error::Error for Oversized {}

/// A failed read of a layer: a download that failed (its limit named), a blob longer than its
/// descriptor says, or data that cannot be decompressed.
fn read_fail(diff_id: &Digest, e: io::Error) -> Problem {
    let inner = e.get_ref();
    if let Some(f) = crate::fetch::net::BodyFailure::of(&e) {
        return Problem::Invalid(format!("layer {diff_id}: cannot download it: {f}"));
    }
    if let Some(o) = inner.and_then(|i| i.downcast_ref::<Oversized>()) {
        return Problem::Invalid(format!(
            "the blob of layer {diff_id} does not match its digest: {o}; the image is damaged or was changed"
        ));
    }
    Problem::Invalid(format!("layer {diff_id} cannot be decompressed: {e}"))
}

/// Why [`copy_hashed`] stopped.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` to `to` and returns the sha256 of the bytes: this thread reads (decompresses)
/// while a second one hashes and writes, so the two run on two cores. More than `limit` bytes
/// fail the read, naming the limit as `limit_text`.
fn copy_hashed(
    mut from: impl Read,
    to: &mut File,
    limit: u64,
    limit_text: &str,
) -> Result<[u8; 32], Copy> {
    const CHUNK: usize = 128 << 10;
    std::thread::scope(|s| {
        let (full, filled) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (back, returned) = std::sync::mpsc::channel::<Vec<u8>>();
        let writer = s.spawn(move || {
            let mut out = Hashing::new(to);
            for buf in filled {
                out.write_all(&buf)?;
                // The reader may have stopped: then the buffer is not needed.
                let _ = back.send(buf);
            }
            io::Result::Ok(out.digest())
        });
        let mut total = 0u64;
        let read = loop {
            let mut buf = returned.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let n = match read_up_to(&mut from, &mut buf) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            total += n as u64;
            if total > limit {
                break Err(io::Error::other(format!("more than {limit_text}")));
            }
            buf.truncate(n);
            // A send fails only when the writer stopped on an error, which it returns.
            if n == 0 || full.send(buf).is_err() || n < CHUNK {
                break Ok(());
            }
        };
        drop(full);
        let written = writer.join().expect("the layer writer does not panic");
        match (read, written) {
            (Err(e), _) => Err(Copy::Read(e)),
            (Ok(()), Err(e)) => Err(Copy::Write(e)),
            (Ok(()), Ok(digest)) => Ok(digest),
        }
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Applies the cached uncompressed layer `index` (at `path`, named by `diff_id`) to `tree`,
/// checking its digest as it goes.
pub fn apply(
    tree: &mut RootFs,
    index: usize,
    path: &Path,
    diff_id: &Digest,
) -> Result<(), Problem> {
    let read_err = |source| Problem::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut hashing = Hashing::limited(
        BufReader::with_capacity(256 << 10, file),
        MAX_LAYER_BYTES,
        format!("{MAX_LAYER_BYTES} bytes"),
    );
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries();
        list(tree, index, path, diff_id, entries, u64::MAX)?;
    }
    let actual = Digest::from_bytes(hashing.finish().map_err(read_err)?);
    if actual != *diff_id {
        return Err(Problem::Digest {
            what: format!("cached layer {} (diff_id {diff_id})", path.display()),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// [`apply`] for a layer this process has just unpacked (so checked) into the cache: only its
/// headers are read, seeking past the bodies.
pub fn apply_unpacked(
    tree: &mut RootFs,
    index: usize,
    path: &Path,
    diff_id: &Digest,
) -> Result<(), Problem> {
    let read_err = |source| Problem::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let mut archive = tar::Archive::new(Skipping::new(file));
    let entries = archive.entries_with_seek();
    list(tree, index, path, diff_id, entries, len)
}

/// A buffered file whose seeks past small bodies stay inside its buffer (a `BufReader` drops
/// its buffer on every seek, reading the same 64 KiB again for each small file).
struct Skipping {
    inner: BufReader<File>,
    /// Where `inner` is, from the start of the file.
    pos: u64,
}

impl Skipping {
    fn new(file: File) -> Self {
        Skipping {
            inner: BufReader::with_capacity(64 << 10, file),
            pos: 0,
        }
    }
}

impl Read for Skipping {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Skipping {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Current(by) => {
                let pos = self
                    .pos
                    .checked_add_signed(by)
                    .ok_or_else(|| io::Error::other("a seek before the start of the layer"))?;
                self.inner.seek_relative(by)?;
                pos
            }
            other => self.inner.seek(other)?,
        };
        Ok(self.pos)
    }
}

/// Applies the entries of layer `index` to `tree`; a body may not end past `len` (a reader
/// that seeks past bodies does not see a tar cut short).
fn list<R: Read>(
    tree: &mut RootFs,
    index: usize,
    path: &Path,
    diff_id: &Digest,
    entries: io::Result<tar::Entries<'_, R>>,
    len: u64,
) -> Result<(), Problem> {
    let data: Arc<Path> = Arc::from(path);
    let at = |entry: String, problem: String| Problem::Entry {
        index,
        diff_id: diff_id.clone(),
        entry,
        problem,
    };
    let entries = entries.map_err(|e| at(String::new(), format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| at(String::new(), format!("bad tar entry: {e}")))?;
        if entry.raw_file_position().saturating_add(entry.size()) > len {
            return Err(at(
                String::from_utf8_lossy(&entry.path_bytes()).into(),
                "its body runs past the end of the layer".into(),
            ));
        }
        let name = String::from_utf8(entry.path_bytes().into_owned()).map_err(|e| {
            at(
                String::from_utf8_lossy(e.as_bytes()).into(),
                "the name is not UTF-8".into(),
            )
        })?;
        let Some(decoded) =
            decode(&mut entry, &data, name.clone()).map_err(|p| at(name.clone(), p))?
        else {
            continue;
        };
        // A path's attributes are those of its last header (a later layer's copy of a file
        // has only its own).
        let xattrs = xattrs(&mut entry);
        let key = crate::tree::clean(&name).join("/");
        if xattrs.is_empty() {
            tree.xattrs.remove(&key);
        } else {
            tree.xattrs.insert(key, xattrs);
        }
        tree.apply(index, decoded)
            .map_err(|e| at(e.entry, e.problem))?;
    }
    Ok(())
}

/// What a tar entry is; `None` for entries that are not content (PAX global headers).
fn decode<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    data: &Arc<Path>,
    name: String,
) -> Result<Option<TarEntry>, String> {
    let h = entry.header();
    let ty = h.entry_type();
    let num = |v: io::Result<u64>, what: &str| {
        v.map_err(|e| format!("bad {what} field: {e}"))
            .and_then(|n| u32::try_from(n).map_err(|_| format!("{what} {n} is too large")))
    };
    let mut uid = num(h.uid(), "uid")?;
    let mut gid = num(h.gid(), "gid")?;
    let perm = h.mode().map_err(|e| format!("bad mode field: {e}"))? & 0o7777;
    let dev = |h: &tar::Header| -> Result<(u32, u32), String> {
        let major = h.device_major().map_err(|e| e.to_string())?.unwrap_or(0);
        let minor = h.device_minor().map_err(|e| e.to_string())?.unwrap_or(0);
        Ok((major, minor))
    };
    let link = || {
        entry
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| "is a link without a target".to_string())
    };
    use tar::EntryType as T;
    let what = match ty {
        T::Regular | T::Continuous => What::Node(NodeKind::File {
            data: data.clone(),
            offset: entry.raw_file_position(),
            size: entry.size(),
        }),
        T::Directory => What::Node(NodeKind::Dir),
        T::Symlink => What::Node(NodeKind::Symlink(link()?)),
        T::Link => What::Hardlink(link()?),
        T::Char => {
            let (major, minor) = dev(h)?;
            What::Node(NodeKind::CharDev { major, minor })
        }
        T::Block => {
            let (major, minor) = dev(h)?;
            What::Node(NodeKind::BlockDev { major, minor })
        }
        T::Fifo => What::Node(NodeKind::Fifo),
        T::XGlobalHeader => return Ok(None),
        T::GNUSparse => return Err("is a sparse file, which fledge does not read".into()),
        other => {
            return Err(format!(
                "has tar type {:?}, which fledge does not read",
                other.as_byte() as char
            ))
        }
    };
    // PAX records carry ids too large for the header.
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            let parse = |v: Result<&str, _>| v.ok().and_then(|s: &str| s.parse::<u32>().ok());
            match ext.key() {
                Ok("uid") => uid = parse(ext.value()).ok_or("has a bad PAX uid")?,
                Ok("gid") => gid = parse(ext.value()).ok_or("has a bad PAX gid")?,
                _ => {}
            }
        }
    }
    Ok(Some(TarEntry {
        name,
        what,
        perm,
        uid,
        gid,
    }))
}

/// The extended attributes a PAX header gives the entry, by name.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> BTreeMap<String, Vec<u8>> {
    let Ok(Some(pax)) = entry.pax_extensions() else {
        return BTreeMap::new();
    };
    pax.flatten()
        .filter_map(|e| {
            let k = e.key().ok()?;
            let name = k
                .strip_prefix("SCHILY.xattr.")
                .or_else(|| k.strip_prefix("LIBARCHIVE.xattr."))?;
            Some((name.to_string(), e.value_bytes().to_vec()))
        })
        .collect()
}
