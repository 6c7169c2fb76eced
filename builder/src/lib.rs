//! Fledge builds minimal, reproducible initramfs images for Volant microVM plugins.
//!
//! One build flows through one module per stage, each taking the previous stage's value:
//!
//! ```text
//! config::load ─> source (busybox, agent) ─> plan::plan (the layer stack) ─> normalise
//!      ─> compress::write_image (archive::NewcWriter inside) ─> manifest::render
//! ```
//!
//! [`pipeline::build`] runs them in that order and owns the atomic output; [`cli`] is the thin
//! command-line front end.

pub mod arch;
pub mod archive;
pub mod cli;
pub mod compress;
pub mod config;
pub mod embedded;
pub mod error;
pub mod image;
pub mod inspect;
pub mod kmod;
pub mod libs;
pub mod manifest;
pub mod normalise;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod preview;
pub mod progress;
pub mod run;
pub mod scaffold;
pub mod source;
pub mod util;

pub use error::Error;
