//! Layer blobs: from a (compressed) blob to the uncompressed tar in the cache, and from that tar
//! to entries of the [`RootFs`].
//!
//! A layer is decompressed once into `<cache>/layers/<diff_id hex>`, while its compressed
//! digest and its `diff_id` (the digest of the uncompressed tar) are both checked and its
//! entries are listed from the same stream: four threads read and hash the blob, decompress
//! it, hash and write the tar, and list it.
//! A build that finds the layer cached reads the file once to list it, checking the `diff_id`
//! again so a damaged cache is caught. File bodies are streamed from the cached tar when the
//! archive is written; nothing is extracted. The compression (none, gzip, zstd) is read from
//! the blob's first bytes, so a mislabelled media type does not matter.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

pub use crate::hashing::Hashing;

use super::tree::{NodeKind, RootFs, TarEntry, What, MAX_ENTRIES, MAX_PATH};
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

/// The entries of one layer, in the order of its tar, as its headers give them.
#[derive(Debug, Clone)]
pub struct Listing(Vec<(TarEntry, Xattrs)>);

/// Extended attributes by name.
type Xattrs = BTreeMap<String, Vec<u8>>;

/// Decompresses layer `index`'s blob into the cache, checking the blob's digest (when known)
/// and the `diff_id`, and lists its entries on the way. Returns the cache path and the
/// listing; nothing is left behind on failure. A tar whose digests are right but whose
/// entries are not is kept in the cache (it is the layer the image names) and its problem
/// returned, as a build that finds it cached would.
pub fn unpack(
    blob: impl Read,
    index: usize,
    digest: Option<&Digest>,
    diff_id: &Digest,
    cache: &Path,
) -> Result<(PathBuf, Listing), Problem> {
    let dest = cached_path(cache, diff_id);
    let dir = dest.parent().expect("layers/ has a parent");
    let cache_err = |source| Problem::Cache {
        path: dir.to_path_buf(),
        source,
    };
    let limit = limit()?;
    let mut tmp = crate::output::Pending::cache_entry(&dest).map_err(cache_err)?;
    let limit_text = format!(
        "{} uncompressed ({LIMIT_VAR})",
        indicatif::HumanBytes(limit)
    );
    let data: Arc<Path> = Arc::from(dest.as_path());
    let lister = |chunks: &mut Chunks| {
        let mut archive = tar::Archive::new(chunks);
        list(index, &data, diff_id, archive.entries_with_seek())
    };
    let file = tmp.file();
    // This thread reads and hashes the blob; another decompresses it.
    let (packed, unpacked) = std::thread::scope(|s| {
        let (blob_tx, blob_rx) = sync_channel::<Arc<Chunk>>(8);
        let decompressing = s.spawn(move || {
            let mut packed = Chunks::new(blob_rx);
            let mut magic = [0u8; 4];
            let got = read_up_to(&mut packed, &mut magic).map_err(Copy::Read)?;
            let head = io::Cursor::new(magic[..got].to_vec()).chain(&mut packed);
            // The layer compressions of the OCI image spec; anything else is a plain tar.
            let stream: Box<dyn Read + '_> = match compress::detect(&magic[..got]) {
                Some(c @ (Compression::Gzip | Compression::Zstd)) => {
                    compress::decoder(c, Box::new(head))
                }
                _ => Box::new(head),
            };
            let done = copy_hashed(stream, file, limit, &limit_text, lister)?;
            // What follows the compressed stream is part of the blob and its digest.
            io::copy(&mut packed, &mut io::sink()).map_err(Copy::Read)?;
            Ok(done)
        });
        let packed = pump(blob, blob_tx);
        let unpacked = decompressing
            .join()
            .expect("the layer decompressor does not panic");
        (packed, unpacked)
    });
    let packed_actual = match packed {
        Ok(Some(d)) => Digest::from_bytes(d),
        Err(e) => return Err(read_fail(diff_id, e)),
        // The decompressor stopped, and says why.
        Ok(None) => match unpacked {
            Err(Copy::Write(e)) => return Err(cache_err(e)),
            Err(Copy::Read(e)) => return Err(read_fail(diff_id, e)),
            Ok(_) => return Err(read_fail(diff_id, io::Error::other("it stopped early"))),
        },
    };
    let (actual, listing) = match unpacked {
        Ok((d, listing)) => (Digest::from_bytes(d), listing),
        Err(Copy::Read(e)) => return Err(read_fail(diff_id, e)),
        Err(Copy::Write(e)) => return Err(cache_err(e)),
    };
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
    Ok((dest, listing?))
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

/// Copies `from` to `to` and returns the sha256 of the bytes, and what `reader` made of the
/// same bytes: this thread reads (decompresses) while a second one hashes and writes and a
/// third runs `reader`, all sharing each chunk read. More than `limit` bytes fail the read,
/// naming the limit as `limit_text`. A `reader` that stops early is no longer fed.
fn copy_hashed<T: Send>(
    mut from: impl Read,
    to: &mut File,
    limit: u64,
    limit_text: &str,
    reader: impl FnOnce(&mut Chunks) -> T + Send,
) -> Result<([u8; 32], T), Copy> {
    const CHUNK: usize = 128 << 10;
    std::thread::scope(|s| {
        let (full, filled) = sync_channel::<Arc<Chunk>>(4);
        let (to_reader, for_reader) = sync_channel::<Arc<Chunk>>(16);
        let (back, returned) = channel::<Vec<u8>>();
        let writer = s.spawn(move || {
            let mut out = Hashing::new(to);
            for chunk in filled {
                out.write_all(&chunk.data)?;
            }
            io::Result::Ok(out.digest())
        });
        let lister = s.spawn(move || reader(&mut Chunks::new(for_reader)));
        let mut to_reader = Some(to_reader);
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
            let chunk = Arc::new(Chunk {
                data: buf,
                back: back.clone(),
            });
            if to_reader
                .as_ref()
                .is_some_and(|r| r.send(Arc::clone(&chunk)).is_err())
            {
                to_reader = None;
            }
            // A send fails only when the writer stopped on an error, which it returns.
            if n == 0 || full.send(chunk).is_err() || n < CHUNK {
                break Ok(());
            }
        };
        drop((full, to_reader));
        let written = writer.join().expect("the layer writer does not panic");
        let listed = lister.join().expect("the layer lister does not panic");
        match (read, written) {
            (Err(e), _) => Err(Copy::Read(e)),
            (Ok(()), Err(e)) => Err(Copy::Write(e)),
            (Ok(()), Ok(digest)) => Ok((digest, listed)),
        }
    })
}

/// A chunk of the decompressed stream, shared by the writer and the lister; the last to let
/// it go hands the buffer back to be filled again.
struct Chunk {
    data: Vec<u8>,
    back: Sender<Vec<u8>>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // The reader may have stopped: then the buffer is not needed.
        let _ = self.back.send(std::mem::take(&mut self.data));
    }
}

/// The stream of chunks as a reader that seeks forward only, skipping bodies without copying
/// them; a skip past the end of the stream fails (a tar cut short inside a body).
struct Chunks {
    from: Receiver<Arc<Chunk>>,
    current: Option<Arc<Chunk>>,
    /// How far into `current`.
    at: usize,
    /// How far into the stream.
    pos: u64,
}

impl Chunks {
    fn new(from: Receiver<Arc<Chunk>>) -> Self {
        Chunks {
            from,
            current: None,
            at: 0,
            pos: 0,
        }
    }

    /// The bytes of the current chunk not yet read; empty at the end of the stream.
    fn left(&mut self) -> &[u8] {
        while self
            .current
            .as_ref()
            .is_none_or(|c| self.at == c.data.len())
        {
            match self.from.recv() {
                Ok(c) => {
                    self.current = Some(c);
                    self.at = 0;
                }
                Err(_) => {
                    self.current = None;
                    return &[];
                }
            }
        }
        let c = self.current.as_ref().expect("a chunk is current");
        &c.data[self.at..]
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left();
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.at += n;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Chunks {
    /// Only `SeekFrom::Current` forward, which is how a tar reader skips a body.
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let SeekFrom::Current(by) = to else {
            return Err(io::Error::other("a layer stream only seeks forward"));
        };
        let mut skip =
            u64::try_from(by).map_err(|_| io::Error::other("a layer stream only seeks forward"))?;
        while skip > 0 {
            let n = self.left().len() as u64;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the layer ends inside a file's body",
                ));
            }
            let step = n.min(skip);
            self.at += step as usize;
            self.pos += step;
            skip -= step;
        }
        Ok(self.pos)
    }
}

/// Reads `blob` to its end in chunks sent to `to`, and returns its sha256; `None` when the
/// receiver stopped first. A blob past [`MAX_LAYER_BYTES`] fails.
fn pump(blob: impl Read, to: SyncSender<Arc<Chunk>>) -> io::Result<Option<[u8; 32]>> {
    const CHUNK: usize = 128 << 10;
    let mut packed = Hashing::limited(blob, MAX_LAYER_BYTES, format!("{MAX_LAYER_BYTES} bytes"));
    let (back, returned) = channel::<Vec<u8>>();
    loop {
        let mut buf = returned.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let n = read_up_to(&mut packed, &mut buf)?;
        buf.truncate(n);
        if n > 0
            && to
                .send(Arc::new(Chunk {
                    data: buf,
                    back: back.clone(),
                }))
                .is_err()
        {
            return Ok(None);
        }
        if n < CHUNK {
            return Ok(Some(packed.digest()));
        }
    }
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
/// checking its digest as it is read.
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
    let listing = {
        let mut archive = tar::Archive::new(&mut hashing);
        list(index, &Arc::from(path), diff_id, archive.entries())?
    };
    let actual = Digest::from_bytes(hashing.finish().map_err(read_err)?);
    if actual != *diff_id {
        return Err(Problem::Digest {
            what: format!("cached layer {} (diff_id {diff_id})", path.display()),
            actual: actual.to_string(),
        });
    }
    apply_listing(tree, index, diff_id, listing)
}

/// Applies the entries of layer `index`, as [`unpack`] listed them, to `tree`.
pub fn apply_listing(
    tree: &mut RootFs,
    index: usize,
    diff_id: &Digest,
    listing: Listing,
) -> Result<(), Problem> {
    for (entry, xattrs) in listing.0 {
        // A path's attributes are those of its last header (a later layer's copy of a file
        // has only its own).
        let key = crate::tree::clean(&entry.name).join("/");
        if xattrs.is_empty() {
            tree.xattrs.remove(&key);
        } else {
            tree.xattrs.insert(key, xattrs);
        }
        tree.apply(index, entry)
            .map_err(|e| entry_problem(index, diff_id, e.entry, e.problem))?;
    }
    Ok(())
}

/// A problem with one entry of layer `index`.
fn entry_problem(index: usize, diff_id: &Digest, entry: String, problem: String) -> Problem {
    Problem::Entry {
        index,
        diff_id: diff_id.clone(),
        entry,
        problem,
    }
}

/// Lists the entries of layer `index`, whose bodies are in the file `data`; no more of them
/// than an image may have, and no name longer than a path may be, are kept.
fn list<R: Read>(
    index: usize,
    data: &Arc<Path>,
    diff_id: &Digest,
    entries: io::Result<tar::Entries<'_, R>>,
) -> Result<Listing, Problem> {
    let at = |entry: String, problem: String| entry_problem(index, diff_id, entry, problem);
    let entries = entries.map_err(|e| at(String::new(), format!("not a tar archive: {e}")))?;
    let mut listed = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| at(String::new(), format!("bad tar entry: {e}")))?;
        let name = String::from_utf8(entry.path_bytes().into_owned()).map_err(|e| {
            at(
                String::from_utf8_lossy(e.as_bytes()).into(),
                "the name is not UTF-8".into(),
            )
        })?;
        if name.len() > MAX_PATH {
            return Err(at(
                name.chars().take(64).collect::<String>() + "...",
                format!("the name is longer than {MAX_PATH} bytes"),
            ));
        }
        let Some(decoded) =
            decode(&mut entry, data, name.clone()).map_err(|p| at(name.clone(), p))?
        else {
            continue;
        };
        if listed.len() == MAX_ENTRIES {
            return Err(at(
                name,
                format!("the layer has more than {MAX_ENTRIES} entries"),
            ));
        }
        listed.push((decoded, xattrs(&mut entry)));
    }
    Ok(Listing(listed))
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
