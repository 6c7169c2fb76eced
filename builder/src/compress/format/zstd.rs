//! zstd: one frame per initramfs member, with a checksum and a window of at most 8 MiB (the
//! kernel's unzstd holds one window while it unpacks a member); a member bigger than a piece
//! goes through libzstd's multi-threaded stream encoder on the writing thread. A squashfs block
//! is one frame without a checksum.

use std::io::{self, BufRead, Read, Write};

use super::{read_most, Block, Failed, Initramfs};
use crate::compress::codec::{
    encoder_err, Body, Codec, EncodeBlocks, EncodePieces, MemberStream, Streamed,
};
use crate::compress::CompressError;

pub(super) const INITRAMFS: Initramfs = Initramfs {
    pieces: |codec| {
        let mut z =
            zstd::bulk::Compressor::new(codec.level.0).map_err(|e| encoder_err("zstd", e))?;
        z.include_checksum(true)
            .map_err(|e| encoder_err("zstd", e))?;
        // A segment of one piece looks back over all of itself, where the level's own window
        // (2 MiB at level 3) would not; libzstd gives a smaller segment a window its size.
        z.set_parameter(zstd::zstd_safe::CParameter::WindowLog(MEMBER_WINDOW_LOG))
            .map_err(|e| encoder_err("zstd", e))?;
        if codec.level.0 == 3 {
            // At the default level, its hash table half the level's: with the wide window,
            // 0.3% smaller than the level's own settings on the bench set in the same time,
            // where the window alone costs 5% more time for 0.7% (bench/README.md).
            z.set_parameter(zstd::zstd_safe::CParameter::HashLog(LEVEL_3_HASH_LOG))
                .map_err(|e| encoder_err("zstd", e))?;
        }
        Ok(Box::new(Pieces(z)))
    },
    members: |codec| Streamed::framing(codec, "zstd", open),
};

pub(super) const BLOCK: Block = Block {
    encoder: |level, _| {
        let z = zstd::bulk::Compressor::new(level.0).map_err(|e| encoder_err("zstd", e))?;
        Ok(Box::new(Blocks(z)))
    },
    decode: |raw, max| read_most(zstd::stream::read::Decoder::with_buffer(raw)?, max),
    options: None,
};

pub(super) fn decoder<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    match zstd::stream::read::Decoder::new(r) {
        Ok(d) => Box::new(d),
        Err(e) => Box::new(Failed(Some(e))),
    }
}

pub(super) fn member<'a>(r: Box<dyn BufRead + 'a>) -> Box<dyn Read + 'a> {
    match zstd::stream::read::Decoder::with_buffer(r) {
        Ok(d) => Box::new(d.single_frame()),
        Err(e) => Box::new(Failed(Some(e))),
    }
}

/// The window of a member of one piece: 8 MiB. The multi-threaded stream of a bigger member
/// keeps its level's window: its jobs gain nothing from a larger one and take longer.
const MEMBER_WINDOW_LOG: u32 = 23;

/// The hash table of a member of one piece at level 3: 2^16 entries (the level's own is 2^17).
const LEVEL_3_HASH_LOG: u32 = 16;

/// A member of one piece is a whole frame; the pieces of a bigger one are left to the stream.
struct Pieces(zstd::bulk::Compressor<'static>);

impl EncodePieces for Pieces {
    fn encode(
        &mut self,
        data: &mut Vec<u8>,
        first: bool,
        last: bool,
    ) -> Result<(Body, u32), CompressError> {
        if !(first && last) {
            return Ok((Body::Raw(std::mem::take(data)), 0));
        }
        let frame = self.0.compress(data).map_err(|e| encoder_err("zstd", e))?;
        Ok((Body::Done(frame), 0))
    }
}

fn open(codec: &Codec, member_len: u64) -> Result<Box<dyn MemberStream>, CompressError> {
    let zerr = |e: io::Error| encoder_err("zstd", e);
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), codec.level.0).map_err(zerr)?;
    z.include_checksum(true).map_err(zerr)?;
    z.set_pledged_src_size(Some(member_len)).map_err(zerr)?;
    // Multi-threaded zstd output is the same for any worker count >= 1. Only a segment of one
    // entry larger than a piece comes here; jobs of a quarter of a piece share it among the
    // workers.
    z.multithread(codec.threads.max(1) as u32).map_err(zerr)?;
    z.set_parameter(zstd::zstd_safe::CParameter::JobSize(codec.cut() as u32))
        .map_err(zerr)?;
    Ok(Box::new(z))
}

impl MemberStream for zstd::stream::write::Encoder<'static, Vec<u8>> {
    fn write(&mut self, raw: &[u8]) -> io::Result<()> {
        self.write_all(raw)
    }

    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }

    fn finish(self: Box<Self>) -> io::Result<Vec<u8>> {
        (*self).finish()
    }
}

struct Blocks(zstd::bulk::Compressor<'static>);

impl EncodeBlocks for Blocks {
    fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>, CompressError> {
        self.0.compress(raw).map_err(|e| encoder_err("zstd", e))
    }
}
