//! The raw serde shapes of `fledge.toml` and the context that turns their spans into lines.
//!
//! Everything here is as written in the file; [`super::check`] decides what it means.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Location};

// Unknown keys. (Spans do not survive serde's flatten, so their lines are found by `key_line`.)
pub(super) type Extra = BTreeMap<String, toml::Value>;

#[derive(Deserialize)]
pub(super) struct RawConfig {
    pub(super) version: Option<Spanned<String>>,
    pub(super) strategy: Option<Spanned<String>>,
    pub(super) agent: Option<Spanned<RawAgent>>,
    pub(super) init: Option<Spanned<RawInit>>,
    pub(super) source: Option<RawSource>,
    pub(super) filesystem: Option<Spanned<RawFilesystem>>,
    pub(super) mappings: Option<BTreeMap<String, Spanned<String>>>,
    pub(super) build: Option<RawBuild>,
    pub(super) kernel: Option<crate::kmod::RawKernel>,
    #[serde(flatten)]
    pub(super) extra: Extra,
}

/// `[filesystem]`: the root file system disk of `strategy = "oci_rootfs"`.
#[derive(Deserialize)]
pub(super) struct RawFilesystem {
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    pub(super) compression_level: Option<Spanned<i32>>,
    pub(super) overlay_size: Option<Spanned<String>>,
    pub(super) size_buffer_mb: Option<Spanned<i64>>,
    pub(super) preallocate: Option<Spanned<bool>>,
    #[serde(flatten)]
    pub(super) extra: Extra,
}

#[derive(Deserialize)]
pub(super) struct RawAgent {
    pub(super) source_strategy: Option<Spanned<String>>,
    pub(super) version: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) checksum: Option<Spanned<String>>,
    #[serde(flatten)]
    pub(super) extra: Extra,
}

#[derive(Deserialize)]
pub(super) struct RawInit {
    pub(super) path: Option<Spanned<String>>,
    pub(super) none: Option<Spanned<bool>>,
    pub(super) from_image: Option<Spanned<bool>>,
    pub(super) supervise: Option<Spanned<bool>>,
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) env: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) workdir: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) hostname: Option<Spanned<String>>,
    pub(super) nofile: Option<Spanned<i64>>,
    #[serde(flatten)]
    pub(super) extra: Extra,
}

#[derive(Deserialize)]
pub(super) struct RawSource {
    pub(super) busybox_url: Option<Spanned<String>>,
    pub(super) busybox_sha256: Option<Spanned<String>>,
    pub(super) busybox_applets: Option<Spanned<Vec<String>>>,
    pub(super) image: Option<Spanned<String>>,
    pub(super) image_platform: Option<Spanned<String>>,
    pub(super) image_plain_http: Option<Spanned<bool>>,
    pub(super) dockerfile: Option<Spanned<String>>,
    #[serde(flatten)]
    pub(super) extra: Extra,
}

#[derive(Deserialize)]
pub(super) struct RawBuild {
    pub(super) arch: Option<Spanned<String>>,
    pub(super) compression: Option<Spanned<String>>,
    pub(super) compression_level: Option<Spanned<i32>>,
    pub(super) libraries: Option<Spanned<String>>,
    pub(super) sysroot: Option<Spanned<String>>,
    pub(super) extra_libraries: Option<Spanned<Vec<String>>>,
    pub(super) sbom: Option<Spanned<bool>>,
    #[serde(flatten)]
    pub(super) extra: Extra,
}

/// Validation context: the file's text for turning spans into lines.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
}

impl Ctx<'_> {
    pub(super) fn line(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub(super) fn at(&self, span: Option<std::ops::Range<usize>>) -> Location {
        Location {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line(s)),
        }
    }

    pub(super) fn invalid(
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
    pub(super) fn wrong_type(&self, e: &toml::de::Error) -> ConfigError {
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
    pub(super) fn key_line(&self, key: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|l| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map(|i| i + 1)
    }

    pub(super) fn unknown_keys(&self, table: &str, extra: &Extra, warnings: &mut Vec<String>) {
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
