//! The guest architecture (`[build] arch`, `--arch`) and everything that follows from it: the
//! embedded `fledge-init`, the ELF machine programs must be built for, glibc's multiarch
//! directory and `$PLATFORM`, the default busybox, the agent's release asset and the container
//! image platform.

use std::fmt;

use crate::libs::elf::Target;

/// A guest architecture fledge builds images for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Arch {
    #[default]
    X86_64,
    Aarch64,
}

impl Arch {
    /// Every architecture, in the order they are listed in messages.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The name used in `fledge.toml`, `targets/<name>.toml` and messages.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// `x86_64` or `aarch64`, or the Debian/OCI names `amd64` and `arm64`.
    pub fn parse(text: &str) -> Result<Arch, String> {
        match text {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(format!(
                "is \"{text}\": use \"x86_64\" (or \"amd64\") or \"aarch64\" (or \"arm64\")"
            )),
        }
    }

    /// The ELF class, byte order and machine programs in the image must have.
    pub fn target(self) -> Target {
        match self {
            Arch::X86_64 => crate::libs::elf::X86_64,
            Arch::Aarch64 => crate::libs::elf::AARCH64,
        }
    }

    /// The `fledge-init` binary for this architecture, carried inside `fledge`.
    pub fn init(self) -> &'static [u8] {
        match self {
            Arch::X86_64 => crate::embedded::INIT_X86_64,
            Arch::Aarch64 => crate::embedded::INIT_AARCH64,
        }
    }

    /// The architecture part of an OCI platform (`linux/<this>`).
    pub fn oci(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The name of the kestrel agent's asset in a Volant release.
    pub fn agent_asset(self) -> &'static str {
        match self {
            Arch::X86_64 => "kestrel",
            Arch::Aarch64 => "kestrel-arm64",
        }
    }

    /// The busybox used when `[source] busybox_url` is not given, with its sha256; `None` when
    /// there is no pinned download for this architecture.
    pub fn default_busybox(self) -> Option<(&'static str, &'static str)> {
        match self {
            Arch::X86_64 => Some((
                crate::config::DEFAULT_BUSYBOX_URL,
                crate::config::DEFAULT_BUSYBOX_SHA256,
            )),
            Arch::Aarch64 => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases() {
        for a in Arch::ALL {
            assert_eq!(Arch::parse(a.name()), Ok(a));
        }
        assert_eq!(Arch::parse("arm64"), Ok(Arch::Aarch64));
        assert_eq!(Arch::parse("amd64"), Ok(Arch::X86_64));
        let e = Arch::parse("riscv64").unwrap_err();
        assert!(e.contains("\"riscv64\"") && e.contains("aarch64"), "{e}");
    }

    #[test]
    fn each_embedded_init_is_built_for_its_machine() {
        for a in Arch::ALL {
            let init = a.init();
            let read = crate::libs::elf::read(std::io::Cursor::new(init)).unwrap();
            match read {
                crate::libs::elf::Exec::Elf(e) => {
                    assert_eq!(e.target, a.target(), "{a}");
                    assert_eq!(e.dynamic.interp, None, "{a}: the init is static");
                }
                other => panic!("{a}: the embedded init is not ELF: {other:?}"),
            }
        }
        assert_ne!(Arch::X86_64.init(), Arch::Aarch64.init());
    }
}
