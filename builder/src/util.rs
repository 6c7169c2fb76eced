//! Small helpers every stage uses: how a host path and its kind are shown in messages, and how
//! a small text file is read.

use std::path::{Path, PathBuf};

/// Most items a message lists before it says how many more there are.
pub const LISTED: usize = 10;

/// `items` joined with `sep` for a one-line message: the first [`LISTED`], then `and N more`.
pub fn listed<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    let mut out: Vec<&str> = items.iter().take(LISTED).map(AsRef::as_ref).collect();
    let more = items.len().saturating_sub(LISTED);
    let tail = format!("and {more} more");
    if more > 0 {
        out.push(&tail);
    }
    out.join(sep)
}

/// `path` for messages, without the `./` a relative config directory leaves inside it
/// (`././app` -> `./app`).
pub fn shown(path: &Path) -> String {
    path.components().collect::<PathBuf>().display().to_string()
}

/// What kind of file `meta` describes, for messages (`a directory`, `a character device`).
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Largest config or manifest template read (they are a few KiB).
pub const MAX_TEXT_FILE: u64 = 1 << 20;

/// Reads a small text file (config, manifest template): refuses anything but a regular file,
/// and more than `cap` bytes, without reading past the cap.
pub fn read_bounded(path: &std::path::Path, cap: u64) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        let kind = file_kind(&meta);
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file"),
        ));
    }
    let mut text = String::new();
    f.take(cap + 1).read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("it is over {cap} bytes, more than a text file of this kind holds"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_lists_are_summarised() {
        let many: Vec<String> = (0..10_000).map(|i| format!("tag{i}")).collect();
        let text = super::listed(&many, ", ");
        assert!(text.ends_with("tag9, and 9990 more"), "{text}");
        assert!(text.len() < 120);
        assert_eq!(super::listed(&["a", "b"], "; "), "a; b");
    }
}
