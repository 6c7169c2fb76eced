//! Small helpers every stage uses: how a host path and its kind are shown in messages, how a
//! small text file is read, and how a list of independent jobs is shared among threads.

use std::path::{Path, PathBuf};

/// `f` of each of `items`, in their order, computed on up to `threads` threads, each taking
/// the next item left when it is free (jobs of uneven size still share the threads).
pub fn map_on_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(at) else {
                            return mine;
                        };
                        mine.push((at, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_unstable_by_key(|(at, _)| *at);
    done.into_iter().map(|(_, r)| r).collect()
}

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
    fn jobs_on_threads_come_back_in_order_whatever_their_size() {
        let items: Vec<u64> = (0..200).collect();
        let slow_first = |&n: &u64| {
            // Early items take longest, so a thread taking them finishes last.
            std::thread::sleep(std::time::Duration::from_micros(
                200u64.saturating_sub(n) * 5,
            ));
            (n * n, std::thread::current().id())
        };
        let out = super::map_on_threads(&items, 4, slow_first);
        let squares: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
        assert_eq!(squares, items.iter().map(|n| n * n).collect::<Vec<_>>());
        let mut threads: Vec<_> = out.iter().map(|(_, t)| *t).collect();
        threads.sort_by_key(|t| format!("{t:?}"));
        threads.dedup();
        assert!(threads.len() > 1, "shared among threads");
        assert_eq!(super::map_on_threads(&[7u8], 8, |&x| x + 1), vec![8]);
        assert!(super::map_on_threads(&[] as &[u8], 8, |&x| x).is_empty());
    }

    #[test]
    fn long_lists_are_summarised() {
        let many: Vec<String> = (0..10_000).map(|i| format!("tag{i}")).collect();
        let text = super::listed(&many, ", ");
        assert!(text.ends_with("tag9, and 9990 more"), "{text}");
        assert!(text.len() < 120);
        assert_eq!(super::listed(&["a", "b"], "; "), "a; b");
    }
}
