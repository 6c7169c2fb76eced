//! The library's error type: one variant per pipeline stage, each wrapping that stage's own enum
//! so the message names the stage's file, key, URL or path.

use std::path::PathBuf;

/// Any failure of a `fledge` operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Source(#[from] crate::fetch::SourceError),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    Kmod(#[from] crate::kmod::KmodError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    #[error(transparent)]
    Compress(#[from] crate::compress::CompressError),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error(transparent)]
    Inspect(#[from] crate::inspect::InspectError),
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error("{what} {problem}")]
    Request { what: &'static str, problem: String },
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}
