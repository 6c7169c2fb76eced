//! One module file: its bytes, decompressed, and what its `.modinfo` section says.
//!
//! Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are decompressed here, at build time, so
//! the image holds plain `.ko` files: `finit_module` then needs no decompressor in the kernel
//! (`MODULE_DECOMPRESS`) or in fledge-init. Input and output are bounded by [`MODULE_LIMIT`]
//! and by what is left of the stage's [`super::Budget`].

use std::io::Read;
use std::path::Path;

use object::{Object, ObjectKind, ObjectSection};

use super::{read_bounded, KmodError};

/// The largest module file (compressed or not) and the largest decompressed module accepted.
pub const MODULE_LIMIT: u64 = 256 << 20;

/// What the build needs from a module's `.modinfo` (NUL-separated `key=value` records).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`.
    pub name: Option<String>,
    /// The first word of `vermagic=`: the kernel release the module was built for.
    pub release: Option<String>,
    /// `firmware=` entries: files the driver asks the firmware loader for.
    pub firmware: Vec<String>,
    /// `depends=`: module names the module needs loaded first.
    pub depends: Vec<String>,
    /// The ELF class, byte order and machine of the module file.
    pub target: Option<crate::libs::elf::Target>,
}

/// The module at `path`, decompressed according to its suffix, at most `limit` bytes (at most
/// [`MODULE_LIMIT`]) both ways.
pub fn read_module(path: &Path, limit: u64) -> Result<Vec<u8>, KmodError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match [".xz", ".zst", ".gz"].iter().find(|s| name.ends_with(*s)) {
        Some(suffix) => decompress(path, suffix, limit),
        None => read_bounded(path, limit.min(MODULE_LIMIT)),
    }
}

/// The file at `path` decompressed as its `suffix` (`.xz`, `.zst` or `.gz`) says, bounded by
/// `limit` (at most [`MODULE_LIMIT`]) both ways: decompression stops one byte past it.
pub fn decompress(path: &Path, suffix: &str, limit: u64) -> Result<Vec<u8>, KmodError> {
    let limit = limit.min(MODULE_LIMIT);
    let compressed = read_bounded(path, limit)?;
    let input = compressed.as_slice();
    let decoded: Box<dyn Read + '_> =
        match suffix {
            ".xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
            ".zst" => Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(
                |source| KmodError::Decompress {
                    path: path.to_path_buf(),
                    source,
                },
            )?),
            ".gz" => Box::new(flate2::read::MultiGzDecoder::new(input)),
            _ => unreachable!("callers pass a known suffix"),
        };
    let mut out = Vec::new();
    decoded
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|source| KmodError::Decompress {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(KmodError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(out)
}

/// Parses the `.modinfo` section of a module's ELF image.
pub fn parse(bytes: &[u8], path: &Path) -> Result<ModInfo, KmodError> {
    let not_module = |problem: String| KmodError::NotModule {
        path: path.to_path_buf(),
        problem,
    };
    let file =
        object::File::parse(bytes).map_err(|e| not_module(format!("is not an ELF file ({e})")))?;
    if file.kind() != ObjectKind::Relocatable {
        return Err(not_module(
            "is an ELF file but not a relocatable object, as modules are".into(),
        ));
    }
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| not_module("has no .modinfo section".into()))?;
    let data = section
        .data()
        .map_err(|e| not_module(format!("has an unreadable .modinfo section ({e})")))?;
    let mut info = parse_records(data);
    // e_machine sits at byte 18 of every ELF header, in the file's byte order.
    if let (Some(&class), Some(&order), Some(m)) = (bytes.get(4), bytes.get(5), bytes.get(18..20)) {
        let little_endian = order == 1;
        let m = [m[0], m[1]];
        info.target = Some(crate::libs::elf::Target {
            class64: class == 2,
            little_endian,
            machine: if little_endian {
                u16::from_le_bytes(m)
            } else {
                u16::from_be_bytes(m)
            },
        });
    }
    Ok(info)
}

/// The `key=value` records of a `.modinfo` section.
fn parse_records(data: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for rec in data.split(|b| *b == 0) {
        let Ok(rec) = std::str::from_utf8(rec) else {
            continue;
        };
        let Some((key, value)) = rec.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(value.to_string()),
            "vermagic" => info.release = value.split_whitespace().next().map(str::to_string),
            "firmware" if !value.is_empty() => info.firmware.push(value.to_string()),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(super::tree::normalise_name),
            ),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let data = b"license=GPL\0firmware=a/b.bin\0depends=virtio,net-failover\0\0\
                     name=virtio_net\0vermagic=6.1.0-48-amd64 SMP preempt mod_unload \0firmware=c.bin\0";
        let info = parse_records(data);
        assert_eq!(info.name.as_deref(), Some("virtio_net"));
        assert_eq!(info.release.as_deref(), Some("6.1.0-48-amd64"));
        assert_eq!(info.firmware, ["a/b.bin", "c.bin"]);
        assert_eq!(info.depends, ["virtio", "net_failover"]);
    }

    #[test]
    fn empty_depends_is_none() {
        assert!(parse_records(b"depends=\0").depends.is_empty());
    }

    #[test]
    fn not_elf_is_refused() {
        let e = parse(b"<html>", Path::new("x.ko")).unwrap_err().to_string();
        assert!(e.contains("x.ko") && e.contains("not an ELF"), "{e}");
    }
}
