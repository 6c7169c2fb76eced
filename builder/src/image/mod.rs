//! Container images as the base of the root file system, read in-process: no daemon, no root,
//! no user namespace, nothing extracted to disk.
//!
//! This module owns everything between `[source] image = "REF"` and the image's file tree:
//!
//! - [`reference`]: the transports (`oci:`, `oci-archive:`, `docker-archive:`, `docker://`, bare
//!   names) and Docker's naming defaults.
//! - [`oci`]: OCI image layouts (directory or tar) and `docker save` archives, read in place.
//! - [`registry`], [`auth`] and [`credhelper`]: the distribution API (anonymous, basic and
//!   bearer-token auth, credentials from the files docker, podman and skopeo write and from
//!   Docker's credential helpers).
//! - [`manifest`](self::resolve): index -> the manifest for the wanted platform -> config and
//!   layers, every blob checked against its digest.
//! - [`layer`]: decompression into the cache (`layers/<diff_id>`), checked against the
//!   `diff_id`; [`tree`]: the layers applied in memory (whiteouts, opaque directories, owners and
//!   modes, names resolved inside the image root).
//! - [`workload`]: the image config's Entrypoint, Cmd, Env, WorkingDir, User and ExposedPorts.
//!
//! Cache (the same directory as every other download): small blobs (manifests, configs) are
//! kept as `blobs/<sha256>`, uncompressed layers as `layers/<diff_id>`, and what a registry tag
//! resolved to as `images/<sha256 of host/repo:tag@platform>`. A second build of an image
//! pinned by digest, or of a local file, needs no network; a tag is asked again and, when the
//! registry cannot be reached, the digest it resolved to last time is used with a warning.
//!
//! Memory: the tree holds one small record per path (name, mode, owner and, for a file, the
//! cache file, offset and size of its body), never file contents; layers are streamed through
//! fixed buffers while they are decompressed and hashed. So memory grows with the number of
//! paths (bounded by [`tree::MAX_ENTRIES`]), not with the image's size; manifests and configs
//! are read whole but bounded by [`MAX_JSON`].

pub mod auth;
pub mod credhelper;
pub mod layer;
pub mod oci;
pub mod reference;
pub mod registry;
mod resolve;
pub mod tree;
pub mod workload;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use reference::ImageRef;
pub use tree::{Inode, NodeKind, RootFs};
pub use workload::ImageConfig;

/// Largest manifest, index or config accepted.
pub const MAX_JSON: u64 = 8 << 20;

/// A sha256 digest (`sha256:<64 lowercase hex>`), checked so it is safe as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<hex>`; other algorithms are refused.
    pub fn parse(text: &str) -> Result<Digest, String> {
        let Some(hex) = text.strip_prefix("sha256:") else {
            return Err(format!(
                "{text:?} is not a sha256 digest (sha256:<64 hex digits>)"
            ));
        };
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "{text:?} is not a sha256 digest (sha256:<64 hex digits>)"
            ));
        }
        Ok(Digest(hex.to_string()))
    }

    pub fn from_bytes(b: [u8; 32]) -> Digest {
        Digest(hex::encode(b))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_bytes(sha2::Sha256::digest(bytes).into())
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// `sha256:` and the first 12 digits, for messages.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.0[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// The operating system, architecture and optional variant an image index is searched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        }
    }
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok =
            |s: &&str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "is {text:?}: write os/architecture[/variant], e.g. \"linux/amd64\""
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What `[source]` says about the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The reference as written (`source.image`).
    pub text: String,
    pub reference: ImageRef,
    /// `source.image_platform`.
    pub platform: Platform,
    /// `source.image_plain_http`: allow plain HTTP to a registry that is not on this machine.
    pub plain_http: bool,
}

/// What went wrong, without naming the image (see [`ImageError`]).
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Invalid(String),
    #[error("layer {} ({}), entry {entry:?}: {problem}", index + 1, diff_id.short())]
    Entry {
        index: usize,
        diff_id: Digest,
        entry: String,
        problem: String,
    },
    #[error("{what} does not match its digest (its bytes hash to {actual}): the image is damaged or was changed")]
    Digest { what: String, actual: String },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{url}: {message}")]
    Registry { url: String, message: String },
    #[error("cannot reach {url}: {message}; check the network, or pin the image by digest once it is in the cache")]
    Unreachable { url: String, message: String },
    #[error("{url}: {message}; the registry is failing: try again later, or pin the image by digest once it is in the cache")]
    Unavailable { url: String, message: String },
    #[error("{url} is not in the cache, and this command does not download")]
    Offline { url: String },
    #[error("cache {}: {source}", path.display())]
    Cache { path: PathBuf, source: io::Error },
}

/// An image that cannot be used: names `source.image` and what in it failed.
#[derive(Debug, thiserror::Error)]
#[error("`source.image` {image:?}: {problem}")]
pub struct ImageError {
    pub image: String,
    #[source]
    pub problem: Problem,
}

/// One layer of a loaded image.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    pub diff_id: Digest,
    /// The uncompressed tar in the cache.
    pub path: PathBuf,
    /// Its entries, when this process unpacked it (and so checked it and listed it on the
    /// way in); a layer found in the cache is read again.
    pub listing: Option<layer::Listing>,
}

/// An image read and applied.
#[derive(Debug)]
pub struct Image {
    /// The reference as written.
    pub text: String,
    /// Digest of the platform's manifest (for `docker-archive:` the config's digest, which is
    /// the image id docker shows).
    pub digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<LayerInfo>,
    pub tree: RootFs,
    /// Things worth telling the user (extended attributes that cannot be kept, ...).
    pub warnings: Vec<String>,
}

/// Writes a cache file atomically.
pub(crate) fn write_cache(path: &Path, bytes: &[u8]) -> Result<(), Problem> {
    crate::output::write(path, bytes).map_err(|source| Problem::Cache {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the image `spec` names, pulling what the cache lacks, and applies its layers.
pub fn load(spec: &Spec, cache: &Path) -> Result<Image, ImageError> {
    load_from(spec, cache, true)
}

/// [`load`] without the network: a registry image from the cache alone (a tag as it resolved
/// last time); what the cache lacks is [`Problem::Offline`]. `validate` checks images so.
pub fn load_cached(spec: &Spec, cache: &Path) -> Result<Image, ImageError> {
    load_from(spec, cache, false)
}

fn load_from(spec: &Spec, cache: &Path, network: bool) -> Result<Image, ImageError> {
    let err = |problem| ImageError {
        image: spec.text.clone(),
        problem,
    };
    let mut resolved = resolve::resolve(spec, cache, network).map_err(err)?;
    log::info!(
        "image {}: {} ({} layers)",
        spec.text,
        resolved.digest,
        resolved.layers.len()
    );
    let mut tree = RootFs::default();
    for (i, l) in resolved.layers.iter_mut().enumerate() {
        match l.listing.take() {
            Some(listing) => layer::apply_listing(&mut tree, i, &l.diff_id, listing),
            None => layer::apply(&mut tree, i, &l.path, &l.diff_id),
        }
        .map_err(err)?;
    }
    let warnings = Vec::new();
    Ok(Image {
        text: spec.text.clone(),
        digest: resolved.digest,
        config: resolved.config,
        layers: resolved.layers,
        tree,
        warnings,
    })
}

#[cfg(test)]
mod tests;
