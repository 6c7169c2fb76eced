//! `fledge.toml`: parsing, defaults and validation.
//!
//! This module owns the meaning of a config file. [`load`] reads it, [`Config::from_str`] turns it
//! into a [`Config`] whose fields are all decided (defaults applied, paths resolved against the
//! directory holding the file), or fails with a [`ConfigError`] naming the file, the line and the
//! key. Every file written for the original Go fledge means the same thing here; keys this
//! version does not know are reported as warnings, never as errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::compress::Compression;

/// busybox used when `[source] busybox_url` is not given: the musl 1.35.0 x86_64 build.
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
    /// Directory relative paths are resolved against.
    pub base_dir: PathBuf,
    pub init: InitMode,
    /// Bake `fledge.supervise=1` into the image (`[init] supervise`).
    pub supervise: bool,
    pub busybox: Fetch,
    /// Applet symlinks in `/bin` beyond [`crate::plan::BASE_APPLETS`] (`[source] busybox_applets`).
    pub extra_applets: Vec<String>,
    pub mappings: Vec<Mapping>,
    /// `[build] compression`, when set.
    pub compression: Option<Compression>,
    /// `[build] compression_level`, when set.
    pub compression_level: Option<i32>,
    /// Things worth telling the user that do not stop the build.
    pub warnings: Vec<String>,
}

// ---- raw serde shapes ------------------------------------------------------------------------

// Unknown keys. (Spans do not survive serde's flatten, so their lines are found by `key_line`.)
type Extra = BTreeMap<String, toml::Value>;

#[derive(Deserialize)]
struct RawConfig {
    version: Option<Spanned<String>>,
    strategy: Option<Spanned<String>>,
    agent: Option<Spanned<RawAgent>>,
    init: Option<Spanned<RawInit>>,
    source: Option<RawSource>,
    filesystem: Option<toml::Value>,
    mappings: Option<BTreeMap<String, Spanned<String>>>,
    build: Option<RawBuild>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Deserialize)]
struct RawAgent {
    source_strategy: Option<Spanned<String>>,
    version: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    checksum: Option<Spanned<String>>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Deserialize)]
struct RawInit {
    path: Option<Spanned<String>>,
    none: Option<Spanned<bool>>,
    supervise: Option<Spanned<bool>>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Deserialize)]
struct RawSource {
    busybox_url: Option<Spanned<String>>,
    busybox_sha256: Option<Spanned<String>>,
    busybox_applets: Option<Spanned<Vec<String>>>,
    image: Option<Spanned<String>>,
    dockerfile: Option<Spanned<String>>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Deserialize)]
struct RawBuild {
    compression: Option<Spanned<String>>,
    compression_level: Option<Spanned<i32>>,
    #[serde(flatten)]
    extra: Extra,
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Config::from_str(&text, path)
}

/// Validation context: the file's text for turning spans into lines.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn at(&self, span: Option<std::ops::Range<usize>>) -> Location {
        Location {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line(s)),
        }
    }

    fn invalid(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        problem: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(span),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    /// A value of the wrong type: names the key on the error's line and says how to fix it.
    fn wrong_type(&self, e: &toml::de::Error) -> ConfigError {
        let line = e.span().map(|s| self.line(s));
        let message = e.message().trim_end().to_string();
        let Some(key) = line.and_then(|l| self.key_on_line(l)) else {
            return ConfigError::Syntax {
                at: self.at(e.span()),
                message,
            };
        };
        let hint = if key.starts_with("mappings.") {
            "; quote host paths that contain dots: \"app.bin\" = \"/usr/bin/app\"".to_string()
        } else if message.contains("expected a string") {
            format!(
                "; quote the value: {} = \"...\"",
                key.rsplit('.').next().unwrap_or(&key)
            )
        } else if message.contains("expected a boolean") {
            "; write true or false, without quotes".to_string()
        } else {
            String::new()
        };
        ConfigError::Invalid {
            at: Location {
                file: self.file.to_path_buf(),
                line,
            },
            key,
            problem: format!("has the wrong type: {message}{hint}"),
        }
    }

    /// The dotted key whose `key = value` is on `line`: the table header above it plus the key.
    fn key_on_line(&self, line: usize) -> Option<String> {
        let lines: Vec<&str> = self.text.lines().collect();
        let (key, _) = lines.get(line.checked_sub(1)?)?.split_once('=')?;
        let key = key.trim().trim_matches('"');
        let table = lines[..line - 1].iter().rev().find_map(|l| {
            let t = l.trim();
            t.starts_with('[')
                .then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        });
        Some(match table {
            Some(t) => format!("{t}.{key}"),
            None => key.to_string(),
        })
    }

    /// Line of the first `key = ...` in the file (for keys whose span serde could not keep).
    fn key_line(&self, key: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|l| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map(|i| i + 1)
    }

    fn unknown_keys(&self, table: &str, extra: &Extra, warnings: &mut Vec<String>) {
        for k in extra.keys() {
            let at = Location {
                file: self.file.to_path_buf(),
                line: self.key_line(k),
            };
            let key = if table.is_empty() {
                k.clone()
            } else {
                format!("{table}.{k}")
            };
            warnings.push(format!("{at}: unknown key `{key}` is ignored"));
        }
    }
}

impl Config {
    /// Parses and validates config text; `file` is used for messages and relative paths.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
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

        // version and strategy
        match &raw.version {
            None => {
                return Err(cx.invalid(None, "version", "is missing: add `version = \"1\"`"));
            }
            Some(v) if v.get_ref() != "1" => {
                return Err(cx.invalid(
                    Some(v.span()),
                    "version",
                    format!("is \"{}\" but only \"1\" is supported", v.get_ref()),
                ));
            }
            Some(_) => {}
        }
        match &raw.strategy {
            None => {
                return Err(cx.invalid(
                    None,
                    "strategy",
                    "is missing: add `strategy = \"initramfs\"`",
                ));
            }
            Some(s) if s.get_ref() == "oci_rootfs" => {
                return Err(cx.invalid(
                    Some(s.span()),
                    "strategy",
                    "is \"oci_rootfs\", which this fledge does not build: it builds \
                     `strategy = \"initramfs\"` images only",
                ));
            }
            Some(s) if s.get_ref() != "initramfs" => {
                return Err(cx.invalid(
                    Some(s.span()),
                    "strategy",
                    format!("is \"{}\": use \"initramfs\"", s.get_ref()),
                ));
            }
            Some(_) => {}
        }
        if raw.filesystem.is_some() {
            warnings.push(format!(
                "{}: `[filesystem]` applies to oci_rootfs builds and is ignored",
                cx.at(None)
            ));
        }

        // mappings, including ones TOML scoped into another table by mistake
        // (key, destination, line)
        let mut raw_mappings: Vec<(String, String, Option<usize>)> = raw
            .mappings
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let line = cx.line(v.span());
                (k, v.into_inner(), Some(line))
            })
            .collect();
        let mut adopt = |table: &str, extra: &mut Extra, warnings: &mut Vec<String>| {
            let Some(v) = extra.remove("mappings") else {
                return Ok(());
            };
            let line = cx.key_line("mappings");
            let at = Location {
                file: cx.file.to_path_buf(),
                line,
            };
            let toml::Value::Table(t) = v else {
                return Err(ConfigError::Invalid {
                    at,
                    key: format!("{table}.mappings"),
                    problem: "must be a table of \"host source\" = \"/image/destination\"".into(),
                });
            };
            warnings.push(format!(
                "{at}: `mappings = {{ ... }}` written after `[{table}]` belongs to [{table}] in \
                 TOML; it is used as [mappings], but move it above the first [table] header or \
                 write a [mappings] table"
            ));
            for (k, v) in t {
                let toml::Value::String(dest) = v else {
                    return Err(ConfigError::Invalid {
                        at,
                        key: format!("mappings.\"{k}\""),
                        problem: "must be a string destination path".into(),
                    });
                };
                raw_mappings.push((k, dest, line));
            }
            Ok(())
        };
        if let Some(init) = raw.init.as_mut() {
            adopt("init", &mut init.get_mut().extra, &mut warnings)?;
        }
        if let Some(agent) = raw.agent.as_mut() {
            adopt("agent", &mut agent.get_mut().extra, &mut warnings)?;
        }
        if let Some(source) = raw.source.as_mut() {
            adopt("source", &mut source.extra, &mut warnings)?;
        }
        if let Some(build) = raw.build.as_mut() {
            adopt("build", &mut build.extra, &mut warnings)?;
        }

        // init mode
        let (init_span, init) = match raw.init {
            Some(i) => (Some(i.span()), Some(i.into_inner())),
            None => (None, None),
        };
        let none = init.as_ref().and_then(|i| i.none.clone());
        let path = init.as_ref().and_then(|i| i.path.clone());
        let supervise = init.as_ref().and_then(|i| i.supervise.clone());
        if let Some(i) = &init {
            cx.unknown_keys("init", &i.extra, &mut warnings);
        }
        let mode_none = none.as_ref().is_some_and(|n| *n.get_ref());
        if mode_none && path.is_some() {
            return Err(cx.invalid(
                init_span,
                "init",
                "sets both `path` and `none = true`: keep `path` for a custom init that \
                 fledge-init starts, or `none = true` for your own /init",
            ));
        }
        if let Some(s) = &supervise {
            if mode_none && *s.get_ref() {
                return Err(cx.invalid(
                    Some(s.span()),
                    "init.supervise",
                    "needs fledge-init, which `none = true` leaves out: remove one of them",
                ));
            }
        }
        let custom = match &path {
            Some(p) if p.get_ref().chars().any(char::is_control) => {
                return Err(cx.invalid(
                    Some(p.span()),
                    "init.path",
                    format!("is {:?}, which contains a control character", p.get_ref()),
                ));
            }
            Some(p) if p.get_ref().trim().is_empty() => {
                return Err(cx.invalid(
                    Some(p.span()),
                    "init.path",
                    "is empty: name your init (\"./my-init\" on this machine, or an absolute \
                     path inside the image)",
                ));
            }
            Some(p) if p.get_ref() == "/init" => {
                return Err(cx.invalid(
                    Some(p.span()),
                    "init.path",
                    "is /init, where fledge-init goes: to run your own program as /init use \
                     `none = true` and a mapping to /init",
                ));
            }
            Some(p) if p.get_ref().starts_with('/') => {
                if p.get_ref().contains("..") {
                    return Err(cx.invalid(
                        Some(p.span()),
                        "init.path",
                        "must not contain `..`: write the absolute image path it means",
                    ));
                }
                Some(CustomInit::InImage(p.get_ref().clone()))
            }
            Some(p) => Some(CustomInit::Host(base_dir.join(p.get_ref()))),
            None => None,
        };

        // agent
        let agent = match (raw.agent, mode_none, &custom) {
            (Some(a), true, _) | (Some(a), false, Some(_)) => {
                let which = if mode_none {
                    "`none = true`"
                } else {
                    "`init.path` (custom init)"
                };
                return Err(cx.invalid(
                    Some(a.span()),
                    "agent",
                    format!(
                        "is not allowed with {which}: the kestrel agent runs only in default \
                         mode; remove [agent], or remove [init] to use the agent"
                    ),
                ));
            }
            (Some(a), false, None) => Some(agent_source(&cx, a, &base_dir, &mut warnings)?),
            (None, false, None) => Some(AgentSource::Release {
                version: "latest".into(),
            }),
            (None, _, _) => None,
        };
        let init = match (mode_none, custom, agent) {
            (true, _, _) => InitMode::None,
            (false, Some(init), _) => InitMode::Custom { init },
            (false, None, Some(agent)) => InitMode::Default { agent },
            (false, None, None) => unreachable!("default mode always has an agent"),
        };

        // source
        let mut busybox = Fetch {
            location: DEFAULT_BUSYBOX_URL.to_string(),
            sha256: Some(DEFAULT_BUSYBOX_SHA256.to_string()),
        };
        let mut extra_applets = Vec::new();
        if let Some(src) = raw.source {
            for (key, v) in [
                ("source.dockerfile", &src.dockerfile),
                ("source.image", &src.image),
            ] {
                if let Some(v) = v {
                    return Err(cx.invalid(
                        Some(v.span()),
                        key,
                        "needs a container engine, which this fledge does not use: build your \
                         files on the host and add them with [mappings]",
                    ));
                }
            }
            let known_elsewhere = ["context", "target", "build_args"];
            let extra: Extra = src
                .extra
                .into_iter()
                .filter(|(k, _)| !known_elsewhere.contains(&k.as_str()))
                .collect();
            cx.unknown_keys("source", &extra, &mut warnings);
            let sha = digest(
                &cx,
                src.busybox_sha256,
                "source.busybox_sha256",
                &mut warnings,
            )?;
            match src.busybox_url {
                Some(u) if u.get_ref().trim().is_empty() => {
                    return Err(cx.invalid(
                        Some(u.span()),
                        "source.busybox_url",
                        "is empty: remove it to use the default busybox, or give a URL or path",
                    ));
                }
                Some(u) => {
                    check_location(&cx, &u, "source.busybox_url")?;
                    let default_sha = (u.get_ref() == DEFAULT_BUSYBOX_URL)
                        .then(|| DEFAULT_BUSYBOX_SHA256.to_string());
                    busybox = Fetch {
                        location: u.into_inner(),
                        sha256: sha.or(default_sha),
                    };
                }
                None => {
                    if let Some(sha) = sha {
                        busybox.sha256 = Some(sha);
                    }
                }
            }
            if let Some(a) = src.busybox_applets {
                for name in a.get_ref() {
                    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                        return Err(cx.invalid(
                            Some(a.span()),
                            "source.busybox_applets",
                            format!("has \"{name}\", which is not an applet name"),
                        ));
                    }
                }
                extra_applets = a.into_inner();
            }
        }

        // build extensions
        let (mut compression, mut compression_level) = (None, None);
        if let Some(b) = raw.build {
            cx.unknown_keys("build", &b.extra, &mut warnings);
            if let Some(c) = b.compression {
                let parsed = <Compression as clap::ValueEnum>::from_str(c.get_ref(), true)
                    .map_err(|_| {
                        cx.invalid(
                            Some(c.span()),
                            "build.compression",
                            format!(
                                "is \"{}\": use one of gzip, zstd, xz, lz4, none",
                                c.get_ref()
                            ),
                        )
                    })?;
                compression = Some(parsed);
            }
            // Checked here when the config names both; a --compression given on the command
            // line is checked with this level before the build starts.
            if let (Some(c), Some(l)) = (compression, &b.compression_level) {
                crate::compress::check_level(c, Some(*l.get_ref())).map_err(|e| {
                    cx.invalid(
                        Some(l.span()),
                        "build.compression_level",
                        format!("does not fit: {e}"),
                    )
                })?;
            }
            compression_level = b.compression_level.map(Spanned::into_inner);
        }

        // mappings
        let mut mappings = Vec::with_capacity(raw_mappings.len());
        for (key, dest, line) in raw_mappings {
            let at = Location {
                file: file.to_path_buf(),
                line,
            };
            let name = format!("mappings.\"{key}\"");
            let bad = |key: &str, problem: String| ConfigError::Invalid {
                at: at.clone(),
                key: key.to_string(),
                problem,
            };
            if key.trim().is_empty() {
                return Err(bad("mappings", "has an empty source path".into()));
            }
            if dest.trim().is_empty() {
                return Err(bad(&name, "has an empty destination".into()));
            }
            if !dest.starts_with('/') {
                return Err(bad(
                    &name,
                    format!(
                        "has destination \"{dest}\", which must be absolute: write \"/{dest}\""
                    ),
                ));
            }
            if dest.chars().any(char::is_control) {
                return Err(bad(
                    &name,
                    format!("has destination {dest:?}, which contains a control character"),
                ));
            }
            if dest.contains("..") {
                return Err(bad(
                    &name,
                    format!("has destination \"{dest}\", which must not contain `..`: write the absolute image path it means"),
                ));
            }
            mappings.push(Mapping {
                source: base_dir.join(&key),
                key,
                dest,
                line,
            });
        }

        cx.unknown_keys("", &raw.extra, &mut warnings);
        Ok(Config {
            path: file.to_path_buf(),
            base_dir,
            init,
            supervise: supervise.is_some_and(|s| s.into_inner()),
            busybox,
            extra_applets,
            mappings,
            compression,
            compression_level,
            warnings,
        })
    }
}

/// An optional digest: empty means none; a `<placeholder>` (as the documentation's examples
/// have) means none with a warning; anything else must be a sha256.
fn digest(
    cx: &Ctx,
    v: Option<Spanned<String>>,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    let text = v.get_ref().trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.starts_with('<') && text.ends_with('>') {
        warnings.push(format!(
            "{}: `{key}` is the placeholder {text}, so the download is not verified: put the real digest there",
            cx.at(Some(v.span()))
        ));
        return Ok(None);
    }
    parse_sha256(text)
        .map(Some)
        .ok_or_else(|| cx.invalid(Some(v.span()), key, SHA_HELP))
}

const SHA_HELP: &str = "must be a sha256 digest: 64 hex digits, optionally prefixed `sha256:`";

/// Accepts `sha256:<hex>` or bare hex; returns lowercase hex.
pub fn parse_sha256(s: &str) -> Option<String> {
    let hex = s.trim().strip_prefix("sha256:").unwrap_or(s.trim());
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn check_location(cx: &Ctx, v: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
    let s = v.get_ref();
    if let Some((scheme, _)) = s.split_once("://") {
        if !matches!(scheme, "http" | "https" | "file") {
            return Err(cx.invalid(
                Some(v.span()),
                key,
                format!("uses `{scheme}://`: use http://, https://, file:// or a local path"),
            ));
        }
    }
    Ok(())
}

fn agent_source(
    cx: &Ctx,
    a: Spanned<RawAgent>,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<AgentSource, ConfigError> {
    let span = a.span();
    let a = a.into_inner();
    cx.unknown_keys("agent", &a.extra, warnings);
    let Some(strategy) = a.source_strategy else {
        return Err(cx.invalid(
            Some(span),
            "agent.source_strategy",
            "is missing: use \"release\", \"local\" or \"http\"",
        ));
    };
    let need = |v: Option<Spanned<String>>, key: &str, example: &str| match v {
        Some(v) if !v.get_ref().trim().is_empty() => Ok(v),
        Some(v) => Err(cx.invalid(Some(v.span()), key, format!("is empty: {example}"))),
        None => Err(cx.invalid(
            Some(strategy.span()),
            key,
            format!(
                "is required with source_strategy = \"{}\": {example}",
                strategy.get_ref()
            ),
        )),
    };
    match strategy.get_ref().as_str() {
        "release" => {
            let v = need(
                a.version,
                "agent.version",
                "add `version = \"latest\"` or a tag",
            )?;
            Ok(AgentSource::Release {
                version: v.into_inner(),
            })
        }
        "local" => {
            let p = need(a.path, "agent.path", "add `path = \"./kestrel\"`")?;
            Ok(AgentSource::Local {
                path: base_dir.join(p.get_ref()),
                sha256: digest(cx, a.checksum, "agent.checksum", warnings)?,
            })
        }
        "http" => {
            let u = need(a.url, "agent.url", "add `url = \"https://.../kestrel\"`")?;
            if !["http://", "https://", "file://"]
                .iter()
                .any(|s| u.get_ref().starts_with(s))
            {
                return Err(cx.invalid(
                    Some(u.span()),
                    "agent.url",
                    "must start with http://, https:// or file:// (or use source_strategy = \"local\")",
                ));
            }
            let sha256 = digest(cx, a.checksum, "agent.checksum", warnings)?;
            Ok(AgentSource::Http {
                url: u.into_inner(),
                sha256,
            })
        }
        other => Err(cx.invalid(
            Some(strategy.span()),
            "agent.source_strategy",
            format!("is \"{other}\": use \"release\", \"local\" or \"http\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, Path::new("/p/fledge.toml"))
    }

    fn err(text: &str) -> String {
        parse(text)
            .expect_err("config should be rejected")
            .to_string()
    }

    const HEAD: &str = "version = \"1\"\nstrategy = \"initramfs\"\n";

    #[test]
    fn defaults_for_minimal_file() {
        let c = parse(HEAD).unwrap();
        assert_eq!(
            c.init,
            InitMode::Default {
                agent: AgentSource::Release {
                    version: "latest".into()
                }
            }
        );
        assert_eq!(c.busybox.location, DEFAULT_BUSYBOX_URL);
        assert_eq!(c.busybox.sha256.as_deref(), Some(DEFAULT_BUSYBOX_SHA256));
        assert!(!c.supervise);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn seed_examples_are_accepted() {
        let default = format!(
            "{HEAD}[agent]\nsource_strategy = \"release\"\nversion = \"latest\"\n[source]\n\
             busybox_url = \"https://busybox.net/x/busybox\"\nbusybox_sha256 = \"\"\n\
             [mappings]\n\"./myapp\" = \"/usr/bin/myapp\"\n"
        );
        let c = parse(&default).unwrap();
        assert_eq!(c.mappings.len(), 1);
        assert_eq!(c.mappings[0].source, Path::new("/p/./myapp"));
        assert_eq!(c.busybox.sha256, None);

        let custom = format!(
            "{HEAD}[init]\npath = \"./my-init\"\n[source]\nbusybox_url = \"https://b/busybox\"\n\
             [mappings]\n\"./my-init\" = \"/init\"\n\"./myapp\" = \"/usr/bin/myapp\"\n"
        );
        let c = parse(&custom).unwrap();
        assert_eq!(
            c.init,
            InitMode::Custom {
                init: CustomInit::Host("/p/./my-init".into())
            }
        );

        let none = format!(
            "{HEAD}[init]\nnone = true\n[source]\nbusybox_url = \"https://b/busybox\"\n\
             [mappings]\n\"./my-supervisor\" = \"/init\"\n"
        );
        assert_eq!(parse(&none).unwrap().init, InitMode::None);
    }

    #[test]
    fn mappings_scoped_into_init_are_honoured_with_a_warning() {
        let text = format!(
            "{HEAD}[source]\nbusybox_url = \"https://b/busybox\"\n[init]\npath = \"./init.sh\"\n\n\
             mappings = {{ \"./init.sh\" = \"/init\" }}\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.mappings.len(), 1);
        assert_eq!(c.mappings[0].dest, "/init");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("belongs to [init]") && w.contains(":8")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn unknown_keys_warn_but_do_not_fail() {
        let text = format!("{HEAD}colour = \"blue\"\n[source]\nmirror = \"x\"\n");
        let c = parse(&text).unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("`colour`") && w.contains(":3")));
        assert!(c.warnings.iter().any(|w| w.contains("`source.mirror`")));
    }

    #[test]
    fn agent_strategies() {
        let local = format!("{HEAD}[agent]\nsource_strategy = \"local\"\npath = \"bin/kestrel\"\n");
        assert_eq!(
            parse(&local).unwrap().init,
            InitMode::Default {
                agent: AgentSource::Local {
                    path: "/p/bin/kestrel".into(),
                    sha256: None
                }
            }
        );
        // A checksum applies to a local agent, and an http strategy may name a file:// URL.
        let checked = format!("{local}checksum = \"{}\"\n", "cd".repeat(32));
        assert_eq!(
            parse(&checked).unwrap().init,
            InitMode::Default {
                agent: AgentSource::Local {
                    path: "/p/bin/kestrel".into(),
                    sha256: Some("cd".repeat(32))
                }
            }
        );
        let file = format!("{HEAD}[agent]\nsource_strategy = \"http\"\nurl = \"file:///srv/k\"\n");
        assert!(matches!(
            parse(&file).unwrap().init,
            InitMode::Default { agent: AgentSource::Http { url, .. } } if url == "file:///srv/k"
        ));
        let http = format!(
            "{HEAD}[agent]\nsource_strategy = \"http\"\nurl = \"https://x/k\"\nchecksum = \"sha256:{}\"\n",
            "AB".repeat(32)
        );
        assert_eq!(
            parse(&http).unwrap().init,
            InitMode::Default {
                agent: AgentSource::Http {
                    url: "https://x/k".into(),
                    sha256: Some("ab".repeat(32))
                }
            }
        );
    }

    #[test]
    fn supervise_and_build_extensions() {
        let text = format!("{HEAD}[init]\nsupervise = true\n[build]\ncompression = \"zstd\"\ncompression_level = 5\n");
        let c = parse(&text).unwrap();
        assert!(c.supervise);
        assert!(
            matches!(c.init, InitMode::Default { .. }),
            "supervise alone keeps default mode"
        );
        assert_eq!(c.compression, Some(Compression::Zstd));
        assert_eq!(c.compression_level, Some(5));
    }

    /// Each rule: (name, config text, what the message must contain).
    #[test]
    fn every_rule_names_its_key() {
        let sha = "0".repeat(64);
        let cases: Vec<(&str, String, &[&str])> = vec![
            ("no version", "strategy = \"initramfs\"\n".into(), &["`version`", "missing"]),
            ("bad version", "version = \"2\"\nstrategy = \"initramfs\"\n".into(), &["fledge.toml:1", "`version`", "\"2\""]),
            ("no strategy", "version = \"1\"\n".into(), &["`strategy`", "missing"]),
            ("oci", "version = \"1\"\nstrategy = \"oci_rootfs\"\n".into(), &["fledge.toml:2", "oci_rootfs", "images only"]),
            ("bad strategy", "version = \"1\"\nstrategy = \"disk\"\n".into(), &["`strategy`", "\"disk\""]),
            ("none+path", format!("{HEAD}[init]\npath = \"/x\"\nnone = true\n"), &["`init`", "none = true"]),
            ("empty init path", format!("{HEAD}[init]\npath = \"\"\n"), &["`init.path`", "empty"]),
            ("init path /init", format!("{HEAD}[init]\npath = \"/init\"\n"), &["`init.path`", "none = true"]),
            ("agent in custom", format!("{HEAD}[init]\npath = \"./i\"\n[agent]\nsource_strategy = \"local\"\npath = \"k\"\n"), &["`agent`", "custom init"]),
            ("agent in none", format!("{HEAD}[init]\nnone = true\n[agent]\nsource_strategy = \"local\"\npath = \"k\"\n"), &["`agent`", "none = true"]),
            ("supervise in none", format!("{HEAD}[init]\nnone = true\nsupervise = true\n"), &["`init.supervise`"]),
            ("no strategy in agent", format!("{HEAD}[agent]\nversion = \"latest\"\n"), &["`agent.source_strategy`", "missing"]),
            ("bad agent strategy", format!("{HEAD}[agent]\nsource_strategy = \"git\"\n"), &["`agent.source_strategy`", "\"git\""]),
            ("release no version", format!("{HEAD}[agent]\nsource_strategy = \"release\"\n"), &["`agent.version`", "required"]),
            ("local no path", format!("{HEAD}[agent]\nsource_strategy = \"local\"\n"), &["`agent.path`", "required"]),
            ("http no url", format!("{HEAD}[agent]\nsource_strategy = \"http\"\n"), &["`agent.url`", "required"]),
            ("http bad url", format!("{HEAD}[agent]\nsource_strategy = \"http\"\nurl = \"ftp://x\"\n"), &["`agent.url`", "http://"]),
            ("bad checksum", format!("{HEAD}[agent]\nsource_strategy = \"http\"\nurl = \"http://x\"\nchecksum = \"md5:1\"\n"), &["`agent.checksum`", "64 hex"]),
            ("bad busybox sha", format!("{HEAD}[source]\nbusybox_sha256 = \"xyz\"\n"), &["`source.busybox_sha256`"]),
            ("empty busybox url", format!("{HEAD}[source]\nbusybox_url = \"\"\n"), &["`source.busybox_url`", "empty"]),
            ("busybox scheme", format!("{HEAD}[source]\nbusybox_url = \"ftp://x/bb\"\nbusybox_sha256 = \"{sha}\"\n"), &["`source.busybox_url`", "ftp://"]),
            ("dockerfile", format!("{HEAD}[source]\ndockerfile = \"Dockerfile\"\n"), &["`source.dockerfile`", "container engine"]),
            ("image", format!("{HEAD}[source]\nimage = \"nginx\"\n"), &["`source.image`", "container engine"]),
            ("relative dest", format!("{HEAD}[mappings]\n\"a\" = \"usr/bin/a\"\n"), &["fledge.toml:4", "mappings.\"a\"", "absolute"]),
            ("dotdot dest", format!("{HEAD}[mappings]\n\"a\" = \"/usr/../etc/a\"\n"), &["mappings.\"a\"", "`..`"]),
            ("empty dest", format!("{HEAD}[mappings]\n\"a\" = \"\"\n"), &["mappings.\"a\"", "empty destination"]),
            ("empty source", format!("{HEAD}[mappings]\n\"\" = \"/a\"\n"), &["`mappings`", "empty source"]),
            ("bad compression", format!("{HEAD}[build]\ncompression = \"brotli\"\n"), &["`build.compression`", "\"brotli\""]),
            ("bad applet", format!("{HEAD}[source]\nbusybox_applets = [\"a/b\"]\n"), &["`source.busybox_applets`"]),
            ("syntax", format!("{HEAD}[mappings\n"), &["fledge.toml:3", "invalid TOML"]),
            ("wrong type", "version = 1\nstrategy = \"initramfs\"\n".into(), &["fledge.toml:1", "`version`", "wrong type", "quote the value"]),
            ("wrong bool", format!("{HEAD}[init]\nnone = \"yes\"\n"), &["fledge.toml:4", "`init.none`", "true or false"]),
            ("dotted host path", format!("{HEAD}[mappings]\napp.bin = \"/init\"\n"), &["`mappings.app.bin`", "quote host paths"]),
            ("control char", format!("{HEAD}[mappings]\n\"a\" = \"/init\\u0000\"\n"), &["mappings.\"a\"", "control character"]),
            ("level", format!("{HEAD}[build]\ncompression = \"lz4\"\ncompression_level = 3\n"), &["fledge.toml:5", "`build.compression_level`", "lz4"]),
        ];
        for (name, text, needles) in cases {
            let msg = err(&text);
            assert!(
                msg.starts_with("/p/fledge.toml"),
                "case {name}: message should name the file: {msg}"
            );
            for n in needles {
                assert!(msg.contains(n), "case {name}: {msg:?} should contain {n:?}");
            }
        }
    }

    #[test]
    fn placeholder_digests_from_the_docs_warn_and_verify_nothing() {
        let text = format!("{HEAD}[source]\nbusybox_url = \"https://b/bb\"\nbusybox_sha256 = \"<optional sha256>\"\n");
        let c = parse(&text).unwrap();
        assert_eq!(c.busybox.sha256, None);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("placeholder") && w.contains("source.busybox_sha256")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn sha256_forms() {
        let hex = "a".repeat(64);
        assert_eq!(parse_sha256(&hex).as_deref(), Some(hex.as_str()));
        assert_eq!(
            parse_sha256(&format!("sha256:{}", hex.to_uppercase())).as_deref(),
            Some(hex.as_str())
        );
        assert_eq!(parse_sha256("sha256:abc"), None);
        assert_eq!(parse_sha256(&"g".repeat(64)), None);
    }
}
