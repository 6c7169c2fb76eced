//! Small helpers every stage uses: how a host path is shown in messages.

use std::path::{Path, PathBuf};

/// `path` for messages, without the `./` a relative config directory leaves inside it
/// (`././app` -> `./app`).
pub fn shown(path: &Path) -> String {
    path.components().collect::<PathBuf>().display().to_string()
}
