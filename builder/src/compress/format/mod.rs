//! Every compression fledge knows, described once: its name, the magic numbers its data starts
//! with, its level range and default, its initramfs encoder, its squashfs block codec, its
//! decoders, and what it is called in a media type and in a squashfs superblock. Everything
//! that needs one of those looks it up here ([`Compression::format`]); each format's own code
//! is in its submodule, and what the encoders share (pieces, members, the writing thread's
//! streams) in [`super::codec`].

use std::io::{self, BufRead, Read};

use super::codec::{EncodeBlocks, EncodePieces, FrameMembers};
use super::{CompressError, Compression};

mod gzip;
mod lz4;
mod none;
mod xz;
mod zstd;

pub(crate) use lz4::LZ4_MAX_BLOCK;

/// A reader of the decompressed bytes of a reader, across all its concatenated members.
pub type Decoder = for<'a> fn(Box<dyn Read + 'a>) -> Box<dyn Read + 'a>;

/// A reader of one member from a buffered reader, which leaves the bytes after the member's end
/// unread.
pub(crate) type MemberDecoder = for<'a> fn(Box<dyn BufRead + 'a>) -> Box<dyn Read + 'a>;

/// How a format compresses an initramfs: the workers' piece encoder and the writing thread's
/// member framing (see [`super::codec`]).
pub(crate) struct Initramfs {
    pub pieces: fn(&super::codec::Codec) -> Result<Box<dyn EncodePieces>, CompressError>,
    pub members: fn(&super::codec::Codec) -> Box<dyn FrameMembers>,
}

/// How a format compresses and decompresses one squashfs block.
pub(crate) struct Block {
    /// A thread's block encoder at a level, for blocks of at most `block_size` bytes.
    pub encoder: fn(Level, u32) -> Result<Box<dyn EncodeBlocks>, CompressError>,
    /// One block's bytes, refused when they come to more than `max`.
    pub decode: fn(&[u8], usize) -> io::Result<Vec<u8>>,
    /// The compressor options written after the superblock, when the format must have them.
    pub options: Option<&'static [u8]>,
}

/// A compressor's level range and its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub min: i32,
    pub max: i32,
    /// The level of an initramfs when none is set.
    pub default: i32,
    /// The level of a squashfs disk when none is set (its blocks are small and read at random,
    /// so a higher level costs little at boot).
    pub squashfs: i32,
}

/// One compression.
pub struct Format {
    pub compression: Compression,
    /// Lowercase, as the command line, the config and messages spell it.
    pub name: &'static str,
    /// What its data starts with (any one of them).
    pub magics: &'static [&'static [u8]],
    /// `None`: it takes no level.
    pub levels: Option<Levels>,
    /// A reader of the decompressed bytes across all concatenated members.
    pub decoder: Decoder,
    /// A reader of one member that leaves what follows it (an initramfs's next segment).
    pub(crate) member: MemberDecoder,
    pub(crate) initramfs: Initramfs,
    /// `None`: squashfs stores its blocks as they are.
    pub(crate) block: Option<Block>,
    /// The suffix of a media type for data in this format (`+gzip`).
    pub media_suffix: &'static str,
    /// Its compressor id in a squashfs superblock; `None` for none, which a squashfs disk
    /// spells as gzip with the "uncompressed" flags.
    pub squashfs_id: Option<u16>,
}

/// In the order of [`Compression::ALL`], which [`Compression::format`] indexes.
const FORMATS: [Format; 5] = [
    Format {
        compression: Compression::Gzip,
        name: "gzip",
        magics: &[&[0x1f, 0x8b]],
        levels: Some(Levels {
            min: 1,
            max: 12,
            default: super::GZIP_DEFAULT_LEVEL,
            squashfs: 9,
        }),
        decoder: gzip::decoder,
        member: gzip::member,
        initramfs: gzip::INITRAMFS,
        block: Some(gzip::BLOCK),
        media_suffix: "+gzip",
        squashfs_id: Some(1),
    },
    Format {
        compression: Compression::Zstd,
        name: "zstd",
        magics: &[&[0x28, 0xb5, 0x2f, 0xfd]],
        levels: Some(Levels {
            min: 1,
            max: 19,
            default: 3,
            squashfs: 15,
        }),
        decoder: zstd::decoder,
        member: zstd::member,
        initramfs: zstd::INITRAMFS,
        block: Some(zstd::BLOCK),
        media_suffix: "+zstd",
        squashfs_id: Some(6),
    },
    Format {
        compression: Compression::Xz,
        name: "xz",
        magics: &[&[0xfd, b'7', b'z', b'X', b'Z', 0]],
        levels: Some(Levels {
            min: 0,
            max: 9,
            default: 6,
            squashfs: 6,
        }),
        decoder: xz::decoder,
        member: xz::member,
        initramfs: xz::INITRAMFS,
        block: Some(xz::BLOCK),
        media_suffix: "+xz",
        squashfs_id: Some(4),
    },
    Format {
        compression: Compression::Lz4,
        name: "lz4",
        // The legacy frame's magic, 0x184C2102 little-endian.
        magics: &[&[0x02, 0x21, 0x4c, 0x18]],
        levels: None,
        decoder: lz4::decoder,
        member: lz4::member,
        initramfs: lz4::INITRAMFS,
        block: Some(lz4::BLOCK),
        media_suffix: "+lz4",
        squashfs_id: Some(5),
    },
    Format {
        compression: Compression::None,
        name: "none",
        // newc, and newc with checksums (same layout).
        magics: &[b"070701", b"070702"],
        levels: None,
        decoder: none::decoder,
        member: none::member,
        initramfs: none::INITRAMFS,
        block: None,
        media_suffix: "",
        squashfs_id: None,
    },
];

impl Compression {
    /// Every compression, in the order the command line lists them.
    pub const ALL: [Compression; 5] = [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
        Compression::Lz4,
        Compression::None,
    ];

    /// What fledge knows of this compression.
    pub fn format(self) -> &'static Format {
        &FORMATS[self as usize]
    }

    /// The compression called `name` (any case), as the command line and the config spell it.
    pub fn from_name(name: &str) -> Option<Compression> {
        FORMATS
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.compression)
    }

    /// Lowercase name, as on the command line.
    pub fn name(self) -> &'static str {
        self.format().name
    }

    /// The compression whose squashfs compressor id is `id`.
    pub fn from_squashfs_id(id: u16) -> Option<Compression> {
        FORMATS
            .iter()
            .find(|f| f.squashfs_id == Some(id))
            .map(|f| f.compression)
    }
}

/// The compression of data from its first bytes (at least 6 are needed for xz), or `None` when
/// the bytes are neither a known compressed format nor a newc archive.
pub fn detect(head: &[u8]) -> Option<Compression> {
    FORMATS
        .iter()
        .find(|f| f.magics.iter().any(|m| head.starts_with(m)))
        .map(|f| f.compression)
}

/// A reader of the decompressed bytes of `r`, compressed with `c`, across all concatenated
/// members (gzip members, zstd frames, xz streams, lz4 legacy blocks and repeated magics).
pub fn decoder<'a>(c: Compression, r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    (c.format().decoder)(r)
}

/// A reader whose first read reports why its decoder could not be set up.
struct Failed(Option<io::Error>);

impl Read for Failed {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("decoder failed")))
    }
}

/// What `r` decodes to, reading one byte past `max` so that the caller sees it was more.
fn read_most(r: impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(max as u64 + 1).read_to_end(&mut out)?;
    Ok(out)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// A compressor level checked against the format's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Level(pub i32);

/// Checks `level` for `c`, or returns `default` of its [`Levels`] (the initramfs's or the
/// squashfs's default).
pub(crate) fn resolve_level(
    c: Compression,
    level: Option<i32>,
    default: fn(&Levels) -> i32,
) -> Result<Level, CompressError> {
    let f = c.format();
    match (f.levels, level) {
        (None, None) => Ok(Level(0)),
        (None, Some(level)) => Err(CompressError::NoLevel {
            compression: f.name,
            level,
        }),
        (Some(l), None) => Ok(Level(default(&l))),
        (Some(l), Some(level)) if (l.min..=l.max).contains(&level) => Ok(Level(level)),
        (Some(l), Some(level)) => Err(CompressError::Level {
            compression: f.name,
            level,
            min: l.min,
            max: l.max,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_table_is_in_the_order_of_all() {
        for (i, c) in Compression::ALL.into_iter().enumerate() {
            assert_eq!(FORMATS[i].compression, c, "row {i}");
            assert_eq!(Compression::from_name(c.name()), Some(c));
            assert_eq!(
                Compression::from_name(&c.name().to_ascii_uppercase()),
                Some(c)
            );
            for m in c.format().magics {
                assert_eq!(detect(m), Some(c), "{}", c.name());
            }
            if let Some(id) = c.format().squashfs_id {
                assert_eq!(Compression::from_squashfs_id(id), Some(c));
            }
        }
        assert_eq!(Compression::from_name("bzip2"), None);
        assert_eq!(
            Compression::from_squashfs_id(2),
            None,
            "lzma is not written"
        );
    }

    #[test]
    fn levels_are_checked_per_format() {
        let initramfs = |l: &Levels| l.default;
        let cases = [
            (
                Compression::Gzip,
                None,
                Ok(super::super::GZIP_DEFAULT_LEVEL),
            ),
            (Compression::Gzip, Some(12), Ok(12)),
            (Compression::Gzip, Some(13), Err(())),
            (Compression::Zstd, None, Ok(3)),
            (Compression::Zstd, Some(20), Err(())),
            (Compression::Xz, Some(0), Ok(0)),
            (Compression::Xz, Some(10), Err(())),
            (Compression::Lz4, None, Ok(0)),
            (Compression::Lz4, Some(1), Err(())),
            (Compression::None, Some(1), Err(())),
        ];
        for (i, (c, level, want)) in cases.into_iter().enumerate() {
            let got = resolve_level(c, level, initramfs)
                .map(|l| l.0)
                .map_err(|_| ());
            assert_eq!(got, want, "case {i}: {c:?} {level:?}");
        }
        let squashfs = |l: &Levels| l.squashfs;
        assert_eq!(
            resolve_level(Compression::Zstd, None, squashfs).unwrap(),
            Level(15)
        );
        assert_eq!(
            resolve_level(Compression::Lz4, None, squashfs).unwrap(),
            Level(0)
        );
    }
}
