//! Compression of the image: segment-parallel, deterministic, with bounded memory.
//!
//! [`write_image`] cuts the entry list into segments ([`plan`]), each a complete newc archive
//! with its own trailer, and compresses each as one member of the output (the kernel unpacks
//! concatenated members, each ending after a trailer). zstd is the exception: the whole image
//! is one segment, one frame from zstd's own multi-threaded encoder. Three kinds of threads
//! cooperate:
//!
//! - one producer renders segments with [`NewcWriter`] and cuts the bytes into pieces of at
//!   most the chunk size, reading host files in small blocks, never whole;
//! - `threads` workers compress pieces independently ([`codec::PieceEncoder`]);
//! - the calling thread writes results in sequence order ([`codec::MemberWriter`]).
//!
//! Memory is bounded by a fixed number of pieces in flight (credits returned by the writer), so
//! peak use is about `(threads + 2) x chunk` raw plus as much compressed, whatever the image
//! size. The segment plan, piece cuts and every encoder's input depend only on the entries and
//! the options' compression and level, so the output is byte-identical for any thread count.
//!
//! Detection and decoding for reading images back live in [`decode`].

mod codec;
mod decode;
mod plan;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use crate::archive::{ArchiveError, Entry, NewcWriter};
use codec::{Codec, Encoded, MemberWriter, Piece, PieceEncoder};

pub use decode::{decoder, detect};

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

impl Compression {
    /// Every compression, in the order the command line lists them.
    pub const ALL: [Compression; 5] = [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
        Compression::Lz4,
        Compression::None,
    ];

    /// The compression called `name` (any case), as the command line and the config spell it.
    pub fn from_name(name: &str) -> Option<Compression> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Lowercase name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }
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
}

/// Default libdeflate level for gzip: output no larger than `gzip -9` on realistic images.
pub const GZIP_DEFAULT_LEVEL: i32 = 9;

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
}

/// Sizes that shape the output. Changing them changes the bytes, so they are fixed constants
/// in production and only tests pick smaller ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// Target raw size of one segment (one compressed member).
    pub segment: u64,
    /// Largest piece handed to a worker; at most 8 MiB (the kernel's lz4 block limit).
    pub chunk: usize,
}

impl Tuning {
    /// Segment target for `c`. zstd makes the whole image one frame, compressed by zstd's own
    /// multi-threaded encoder (deterministic for any worker count): its 2 MiB+ window gains
    /// more from one stream than it would from independent segments.
    fn segment_for(&self, c: Compression) -> u64 {
        match c {
            Compression::Zstd => u64::MAX,
            _ => self.segment,
        }
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            segment: DEFAULT_SEGMENT as u64,
            chunk: DEFAULT_SEGMENT,
        }
    }
}

/// Segment and piece size: large enough that per-member overhead is noise, small enough that
/// two cores share even a small image and memory stays low.
const DEFAULT_SEGMENT: usize = 4 << 20;

/// Checks that `level` suits `compression` (every level of every format is one the kernel can
/// unpack), without compressing anything.
pub fn check_level(compression: Compression, level: Option<i32>) -> Result<(), CompressError> {
    codec::resolve_level(compression, level).map(|_| ())
}

/// Writes `entries` (normalised, in order) as a newc archive compressed per `opts` into `out`.
pub fn write_image(
    entries: &[Entry],
    opts: &Options,
    out: &mut dyn Write,
) -> Result<(), CompressError> {
    write_image_tuned(entries, opts, Tuning::default(), out)
}

pub(crate) fn write_image_tuned(
    entries: &[Entry],
    opts: &Options,
    tuning: Tuning,
    out: &mut dyn Write,
) -> Result<(), CompressError> {
    assert!(
        tuning.chunk > 0 && tuning.chunk <= codec::LZ4_MAX_BLOCK,
        "chunk size out of range"
    );
    let threads = opts.threads.max(1);
    let codec = Codec {
        compression: opts.compression,
        level: codec::resolve_level(opts.compression, opts.level)?,
        chunk: tuning.chunk,
        threads,
    };
    let segments = plan::plan(entries, tuning.segment_for(opts.compression));
    let credits = threads + 2;

    std::thread::scope(|s| {
        let (job_tx, job_rx) = sync_channel::<Piece>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = channel::<Result<Encoded, CompressError>>();
        let (credit_tx, credit_rx) = sync_channel::<()>(credits);
        for _ in 0..credits {
            credit_tx.send(()).expect("the credit channel has room");
        }

        let segments = &segments;
        let producer = s.spawn(move || produce(entries, segments, tuning.chunk, job_tx, credit_rx));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let jobs = Arc::clone(&job_rx);
                let done = done_tx.clone();
                s.spawn(move || work(codec, &jobs, &done))
            })
            .collect();
        drop(job_rx);
        drop(done_tx);

        let written = write_in_order(codec, done_rx, credit_tx, out);
        let produced = producer
            .join()
            .map_err(|_| CompressError::Thread("producer panicked"))?;
        for w in workers {
            w.join()
                .map_err(|_| CompressError::Thread("worker panicked"))?;
        }
        // The writer's error comes first: when it stops, the producer only sees closed channels.
        let complete = written?;
        match produced {
            Err(Produce::Failed(e)) => Err(e),
            Err(Produce::Stopped) => Err(CompressError::Thread("workers stopped early")),
            Ok(()) if !complete => Err(CompressError::Thread("pieces went missing")),
            Ok(()) => Ok(()),
        }
    })
}

enum Produce {
    Failed(CompressError),
    /// A channel closed because another thread stopped; that thread reports why.
    Stopped,
}

/// Renders every segment and sends its pieces in order.
fn produce(
    entries: &[Entry],
    segments: &[plan::Segment],
    chunk: usize,
    jobs: SyncSender<Piece>,
    credits: Receiver<()>,
) -> Result<(), Produce> {
    let mut cutter = Cutter {
        jobs,
        credits,
        chunk,
        seq: 0,
        member_len: 0,
        written: 0,
        first: true,
        buf: Vec::new(),
        stopped: false,
    };
    for seg in segments {
        cutter.start(seg.raw_len);
        let mut w = NewcWriter::new(&mut cutter);
        let result = entries[seg.range.clone()]
            .iter()
            .try_for_each(|e| w.append(e))
            .and_then(|()| w.finish().map(|_| ()));
        if let Err(e) = result {
            return Err(if cutter.stopped {
                Produce::Stopped
            } else {
                Produce::Failed(e.into())
            });
        }
        cutter.end()?;
    }
    Ok(())
}

/// A `Write` that cuts one member's bytes into pieces of at most `chunk` bytes.
struct Cutter {
    jobs: SyncSender<Piece>,
    credits: Receiver<()>,
    chunk: usize,
    seq: u64,
    member_len: u64,
    written: u64,
    first: bool,
    buf: Vec<u8>,
    stopped: bool,
}

impl Cutter {
    fn start(&mut self, member_len: u64) {
        self.member_len = member_len;
        self.written = 0;
        self.first = true;
    }

    fn buffer(&self) -> Vec<u8> {
        let left = self.member_len - self.written;
        Vec::with_capacity(left.min(self.chunk as u64) as usize)
    }

    fn emit(&mut self, last: bool) -> Result<(), Produce> {
        // Wait for the writer to finish an earlier piece: this bounds the pieces alive.
        if self.credits.recv().is_err() {
            self.stopped = true;
            return Err(Produce::Stopped);
        }
        let data = std::mem::take(&mut self.buf);
        let piece = Piece {
            seq: self.seq,
            first: self.first,
            last,
            member_len: self.member_len,
            data,
        };
        if self.jobs.send(piece).is_err() {
            self.stopped = true;
            return Err(Produce::Stopped);
        }
        self.seq += 1;
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
        self.emit(true)
    }
}

impl Write for Cutter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf = self.buffer();
        }
        if self.buf.len() == self.chunk && self.written < self.member_len {
            // A full piece with more to come: not the member's last.
            self.emit(false)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "compression stopped"))?;
        }
        let n = data.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A worker: compresses pieces until the job channel closes.
fn work(
    codec: Codec,
    jobs: &Mutex<Receiver<Piece>>,
    done: &Sender<Result<Encoded, CompressError>>,
) {
    let mut enc = match PieceEncoder::new(codec) {
        Ok(e) => Some(e),
        Err(e) => {
            let _ = done.send(Err(e));
            None
        }
    };
    loop {
        let piece = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(piece) = piece else { return };
        let Some(enc) = enc.as_mut() else { return };
        // A panic must still reach the writer as an error, or it would wait for this piece.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| enc.encode(piece)))
            .unwrap_or(Err(CompressError::Thread("a compression worker panicked")));
        if done.send(result).is_err() {
            return;
        }
    }
}

/// Writes encoded pieces in sequence order; returns whether the producer's last piece arrived.
fn write_in_order(
    codec: Codec,
    done: Receiver<Result<Encoded, CompressError>>,
    credits: SyncSender<()>,
    out: &mut dyn Write,
) -> Result<bool, CompressError> {
    let mut writer = MemberWriter::new(codec, out);
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut finished = false;
    for result in done {
        let e = result?;
        pending.insert(e.seq, e);
        while let Some(e) = pending.remove(&next) {
            let last_member_piece = e.last;
            writer.write(e)?;
            next += 1;
            finished = last_member_piece;
            // The producer may be gone already; a closed channel is fine here.
            let _ = credits.try_send(());
        }
    }
    writer.flush()?;
    Ok(finished && pending.is_empty())
}

#[cfg(test)]
mod tests;
