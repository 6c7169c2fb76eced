//! The `fledge-init` binary carried inside `fledge` (built for the guest by `build.rs`), so
//! building an image needs neither a compiler nor a download.

/// `fledge-init` for x86_64 guests: static musl, stripped.
pub static INIT_X86_64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fledge-init"));
