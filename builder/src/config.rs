//! Config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {}
