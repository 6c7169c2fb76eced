//! Compression of the image: segment-parallel, deterministic, with bounded memory, and
//! incremental through a cache of compressed segments.
//!
//! [`write_image`] cuts the entry list into content-defined segments ([`plan`]), each a
//! complete newc archive with its own trailer, and compresses each as one member of the output
//! (the kernel unpacks concatenated members, each ending after a trailer). Each segment's bytes
//! are digested first ([`digest`]: each body hashed once, which also gives the SBOM and the
//! provenance their file digests): a member found in the [`SegmentCache`] under that hash is
//! copied as it is, so a rebuild after a small change compresses only the segments the change
//! touched. Three kinds of threads cooperate:
//!
//! - one producer hands out segments in order: a segment that fits one piece to a worker to
//!   render; a larger one it renders itself with [`NewcWriter`] (reading host files in small
//!   blocks, never whole), digested and looked up here, then, unless cached, cut into pieces
//!   ([`codec::Codec::cut`]) (into an empty cache, where no lookup can succeed, it is
//!   digested on the way instead, and its member stored under the key its last piece brings);
//! - `threads` workers render each one-piece segment into a buffer of their own, digest it,
//!   copy its member from the cache or compress it, and compress the pieces of larger ones
//!   ([`codec::PieceEncoder`]), so reading, hashing and the cache reads run in parallel with
//!   compression;
//! - the calling thread writes results in sequence order ([`codec::MemberWriter`]) and stores
//!   each newly compressed member in the cache. The bodies' digests reach it as each segment
//!   is digested, before that segment is compressed: once all are in, [`write_image_then`]
//!   hands them on, so what needs only them is made while the last segments compress.
//!
//! Memory is bounded by a fixed number of pieces in flight (credits returned by the writer), so
//! peak use is about `(threads + 2) x chunk` raw plus as much compressed, whatever the image
//! size. A segment no larger than a piece is rendered once into its piece; a larger one (one
//! big file) is rendered twice when the cache holds segments, once to hash it and, when it is
//! not cached, once to compress it.
//! The segment plan, piece cuts and every encoder's input depend only on the entries and the
//! options' compression and level, and a cached member is the one those produce, so the output
//! is byte-identical for any thread count and whatever the cache holds.
//!
//! Each format's encoders and decoders, and the detection of images read back, live in
//! [`format`].

mod cache;
pub(crate) mod codec;
mod digest;
pub(crate) mod format;
mod plan;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use crate::archive::{ArchiveError, Entry, NewcWriter};
use cache::{Hit, Key, Store};
use codec::{Codec, Encoded, Keep, MemberWriter, Piece, PieceEncoder};
use digest::SegmentDigest;

pub use cache::{parse_size, segment_dir, SegmentCache, Usage, LIMIT_ENV};
pub use digest::BodyDigest;
pub use format::{decoder, detect, Format, Levels};

/// How the archive is compressed; every choice is one the Linux kernel unpacks: gzip
/// (libdeflate, the default; every kernel has it), zstd (kernel 5.9+, `CONFIG_RD_ZSTD`), xz with
/// CRC-32 checks (`CONFIG_RD_XZ`), lz4 in the legacy format (`CONFIG_RD_LZ4`), or none (plain
/// newc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    Xz,
    Lz4,
    None,
}

/// Compression settings for one build.
#[derive(Debug, Clone)]
pub struct Options {
    pub compression: Compression,
    /// Compressor level; `None` picks the format's default (gzip: libdeflate
    /// [`GZIP_DEFAULT_LEVEL`] of 1..=12; zstd 3 of 1..=19; xz 6 of 0..=9; lz4 and none take
    /// no level).
    pub level: Option<i32>,
    /// Worker threads (0 counts as 1); output is identical for any value.
    pub threads: usize,
    /// Where compressed segments are looked up and stored; output is identical without it.
    pub cache: Option<SegmentCache>,
    /// Whether [`Stats::bodies`] carries each body's sha1 besides its sha256 (the SBOM's).
    pub body_sha1: bool,
}

/// Default libdeflate level for gzip (libdeflate's own default): on realistic images smaller
/// than the `find | cpio | gzip -9` pipeline's, at 2.4x the speed of level 9 (bench/README.md).
pub const GZIP_DEFAULT_LEVEL: i32 = 6;

/// Errors while compressing.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("cannot write the compressed image: {0}")]
    Io(#[from] io::Error),
    #[error("compression level {level} is out of range for {compression} (use {min} to {max})")]
    Level {
        compression: &'static str,
        level: i32,
        min: i32,
        max: i32,
    },
    #[error("compression {compression} takes no level (got {level}); remove the level setting")]
    NoLevel {
        compression: &'static str,
        level: i32,
    },
    #[error("the {what} compressor failed: {message}")]
    Encoder { what: &'static str, message: String },
    #[error("a compression thread stopped unexpectedly ({0})")]
    Thread(&'static str),
    #[error(
        "{} is \"{value}\": use a size in bytes, or with K, M or G (0 turns the segment cache off)",
        cache::LIMIT_ENV
    )]
    CacheLimit { value: String },
    #[error("cannot read the cached segment {}: {source}", path.display())]
    CacheRead {
        path: std::path::PathBuf,
        source: io::Error,
    },
}

/// Sizes that shape the output. Changing them changes the bytes, so they are fixed constants
/// in production and only tests pick smaller ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// Segment sizes (one segment is one compressed member) for gzip, lz4 and none.
    pub limits: plan::Limits,
    /// Segment sizes for zstd.
    pub zstd: plan::Limits,
    /// Segment sizes for xz.
    pub xz: plan::Limits,
    /// Largest piece handed to a worker; at most 8 MiB (the kernel's lz4 block limit).
    pub chunk: usize,
    /// Largest zstd piece: a zstd segment up to this size is one piece, compressed by one
    /// worker as one frame.
    pub zstd_chunk: usize,
}

impl Tuning {
    /// Segment sizes for `c`. gzip and lz4 look back 32 KiB and 64 KiB, so segments of about
    /// a megabyte cost them almost nothing (+0.1% for gzip). zstd looks back megabytes and
    /// gains from long segments, which its multi-threaded encoder compresses in parallel. xz
    /// compresses a segment larger than a piece as independent blocks of one piece, so its
    /// segments stay within one piece (see bench/README.md for the sizes).
    ///
    /// An uncompressed image is one archive: segments would gain it nothing (it is never
    /// cached, and copying needs no threads), and one archive is what `cpio -i` reads whole.
    fn limits_for(&self, c: Compression) -> plan::Limits {
        match c {
            Compression::Zstd => self.zstd,
            Compression::Xz => self.xz,
            Compression::None => plan::Limits::UNCUT,
            _ => self.limits,
        }
    }

    /// Piece size for `c`. A zstd segment is one piece: each worker compresses whole frames,
    /// so segments run in parallel with no stream to drain between them, and a frame of the
    /// whole segment is smaller than one cut into multi-threaded jobs.
    fn chunk_for(&self, c: Compression) -> usize {
        match c {
            Compression::Zstd => self.zstd_chunk,
            _ => self.chunk,
        }
    }
}

impl Default for Tuning {
    fn default() -> Self {
        const MIB: u64 = 1 << 20;
        let limits = |min, average, max| plan::Limits { min, average, max };
        Tuning {
            limits: limits(MIB / 4, MIB, CHUNK as u64),
            zstd: limits(4 * MIB, 8 * MIB, 16 * MIB),
            xz: limits(3 * MIB, MIB, CHUNK as u64),
            chunk: CHUNK,
            zstd_chunk: 16 << 20,
        }
    }
}

/// Piece size, and the largest gzip or lz4 segment of several entries: large enough for good
/// ratios, small enough that two cores share even a small image and memory stays low.
const CHUNK: usize = 4 << 20;

/// Checks that `level` suits `compression` (every level of every format is one the kernel can
/// unpack), without compressing anything.
pub fn check_level(compression: Compression, level: Option<i32>) -> Result<(), CompressError> {
    format::resolve_level(compression, level, |l| l.default).map(|_| ())
}

/// What [`write_image`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Segments (compressed members) in the image.
    pub segments: usize,
    /// Of those, copied from the segment cache.
    pub cached: usize,
    /// The digests of each entry's body, by the entry's index (`None`: no body), from the
    /// pass that rendered it.
    pub bodies: Vec<Option<BodyDigest>>,
}

/// Writes `entries` (normalised, in order) as a newc archive compressed per `opts` into `out`.
pub fn write_image(
    entries: &[Entry],
    opts: &Options,
    out: &mut dyn Write,
) -> Result<Stats, CompressError> {
    write_image_tuned(entries, opts, Tuning::default(), out, &mut |_| {})
}

/// [`write_image`], calling `digested` once with every body's digests (by entry index, as in
/// [`Stats::bodies`]) as soon as the last segment is digested: what needs only those digests
/// is made on this thread while the last segments are still being compressed.
pub fn write_image_then(
    entries: &[Entry],
    opts: &Options,
    out: &mut dyn Write,
    digested: &mut dyn FnMut(&[Option<BodyDigest>]),
) -> Result<Stats, CompressError> {
    write_image_tuned(entries, opts, Tuning::default(), out, digested)
}

pub(crate) fn write_image_tuned(
    entries: &[Entry],
    opts: &Options,
    tuning: Tuning,
    out: &mut dyn Write,
    digested: &mut dyn FnMut(&[Option<BodyDigest>]),
) -> Result<Stats, CompressError> {
    assert!(
        tuning.chunk > 0 && tuning.chunk <= format::LZ4_MAX_BLOCK,
        "chunk size out of range"
    );
    let threads = opts.threads.max(1);
    let codec = Codec {
        compression: opts.compression,
        level: format::resolve_level(opts.compression, opts.level, |l| l.default)?,
        chunk: tuning.chunk_for(opts.compression),
        threads,
    };
    // An uncompressed segment would be cached as itself: nothing to gain.
    let cache = opts
        .cache
        .as_ref()
        .filter(|c| c.enabled() && opts.compression != Compression::None);
    let segments = plan::plan(entries, tuning.limits_for(opts.compression));
    let sinks = Sinks { out, digested };
    let (cached, bodies) = run_threads(entries, &segments, codec, cache, opts.body_sha1, sinks)?;
    if let Some(c) = cache {
        log::debug!(
            "{cached} of {} segments from the cache {}",
            segments.len(),
            c.dir().display()
        );
    }
    Ok(Stats {
        segments: segments.len(),
        cached,
        bodies,
    })
}

/// Where the writer puts what it hears: the image, and the bodies' digests once complete.
struct Sinks<'a> {
    out: &'a mut dyn Write,
    digested: &'a mut dyn FnMut(&[Option<BodyDigest>]),
}

/// What the producer and the workers tell the writer.
enum Report {
    /// A piece to write in sequence order.
    Piece(Encoded),
    /// The digests of one segment's bodies, by entry index, made before it is compressed.
    Digested(Vec<(usize, BodyDigest)>),
}

type Reports = Sender<Result<Report, CompressError>>;

/// Runs the producer, the workers and the writer over `segments`; returns how many segments
/// came from the cache, and the bodies' digests.
fn run_threads(
    entries: &[Entry],
    segments: &[plan::Segment],
    codec: Codec,
    cache: Option<&SegmentCache>,
    sha1: bool,
    sinks: Sinks,
) -> Result<(usize, Vec<Option<BodyDigest>>), CompressError> {
    let threads = codec.threads;
    let credits = threads + 2;
    std::thread::scope(|s| {
        let (job_tx, job_rx) = sync_channel::<Piece>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = channel::<Result<Report, CompressError>>();
        let (credit_tx, credit_rx) = sync_channel::<Vec<u8>>(credits);
        for _ in 0..credits {
            credit_tx
                .send(Vec::new())
                .expect("the credit channel has room");
        }

        let outbox = Outbox {
            jobs: job_tx,
            done: done_tx.clone(),
            credits: credit_rx,
            spares: Vec::new(),
            seq: 0,
            stopped: false,
        };
        // An empty cache finds nothing: a segment larger than a piece is then digested on the
        // way to its compression rather than before it.
        let empty = cache.is_some_and(SegmentCache::is_empty);
        let producer = s.spawn(move || {
            Producer {
                entries,
                codec,
                cache,
                empty,
                outbox,
                sha1,
            }
            .run(segments)
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let jobs = Arc::clone(&job_rx);
                let done = done_tx.clone();
                let worker = Worker {
                    entries,
                    codec,
                    cache,
                    sha1,
                };
                s.spawn(move || worker.run(&jobs, &done))
            })
            .collect();
        drop(job_rx);
        drop(done_tx);

        let to_write = (segments.len(), entries.len());
        let written = write_in_order(codec, cache, to_write, done_rx, credit_tx, sinks);
        let produced = producer
            .join()
            .map_err(|_| CompressError::Thread("producer panicked"))?;
        for w in workers {
            w.join()
                .map_err(|_| CompressError::Thread("worker panicked"))?;
        }
        // The writer's error comes first: when it stops, the producer only sees closed channels.
        let written = written?;
        match produced {
            Err(Produce::Failed(e)) => Err(e),
            Err(Produce::Stopped) => Err(CompressError::Thread("workers stopped early")),
            Ok(_) if !written.complete => Err(CompressError::Thread("pieces went missing")),
            Ok(cached) => Ok((cached + written.cached, written.bodies)),
        }
    })
}

enum Produce {
    Failed(CompressError),
    /// A channel closed because another thread stopped; that thread reports why.
    Stopped,
}

impl From<CompressError> for Produce {
    fn from(e: CompressError) -> Self {
        Produce::Failed(e)
    }
}

/// How many buffers of pieces written the producer keeps for the pieces it cuts.
const SPARES: usize = 2;

/// Where the producer's pieces go: to the workers, or, for cached members, straight to the
/// writer. Every piece waits for a credit first, which bounds the pieces alive; a credit
/// brings back the buffer of a piece written, for the next piece to be rendered into.
struct Outbox {
    jobs: SyncSender<Piece>,
    done: Reports,
    credits: Receiver<Vec<u8>>,
    /// Buffers of pieces written, to render into again.
    spares: Vec<Vec<u8>>,
    seq: u64,
    stopped: bool,
}

impl Outbox {
    fn credit(&mut self) -> Result<u64, Produce> {
        match self.credits.recv() {
            Ok(spare) if spare.capacity() > 0 && self.spares.len() < SPARES => {
                self.spares.push(spare);
            }
            Ok(_) => {}
            Err(_) => {
                self.stopped = true;
                return Err(Produce::Stopped);
            }
        }
        self.seq += 1;
        Ok(self.seq - 1)
    }

    /// An empty buffer for `len` bytes: a spare one when there is one.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        match self.spares.pop() {
            Some(mut b) => {
                b.clear();
                b.reserve(len);
                b
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Sends raw bytes of a member to be compressed; `store` tells the writer what to keep of
    /// the member in the cache; `segment` asks the worker to digest and look up the whole
    /// segment first.
    fn compress(
        &mut self,
        (first, last): (bool, bool),
        member_len: u64,
        data: Vec<u8>,
        (store, segment): (Option<Keep>, Option<std::ops::Range<usize>>),
    ) -> Result<(), Produce> {
        let seq = self.credit()?;
        let piece = Piece {
            seq,
            first,
            last,
            member_len,
            data,
            store,
            segment,
        };
        if self.jobs.send(piece).is_err() {
            self.stopped = true;
            return Err(Produce::Stopped);
        }
        Ok(())
    }

    /// Tells the writer the digests of the bodies of the segment starting at entry `start`.
    fn digested(&mut self, start: usize, bodies: Vec<(usize, BodyDigest)>) -> Result<(), Produce> {
        let bodies = bodies.into_iter().map(|(i, b)| (start + i, b)).collect();
        if self.done.send(Ok(Report::Digested(bodies))).is_err() {
            self.stopped = true;
            return Err(Produce::Stopped);
        }
        Ok(())
    }

    /// Sends a cached member to the writer, in pieces of at most `chunk` bytes.
    fn replay(&mut self, mut hit: Hit, chunk: usize) -> Result<(), Produce> {
        let mut first = true;
        loop {
            let seq = self.credit()?;
            let data = hit.next_piece(chunk)?;
            let last = hit.at_end();
            let piece = Encoded::verbatim(seq, first, last, data);
            if self.done.send(Ok(Report::Piece(piece))).is_err() {
                self.stopped = true;
                return Err(Produce::Stopped);
            }
            if last {
                return Ok(());
            }
            first = false;
        }
    }
}

/// Renders every segment in order and hands it on: a one-piece segment to a worker whole, a
/// larger one replayed from the cache when found there, else as pieces to compress.
struct Producer<'a> {
    entries: &'a [Entry],
    codec: Codec,
    cache: Option<&'a SegmentCache>,
    /// Whether the cache held no segment when the build started.
    empty: bool,
    outbox: Outbox,
    /// Whether bodies get a sha1 too.
    sha1: bool,
}

impl Producer<'_> {
    /// Returns how many of the segments larger than a piece came from the cache (the writer
    /// counts the others).
    fn run(mut self, segments: &[plan::Segment]) -> Result<usize, Produce> {
        let mut cached = 0;
        for seg in segments {
            if seg.raw_len <= self.codec.chunk as u64 {
                self.small(seg)?;
            } else {
                cached += usize::from(self.big(seg)?);
            }
        }
        Ok(cached)
    }

    /// A segment that fits one piece: the worker that takes it renders it once, digests it
    /// and copies it from the cache or compresses it.
    fn small(&mut self, seg: &plan::Segment) -> Result<(), Produce> {
        let segment = Some(seg.range.clone());
        self.outbox
            .compress((true, true), seg.raw_len, Vec::new(), (None, segment))
    }

    /// A segment larger than a piece: digested in one pass (when the cache may hold it), then,
    /// unless cached, rendered again and cut into pieces (and digested on the way, when there
    /// is no cache or an empty one; then its key comes with its last piece).
    fn big(&mut self, seg: &plan::Segment) -> Result<bool, Produce> {
        let (entries, raw_len) = (&self.entries[seg.range.clone()], seg.raw_len);
        let key = match self.cache {
            Some(_) if self.empty => Some(Keep::Open),
            Some(cache) => {
                let mut d = SegmentDigest::new(self.sha1);
                render(entries, &mut d)?;
                let (raw, bodies) = d.finish();
                self.outbox.digested(seg.range.start, bodies)?;
                let key = key(self.codec, &raw);
                if let Some(hit) = lookup(cache, self.codec, &key, &raw, raw_len) {
                    return self.outbox.replay(hit, self.codec.chunk).map(|()| true);
                }
                Some(Keep::Under(key))
            }
            None => None,
        };
        let on_the_way = !matches!(key, Some(Keep::Under(_)));
        let mut cutter = Cutter {
            outbox: &mut self.outbox,
            codec: self.codec,
            member_len: raw_len,
            written: 0,
            first: true,
            buf: Vec::new(),
            store: key,
            digest: on_the_way.then(|| SegmentDigest::new(self.sha1)),
            start: seg.range.start,
            close: matches!(key, Some(Keep::Open)),
        };
        if let Err(e) = render(entries, &mut cutter) {
            return Err(if cutter.outbox.stopped {
                Produce::Stopped
            } else {
                Produce::Failed(e)
            });
        }
        cutter.end()?;
        Ok(false)
    }
}

/// The cache key of a segment whose bytes hash to `raw`, compressed per `c`.
fn key(c: Codec, raw: &[u8; 32]) -> Key {
    Key::new(c.compression, c.level.0, c.chunk, raw)
}

/// The cached member of the segment whose bytes hash to `raw`, once proven to be their
/// compression; a member that is not is removed with a warning and compressed again.
fn lookup(cache: &SegmentCache, c: Codec, key: &Key, raw: &[u8; 32], raw_len: u64) -> Option<Hit> {
    let hit = cache.lookup(key)?;
    if hit.proves(c.compression, raw, raw_len) {
        return Some(hit);
    }
    forged(hit.path());
    None
}

/// Removes a cached member that does not decompress to its segment, with a warning.
fn forged(path: &std::path::Path) {
    log::warn!(
        "cached segment {} does not decompress to the bytes it stands for (a damaged or forged cache); compressing it again",
        path.display()
    );
    let _ = std::fs::remove_file(path);
}

/// Writes `entries` as one newc archive, trailer included.
fn render(entries: &[Entry], out: &mut dyn Write) -> Result<(), CompressError> {
    let mut w = NewcWriter::new(out);
    for e in entries {
        w.append(e)?;
    }
    w.finish()?;
    Ok(())
}

/// A `Write` that cuts one member's bytes into pieces of at most the chunk size.
struct Cutter<'a> {
    outbox: &'a mut Outbox,
    codec: Codec,
    member_len: u64,
    written: u64,
    first: bool,
    buf: Vec<u8>,
    /// For the next piece sent.
    store: Option<Keep>,
    /// Digests the bytes on the way, when they were not digested before.
    digest: Option<SegmentDigest>,
    /// The member's first entry, by index.
    start: usize,
    /// Whether the member is stored before its key is known: the last piece carries it.
    close: bool,
}

impl Cutter<'_> {
    fn buffer(&mut self) -> Vec<u8> {
        let left = self.member_len - self.written;
        self.outbox
            .buffer(left.min(self.codec.cut() as u64) as usize)
    }

    fn emit(&mut self, last: bool) -> Result<(), Produce> {
        let data = std::mem::take(&mut self.buf);
        let store = self.store.take();
        self.outbox
            .compress((self.first, last), self.member_len, data, (store, None))?;
        self.first = false;
        if !last {
            self.buf = self.buffer();
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), Produce> {
        if self.written != self.member_len {
            return Err(Produce::Failed(CompressError::Thread(
                "segment size differs from its plan",
            )));
        }
        if let Some(d) = self.digest.take() {
            let (raw, bodies) = d.finish();
            self.outbox.digested(self.start, bodies)?;
            // A member stored before its key was known gets it with its last piece.
            if self.close {
                self.store = Some(Keep::Close(key(self.codec, &raw)));
            }
        }
        self.emit(true)
    }
}

impl Write for Cutter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf = self.buffer();
        }
        if self.buf.len() == self.codec.cut() && self.written < self.member_len {
            // A full piece with more to come: not the member's last.
            self.emit(false)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "compression stopped"))?;
        }
        let n = data.len().min(self.codec.cut() - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if let Some(d) = self.digest.as_mut() {
            d.write_all(&data[..n])?;
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A worker: renders and digests whole segments and copies them from the cache, or
/// compresses pieces, until the job channel closes.
struct Worker<'a> {
    entries: &'a [Entry],
    codec: Codec,
    cache: Option<&'a SegmentCache>,
    sha1: bool,
}

impl Worker<'_> {
    fn run(&self, jobs: &Mutex<Receiver<Piece>>, done: &Reports) {
        let mut enc = match PieceEncoder::new(self.codec) {
            Ok(e) => Some(e),
            Err(e) => {
                let _ = done.send(Err(e));
                None
            }
        };
        // The buffer this worker renders segments into, kept from one to the next.
        let mut buf = Vec::new();
        loop {
            let piece = match jobs.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok(piece) = piece else { return };
            let Some(enc) = enc.as_mut() else { return };
            // A panic must still reach the writer as an error, or it would wait for this piece.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.piece(enc, piece, &mut buf, done)
            }))
            .unwrap_or(Err(CompressError::Thread("a compression worker panicked")));
            if done.send(result.map(Report::Piece)).is_err() {
                return;
            }
        }
    }

    /// The cached member of the one-piece segment `raw` (of key `key`), once proven to be its
    /// compression; a member that is not is removed with a warning and compressed again.
    fn cached(&self, cache: &SegmentCache, key: &Key, raw: &[u8]) -> Option<Vec<u8>> {
        // No member of one piece is larger than its compressor's bound for the piece.
        let bound = raw.len() as u64 + raw.len() as u64 / 64 + (64 << 10);
        let whole = cache.lookup_whole(key, bound)?;
        if whole.proves(self.codec.compression, raw) {
            return Some(whole.member);
        }
        forged(whole.path());
        None
    }

    /// A piece; a whole segment (`segment` set) is rendered into `buf` and digested first
    /// (the digests told to the writer at once), and copied from the cache when it is there.
    /// `buf` gets its buffer back when the encoder did not keep it.
    fn piece(
        &self,
        enc: &mut PieceEncoder,
        mut piece: Piece,
        buf: &mut Vec<u8>,
        done: &Reports,
    ) -> Result<Encoded, CompressError> {
        let Some(range) = piece.segment.take() else {
            return enc.encode(piece);
        };
        let start = range.start;
        let mut data = std::mem::take(buf);
        data.clear();
        data.reserve(piece.member_len as usize);
        render(&self.entries[range], &mut data)?;
        if data.len() as u64 != piece.member_len {
            return Err(CompressError::Thread("segment size differs from its plan"));
        }
        piece.data = data;
        let mut d = SegmentDigest::new(self.sha1);
        d.write_all(&piece.data)?;
        let (raw, bodies) = d.finish();
        let bodies = bodies.into_iter().map(|(i, b)| (start + i, b)).collect();
        // The writer is gone only when the build stops; that is reported elsewhere.
        let _ = done.send(Ok(Report::Digested(bodies)));
        if let Some(cache) = self.cache {
            let key = key(self.codec, &raw);
            if let Some(member) = self.cached(cache, &key, &piece.data) {
                let mut e = Encoded::verbatim(piece.seq, true, true, member);
                e.cached = true;
                *buf = piece.data;
                return Ok(e);
            }
            piece.store = Some(Keep::Under(key));
        }
        let mut e = enc.encode(piece)?;
        *buf = std::mem::take(&mut e.spare);
        Ok(e)
    }
}

/// What the writer saw.
struct Written {
    /// Whether the producer's last piece arrived.
    complete: bool,
    /// Members the workers copied from the cache.
    cached: usize,
    /// Every entry's body digests, by entry index.
    bodies: Vec<Option<BodyDigest>>,
}

/// Writes encoded pieces in sequence order, storing newly compressed members in the cache.
/// `(segments, entries)` says how many segments' digests to wait for before the digests are
/// handed on, and how many entries they describe.
fn write_in_order(
    codec: Codec,
    cache: Option<&SegmentCache>,
    (segments, entries): (usize, usize),
    done: Receiver<Result<Report, CompressError>>,
    credits: SyncSender<Vec<u8>>,
    sinks: Sinks,
) -> Result<Written, CompressError> {
    let Sinks { out, digested } = sinks;
    let mut writer = MemberWriter::new(codec);
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut finished = false;
    let mut store: Option<Store> = None;
    let (mut cached, mut bodies) = (0, vec![None; entries]);
    let mut segments_digested = 0;
    for result in done {
        let e = match result? {
            Report::Piece(e) => e,
            Report::Digested(found) => {
                for (i, b) in found {
                    if let Some(slot) = bodies.get_mut(i) {
                        *slot = Some(b);
                    }
                }
                segments_digested += 1;
                if segments_digested == segments {
                    digested(&bodies);
                }
                continue;
            }
        };
        pending.insert(e.seq, e);
        while let Some(mut e) = pending.remove(&next) {
            let last_member_piece = e.last;
            cached += usize::from(e.cached);
            let keep = e.store.take();
            if e.first {
                store = match (cache, keep) {
                    (Some(c), Some(Keep::Under(k))) => c.store(Some(k)),
                    (Some(c), Some(Keep::Open)) => c.store(None),
                    _ => None,
                };
            }
            match store.as_mut() {
                Some(s) => writer.write(&e, &mut Tee { out, store: s })?,
                None => writer.write(&e, out)?,
            }
            if last_member_piece {
                match (store.take(), keep) {
                    (Some(s), Some(Keep::Close(k))) => s.commit_as(&k),
                    (Some(s), _) => s.commit(),
                    (None, _) => {}
                }
            }
            next += 1;
            finished = last_member_piece;
            // The producer may be gone already; a closed channel is fine here.
            let _ = credits.try_send(e.into_buffer());
        }
    }
    out.flush()?;
    Ok(Written {
        complete: finished && pending.is_empty(),
        cached,
        bodies,
    })
}

/// Writes to the image and copies what was written into a cache entry.
struct Tee<'a> {
    out: &'a mut dyn Write,
    store: &'a mut Store,
}

impl Write for Tee<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.out.write(b)?;
        self.store.write(&b[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests;
