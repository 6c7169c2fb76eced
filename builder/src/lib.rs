//! Fledge builds minimal, reproducible initramfs images for Volant microVM plugins.
//!
//! One build flows through one module per stage, each taking the previous stage's value:
//!
//! ```text
//! config::load ─> fetch (download and cache: busybox, agent) ─> plan::plan (the layer stack:
//!      base, image, busybox, mappings, libs, kmod, fledge's own files) ─> normalise
//!      ─> compress::write_image_then (archive::NewcWriter inside; provenance::render once
//!      every body is digested) ─> manifest::render ─> sbom::render, the provenance finished
//!      with the image's digest ─> output (all files committed together)
//! ```
//!
//! | module | owns |
//! | --- | --- |
//! | [`arch`] | the guest machines: ELF machine, loader paths, image platform, QEMU settings |
//! | [`config`] | `fledge.toml`: raw TOML shapes and one check per table |
//! | [`fetch`] | the outside world: the one HTTP client and its bounds, the content-addressed blob store |
//! | [`image`] | container images read in-process: references, registries, layouts, layers |
//! | [`tree`] | in-image paths and the one walk through symlinks, over any tree |
//! | [`plan`] | the image as a stack of sources and the precedence between them |
//! | [`libs`] | the shared-library closure of the programs placed (ELF, loader search) |
//! | [`kmod`] | kernel modules of the guest kernel's tree and their load order |
//! | [`normalise`] | owners, times, inodes, order, hardlinks: the byte-for-byte guarantee |
//! | [`archive`] | the newc writer |
//! | [`squashfs`] | the squashfs writer of root file system disks (`strategy = "oci_rootfs"`) |
//! | [`boot`] | the boot initramfs that mounts such a disk on kernels whose drivers are modules |
//! | [`compress`] | compressions (each described once, [`compress::Format`]), segments and the segment cache |
//! | [`hashing`] | the one sha256 stream, reading or writing, with an optional size limit |
//! | [`manifest`] | `manifest.toml` into Volant's manifest JSON |
//! | [`sbom`] | the SPDX 2.3 bill of materials of an image: packages, files, digests |
//! | [`provenance`] | the in-toto / SLSA provenance statement of a build |
//! | [`verify`] | `fledge verify`: an image against its SBOM, manifest and provenance |
//! | [`output`] | every file written atomically, temporary files removed on signals |
//! | [`pipeline`] | one build, stage by stage ([`pipeline::build`]) |
//! | [`inspect`] | reading images back: listing, tree, boot checks |
//! | [`push`] | `fledge push` and `fledge pull`: builds as OCI artifacts in registries and layouts |
//! | [`run`] | `fledge run`: booting a plugin under QEMU and checking its health |
//! | [`scaffold`] | `fledge new` |
//! | [`preview`], [`progress`] | `--dry-run` listings, progress bars |
//! | [`embedded`] | the `fledge-init` binary carried inside `fledge` |
//! | [`error`], [`util`] | the library's error type, message helpers |
//!
//! The command line is the binary's alone (`src/main.rs`, `src/cli.rs`): the library has
//! no command-line types.

pub mod arch;
pub mod archive;
pub mod boot;
pub mod compress;
pub mod config;
pub mod embedded;
pub mod error;
pub mod fetch;
pub mod hashing;
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
pub mod provenance;
pub mod push;
pub mod run;
pub mod sbom;
pub mod scaffold;
pub mod squashfs;
pub mod tree;
pub mod util;
pub mod verify;

pub use error::Error;
