//! What the encoders share: pieces and members of an initramfs, and the interfaces each format
//! implements in its own module of [`super::format`], where it says how it frames a member the
//! way the Linux kernel's `lib/decompress_*.c` accepts.
//!
//! A segment's archive (one member) arrives as one or more pieces of at most the chunk size.
//! [`PieceEncoder`] runs on the worker threads and turns each piece into bytes independently of
//! every other piece ([`EncodePieces`]); [`MemberWriter`] runs on the writing thread, sees the
//! pieces in order and adds what spans a member ([`FrameMembers`]: a gzip header and trailer, an
//! lz4 magic), or, for zstd and xz members too big for one piece, runs the format's own
//! deterministic multi-threaded stream encoder ([`Streamed`]). A squashfs disk compresses each
//! block on its own ([`EncodeBlocks`]).

use std::io::{self, Write};

use super::cache::Key;
use super::format::Level;
use super::{CompressError, Compression};

/// One piece of a member, as the producer cut it.
pub(crate) struct Piece {
    pub seq: u64,
    /// First and last piece of its member (both for a single-piece member).
    pub first: bool,
    pub last: bool,
    /// Size of the whole member's archive bytes.
    pub member_len: u64,
    pub data: Vec<u8>,
    /// What the writer keeps of the member in the segment cache.
    pub store: Option<Keep>,
    /// A whole segment of one piece, by its entries: the worker renders it (`data` is empty),
    /// digests it and looks it up in the cache before compressing it.
    pub segment: Option<std::ops::Range<usize>>,
}

/// How a member's compressed bytes go into the segment cache.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keep {
    /// On the member's first piece: store the member under this key.
    Under(Key),
    /// On the member's first piece: store the member; its key comes with the last piece.
    Open,
    /// On the last piece of an [`Keep::Open`] member: its key.
    Close(Key),
}

/// What a worker made of a piece.
pub(crate) struct Encoded {
    pub seq: u64,
    pub first: bool,
    pub last: bool,
    pub member_len: u64,
    /// CRC-32 and length of the piece's raw bytes (used by gzip members).
    pub crc: u32,
    pub raw_len: u64,
    pub body: Body,
    pub store: Option<Keep>,
    /// Whether a worker found the member in the segment cache (the producer counts the
    /// members it replays itself).
    pub cached: bool,
    /// The piece's raw buffer when the encoder did not keep it, handed back to the producer
    /// for a later piece (fresh buffers of megabytes cost a page fault per page).
    pub spare: Vec<u8>,
}

impl Encoded {
    /// A piece of a member that is already complete (from the cache), written as it is.
    pub fn verbatim(seq: u64, first: bool, last: bool, data: Vec<u8>) -> Encoded {
        Encoded {
            seq,
            first,
            last,
            member_len: 0,
            crc: 0,
            raw_len: 0,
            body: Body::Verbatim(data),
            store: None,
            cached: false,
            spare: Vec::new(),
        }
    }

    /// The buffer of this piece that can be used again once it is written: the raw piece's,
    /// else the body's.
    pub fn into_buffer(self) -> Vec<u8> {
        if self.spare.capacity() > 0 {
            return self.spare;
        }
        match self.body {
            Body::Done(b) | Body::Raw(b) | Body::Verbatim(b) => b,
        }
    }
}

pub(crate) enum Body {
    /// Bytes ready to write, inside the member's framing.
    Done(Vec<u8>),
    /// Raw bytes the writing thread compresses in its member stream (zstd/xz big members).
    Raw(Vec<u8>),
    /// Bytes of a whole member, framing included.
    Verbatim(Vec<u8>),
}

/// Settings every encoder shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codec {
    pub compression: Compression,
    pub level: Level,
    /// Largest piece; also caps the xz dictionary, as no member piece is larger.
    pub chunk: usize,
    pub threads: usize,
}

impl Codec {
    /// The size of the pieces a member larger than a piece is cut into. A zstd member of that
    /// size goes through libzstd's stream encoder, whose output does not depend on how its
    /// input arrives: pieces of one job (a quarter of a piece) reach it sooner, so its workers
    /// start while the rest of the member is still being read. The other formats compress
    /// each piece on its own, so their pieces are pieces.
    pub fn cut(&self) -> usize {
        match self.compression {
            Compression::Zstd => self.chunk / 4,
            _ => self.chunk,
        }
    }
}

pub(crate) fn encoder_err(what: &'static str, e: impl std::fmt::Display) -> CompressError {
    CompressError::Encoder {
        what,
        message: e.to_string(),
    }
}

/// A worker's encoder of one format's pieces; its state is kept from piece to piece.
pub(crate) trait EncodePieces {
    /// The body of one piece of a member, and the piece's check value for the member's trailer
    /// (gzip's CRC-32; 0 for formats whose framing needs none). An encoder that passes the
    /// raw bytes on takes them out of `data`.
    fn encode(
        &mut self,
        data: &mut Vec<u8>,
        first: bool,
        last: bool,
    ) -> Result<(Body, u32), CompressError>;
}

/// The writing thread's framing of one format's members: what comes before, between and after
/// their pieces.
pub(crate) trait FrameMembers {
    /// Writes piece `e` of the current member (never a verbatim one) to `out`.
    fn write(&mut self, e: &Encoded, out: &mut dyn Write) -> Result<(), CompressError>;
}

/// A thread's encoder of one format's squashfs blocks; its state is kept from block to block (a
/// zstd context at a high level costs more to set up than a block takes to compress).
pub(crate) trait EncodeBlocks: Send {
    fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>, CompressError>;
}

/// Per-worker compressor state, reused across pieces.
pub(crate) struct PieceEncoder(Box<dyn EncodePieces>);

impl PieceEncoder {
    pub fn new(codec: Codec) -> Result<Self, CompressError> {
        (codec.compression.format().initramfs.pieces)(&codec).map(PieceEncoder)
    }

    pub fn encode(&mut self, p: Piece) -> Result<Encoded, CompressError> {
        let raw_len = p.data.len() as u64;
        let mut data = p.data;
        let (body, crc) = self.0.encode(&mut data, p.first, p.last)?;
        Ok(Encoded {
            seq: p.seq,
            first: p.first,
            last: p.last,
            member_len: p.member_len,
            crc,
            raw_len,
            body,
            store: p.store,
            cached: false,
            spare: data,
        })
    }
}

/// Writes encoded pieces in order, adding what spans a member.
pub(crate) struct MemberWriter(Box<dyn FrameMembers>);

impl MemberWriter {
    pub fn new(codec: Codec) -> Self {
        MemberWriter((codec.compression.format().initramfs.members)(&codec))
    }

    /// Writes the next piece to `out`.
    pub fn write(&mut self, e: &Encoded, out: &mut dyn Write) -> Result<(), CompressError> {
        match &e.body {
            Body::Verbatim(b) => Ok(out.write_all(b)?),
            _ => self.0.write(e, out),
        }
    }
}

/// A format's stream encoder for one member that spans several pieces; what it has made so far
/// collects in a buffer the writer drains after every piece.
pub(crate) trait MemberStream {
    fn write(&mut self, raw: &[u8]) -> io::Result<()>;
    /// The output made so far, which the writer drains.
    fn output(&mut self) -> &mut Vec<u8>;
    /// Ends the member; the rest of its output.
    fn finish(self: Box<Self>) -> io::Result<Vec<u8>>;
}

/// Opens a format's stream for a member of `member_len` bytes.
pub(crate) type OpenStream = fn(&Codec, u64) -> Result<Box<dyn MemberStream>, CompressError>;

/// The framing of zstd and xz: a member of one piece is complete as its worker made it; the
/// pieces of a bigger one go through the format's stream encoder here, on the writing thread.
pub(crate) struct Streamed {
    pub codec: Codec,
    pub what: &'static str,
    pub open: OpenStream,
    pub stream: Option<Box<dyn MemberStream>>,
}

impl Streamed {
    pub fn framing(codec: &Codec, what: &'static str, open: OpenStream) -> Box<dyn FrameMembers> {
        Box::new(Streamed {
            codec: *codec,
            what,
            open,
            stream: None,
        })
    }
}

impl FrameMembers for Streamed {
    fn write(&mut self, e: &Encoded, out: &mut dyn Write) -> Result<(), CompressError> {
        let raw = match &e.body {
            Body::Raw(raw) => raw,
            b => return Ok(out.write_all(done(b))?),
        };
        let err = |x| encoder_err(self.what, x);
        if e.first {
            self.stream = Some((self.open)(&self.codec, e.member_len)?);
        }
        let stream = self
            .stream
            .as_mut()
            .expect("a big member's first piece opens its stream");
        stream.write(raw).map_err(err)?;
        let buf = stream.output();
        out.write_all(buf)?;
        buf.clear();
        if e.last {
            let rest = self.stream.take().expect("stream is open").finish();
            out.write_all(&rest.map_err(err)?)?;
        }
        Ok(())
    }
}

/// The bytes of a body that needs no more encoding.
pub(crate) fn done(b: &Body) -> &[u8] {
    match b {
        Body::Done(b) | Body::Verbatim(b) => b,
        Body::Raw(_) => unreachable!("only zstd and xz members carry raw pieces"),
    }
}
