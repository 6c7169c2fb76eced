//! `fledge.toml`: parsing, defaults and validation.
//!
//! This module owns the meaning of a config file. [`load`] reads it, [`Config::from_str`] turns it
//! into a [`Config`] whose fields are all decided (defaults applied, paths resolved against the
//! directory holding the file), or fails with a [`ConfigError`] naming the file, the line and the
//! key. Every file written for the original Go fledge means the same thing here; keys this
//! version does not know are reported as warnings, never as errors.

mod check;
mod raw;
mod workload;

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::arch::Arch;
use crate::compress::Compression;
use raw::{Ctx, RawConfig};

/// busybox used when `[source] busybox_url` is not given for x86_64: the musl 1.35.0 build.
pub const DEFAULT_BUSYBOX_URL: &str =
    "https://busybox.net/downloads/binaries/1.35.0-x86_64-linux-musl/busybox";
/// sha256 of [`DEFAULT_BUSYBOX_URL`].
pub const DEFAULT_BUSYBOX_SHA256: &str =
    "6e123e7f3202a8c1e9b1f94d8941580a25135382b99e8d3e34fb858bba311348";

/// Where in a config file something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: invalid TOML: {message}")]
    Syntax { at: Location, message: String },
    #[error("{at}: `{key}` {problem}")]
    Invalid {
        at: Location,
        key: String,
        problem: String,
    },
}

/// How `/init` is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitMode {
    /// `fledge-init` mounts the basics and hands off to the kestrel agent.
    Default { agent: AgentSource },
    /// `fledge-init` mounts the basics and hands off to the user's init.
    Custom { init: CustomInit },
    /// The user's own `/init` (from a mapping) is PID 1; no `fledge-init`.
    None,
}

/// The user's init in custom mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomInit {
    /// `init.path` is absolute: an in-image path that a mapping (or busybox) provides.
    InImage(String),
    /// `init.path` is relative: a host file the builder installs at
    /// [`fledge_abi::paths::CUSTOM_INIT`].
    Host(PathBuf),
    /// `init.command`: the program and arguments in [`Config::workload`] (argv[0] found in the
    /// image through the workload's `PATH` when it has no `/`).
    Command,
    /// `init.from_image = true`: the program of `source.image`'s config (Entrypoint + Cmd,
    /// Env, WorkingDir, User), which fledge-init starts from the workload spec.
    FromImage,
}

/// What `fledge-init` starts the program with (`[init] command`, `env`, `workdir`, `user`,
/// `hostname`, `nofile`), baked into the image as the workload spec
/// ([`fledge_abi::paths::WORKLOAD`]). Everything empty: no spec is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadKeys {
    /// `command = ["prog", "arg", ..]`: argv; empty when not set.
    pub command: Vec<String>,
    /// `env = { NAME = "value" }`: added to the environment, in name order.
    pub env: Vec<(String, String)>,
    /// `workdir = "/abs"`: the working directory. Default `/`.
    pub workdir: Option<String>,
    /// `user = "1000"`, `"1000:1000"`, `"name"` or `"name:group"`: names are resolved from the
    /// image's `/etc/passwd` and `/etc/group` at build time. Default root.
    pub user: Option<String>,
    /// `hostname = "name"`. Default: left as the kernel has it.
    pub hostname: Option<String>,
    /// `nofile = N`: `RLIMIT_NOFILE`. Default 1048576 (set by fledge-init).
    pub nofile: Option<u64>,
}

impl WorkloadKeys {
    /// Whether any key is set.
    pub fn is_set(&self) -> bool {
        *self != WorkloadKeys::default()
    }
}

/// Where the kestrel agent comes from (`[agent]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSource {
    /// A GitHub release of volantvm/volant: `latest` or a tag.
    Release { version: String },
    /// A file on this machine (resolved against the config's directory), optionally checked
    /// against a sha256 (hex).
    Local {
        path: PathBuf,
        sha256: Option<String>,
    },
    /// A download (`http(s)://` or `file://`), optionally checked against a sha256 (hex).
    Http { url: String, sha256: Option<String> },
}

/// A file to fetch: URL or path, and its expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// `http(s)://`, `file://` or a local path (relative to the config's directory).
    pub location: String,
    /// Expected sha256, lowercase hex.
    pub sha256: Option<String>,
}

/// One `[mappings]` entry: host source -> absolute image destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The key as written (for messages).
    pub key: String,
    /// The source resolved against the config's directory.
    pub source: PathBuf,
    /// Absolute destination in the image.
    pub dest: String,
    /// Line of the entry in the config, when known.
    pub line: Option<usize>,
}

/// A validated `fledge.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from.
    pub path: PathBuf,
    /// `[build] arch` (or `--arch`): the guest architecture. Default x86_64.
    pub arch: Arch,
    /// `[source] image`: the container image at the base of the root file system.
    pub image: Option<crate::image::Spec>,
    /// Directory relative paths are resolved against.
    pub base_dir: PathBuf,
    pub init: InitMode,
    /// Bake `fledge.supervise=1` into the image (`[init] supervise`).
    pub supervise: bool,
    /// The workload spec keys of `[init]`.
    pub workload: WorkloadKeys,
    pub busybox: Fetch,
    /// Applet symlinks in `/bin` beyond [`crate::plan::BASE_APPLETS`] (`[source] busybox_applets`).
    pub extra_applets: Vec<String>,
    pub mappings: Vec<Mapping>,
    /// `[build] compression`, when set.
    pub compression: Option<Compression>,
    /// `[build] compression_level`, when set.
    pub compression_level: Option<i32>,
    /// `[kernel]`: the guest kernel's modules to put in the image; `None` for none.
    pub kernel: Option<crate::kmod::Settings>,
    /// `[build] libraries`, `sysroot` and `extra_libraries`.
    pub libraries: Libraries,
    /// `[build] sbom` (default `true`): write `<name>.spdx.json` beside the image.
    pub sbom: bool,
    /// `strategy = "oci_rootfs"`: a squashfs root file system disk instead of an initramfs,
    /// with its `[filesystem]` settings.
    pub rootfs: Option<Rootfs>,
    /// Things worth telling the user that do not stop the build.
    pub warnings: Vec<String>,
}

/// `[filesystem]` of a root file system disk (`strategy = "oci_rootfs"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    /// `compression_level`: the disk compressor's level [default: the compressor's].
    pub compression_level: Option<i32>,
    /// `overlay_size` (default `1G`): the tmpfs over the read-only disk, as Volant passes it
    /// (`overlay_size=` on the kernel command line).
    pub overlay_size: String,
}

impl Default for Rootfs {
    fn default() -> Self {
        Rootfs {
            compression_level: None,
            overlay_size: "1G".into(),
        }
    }
}

/// Shared libraries of the programs placed (`[build]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Libraries {
    /// `libraries = "auto"` (the default) adds every placed program's libraries; `"off"` adds
    /// none (the runnable check still runs).
    pub auto: bool,
    /// `sysroot` (default `/`, relative to the config's directory): the tree libraries are
    /// taken from, searched as its own dynamic loader would.
    pub sysroot: PathBuf,
    /// `extra_libraries` (default none): libraries programs `dlopen`, as sonames searched like a
    /// `DT_NEEDED` entry or absolute paths in the sysroot; each brings its own closure.
    pub extra: Vec<String>,
}

impl Default for Libraries {
    fn default() -> Self {
        Libraries {
            auto: true,
            sysroot: PathBuf::from("/"),
            extra: Vec::new(),
        }
    }
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_for(path, None)
}

/// [`load`], with the guest architecture given on the command line (`--arch`), which wins
/// over `[build] arch`.
pub fn load_for(path: &Path, arch: Option<Arch>) -> Result<Config, ConfigError> {
    let text = crate::util::read_bounded(path, crate::util::MAX_TEXT_FILE).map_err(|source| {
        ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Config::from_str_for(&text, path, arch)
}

impl Config {
    /// Parses and validates config text; `file` is used for messages and relative paths.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        Config::from_str_for(text, file, None)
    }

    /// [`Config::from_str`] with an architecture that overrides `[build] arch` (`--arch`).
    pub fn from_str_for(
        text: &str,
        file: &Path,
        arch: Option<Arch>,
    ) -> Result<Config, ConfigError> {
        let cx = Ctx { file, text };
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(ConfigError::Syntax {
                at: cx.at(e.span()),
                message: e.message().trim_end().to_string(),
            });
        }
        // Valid TOML that does not fit: a value of the wrong type. Name its key.
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| cx.wrong_type(&e))?;
        let base_dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut warnings = Vec::new();
        let rootfs = check::header(&cx, &raw, &mut warnings)?;
        let found = check::gather_mappings(&cx, &mut raw, &mut warnings)?;
        let (init, supervise, workload) =
            check::init(&cx, raw.init, raw.agent, &base_dir, &mut warnings)?;
        let arch = match arch {
            Some(a) => a,
            None => check::arch(&cx, raw.build.as_ref())?,
        };
        let image = check::image(&cx, raw.source.as_mut(), &base_dir, arch)?;
        check::from_image_has_image(&cx, &init, image.as_ref())?;
        let (busybox, extra_applets) = check::source(&cx, raw.source, arch, &mut warnings)?;
        let libraries = check::libraries(&cx, raw.build.as_ref(), &base_dir)?;
        let sbom = raw
            .build
            .as_ref()
            .and_then(|b| b.sbom.as_ref())
            .is_none_or(|s| *s.get_ref());
        let (compression, compression_level) = check::build(&cx, raw.build, &mut warnings)?;
        let mappings = check::mappings(&cx, found, &base_dir)?;
        let kernel = check::kernel(&cx, raw.kernel, &base_dir, rootfs.is_some(), &mut warnings)?;
        cx.unknown_keys("", &raw.extra, &mut warnings);
        Ok(Config {
            path: file.to_path_buf(),
            arch,
            image,
            base_dir,
            init,
            supervise,
            workload,
            busybox,
            extra_applets,
            mappings,
            compression,
            compression_level,
            kernel,
            libraries,
            sbom,
            rootfs,
            warnings,
        })
    }
}
/// Accepts `sha256:<hex>` or bare hex; returns lowercase hex.
pub fn parse_sha256(s: &str) -> Option<String> {
    let hex = s.trim().strip_prefix("sha256:").unwrap_or(s.trim());
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
