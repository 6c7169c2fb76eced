//! Source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {}
