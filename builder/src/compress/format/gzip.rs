//! gzip. An initramfs member with a single piece is one libdeflate raw deflate stream. A larger
//! member is a chain of zlib-rs deflate pieces, each ended by a sync flush (byte aligned, not
//! final), and a last libdeflate piece; the CRC-32 is combined from the pieces'. Header: no
//! name, mtime 0. A squashfs block is a zlib stream (libdeflate).

use std::io::{BufRead, Read, Write};

use super::{read_most, Block, Initramfs, Level};
use crate::compress::codec::{
    done, encoder_err, Body, EncodeBlocks, EncodePieces, Encoded, FrameMembers,
};
use crate::compress::CompressError;

/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS Unix.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
/// Largest zlib level, used for the non-final pieces of big members.
const ZLIB_MAX_LEVEL: i32 = 9;

pub(super) const INITRAMFS: Initramfs = Initramfs {
    pieces: |codec| Ok(Box::new(Pieces::new(codec.level)?)),
    members: |_| Box::new(Members::default()),
};

pub(super) const BLOCK: Block = Block {
    encoder: |level, _| Ok(Box::new(Blocks(libdeflate(level)?))),
    decode: |raw, max| read_most(flate2::read::ZlibDecoder::new(raw), max),
    options: None,
};

pub(super) fn decoder<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    Box::new(flate2::read::MultiGzDecoder::new(r))
}

pub(super) fn member<'a>(r: Box<dyn BufRead + 'a>) -> Box<dyn Read + 'a> {
    Box::new(flate2::bufread::GzDecoder::new(r))
}

fn libdeflate(level: Level) -> Result<libdeflater::Compressor, CompressError> {
    let lvl = libdeflater::CompressionLvl::new(level.0)
        .map_err(|e| encoder_err("libdeflate", format!("{e:?}")))?;
    Ok(libdeflater::Compressor::new(lvl))
}

struct Pieces {
    level: Level,
    deflate: libdeflater::Compressor,
}

impl Pieces {
    fn new(level: Level) -> Result<Pieces, CompressError> {
        Ok(Pieces {
            level,
            deflate: libdeflate(level)?,
        })
    }

    /// A final deflate stream piece (ends with BFINAL) from libdeflate.
    fn deflate_final(&mut self, data: &[u8]) -> Result<Vec<u8>, CompressError> {
        let d = &mut self.deflate;
        let mut out = vec![0u8; d.deflate_compress_bound(data.len())];
        let n = d
            .deflate_compress(data, &mut out)
            .map_err(|e| encoder_err("libdeflate", format!("{e:?}")))?;
        out.truncate(n);
        Ok(out)
    }
}

impl EncodePieces for Pieces {
    fn encode(
        &mut self,
        data: &mut Vec<u8>,
        _: bool,
        last: bool,
    ) -> Result<(Body, u32), CompressError> {
        let crc = crc32fast::hash(data);
        let body = if last {
            self.deflate_final(data)?
        } else {
            deflate_sync(data, self.level)?
        };
        Ok((Body::Done(body), crc))
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

/// The header, the pieces, then the CRC-32 combined from the pieces' and the length.
#[derive(Default)]
struct Members {
    crc: crc32fast::Hasher,
}

impl FrameMembers for Members {
    fn write(&mut self, e: &Encoded, out: &mut dyn Write) -> Result<(), CompressError> {
        if e.first {
            out.write_all(&HEADER)?;
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
        Ok(())
    }
}

struct Blocks(libdeflater::Compressor);

impl EncodeBlocks for Blocks {
    fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>, CompressError> {
        let mut out = vec![0u8; self.0.zlib_compress_bound(raw.len())];
        let n = self
            .0
            .zlib_compress(raw, &mut out)
            .map_err(|e| encoder_err("gzip", format!("{e:?}")))?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_pieces_chain_with_a_final_piece() {
        let a: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"tail of the stream".repeat(1000);
        let mut enc = Pieces::new(Level(9)).unwrap();
        let mut stream = deflate_sync(&a, Level(9)).unwrap();
        stream.extend(enc.deflate_final(&b).unwrap());
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), a.len() + b.len());
        assert!(back[..a.len()] == a[..] && back[a.len()..] == b[..]);
    }
}
