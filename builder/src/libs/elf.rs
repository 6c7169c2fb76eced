//! What the dynamic loader reads from a file: the ELF identity (class, byte order, machine), the
//! interpreter (`PT_INTERP`) and the dynamic section's `DT_NEEDED`, `DT_SONAME`, `DT_RPATH`,
//! `DT_RUNPATH` and `DF_1_NODEFLIB` - or the `#!` line of a script.
//!
//! Parsing goes through the `object` crate over a read cache, so only the headers and the string
//! table are read from disk, never the whole file. Like the loader, the dynamic section's string
//! table is found through the program headers (`PT_LOAD` segments), not the section headers, so
//! stripped and `sstrip`ped files parse too. Every size read is bounded.

use std::io::{Read, Seek};

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{FileKind, ReadCache, ReadRef};

/// The longest `PT_INTERP` the kernel loads (`PATH_MAX`, its NUL included).
const INTERP_MAX: usize = 4096;
/// Longest `#!` line the kernel reads (`BINPRM_BUF_SIZE`).
pub const SHEBANG_MAX: usize = 256;
/// Largest dynamic string table read (real ones are a few KiB; LLVM's is under 1 MiB).
const STRTAB_MAX: u64 = 16 << 20;
/// Most dynamic entries looked at.
const DYN_MAX: usize = 1 << 16;

/// The machine an image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub class64: bool,
    pub little_endian: bool,
    pub machine: u16,
}

/// x86_64 guests.
pub const X86_64: Target = Target {
    class64: true,
    little_endian: true,
    machine: elf::EM_X86_64.0,
};

/// aarch64 (arm64) guests.
pub const AARCH64: Target = Target {
    class64: true,
    little_endian: true,
    machine: elf::EM_AARCH64.0,
};

impl Target {
    /// Debian's multiarch tuple for glibc programs of this machine (`x86_64-linux-gnu`).
    pub fn multiarch(&self) -> Option<&'static str> {
        match (elf::Machine(self.machine), self.class64, self.little_endian) {
            (elf::EM_X86_64, true, true) => Some("x86_64-linux-gnu"),
            (elf::EM_AARCH64, true, true) => Some("aarch64-linux-gnu"),
            _ => None,
        }
    }

    /// `AT_PLATFORM` of this machine, what glibc expands `$PLATFORM` to.
    pub fn platform(&self) -> &'static str {
        match elf::Machine(self.machine) {
            elf::EM_AARCH64 => "aarch64",
            _ => "x86_64",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let machine = match elf::Machine(self.machine) {
            elf::EM_386 => "i386",
            elf::EM_X86_64 => "x86_64",
            elf::EM_ARM => "arm",
            elf::EM_AARCH64 => "aarch64",
            elf::EM_RISCV => "riscv",
            elf::EM_PPC64 => "ppc64",
            elf::EM_S390 => "s390",
            elf::EM_MIPS => "mips",
            elf::EM_LOONGARCH => "loongarch",
            _ => return write!(f, "ELF machine {}", self.machine),
        };
        let bits = if self.class64 { 64 } else { 32 };
        let order = if self.little_endian {
            ""
        } else {
            " big-endian"
        };
        write!(f, "{machine} ({bits}-bit{order})")
    }
}

/// The dynamic-loading facts of one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// `PT_INTERP`: the program interpreter (the dynamic loader), for programs.
    pub interp: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    pub soname: Option<String>,
    /// `DT_RPATH`, unexpanded.
    pub rpath: Option<String>,
    /// `DT_RUNPATH`, unexpanded.
    pub runpath: Option<String>,
    /// `DF_1_NODEFLIB`: the default directories are not searched for this object's needs.
    pub nodeflib: bool,
}

/// One parsed ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFile {
    pub target: Target,
    /// `ET_EXEC` or `ET_DYN` (a PIE, a library, the loader): the kinds the kernel and loader run.
    pub loadable: bool,
    pub dynamic: Dynamic,
}

/// What a file is, as far as `execve` is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exec {
    Elf(ElfFile),
    /// A `#!` script: its interpreter and the optional argument.
    Script {
        interp: String,
        arg: Option<String>,
    },
    /// Neither (an HTML page, a text file, a truncated ELF header).
    Other,
}

/// A file that starts like an ELF file but cannot be read as one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ElfError(String);

/// Reads what a file is: an ELF file (with its dynamic facts), a `#!` script, or neither.
/// Errors only for an ELF file whose headers are broken or an I/O failure.
pub fn read<R: Read + Seek>(mut file: R) -> Result<Exec, ElfError> {
    let mut head = [0u8; SHEBANG_MAX];
    let n = read_head(&mut file, &mut head).map_err(|e| ElfError(e.to_string()))?;
    let head = &head[..n];
    if let Some(rest) = head.strip_prefix(b"#!") {
        return Ok(shebang(rest));
    }
    if !head.starts_with(&elf::ELFMAG) {
        return Ok(Exec::Other);
    }
    file.rewind().map_err(|e| ElfError(e.to_string()))?;
    let cache = ReadCache::new(file);
    let parsed = match FileKind::parse(&cache) {
        Ok(FileKind::Elf32) => parse::<elf::FileHeader32<object::Endianness>, _>(&cache),
        Ok(FileKind::Elf64) => parse::<elf::FileHeader64<object::Endianness>, _>(&cache),
        _ => Err("not a valid ELF header".into()),
    };
    parsed.map(Exec::Elf).map_err(ElfError)
}

fn read_head<R: Read>(file: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The interpreter and argument of a `#!` line, split as the kernel does (first blank).
fn shebang(rest: &[u8]) -> Exec {
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.trim_matches([' ', '\t']);
    match line.split_once([' ', '\t']) {
        _ if line.is_empty() => Exec::Other,
        Some((interp, arg)) => Exec::Script {
            interp: interp.to_string(),
            arg: Some(arg.trim_matches([' ', '\t']).to_string()).filter(|a| !a.is_empty()),
        },
        None => Exec::Script {
            interp: line.to_string(),
            arg: None,
        },
    }
}

fn parse<'d, H: FileHeader<Endian = object::Endianness>, R: ReadRef<'d>>(
    data: R,
) -> Result<ElfFile, String> {
    let header = H::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let target = Target {
        class64: header.is_class_64(),
        little_endian: header.is_little_endian(),
        machine: header.e_machine(endian).0,
    };
    let e_type = header.e_type(endian);
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| format!("bad program headers: {e}"))?;
    let mut dynamic = Dynamic::default();
    for ph in phdrs {
        if let Some(interp) = ph
            .interpreter(endian, data)
            .map_err(|e| format!("bad PT_INTERP: {e}"))?
        {
            // binfmt_elf refuses (ENOEXEC) an interpreter name longer than PATH_MAX.
            if interp.len() > INTERP_MAX {
                return Err(format!(
                    "bad PT_INTERP: {} bytes, longer than the {INTERP_MAX} the kernel accepts",
                    interp.len()
                ));
            }
            dynamic.interp = Some(String::from_utf8_lossy(interp).into_owned());
        }
        if let Some(dyns) = ph
            .dynamic(endian, data)
            .map_err(|e| format!("bad PT_DYNAMIC: {e}"))?
        {
            read_dynamic::<H, R>(endian, data, phdrs, dyns, &mut dynamic)?;
        }
    }
    Ok(ElfFile {
        target,
        loadable: e_type == elf::ET_EXEC || e_type == elf::ET_DYN,
        dynamic,
    })
}

fn read_dynamic<'d, H: FileHeader<Endian = object::Endianness>, R: ReadRef<'d>>(
    endian: object::Endianness,
    data: R,
    phdrs: &[H::ProgramHeader],
    dyns: &[H::Dyn],
    out: &mut Dynamic,
) -> Result<(), String> {
    let (mut strtab, mut strsz) = (None, 0);
    for d in dyns.iter().take(DYN_MAX) {
        match d.tag(endian) {
            elf::DT_NULL => break,
            elf::DT_STRTAB => strtab = Some(d.val(endian)),
            elf::DT_STRSZ => strsz = d.val(endian),
            elf::DT_FLAGS_1 => out.nodeflib = d.val(endian) & elf::DF_1_NODEFLIB.0 != 0,
            _ => {}
        }
    }
    let Some(addr) = strtab else {
        return Ok(()); // a dynamic section without strings names nothing
    };
    if strsz > STRTAB_MAX {
        return Err(format!(
            "dynamic string table of {strsz} bytes is too large"
        ));
    }
    let strings = phdrs
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD)
        .find_map(|p| {
            let (vaddr, filesz) = (p.p_vaddr(endian).into(), p.p_filesz(endian).into());
            let off = addr.checked_sub(vaddr).filter(|o| *o < filesz)?;
            let len = strsz.min(filesz - off);
            data.read_bytes_at(p.p_offset(endian).into().checked_add(off)?, len)
                .ok()
        })
        .ok_or("DT_STRTAB is outside every loaded segment")?;
    let string = |v: u64| -> Result<String, String> {
        let s = usize::try_from(v)
            .ok()
            .and_then(|v| strings.get(v..))
            .ok_or("a dynamic string is outside its table")?;
        let end = s
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated dynamic string")?;
        Ok(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    for d in dyns.iter().take(DYN_MAX) {
        let v = d.val(endian);
        match d.tag(endian) {
            elf::DT_NULL => break,
            elf::DT_NEEDED => out.needed.push(string(v)?),
            elf::DT_SONAME => out.soname = Some(string(v)?),
            elf::DT_RPATH => out.rpath = Some(string(v)?),
            elf::DT_RUNPATH => out.runpath = Some(string(v)?),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn elf_of(path: &str) -> ElfFile {
        let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        match read(f).unwrap_or_else(|e| panic!("{path}: {e}")) {
            Exec::Elf(e) => e,
            other => panic!("{path} is {other:?}"),
        }
    }

    #[test]
    fn glibc_pie_has_loader_and_libc() {
        let ls = elf_of("/usr/bin/ls");
        assert_eq!(ls.target, X86_64);
        assert!(ls.loadable);
        assert_eq!(
            ls.dynamic.interp.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(ls.dynamic.needed.iter().any(|n| n == "libc.so.6"), "{ls:?}");
    }

    #[test]
    fn shared_library_has_soname() {
        let libm = elf_of("/lib/x86_64-linux-gnu/libm.so.6");
        assert_eq!(libm.dynamic.soname.as_deref(), Some("libm.so.6"));
        assert_eq!(libm.dynamic.interp, None);
        assert!(
            libm.dynamic.needed.iter().any(|n| n == "libc.so.6"),
            "{libm:?}"
        );
    }

    #[test]
    fn scripts_and_other_files() {
        let cases: &[(&[u8], Exec)] = &[
            (
                b"#!/bin/sh\necho hi\n",
                Exec::Script {
                    interp: "/bin/sh".into(),
                    arg: None,
                },
            ),
            (
                b"#! /usr/bin/env  python3 \n",
                Exec::Script {
                    interp: "/usr/bin/env".into(),
                    arg: Some("python3".into()),
                },
            ),
            (b"#!\n", Exec::Other),
            (b"<!DOCTYPE html><html>", Exec::Other),
            (b"", Exec::Other),
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            assert_eq!(&read(Cursor::new(bytes)).unwrap(), want, "case {i}");
        }
        // Only the kernel's first SHEBANG_MAX bytes are read; each byte that is not UTF-8
        // becomes one replacement character, so the name may be longer in bytes (a fuzzed input).
        let mut long = b"#!/bin\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec();
        long.resize(300, b'W');
        let Exec::Script { interp, arg: None } = read(Cursor::new(&long)).unwrap() else {
            panic!("a long #! line is a script");
        };
        let want = format!(
            "/bin{}{}",
            "\u{fffd}".repeat(9),
            "W".repeat(SHEBANG_MAX - 2 - 4 - 9)
        );
        assert_eq!(interp, want);
        assert!(interp.len() > SHEBANG_MAX && interp.chars().count() <= SHEBANG_MAX);
    }

    #[test]
    fn truncated_elf_is_an_error() {
        let mut head = std::fs::read("/usr/bin/ls").unwrap();
        head.truncate(100);
        assert!(read(Cursor::new(head)).is_err());
    }

    #[test]
    fn target_names() {
        assert_eq!(X86_64.to_string(), "x86_64 (64-bit)");
        let arm = Target {
            class64: true,
            little_endian: true,
            machine: elf::EM_AARCH64.0,
        };
        assert_eq!(arm.to_string(), "aarch64 (64-bit)");
        let i386 = Target {
            class64: false,
            little_endian: true,
            machine: elf::EM_386.0,
        };
        assert_eq!(i386.to_string(), "i386 (32-bit)");
    }

    #[test]
    fn an_interpreter_longer_than_the_kernel_takes_is_refused() {
        let mut b = std::fs::read("/usr/bin/ls").unwrap();
        let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
        let (size, count) = (u16_at(&b, 0x36), u16_at(&b, 0x38));
        let at = b.len() as u64;
        let long = [b"/lib/".as_slice(), &[b'x'; 100_000], b"\0"].concat();
        b.extend(&long);
        let ph = (0..count)
            .map(|i| phoff + i * size)
            .find(|o| u32::from_le_bytes(b[*o..*o + 4].try_into().unwrap()) == 3)
            .expect("ls has a PT_INTERP");
        b[ph + 8..ph + 16].copy_from_slice(&at.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&(long.len() as u64).to_le_bytes());
        let e = read(Cursor::new(b)).unwrap_err().to_string();
        assert!(
            e.contains("PT_INTERP") && e.contains("4096"),
            "{}",
            &e[..e.len().min(200)]
        );
        assert!(e.len() < 200, "a short message");
    }
}
