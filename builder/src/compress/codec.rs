//! The compressors, each framed the way the Linux kernel's `lib/decompress_*.c` accepts.
//!
//! A segment's archive (one member) arrives as one or more pieces of at most the chunk size.
//! [`PieceEncoder`] runs on the worker threads and turns each piece into bytes independently of
//! every other piece; [`MemberWriter`] runs on the writing thread, sees the pieces in order and
//! adds what spans a member (gzip header and trailer, lz4 magic), or, for zstd and xz members
//! too big for one piece, runs the format's own deterministic multi-threaded stream encoder.
//!
//! Framing per format:
//! - gzip: a single-piece member is one libdeflate raw deflate stream. A larger member is a
//!   chain of zlib-rs deflate pieces ended by a sync flush (byte aligned, not final) and a last
//!   libdeflate piece; the CRC-32 is combined from the pieces'. Header: no name, mtime 0.
//! - zstd: one frame per member with a checksum; window at most 8 MiB (the kernel's limit).
//! - xz: one stream per member, CRC-32 check (the kernel's xz decoder knows only CRC-32/none).
//! - lz4: the legacy format: magic `0x184C2102`, then `[u32 LE size][block]`, each block from at
//!   most 8 MiB of input (the kernel decodes every block into an 8 MiB buffer).
//! - none: the archive bytes as they are.

use std::io::{self, Write};

use super::cache::Key;
use super::format::Level;
use super::{CompressError, Compression};

/// lz4 legacy frame magic number.
pub(crate) const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Largest input the kernel accepts for one lz4 legacy block.
pub(crate) const LZ4_MAX_BLOCK: usize = 8 << 20;
/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS Unix.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
/// Largest zlib level, used for the non-final pieces of big gzip members.
const ZLIB_MAX_LEVEL: i32 = 9;

/// One piece of a member, as the producer cut it.
pub(crate) struct Piece {
    pub seq: u64,
    /// First and last piece of its member (both for a single-piece member).
    pub first: bool,
    pub last: bool,
    /// Size of the whole member's archive bytes.
    pub member_len: u64,
    pub data: Vec<u8>,
    /// On a member's first piece: the cache key to store the compressed member under.
    pub store: Option<Key>,
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
    pub store: Option<Key>,
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
    /// xz filter chain: the preset with the dictionary capped to what a piece can use.
    fn xz_filters(&self) -> Result<xz2::stream::Filters, CompressError> {
        let mut opts = xz2::stream::LzmaOptions::new_preset(self.level.0 as u32)
            .map_err(|e| encoder_err("xz", e))?;
        let dict = preset_dict(self.level.0).min((self.chunk as u32).next_power_of_two().max(4096));
        opts.dict_size(dict);
        let mut filters = xz2::stream::Filters::new();
        filters.lzma2(&opts);
        Ok(filters)
    }
}

/// Dictionary size of xz presets 0..=9.
fn preset_dict(level: i32) -> u32 {
    const MIB: u32 = 1 << 20;
    match level {
        0 => 256 << 10,
        1 => MIB,
        2 => 2 * MIB,
        3 | 4 => 4 * MIB,
        5 | 6 => 8 * MIB,
        7 => 16 * MIB,
        8 => 32 * MIB,
        _ => 64 * MIB,
    }
}

fn encoder_err(what: &'static str, e: impl std::fmt::Display) -> CompressError {
    CompressError::Encoder {
        what,
        message: e.to_string(),
    }
}

/// Per-worker compressor state, reused across pieces.
pub(crate) struct PieceEncoder {
    codec: Codec,
    deflate: Option<libdeflater::Compressor>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl PieceEncoder {
    pub fn new(codec: Codec) -> Result<Self, CompressError> {
        let deflate = match codec.compression {
            Compression::Gzip => {
                let lvl = libdeflater::CompressionLvl::new(codec.level.0)
                    .map_err(|e| encoder_err("libdeflate", format!("{e:?}")))?;
                Some(libdeflater::Compressor::new(lvl))
            }
            _ => None,
        };
        let zstd = match codec.compression {
            Compression::Zstd => {
                let mut z = zstd::bulk::Compressor::new(codec.level.0)
                    .map_err(|e| encoder_err("zstd", e))?;
                z.include_checksum(true)
                    .map_err(|e| encoder_err("zstd", e))?;
                Some(z)
            }
            _ => None,
        };
        Ok(PieceEncoder {
            codec,
            deflate,
            zstd,
        })
    }

    pub fn encode(&mut self, p: Piece) -> Result<Encoded, CompressError> {
        let single = p.first && p.last;
        let raw_len = p.data.len() as u64;
        let crc = match self.codec.compression {
            Compression::Gzip => crc32fast::hash(&p.data),
            _ => 0,
        };
        let body = match self.codec.compression {
            Compression::None => Body::Done(p.data),
            Compression::Lz4 => Body::Done(lz4_block(&p.data)),
            Compression::Gzip if p.last => Body::Done(self.deflate_final(&p.data)?),
            Compression::Gzip => Body::Done(deflate_sync(&p.data, self.codec.level)?),
            Compression::Zstd if single => {
                let z = self.zstd.as_mut().expect("zstd encoder exists for zstd");
                Body::Done(z.compress(&p.data).map_err(|e| encoder_err("zstd", e))?)
            }
            Compression::Xz if single => Body::Done(self.xz_whole(&p.data)?),
            Compression::Zstd | Compression::Xz => Body::Raw(p.data),
        };
        Ok(Encoded {
            seq: p.seq,
            first: p.first,
            last: p.last,
            member_len: p.member_len,
            crc,
            raw_len,
            body,
            store: p.store,
        })
    }

    /// A final deflate stream piece (ends with BFINAL) from libdeflate.
    fn deflate_final(&mut self, data: &[u8]) -> Result<Vec<u8>, CompressError> {
        let d = self.deflate.as_mut().expect("libdeflate exists for gzip");
        let mut out = vec![0u8; d.deflate_compress_bound(data.len())];
        let n = d
            .deflate_compress(data, &mut out)
            .map_err(|e| encoder_err("libdeflate", format!("{e:?}")))?;
        out.truncate(n);
        Ok(out)
    }

    fn xz_whole(&self, data: &[u8]) -> Result<Vec<u8>, CompressError> {
        let filters = self.codec.xz_filters()?;
        let mut s = xz2::stream::Stream::new_stream_encoder(&filters, xz2::stream::Check::Crc32)
            .map_err(|e| encoder_err("xz", e))?;
        let mut out = Vec::with_capacity(data.len() / 3 + 4096);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64 << 10));
            }
            let consumed = s.total_in() as usize;
            let status = s
                .process_vec(&data[consumed..], &mut out, xz2::stream::Action::Finish)
                .map_err(|e| encoder_err("xz", e))?;
            if status == xz2::stream::Status::StreamEnd {
                return Ok(out);
            }
        }
    }
}

/// A non-final deflate piece: zlib-rs raw deflate ended by a sync flush, so the next piece can
/// follow it in the same stream.
fn deflate_sync(data: &[u8], level: Level) -> Result<Vec<u8>, CompressError> {
    let lvl = level.0.min(ZLIB_MAX_LEVEL) as u32;
    let mut c = flate2::Compress::new(flate2::Compression::new(lvl), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut out, flate2::FlushCompress::Sync)
            .map_err(|e| encoder_err("deflate", e))?;
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

/// One lz4 legacy block: `[u32 LE compressed size][data]`.
fn lz4_block(data: &[u8]) -> Vec<u8> {
    debug_assert!(
        data.len() <= LZ4_MAX_BLOCK,
        "lz4 piece above the kernel's 8 MiB"
    );
    let block = lz4_flex::block::compress(data);
    let mut out = Vec::with_capacity(block.len() + 4);
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    out.extend_from_slice(&block);
    out
}

/// A zstd or xz stream encoder for a member that spans several pieces; output is collected in
/// a buffer the writer drains after every piece.
enum Stream {
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Xz(xz2::write::XzEncoder<Vec<u8>>),
}

/// Writes encoded pieces in order, adding what spans a member.
pub(crate) struct MemberWriter {
    codec: Codec,
    crc: crc32fast::Hasher,
    stream: Option<Stream>,
}

impl MemberWriter {
    pub fn new(codec: Codec) -> Self {
        MemberWriter {
            codec,
            crc: crc32fast::Hasher::new(),
            stream: None,
        }
    }

    /// Writes the next piece to `out`.
    pub fn write(&mut self, e: Encoded, out: &mut dyn Write) -> Result<(), CompressError> {
        if let Body::Verbatim(b) = &e.body {
            out.write_all(b)?;
            return Ok(());
        }
        match self.codec.compression {
            Compression::Gzip => {
                if e.first {
                    out.write_all(&GZIP_HEADER)?;
                    self.crc = crc32fast::Hasher::new();
                }
                self.crc
                    .combine(&crc32fast::Hasher::new_with_initial_len(e.crc, e.raw_len));
                out.write_all(done(&e.body))?;
                if e.last {
                    let crc = std::mem::take(&mut self.crc).finalize();
                    out.write_all(&crc.to_le_bytes())?;
                    // ISIZE is the length modulo 2^32 (RFC 1952).
                    out.write_all(&(e.member_len as u32).to_le_bytes())?;
                }
            }
            Compression::Lz4 => {
                if e.first {
                    out.write_all(&LZ4_LEGACY_MAGIC.to_le_bytes())?;
                }
                out.write_all(done(&e.body))?;
            }
            Compression::None => out.write_all(done(&e.body))?,
            Compression::Zstd | Compression::Xz => match &e.body {
                Body::Raw(raw) => self.stream_piece(&e, raw, out)?,
                b => out.write_all(done(b))?,
            },
        }
        Ok(())
    }

    fn stream_piece(
        &mut self,
        e: &Encoded,
        raw: &[u8],
        out: &mut dyn Write,
    ) -> Result<(), CompressError> {
        if e.first {
            self.stream = Some(self.open_stream(e.member_len)?);
        }
        let stream = self
            .stream
            .as_mut()
            .expect("a big member's first piece opens its stream");
        let buf = match stream {
            Stream::Zstd(z) => {
                z.write_all(raw).map_err(|e| encoder_err("zstd", e))?;
                z.get_mut()
            }
            Stream::Xz(x) => {
                x.write_all(raw).map_err(|e| encoder_err("xz", e))?;
                x.get_mut()
            }
        };
        out.write_all(buf)?;
        buf.clear();
        if e.last {
            let rest = match self.stream.take().expect("stream is open") {
                Stream::Zstd(z) => z.finish().map_err(|e| encoder_err("zstd", e))?,
                Stream::Xz(x) => x.finish().map_err(|e| encoder_err("xz", e))?,
            };
            out.write_all(&rest)?;
        }
        Ok(())
    }

    fn open_stream(&self, member_len: u64) -> Result<Stream, CompressError> {
        let threads = self.codec.threads.max(1) as u32;
        Ok(match self.codec.compression {
            Compression::Zstd => {
                let zerr = |e: io::Error| encoder_err("zstd", e);
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), self.codec.level.0)
                    .map_err(zerr)?;
                z.include_checksum(true).map_err(zerr)?;
                z.set_pledged_src_size(Some(member_len)).map_err(zerr)?;
                // Multi-threaded zstd output is the same for any worker count >= 1. Only a
                // segment of one entry larger than a piece comes here; jobs of a quarter of a
                // piece share it among the workers.
                z.multithread(threads).map_err(zerr)?;
                z.set_parameter(zstd::zstd_safe::CParameter::JobSize(
                    (self.codec.chunk / 4) as u32,
                ))
                .map_err(zerr)?;
                Stream::Zstd(z)
            }
            _ => {
                let filters = self.codec.xz_filters()?;
                // liblzma's threaded encoder cuts blocks at block_size whatever the thread
                // count, so its output does not depend on `threads`; one chunk per block keeps
                // each thread's buffers as small as a piece.
                let s = xz2::stream::MtStreamBuilder::new()
                    .threads(threads)
                    .filters(filters)
                    .check(xz2::stream::Check::Crc32)
                    .block_size(self.codec.chunk as u64)
                    .encoder()
                    .map_err(|e| encoder_err("xz", e))?;
                Stream::Xz(xz2::write::XzEncoder::new_stream(Vec::new(), s))
            }
        })
    }
}

fn done(b: &Body) -> &[u8] {
    match b {
        Body::Done(b) | Body::Verbatim(b) => b,
        Body::Raw(_) => unreachable!("only zstd and xz members carry raw pieces"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_block_has_size_prefix() {
        let data = vec![7u8; 100_000];
        let b = lz4_block(&data);
        let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
        assert_eq!(n, b.len() - 4);
        let back = lz4_flex::block::decompress(&b[4..], data.len()).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn sync_pieces_chain_with_a_final_piece() {
        let a: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"tail of the stream".repeat(1000);
        let mut enc = PieceEncoder::new(Codec {
            compression: Compression::Gzip,
            level: Level(9),
            chunk: 1 << 20,
            threads: 1,
        })
        .unwrap();
        let mut stream = deflate_sync(&a, Level(9)).unwrap();
        stream.extend(enc.deflate_final(&b).unwrap());
        let mut back = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::DeflateDecoder::new(&stream[..]),
            &mut back,
        )
        .unwrap();
        assert_eq!(back.len(), a.len() + b.len());
        assert!(back[..a.len()] == a[..] && back[a.len()..] == b[..]);
    }
}
