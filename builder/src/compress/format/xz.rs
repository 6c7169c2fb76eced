//! xz: one stream per initramfs member with CRC-32 checks (the kernel's xz decoder knows only
//! CRC-32 and none), the dictionary capped at what a piece can use; a member bigger than a piece
//! goes through liblzma's multi-threaded stream encoder on the writing thread. A squashfs block
//! is one stream whose dictionary is one block (the kernel allocates that much).

use std::io::{self, BufRead, Read, Write};

use super::{read_most, Block, Failed, Initramfs, Level};
use crate::compress::codec::{
    encoder_err, Body, Codec, EncodeBlocks, EncodePieces, MemberStream, Streamed,
};
use crate::compress::CompressError;

/// Most memory the decoder of one member may use: `xz -9` needs 65 MiB; a header asking for
/// more than this is not an image.
const MEMORY_MAX: u64 = 512 << 20;

pub(super) const INITRAMFS: Initramfs = Initramfs {
    pieces: |codec| Ok(Box::new(Pieces(*codec))),
    members: |codec| Streamed::framing(codec, "xz", open),
};

pub(super) const BLOCK: Block = Block {
    encoder: |level, block_size| Ok(Box::new(Blocks { level, block_size })),
    decode: |raw, max| read_most(xz2::read::XzDecoder::new(raw), max),
    options: None,
};

pub(super) fn decoder<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    Box::new(xz2::read::XzDecoder::new_multi_decoder(r))
}

pub(super) fn member<'a>(r: Box<dyn BufRead + 'a>) -> Box<dyn Read + 'a> {
    match xz2::stream::Stream::new_stream_decoder(MEMORY_MAX, 0) {
        Ok(stream) => Box::new(OneStream {
            inner: r,
            stream,
            ended: false,
        }),
        Err(e) => Box::new(Failed(Some(e.into()))),
    }
}

/// The filter chain of a preset, its dictionary capped at `dict_max`.
fn filters(level: Level, dict_max: u32) -> Result<xz2::stream::Filters, CompressError> {
    let mut opts =
        xz2::stream::LzmaOptions::new_preset(level.0 as u32).map_err(|e| encoder_err("xz", e))?;
    opts.dict_size(preset_dict(level.0).min(dict_max));
    let mut filters = xz2::stream::Filters::new();
    filters.lzma2(&opts);
    Ok(filters)
}

/// The filter chain of an initramfs member: no member piece is larger than a chunk.
fn member_filters(codec: &Codec) -> Result<xz2::stream::Filters, CompressError> {
    filters(
        codec.level,
        (codec.chunk as u32).next_power_of_two().max(4096),
    )
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

/// One whole stream of `data`.
fn whole(filters: &xz2::stream::Filters, data: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut s = xz2::stream::Stream::new_stream_encoder(filters, xz2::stream::Check::Crc32)
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

/// A member of one piece is a whole stream; the pieces of a bigger one are left to the stream.
struct Pieces(Codec);

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
        Ok((Body::Done(whole(&member_filters(&self.0)?, data)?), 0))
    }
}

fn open(codec: &Codec, _: u64) -> Result<Box<dyn MemberStream>, CompressError> {
    // liblzma's threaded encoder cuts blocks at block_size whatever the thread count, so its
    // output does not depend on `threads`; one chunk per block keeps each thread's buffers as
    // small as a piece.
    let s = xz2::stream::MtStreamBuilder::new()
        .threads(codec.threads.max(1) as u32)
        .filters(member_filters(codec)?)
        .check(xz2::stream::Check::Crc32)
        .block_size(codec.chunk as u64)
        .encoder()
        .map_err(|e| encoder_err("xz", e))?;
    Ok(Box::new(xz2::write::XzEncoder::new_stream(Vec::new(), s)))
}

impl MemberStream for xz2::write::XzEncoder<Vec<u8>> {
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

struct Blocks {
    level: Level,
    block_size: u32,
}

impl EncodeBlocks for Blocks {
    fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>, CompressError> {
        whole(&filters(self.level, self.block_size)?, raw)
    }
}

/// One xz stream: xz2's own reader reports the bytes after a stream's end as corruption.
struct OneStream<'a> {
    inner: Box<dyn BufRead + 'a>,
    stream: xz2::stream::Stream,
    ended: bool,
}

impl Read for OneStream<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use xz2::stream::{Action, Status};
        while !self.ended && !out.is_empty() {
            let input = self.inner.fill_buf()?;
            let eof = input.is_empty();
            let (in0, out0) = (self.stream.total_in(), self.stream.total_out());
            let action = if eof { Action::Finish } else { Action::Run };
            let status = self.stream.process(input, out, action)?;
            let consumed = (self.stream.total_in() - in0) as usize;
            let made = (self.stream.total_out() - out0) as usize;
            self.inner.consume(consumed);
            self.ended = status == Status::StreamEnd;
            if made > 0 {
                return Ok(made);
            }
            if eof && !self.ended {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the xz stream is cut short",
                ));
            }
        }
        Ok(0)
    }
}
