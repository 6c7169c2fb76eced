//! Listing a host tree for the mappings walk: every directory under a root read and its
//! entries looked up on several threads, ahead of the walk that lays them out.
//!
//! Listing a tree is one `getdents64` per directory and one `statx` per entry that is neither
//! a directory nor a symlink; on a tree of thousands of files that is most of a build's time
//! before compression starts, on one core. [`with_listings`] runs listers depth first in name
//! order (the walk's order, so a listing is ready when the walk reaches it) while the calling
//! thread walks; the walk takes each directory's listing as it comes to it. What the walk sees
//! is what a walk listing each directory itself would see: each directory read once, its
//! entries sorted by name, an error reported where that directory is reached. Listings read
//! ahead wait until the walk takes them: at most one per directory of the tree, no more than
//! the plan made of them holds.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// Most threads listing one tree: directory reads stop scaling well before the cores do.
const LISTERS: usize = 4;

/// One entry of a directory.
pub(super) struct Child {
    pub name: OsString,
    /// From the listing: tells directories and symlinks apart without a stat.
    pub listed: io::Result<fs::FileType>,
    /// For an entry that is neither a directory nor a symlink: its metadata, looked up beside
    /// the directory's open descriptor.
    pub meta: Option<io::Result<fs::Metadata>>,
}

/// A directory's entries in name order, or why it could not be read.
pub(super) type Listing = io::Result<Vec<Child>>;

/// Reads one directory: its entries, sorted by name, each with what [`Child`] holds.
fn list(dir: &Path) -> Listing {
    let mut children = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let listed = e.file_type();
        let meta = match &listed {
            Ok(t) if t.is_dir() || t.is_symlink() => None,
            _ => Some(e.metadata()),
        };
        children.push(Child {
            name: e.file_name(),
            listed,
            meta,
        });
    }
    children.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(children)
}

/// The subdirectories a walk of `dir` descends into, last first (popped first-first).
fn subdirs(dir: &Path, listing: &Listing) -> Vec<PathBuf> {
    let Ok(children) = listing else {
        return Vec::new();
    };
    children
        .iter()
        .rev()
        .filter(|c| c.listed.as_ref().is_ok_and(fs::FileType::is_dir))
        .map(|c| dir.join(&c.name))
        .collect()
}

#[derive(Default)]
struct State {
    /// Directories to read, the next on top.
    todo: Vec<PathBuf>,
    /// Listers reading a directory now.
    busy: usize,
    /// Listings read and not yet taken.
    ready: HashMap<PathBuf, Listing>,
    /// Set when the walk is over (done or failed): the listers stop.
    stop: bool,
}

/// The listings of one tree, shared by its listers and its walk.
pub(super) struct Listings {
    state: Mutex<State>,
    changed: Condvar,
}

impl Listings {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The listing of `dir`, a directory the walk reached (the root, or one a listing showed),
    /// once a lister has read it.
    pub fn take(&self, dir: &Path) -> Listing {
        let mut s = self.lock();
        loop {
            if let Some(listing) = s.ready.remove(dir) {
                return listing;
            }
            // Every directory the walk reaches is one the listers find too; should one not
            // be, it is read here once they are done.
            if s.busy == 0 && s.todo.is_empty() {
                drop(s);
                return list(dir);
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A lister: reads directories until none is left or the walk is over.
    fn lister(&self) {
        loop {
            let dir = {
                let mut s = self.lock();
                loop {
                    if s.stop {
                        return;
                    }
                    if let Some(d) = s.todo.pop() {
                        s.busy += 1;
                        break d;
                    }
                    if s.busy == 0 {
                        return;
                    }
                    s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                }
            };
            let listing = list(&dir);
            let mut s = self.lock();
            let subdirs = subdirs(&dir, &listing);
            s.todo.extend(subdirs);
            s.ready.insert(dir, listing);
            s.busy -= 1;
            self.changed.notify_all();
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

/// Runs `walk` on this thread while listers read the tree under `root` for it; the listers
/// stop when `walk` returns, whether it finished or failed.
pub(super) fn with_listings<R>(root: &Path, walk: impl FnOnce(&Listings) -> R) -> R {
    let listings = Listings {
        state: Mutex::new(State {
            todo: vec![root.to_path_buf()],
            ..State::default()
        }),
        changed: Condvar::new(),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(LISTERS));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| listings.lister());
        }
        // Stops the listers even if the walk panics, so the scope can end.
        struct StopOnDrop<'a>(&'a Listings);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        let _stop = StopOnDrop(&listings);
        walk(&listings)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every directory under `dir`, depth first in name order, with its entries' names.
    fn listed_here(l: &Listings, dir: &Path, out: &mut Vec<String>) {
        let children = l.take(dir).unwrap();
        for c in &children {
            let path = dir.join(&c.name);
            out.push(path.display().to_string());
            let t = c.listed.as_ref().unwrap();
            assert_eq!(c.meta.is_some(), !t.is_dir() && !t.is_symlink());
            if t.is_dir() {
                listed_here(l, &path, out);
            }
        }
    }

    /// The same walk made with `fs::read_dir` alone.
    fn listed_plainly(dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        names.sort_by_key(fs::DirEntry::file_name);
        for e in names {
            out.push(e.path().display().to_string());
            if e.file_type().unwrap().is_dir() {
                listed_plainly(&e.path(), out);
            }
        }
    }

    #[test]
    fn a_tree_listed_ahead_is_walked_as_one_read_directory_by_directory() {
        let dir = tempfile::tempdir().unwrap();
        // Wide and deep: more directories than listers, some empty, a symlink to a directory
        // (not descended into) and a file in each.
        for a in 0..6 {
            for b in 0..5 {
                let d = dir.path().join(format!("d{a}/e{b}/f"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("x"), b"x").unwrap();
                fs::create_dir_all(dir.path().join(format!("d{a}/empty{b}"))).unwrap();
            }
            std::os::unix::fs::symlink("..", dir.path().join(format!("d{a}/up"))).unwrap();
        }
        let (mut ahead, mut plain) = (Vec::new(), Vec::new());
        with_listings(dir.path(), |l| listed_here(l, dir.path(), &mut ahead));
        listed_plainly(dir.path(), &mut plain);
        assert_eq!(ahead, plain);
        // Each d{a} itself, four entries for each b, and the symlink.
        assert_eq!(ahead.len(), 6 * (1 + 5 * 4 + 1));
    }

    #[test]
    fn a_walk_that_stops_early_stops_the_listers_and_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for a in 0..50 {
            fs::create_dir_all(dir.path().join(format!("d{a:02}/sub"))).unwrap();
        }
        // The walk takes the root's listing only; the scope ends all the same.
        let n = with_listings(dir.path(), |l| l.take(dir.path()).unwrap().len());
        assert_eq!(n, 50);
        let gone = dir.path().join("gone");
        let e = with_listings(&gone, |l| l.take(&gone).err().map(|e| e.kind()));
        assert_eq!(e, Some(io::ErrorKind::NotFound));
    }
}
