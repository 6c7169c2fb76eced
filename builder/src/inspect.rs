//! Inspect.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {}
