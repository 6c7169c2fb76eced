//! lz4 in the legacy format the kernel reads: magic `0x184C2102`, then `[u32 LE size][block]`,
//! each block from at most 8 MiB of input (the kernel decodes every block into an 8 MiB
//! buffer). A squashfs block is one raw lz4 block, and the disk says so in its compressor
//! options.

use std::io::{self, BufRead, Read, Write};

use super::{invalid, Block, Initramfs};
use crate::compress::codec::{done, Body, EncodeBlocks, EncodePieces, Encoded, FrameMembers};
use crate::compress::CompressError;

/// lz4 legacy frame magic number.
const LEGACY_MAGIC: u32 = 0x184C_2102;
/// Largest input the kernel accepts for one lz4 legacy block.
pub(crate) const LZ4_MAX_BLOCK: usize = 8 << 20;

pub(super) const INITRAMFS: Initramfs = Initramfs {
    pieces: |_| Ok(Box::new(Pieces)),
    members: |_| Box::new(Members),
};

pub(super) const BLOCK: Block = Block {
    encoder: |_, _| Ok(Box::new(Blocks)),
    decode: |raw, max| lz4_flex::block::decompress(raw, max).map_err(|e| invalid(&e.to_string())),
    // version 1 (LZ4_LEGACY), no flags: the kernel refuses an lz4 disk without them.
    options: Some(&[1, 0, 0, 0, 0, 0, 0, 0]),
};

pub(super) fn decoder<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    Box::new(Lz4Legacy::new(r))
}

/// The legacy decoder stops at a zero block size, as the kernel's does, so it reads one member.
pub(super) fn member<'a>(r: Box<dyn BufRead + 'a>) -> Box<dyn Read + 'a> {
    Box::new(Lz4Legacy::new(r))
}

struct Pieces;

impl EncodePieces for Pieces {
    fn encode(
        &mut self,
        data: &mut Vec<u8>,
        _: bool,
        _: bool,
    ) -> Result<(Body, u32), CompressError> {
        Ok((Body::Done(block(data)), 0))
    }
}

/// One lz4 legacy block: `[u32 LE compressed size][data]`.
fn block(data: &[u8]) -> Vec<u8> {
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

/// The magic, then the blocks.
struct Members;

impl FrameMembers for Members {
    fn write(&mut self, e: &Encoded, out: &mut dyn Write) -> Result<(), CompressError> {
        if e.first {
            out.write_all(&LEGACY_MAGIC.to_le_bytes())?;
        }
        Ok(out.write_all(done(&e.body))?)
    }
}

struct Blocks;

impl EncodeBlocks for Blocks {
    fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>, CompressError> {
        Ok(lz4_flex::block::compress(raw))
    }
}

/// Decoder of the lz4 legacy format: magic, then `[u32 LE size][block]` until the end, where a
/// repeated magic (a concatenated stream) is skipped like the kernel does.
struct Lz4Legacy<R> {
    inner: R,
    block: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    started: bool,
    ended: bool,
}

impl<R: Read> Lz4Legacy<R> {
    fn new(inner: R) -> Self {
        Lz4Legacy {
            inner,
            block: Vec::new(),
            out: Vec::new(),
            pos: 0,
            started: false,
            ended: false,
        }
    }

    /// Next little-endian word, or `None` at a clean end of input.
    fn word(&mut self) -> io::Result<Option<u32>> {
        let mut b = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.inner.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(invalid("lz4 stream ends inside a block size")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(u32::from_le_bytes(b)))
    }

    /// Decodes the next block into `out`; false at the end of input.
    fn next_block(&mut self) -> io::Result<bool> {
        loop {
            let Some(w) = self.word()? else {
                return Ok(false);
            };
            if w == LEGACY_MAGIC {
                self.started = true;
                continue;
            }
            if !self.started {
                return Err(invalid(
                    "lz4 data does not start with the legacy magic 0x184C2102",
                ));
            }
            // A zero size ends the stream, as in the kernel's unlz4: it is the NUL padding
            // before the next segment of an initramfs, which is not ours to read.
            if w == 0 {
                self.ended = true;
                return Ok(false);
            }
            let size = w as usize;
            if size > lz4_flex::block::get_maximum_output_size(LZ4_MAX_BLOCK) {
                return Err(invalid("lz4 block is larger than an 8 MiB input allows"));
            }
            self.block.resize(size, 0);
            self.inner.read_exact(&mut self.block)?;
            self.out.resize(LZ4_MAX_BLOCK, 0);
            let n = lz4_flex::block::decompress_into(&self.block, &mut self.out)
                .map_err(|e| invalid(&format!("lz4 block does not decode: {e}")))?;
            self.out.truncate(n);
            self.pos = 0;
            return Ok(true);
        }
    }
}

impl<R: Read> Read for Lz4Legacy<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.ended || !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::{decoder, Compression};

    #[test]
    fn a_block_has_its_size_first() {
        let data = vec![7u8; 100_000];
        let b = block(&data);
        let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
        assert_eq!(n, b.len() - 4);
        let back = lz4_flex::block::decompress(&b[4..], data.len()).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn lz4_legacy_reads_blocks_across_repeated_magics() {
        let mut data = Vec::new();
        for part in [&b"first part "[..], b"second", b" third"] {
            data.extend_from_slice(&LEGACY_MAGIC.to_le_bytes());
            let block = lz4_flex::block::compress(part);
            data.extend_from_slice(&(block.len() as u32).to_le_bytes());
            data.extend_from_slice(&block);
        }
        let mut out = String::new();
        decoder(Compression::Lz4, Box::new(&data[..]))
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "first part second third");
    }

    #[test]
    fn lz4_legacy_rejects_a_missing_magic_and_truncation() {
        let mut r = decoder(Compression::Lz4, Box::new(&[5u8, 0, 0, 0, 1][..]));
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        let mut cut = LEGACY_MAGIC.to_le_bytes().to_vec();
        cut.extend_from_slice(&[50, 0, 0, 0, 1, 2]);
        let mut r = decoder(Compression::Lz4, Box::new(&cut[..]));
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
