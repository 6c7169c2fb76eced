//! What a boot needs from this machine, found once: the emulator and console named in
//! `targets/x86_64.toml`, the kernel extracted by `qemu/fetch-kernel.sh`, a static busybox for the
//! images, and whether KVM was asked for.
//!
//! When something is missing a test skips with the reason printed, except under `CI=true`, where a
//! skipped smoke run would hide a broken setup: there it fails.

use std::path::{Path, PathBuf};

use crate::{repo_root, Error};

/// Guest architecture settings from `targets/x86_64.toml` (shared with `builder/build.rs`).
#[derive(Debug, Clone)]
pub struct GuestTarget {
    /// Emulator program, e.g. `qemu-system-x86_64`.
    pub qemu: String,
    /// Serial console device the kernel writes to, e.g. `ttyS0`.
    pub console: String,
    /// Rust target triple for static guest programs.
    pub rust_target: String,
    /// Cargo profile for guest programs.
    pub profile: String,
}

impl GuestTarget {
    /// The target file every guest setting comes from.
    pub fn path() -> PathBuf {
        repo_root().join("targets/x86_64.toml")
    }

    /// Reads [`GuestTarget::path`].
    pub fn load() -> Result<Self, Error> {
        let path = Self::path();
        let text = String::from_utf8_lossy(&crate::read(&path)?).into_owned();
        Self::parse(&path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let bad = |message: String| Error::Target {
            path: path.to_path_buf(),
            message,
        };
        let table: toml::Table = text.parse().map_err(|e| bad(format!("{e}")))?;
        let key = |k: &str| {
            table
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("missing string key `{k}`")))
        };
        Ok(Self {
            qemu: key("qemu")?,
            console: key("console")?,
            rust_target: key("rust_target")?,
            profile: key("profile")?,
        })
    }
}

/// Everything needed to boot an image here.
#[derive(Debug, Clone)]
pub struct Host {
    /// Guest settings.
    pub target: GuestTarget,
    /// The emulator, resolved on `PATH`.
    pub qemu: PathBuf,
    /// The kernel image (`vmlinuz`).
    pub kernel: PathBuf,
    /// A statically linked busybox to put in images.
    pub busybox: PathBuf,
    /// Use KVM instead of TCG (`FLEDGE_QEMU_KVM=1`; off by default because KVM hangs on the
    /// machines this project is built on).
    pub kvm: bool,
}

/// Where the kernel is looked for: `$FLEDGE_QEMU_KERNEL`, else the file
/// `qemu/fetch-kernel.sh` leaves in its directory, `$FLEDGE_QEMU_KERNEL_DIR/vmlinuz` or
/// `<repo>/target/qemu-kernel/vmlinuz`.
pub fn kernel_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEDGE_QEMU_KERNEL") {
        return PathBuf::from(p);
    }
    match std::env::var_os("FLEDGE_QEMU_KERNEL_DIR") {
        Some(dir) => PathBuf::from(dir).join("vmlinuz"),
        None => repo_root().join("target/qemu-kernel/vmlinuz"),
    }
}

/// Where busybox is looked for: `$FLEDGE_BUSYBOX`, else `/bin/busybox` (Debian `busybox-static`).
pub fn busybox_path() -> PathBuf {
    match std::env::var_os("FLEDGE_BUSYBOX") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from("/bin/busybox"),
    }
}

/// True when running under CI (`CI=true`), where missing prerequisites fail instead of skip.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl Host {
    /// Finds everything, or says what is missing and how to get it.
    pub fn probe() -> Result<Self, String> {
        let target = GuestTarget::load().map_err(|e| e.to_string())?;
        let qemu = which(&target.qemu).ok_or_else(|| {
            format!(
                "{} not found on PATH (run `bash qemu/fetch-kernel.sh`, which installs qemu-system-x86)",
                target.qemu
            )
        })?;
        let kernel = kernel_path();
        if !kernel.is_file() {
            return Err(format!(
                "no kernel at {} (run `bash qemu/fetch-kernel.sh`, or set FLEDGE_QEMU_KERNEL)",
                kernel.display()
            ));
        }
        let busybox = busybox_path();
        match std::fs::read(&busybox) {
            Err(e) => {
                return Err(format!(
                "no busybox at {}: {e} (install Debian's busybox-static, or set FLEDGE_BUSYBOX)",
                busybox.display()
            ))
            }
            Ok(bytes) if has_interpreter(&bytes) => {
                return Err(format!(
                    "{} is dynamically linked and cannot run in an image without libc \
                     (install Debian's busybox-static, or set FLEDGE_BUSYBOX)",
                    busybox.display()
                ))
            }
            Ok(_) => {}
        }
        let kvm = std::env::var("FLEDGE_QEMU_KVM").is_ok_and(|v| v == "1");
        Ok(Self {
            target,
            qemu,
            kernel,
            busybox,
            kvm,
        })
    }

    /// [`Host::probe`] for a test: `None` (after printing why) when the test must skip; panics
    /// instead when `CI=true`.
    pub fn for_test(test: &str) -> Option<Self> {
        match Self::probe() {
            Ok(host) => Some(host),
            Err(reason) if ci() => panic!("{test}: cannot run under CI=true: {reason}"),
            Err(reason) => {
                eprintln!("SKIP {test}: {reason}");
                None
            }
        }
    }

    /// The kernel's module tree beside it (`<cache>/modules`, kept by `qemu/fetch-kernel.sh`),
    /// or `None` (after printing why) when `test` must skip; panics instead when `CI=true`.
    pub fn module_tree(&self, test: &str) -> Option<PathBuf> {
        let dir = self.kernel.parent()?.join("modules");
        if dir.join("modules.dep").is_file() {
            return Some(dir);
        }
        let reason = format!(
            "no module tree at {}: run qemu/fetch-kernel.sh",
            dir.display()
        );
        if ci() {
            panic!("{test}: cannot run under CI=true: {reason}");
        }
        eprintln!("SKIP {test}: {reason}");
        None
    }
}

/// Resolves a program name on `PATH` (a name with a `/` is taken as a path).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// True when `elf` is a 64-bit little-endian ELF file with a program interpreter (dynamically
/// linked: it needs `ld.so` and libc, which images do not carry).
pub fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) == PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_file_parses_and_names_missing_keys() {
        let t = GuestTarget::load().expect("targets/x86_64.toml");
        assert_eq!(t.qemu, "qemu-system-x86_64");
        assert_eq!(t.console, "ttyS0");
        let err = GuestTarget::parse(Path::new("t.toml"), "qemu = \"q\"\n").unwrap_err();
        assert_eq!(err.to_string(), "t.toml: missing string key `console`");
    }

    #[test]
    fn interpreter_detection() {
        // The test binary itself is dynamically linked on a glibc host.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me), "this test binary has a PT_INTERP");
        assert!(
            !has_interpreter(b"#!/bin/sh\n"),
            "a script is not an ELF file"
        );
        // A minimal ELF header with no program headers.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(!has_interpreter(&elf), "no program headers, no interpreter");
    }
}
