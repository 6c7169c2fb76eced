//! `manifest.toml` -> the Volant plugin manifest (`<name>.manifest.json`) that `volar plugins
//! install --manifest` accepts.
//!
//! This module owns the template format, its defaults, the mapping to Volant's shape and the
//! check that Volant would accept the result; the pipeline only hands it the artifact's path and
//! digest and says where to write. Three steps:
//!
//! 1. [`load_template`] (or [`load_or_default`]) reads `manifest.toml` in the original Fledge's
//!    format, plus the Volant fields users need (see [`template::Raw`] for every key and its
//!    default). It already renders the template against placeholder build facts and runs
//!    Volant's rules, so a broken template fails before anything is built, naming the file, the
//!    line and the key. Unknown keys are logged with `log::warn!` and ignored.
//! 2. [`render`] (JSON) or [`render_manifest`] (typed) merges the template with the
//!    [`BuildFacts`] and validates the result with Volant's `Manifest.Validate` rules
//!    ([`volant::Manifest::validate`]).
//! 3. The pipeline writes that JSON, pretty, to [`manifest_path`] through [`crate::output`].
//!
//! Mapping from the original's format: a string `workload.entrypoint` plus `args` becomes the
//! `entrypoint` array; `[env]` becomes `workload.env`; `[[network.expose]]` is not part of
//! Volant's manifest and only sets the default `base_url`
//! (`http://127.0.0.1:<first exposed port>`, else port 8080, or 8081 in default mode, where the
//! agent listens on 8080 - a default-mode workload port of 8080 is refused, naming the key that set it);
//! `workload.type` defaults to `http` (`exec` and `grpc`, newer Volant's, need no `base_url`);
//! `runtime` defaults to `name`; labels `volant.plugin`, `volant.image` (newer Volant's name for it)
//! and `volant.runtime` are set from name and runtime as Volant's `Normalize` does; `schema_version` `"v1"` (the original's) becomes
//! Volant's `"1.0"`; `enabled` defaults to `true` (Volant reads a missing `enabled` as false).
//! An empty or missing entrypoint (the original's minimal example) becomes [`DEFAULT_ENTRYPOINT`],
//! because Volant requires one. Values are normalised as Volant's `Normalize` does (see
//! [`merge`]); each change is a warning, logged once when the template is loaded.
//!
//! Without a `manifest.toml`: like the original, an explicitly given `-m` path that does not
//! exist is an error, and a missing default `manifest.toml` falls back to [`default_template`]
//! with a warning, so `fledge build` still writes a manifest Volant installs.

mod merge;
pub mod template;
pub mod volant;

use std::io;
use std::path::{Path, PathBuf};

use self::template::{Entrypoint, KeyIndex, Raw};
use self::volant::{Manifest, Violation};

/// The program Volant's agent starts when the template names none: the agent's own path in a
/// default-mode image.
pub const DEFAULT_ENTRYPOINT: &str = "/bin/kestrel";
/// The largest manifest a build writes and `fledge run` (or a plugin host) is asked to read.
pub const MAX_LEN: u64 = 8 << 20;
/// Port of the default `base_url` when no port is exposed.
pub const DEFAULT_PORT: u16 = 8080;
/// Port of the default `base_url` when no port is exposed, in default mode: the agent listens on
/// 8080 there ([`volant::AGENT_PORT`]), so the workload gets the next one.
pub const DEFAULT_AGENT_MODE_PORT: u16 = 8081;
/// Version of a manifest made without a template.
pub const DEFAULT_VERSION: &str = "0.1.0";
/// Default CPU count.
pub const DEFAULT_CPU_CORES: i64 = 1;
/// Default memory in MiB.
pub const DEFAULT_MEMORY_MB: i64 = 512;
/// Default `health_check.timeout_ms` when a `[health_check]` table leaves it out.
pub const DEFAULT_HEALTH_TIMEOUT_MS: i64 = 10_000;

/// Errors in a manifest template or the manifest made from it.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest template {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("manifest template {path} does not exist; create it or leave out -m to use defaults")]
    NotFound { path: PathBuf },
    #[error("{location}: invalid TOML: {message}")]
    Syntax { location: String, message: String },
    /// A field breaks a rule; `location` is `file:line`, `file`, or what supplied the value.
    #[error("{location}: {field} {problem}; {fix}")]
    Invalid {
        location: String,
        field: String,
        problem: String,
        fix: String,
    },
}

impl ManifestError {
    /// The offending field (dotted key path), for errors about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ManifestError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A checked `manifest.toml` (or the built-in default).
#[derive(Debug, Clone)]
pub struct Template {
    raw: Raw,
    origin: Option<PathBuf>,
    text: String,
    index: KeyIndex,
    /// What Volant's normalisation changes, or accepts with a caveat, one located sentence
    /// each (logged once, when the template is loaded).
    notes: Vec<String>,
}

impl Template {
    /// The plugin name (checked non-empty by [`load_template`]).
    pub fn name(&self) -> &str {
        self.raw.name.as_deref().map(str::trim).unwrap_or("")
    }

    /// The file the template came from; `None` for [`default_template`].
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// The warnings about values normalised as Volant does (`file:line: field ...`).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The template key behind manifest `field` (`[env]` keys are Volant's `workload.env`) and
    /// where it is: `file:line`, `file`, or `default manifest`.
    fn locate(&self, field: &str) -> (String, String) {
        let Some(origin) = &self.origin else {
            return (field.to_string(), "default manifest".to_string());
        };
        let mut names = vec![field.to_string()];
        if let Some(rest) = field.strip_prefix("workload.env.") {
            names.push(format!("env.{rest}"));
        }
        let (name, span) = names
            .iter()
            .find_map(|n| self.index.exact(n).map(|s| (n.clone(), Some(s))))
            .unwrap_or_else(|| (field.to_string(), self.index.span_of(field)));
        let location = match span {
            Some(s) => format!(
                "{}:{}",
                origin.display(),
                template::line_of(&self.text, s.start)
            ),
            None => origin.display().to_string(),
        };
        (name, location)
    }

    fn invalid(&self, v: Violation) -> ManifestError {
        let (field, location) = self.locate(&v.field);
        ManifestError::Invalid {
            location,
            field,
            problem: v.problem,
            fix: v.fix,
        }
    }
}

/// Facts the build adds to the template.
#[derive(Debug, Clone)]
pub struct BuildFacts<'a> {
    /// Absolute path of the artifact as written.
    pub artifact: &'a Path,
    /// Hex sha256 of the artifact.
    pub sha256: &'a str,
    /// URL to publish instead of the artifact path (`--url`); wins over `base_url`.
    pub url: Option<&'a str>,
    /// Where the artifact will be published (`--base-url`): `initramfs.url` becomes this joined
    /// with the artifact's file name.
    pub base_url: Option<&'a str>,
    /// The program the image starts, for a template that names no `workload.entrypoint`: the
    /// custom init, or the user's `/init`; `None` means the agent, [`DEFAULT_ENTRYPOINT`].
    pub program: Option<&'a str>,
    /// What a container image's config says about its workload (`[source] image`).
    pub image: Option<&'a ImageFacts>,
    /// Default mode: Volant's agent is the guest's program and holds port
    /// [`volant::AGENT_PORT`], so the workload's port may not be that one (the default `base_url`
    /// uses [`DEFAULT_AGENT_MODE_PORT`]).
    pub agent: bool,
    /// The artifact is a root file system disk (`rootfs.*`), not an initramfs.
    pub rootfs: bool,
}

/// A container image's workload, the defaults for what `manifest.toml` leaves out: its
/// Entrypoint + Cmd for `workload.entrypoint`, Env under `workload.env` (the template's
/// variables win), WorkingDir for `workload.workdir` and the lowest exposed TCP port for the
/// default `base_url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    pub argv: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub port: Option<u16>,
}

/// Facts used to check a template before the build: they always pass.
fn placeholder() -> BuildFacts<'static> {
    BuildFacts {
        artifact: Path::new("/fledge-template-check/plugin.cpio.gz"),
        sha256: "0000000000000000000000000000000000000000000000000000000000000000",
        url: None,
        base_url: None,
        program: None,
        image: None,
        agent: false,
        rootfs: false,
    }
}

/// Reads and checks a template: syntax, types, and every rule Volant applies to the manifest it
/// will produce. Unknown keys are logged and ignored.
pub fn load_template(path: &Path) -> Result<Template, ManifestError> {
    let text =
        crate::util::read_bounded(path, crate::util::MAX_TEXT_FILE).map_err(
            |source| match source.kind() {
                io::ErrorKind::NotFound => ManifestError::NotFound {
                    path: path.to_path_buf(),
                },
                _ => ManifestError::Read {
                    path: path.to_path_buf(),
                    source,
                },
            },
        )?;
    parse_template(&text, path)
}

/// Like [`load_template`], for text already read from `origin`.
pub fn parse_template(text: &str, origin: &Path) -> Result<Template, ManifestError> {
    let at = |span: Option<std::ops::Range<usize>>| match span {
        Some(s) => format!("{}:{}", origin.display(), template::line_of(text, s.start)),
        None => origin.display().to_string(),
    };
    let parsed = template::parse(text).map_err(|e| match e.field {
        Some(field) => ManifestError::Invalid {
            location: at(e.span),
            field,
            problem: format!("has the wrong type ({})", e.message),
            fix: "write a value of the expected type".to_string(),
        },
        None => ManifestError::Syntax {
            location: at(e.span),
            message: e.message,
        },
    })?;
    for (key, span) in &parsed.unknown {
        log::warn!("{}: unknown key `{key}` ignored", at(Some(span.clone())));
    }
    let mut t = Template {
        raw: parsed.raw,
        origin: Some(origin.to_path_buf()),
        text: text.to_string(),
        index: parsed.index,
        notes: Vec::new(),
    };
    let entrypoint_given = match t.raw.workload.as_ref().and_then(|w| w.entrypoint.as_ref()) {
        Some(Entrypoint::One(s)) => !s.trim().is_empty(),
        Some(Entrypoint::Argv(v)) => !v.is_empty(),
        None => false,
    };
    if !entrypoint_given {
        log::warn!(
            "{}: workload.entrypoint is not set; Volant requires one, so the manifest names the \
             program the image starts (the agent, {DEFAULT_ENTRYPOINT}, in default mode)",
            t.locate("workload.entrypoint").1
        );
    }
    let mut notes = Vec::new();
    check(&t, &placeholder(), &mut notes)?;
    t.notes = notes
        .into_iter()
        .map(|n| {
            let (field, location) = t.locate(&n.field);
            format!("{location}: {field} {}", n.message)
        })
        .collect();
    for n in &t.notes {
        log::warn!("{n}");
    }
    Ok(t)
}

/// Loads `path`; when it does not exist and was not given explicitly (`-m`), warns and returns
/// [`default_template`]`(default_name)`, as the original did; `entrypoint` is the program the
/// image starts, which the default manifest names.
pub fn load_or_default(
    path: &Path,
    explicit: bool,
    default_name: &str,
    entrypoint: &str,
) -> Result<Template, ManifestError> {
    match load_template(path) {
        Err(ManifestError::NotFound { .. }) if !explicit => {
            log::debug!(
                "no manifest template at {}; using defaults (name {default_name:?}, version \
                 {DEFAULT_VERSION}, {DEFAULT_CPU_CORES} CPU, {DEFAULT_MEMORY_MB} MiB, entrypoint \
                 {entrypoint})",
                path.display()
            );
            Ok(default_template(default_name))
        }
        other => other,
    }
}

/// The manifest used without a `manifest.toml`: `name`, version [`DEFAULT_VERSION`], runtime
/// `name`, 1 CPU, 512 MiB, an http workload at `http://127.0.0.1:8080` (8081 in default mode) started as
/// [`DEFAULT_ENTRYPOINT`], enabled, no network section.
pub fn default_template(name: &str) -> Template {
    Template {
        raw: Raw {
            name: Some(name.to_string()),
            version: Some(DEFAULT_VERSION.to_string()),
            ..Raw::default()
        },
        origin: None,
        text: String::new(),
        index: KeyIndex::default(),
        notes: Vec::new(),
    }
}

/// A plugin name derived from the artifact's file name: the part before the first `.`, with
/// `/` and whitespace replaced by `-`; `plugin` when nothing is left.
pub fn default_name(artifact: &Path) -> String {
    let file = artifact
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file.split('.').next().unwrap_or("");
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '-'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "plugin".to_string()
    } else {
        name
    }
}

/// Checks the template as a build in default mode (`agent`, see [`BuildFacts::agent`]) or not
/// will render it, before anything is built; [`load_template`] checks it for the other modes.
pub fn check_mode(t: &Template, agent: bool) -> Result<(), ManifestError> {
    let facts = BuildFacts {
        agent,
        ..placeholder()
    };
    check(t, &facts, &mut Vec::new()).map(drop)
}

/// Merges a template with build facts into Volant's manifest, validated with Volant's rules, as
/// JSON (object keys in sorted order).
pub fn render(t: &Template, facts: &BuildFacts) -> Result<serde_json::Value, ManifestError> {
    let manifest = render_manifest(t, facts)?;
    Ok(serde_json::to_value(manifest).expect("a manifest always serialises"))
}

/// [`render`] as typed data (serialises with fields in the schema's reading order).
pub fn render_manifest(t: &Template, facts: &BuildFacts) -> Result<Manifest, ManifestError> {
    // The notes were reported when the template was loaded.
    check(t, facts, &mut Vec::new())
}

fn check(
    t: &Template,
    facts: &BuildFacts,
    notes: &mut Vec<merge::Note>,
) -> Result<Manifest, ManifestError> {
    let manifest = merge::build(&t.raw, facts, notes)
        .and_then(|m| m.validate().map(|()| m))
        .map_err(|v| {
            if v.field.starts_with("initramfs") {
                ManifestError::Invalid {
                    location: format!("artifact {}", facts.artifact.display()),
                    field: v.field,
                    problem: v.problem,
                    fix: v.fix,
                }
            } else {
                t.invalid(v)
            }
        })?;
    Ok(manifest)
}

/// `<directory of artifact>/<name>.manifest.json`.
pub fn manifest_path(artifact: &Path, name: &str) -> PathBuf {
    let dir = artifact.parent().unwrap_or(Path::new(""));
    dir.join(format!("{name}.manifest.json"))
}

#[cfg(test)]
mod tests;
