//! The `fledge-init` binaries carried inside `fledge` (built for each guest by `build.rs`), so
//! building an image needs neither a compiler nor a download. [`crate::arch::Arch::init`] picks one.

/// `fledge-init` for x86_64 guests: static musl, stripped.
pub static INIT_X86_64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fledge-init-x86_64"));
/// `fledge-init` for aarch64 guests: static musl, stripped.
pub static INIT_AARCH64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fledge-init-aarch64"));
