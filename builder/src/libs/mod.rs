//! Shared libraries: what a dynamically linked program needs to start, found without running it.
//!
//! [`elf`] reads what the loader reads from a file; [`crate::tree`] resolves paths inside a sysroot or
//! an image the way the kernel does; [`search`] holds the glibc and musl loaders' search rules;
//! [`closure`] walks a program's interpreter and `DT_NEEDED` entries transitively with them.

pub mod closure;
pub mod elf;
pub mod search;
