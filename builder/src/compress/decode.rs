//! Reading images back: decoders that read every concatenated member to the end, as the kernel
//! does (used by `fledge inspect`); [`super::format`] says which one a format has.

use std::io::{self, Read};

use super::codec::{LZ4_LEGACY_MAGIC, LZ4_MAX_BLOCK};

/// A reader of the decompressed bytes of a reader, across all its concatenated members.
pub type Decoder = for<'a> fn(Box<dyn Read + 'a>) -> Box<dyn Read + 'a>;

pub(super) fn gzip<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    Box::new(flate2::read::MultiGzDecoder::new(r))
}

pub(super) fn zstd<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    match zstd::stream::read::Decoder::new(r) {
        Ok(d) => Box::new(d),
        Err(e) => Box::new(Failed(Some(e))),
    }
}

pub(super) fn xz<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    Box::new(xz2::read::XzDecoder::new_multi_decoder(r))
}

pub(super) fn lz4<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    Box::new(Lz4Legacy::new(r))
}

pub(super) fn plain<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    r
}

/// A reader whose first read reports why the decoder could not be set up.
struct Failed(Option<io::Error>);

impl Read for Failed {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("decoder failed")))
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
            if w == LZ4_LEGACY_MAGIC {
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

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::{decoder, detect, Compression};

    #[test]
    fn detects_every_magic() {
        let cases: [(&[u8], Option<Compression>); 8] = [
            (&[0x1f, 0x8b, 8, 0], Some(Compression::Gzip)),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0], Some(Compression::Zstd)),
            (b"\xfd7zXZ\x00\x00", Some(Compression::Xz)),
            (&[0x02, 0x21, 0x4c, 0x18, 9], Some(Compression::Lz4)),
            (b"070701000000", Some(Compression::None)),
            (b"PK\x03\x04", None),
            (b"070707", None),
            (b"", None),
        ];
        for (i, (head, want)) in cases.iter().enumerate() {
            assert_eq!(detect(head), *want, "case {i}");
        }
    }

    #[test]
    fn lz4_legacy_reads_blocks_across_repeated_magics() {
        let mut data = Vec::new();
        for part in [&b"first part "[..], b"second", b" third"] {
            data.extend_from_slice(&LZ4_LEGACY_MAGIC.to_le_bytes());
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
        let mut cut = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        cut.extend_from_slice(&[50, 0, 0, 0, 1, 2]);
        let mut r = decoder(Compression::Lz4, Box::new(&cut[..]));
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
