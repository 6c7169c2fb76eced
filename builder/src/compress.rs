//! Compression of the archive stream. Placeholder: a single gzip or plain stream.

use std::io::Write;

use crate::archive::{ArchiveError, Entry, NewcWriter};

/// How the archive is compressed; every choice is one the Linux kernel unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
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
    /// Compressor level; `None` picks the format's default.
    pub level: Option<i32>,
    /// Worker threads; output is identical for any value.
    pub threads: usize,
}

/// Errors while compressing.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("cannot write the compressed image: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `entries` (normalised, in order) as a newc archive compressed per `opts` into `out`.
pub fn write_image(
    entries: &[Entry],
    opts: &Options,
    out: &mut dyn Write,
) -> Result<(), CompressError> {
    match opts.compression {
        Compression::None => {
            let mut w = NewcWriter::new(out);
            for e in entries {
                w.append(e)?;
            }
            w.finish()?;
        }
        _ => {
            let gz = flate2::GzBuilder::new().write(out, flate2::Compression::best());
            let mut w = NewcWriter::new(gz);
            for e in entries {
                w.append(e)?;
            }
            w.finish()?.finish()?;
        }
    }
    Ok(())
}

/// The compression of an image, from its first bytes; `None` for anything unknown.
pub fn detect(head: &[u8]) -> Option<Compression> {
    match head {
        [0x1f, 0x8b, ..] => Some(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Compression::Zstd),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Some(Compression::Xz),
        [0x02, 0x21, 0x4c, 0x18, ..] => Some(Compression::Lz4),
        [b'0', b'7', b'0', b'7', b'0', b'1', ..] => Some(Compression::None),
        _ => None,
    }
}

/// A reader of the decompressed bytes of every concatenated member.
pub fn decoder<'a>(c: Compression, r: Box<dyn std::io::Read + 'a>) -> Box<dyn std::io::Read + 'a> {
    match c {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        _ => r,
    }
}
