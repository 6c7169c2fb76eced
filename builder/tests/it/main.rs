//! The builder's integration tests, one binary: the `fledge` command end to end and the
//! library's public stages against pinned bytes.

mod arch;
mod cli;
mod common;
mod errors;
mod examples;
mod help;
mod hostile;
mod images;
mod kmod;
mod libraries;
mod pinned;
mod push;
mod rootfs;
mod safety;
mod sources;
mod streams;
mod supply;
mod ux;
