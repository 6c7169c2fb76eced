//! Layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {}
