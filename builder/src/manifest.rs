//! `manifest.toml` -> Volant plugin manifest JSON. Placeholder.

use std::path::Path;

/// Errors in a manifest template or the manifest made from it.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: manifest support is not built yet")]
    Unsupported { path: String },
}

/// A parsed `manifest.toml`.
#[derive(Debug, Clone, Default)]
pub struct Template {}

/// Facts the build adds to the template.
#[derive(Debug, Clone)]
pub struct BuildFacts<'a> {
    /// Absolute path of the artifact as written.
    pub artifact: &'a Path,
    /// Hex sha256 of the artifact.
    pub sha256: &'a str,
    /// URL to publish instead of the artifact path (`--url`).
    pub url: Option<&'a str>,
}

/// Reads and checks a template.
pub fn load_template(path: &Path) -> Result<Template, ManifestError> {
    Err(ManifestError::Unsupported {
        path: path.display().to_string(),
    })
}

/// Merges a template with build facts into Volant's manifest, validated.
pub fn render(_t: &Template, facts: &BuildFacts) -> Result<serde_json::Value, ManifestError> {
    Err(ManifestError::Unsupported {
        path: facts.artifact.display().to_string(),
    })
}
