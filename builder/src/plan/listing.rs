//! Listing a host tree for the mappings walk: every directory under a root read and its
//! entries looked up on several threads, ahead of the walk that lays them out.
//!
//! Listing a tree is one `getdents64` per directory and one `statx` per entry that is neither
//! a directory nor a symlink; on a tree of thousands of files that is most of a build's time
//! before compression starts, on one core. [`with_listings`] runs listers depth first in name
//! order (the walk's order, so a listing is ready when the walk reaches it) while the calling
//! thread walks; the walk takes each directory's listing as it comes to it. What the walk sees
//! is what a walk listing each directory itself would see: each directory read once, its
//! entries sorted by name, an error reported where that directory is reached.
//!
//! The listers stay at most [`AHEAD`] entries ahead of the walk; when they are that far ahead,
//! or none could be started, or the walk reaches a directory they were not told of (one that
//! became a directory after its parent was read), the walk reads the directory itself. The
//! listers stop as soon as the walk ends, whether it finished, failed or panicked.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Most threads listing one tree: directory reads stop scaling well before the cores do.
const LISTERS: usize = 4;

/// Most entries read ahead and not yet walked (about 250 bytes each).
const AHEAD: usize = 1 << 16;

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

/// Reads one directory: its entries, sorted by name, each with what [`Child`] holds. Gives up
/// early once `stop` is set (the walk no longer wants it).
fn list(dir: &Path, stop: &AtomicBool) -> Listing {
    let mut children = Vec::new();
    for e in fs::read_dir(dir)? {
        if children.len() % 256 == 255 && stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("the walk ended"));
        }
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

/// The subdirectories a walk of `dir` descends into, last first (so the first is read first).
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
    /// Listers running, and of those, reading a directory now.
    alive: usize,
    busy: usize,
    /// Listings read and not yet taken, and how many entries they hold.
    ready: HashMap<PathBuf, Listing>,
    ahead: usize,
    /// Directories the walk read itself: a lister skips them, or drops what it read of them.
    read_here: HashSet<PathBuf>,
    /// Directories read, by the listers and by the walk (for tests).
    listed: usize,
    walked_in: usize,
}

/// The listings of one tree, shared by its listers and its walk.
pub(super) struct Listings {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    /// [`AHEAD`], smaller in tests.
    limit: usize,
}

impl Listings {
    fn new(root: &Path, limit: usize) -> Listings {
        Listings {
            state: Mutex::new(State {
                todo: vec![root.to_path_buf()],
                ..State::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, s: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(s).unwrap_or_else(|e| e.into_inner())
    }

    /// The listing of `dir`, a directory the walk reached (the root, or one a listing showed
    /// as a directory).
    pub fn take(&self, dir: &Path) -> Listing {
        let mut s = self.lock();
        loop {
            if let Some(listing) = s.ready.remove(dir) {
                s.ahead -= listing.as_ref().map_or(0, Vec::len);
                // A lister held back by the limit may go on.
                self.changed.notify_all();
                return listing;
            }
            let idle = s.alive == 0 || (s.busy == 0 && s.todo.is_empty());
            if idle || s.ahead >= self.limit {
                return self.read_with(s, dir);
            }
            s = self.wait(s);
        }
    }

    /// The listing of `dir` read on this thread, for a directory no lister will read soon
    /// (or at all: one that was not a directory when its parent was read); what is below it
    /// is left to the listers.
    pub fn read(&self, dir: &Path) -> Listing {
        self.read_with(self.lock(), dir)
    }

    /// [`Listings::read`], marked as read here under the lock the caller decided with, so
    /// that a lister reading it now drops its copy.
    fn read_with(&self, mut s: MutexGuard<'_, State>, dir: &Path) -> Listing {
        s.read_here.insert(dir.to_path_buf());
        s.walked_in += 1;
        drop(s);
        let listing = list(dir, &AtomicBool::new(false));
        let mut s = self.lock();
        if s.alive > 0 {
            let below = subdirs(dir, &listing);
            s.todo.extend(below);
            self.changed.notify_all();
        }
        s.listed += 1;
        listing
    }

    /// A lister: reads directories until none is left or the walk is over.
    fn lister(&self) {
        // Counts this lister out however it ends, so the walk never waits on it.
        struct Gone<'a>(&'a Listings, bool);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                let mut s = self.0.lock();
                s.alive -= 1;
                if self.1 {
                    s.busy -= 1;
                }
                self.0.changed.notify_all();
            }
        }
        let mut gone = Gone(self, false);
        loop {
            let dir = {
                let mut s = self.lock();
                loop {
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if s.ahead < self.limit {
                        if let Some(d) = s.todo.pop() {
                            if s.read_here.contains(&d) {
                                continue;
                            }
                            s.busy += 1;
                            break d;
                        }
                        if s.busy == 0 {
                            return;
                        }
                    }
                    s = self.wait(s);
                }
            };
            gone.1 = true;
            let listing = list(&dir, &self.stop);
            let mut s = self.lock();
            s.busy -= 1;
            gone.1 = false;
            s.listed += 1;
            if !s.read_here.contains(&dir) {
                let below = subdirs(&dir, &listing);
                s.todo.extend(below);
                s.ahead += listing.as_ref().map_or(0, Vec::len);
                s.ready.insert(dir, listing);
            }
            self.changed.notify_all();
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // Under the lock, so that no lister is between its check and its wait.
        let _s = self.lock();
        self.changed.notify_all();
    }
}

/// Runs `walk` on this thread while listers read the tree under `root` for it; the listers
/// stop when `walk` returns, whether it finished or failed.
pub(super) fn with_listings<R>(root: &Path, walk: impl FnOnce(&Listings) -> R) -> R {
    // One core gains nothing from listers: the walk reads each directory itself.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let listers = if threads > 1 { threads.min(LISTERS) } else { 0 };
    with_listers(root, listers, AHEAD, walk)
}

fn with_listers<R>(
    root: &Path,
    listers: usize,
    limit: usize,
    walk: impl FnOnce(&Listings) -> R,
) -> R {
    let listings = Listings::new(root, limit);
    std::thread::scope(|s| {
        // Stops the listers however the walk ends (a panic too), so the scope can end.
        struct StopOnDrop<'a>(&'a Listings);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        let _stop = StopOnDrop(&listings);
        for _ in 0..listers {
            listings.lock().alive += 1;
            let started = std::thread::Builder::new()
                .name("fledge-list".into())
                .spawn_scoped(s, || listings.lister());
            // A lister that cannot be started leaves its share to the others, or to the walk.
            if started.is_err() {
                listings.lock().alive -= 1;
            }
        }
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

    /// A wide and deep tree: more directories than listers, some empty, a symlink to a
    /// directory (not descended into) and a file in each; 31 directories.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for a in 0..3 {
            for b in 0..3 {
                let d = dir.path().join(format!("d{a}/e{b}/f"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("x"), b"x").unwrap();
                fs::create_dir_all(dir.path().join(format!("d{a}/empty{b}"))).unwrap();
            }
            std::os::unix::fs::symlink("..", dir.path().join(format!("d{a}/up"))).unwrap();
        }
        dir
    }

    /// The walk's view and how many directories it read itself, and how many were read.
    fn walk(root: &Path, listers: usize, limit: usize) -> (Vec<String>, usize, usize) {
        let mut seen = Vec::new();
        let here = with_listers(root, listers, limit, |l| {
            listed_here(l, root, &mut seen);
            let s = l.lock();
            // Every listing read was taken: none read twice and kept.
            assert!(s.ready.is_empty() && s.ahead == 0);
            (s.walked_in, s.listed)
        });
        (seen, here.0, here.1)
    }

    #[test]
    fn a_tree_listed_ahead_is_walked_as_one_read_directory_by_directory() {
        let dir = tree();
        let mut plain = Vec::new();
        listed_plainly(dir.path(), &mut plain);
        // Each d{a} itself, four entries for each e{b} and empty{b}, and the symlink.
        assert_eq!(plain.len(), 3 * (1 + 3 * 4 + 1));
        // The listers read every directory, each once, and the walk none.
        assert_eq!(walk(dir.path(), 2, AHEAD), (plain.clone(), 0, 31));
        // Without listers, or with listers held to a few entries ahead, the walk reads what
        // they do not; each directory is still read once and seen as it is.
        assert_eq!(walk(dir.path(), 0, AHEAD), (plain.clone(), 31, 31));
        for limit in [1, 3] {
            let (seen, here, read) = walk(dir.path(), 2, limit);
            assert_eq!(seen, plain, "limit {limit}");
            assert!(
                read >= 31 && read - here <= 31,
                "limit {limit}: {here} of {read}"
            );
        }
    }

    #[test]
    fn the_listers_stop_when_the_walk_ends_or_fails() {
        let dir = tree();
        // A walk that stops after the root: the listers stop too (the scope ends).
        let n = with_listers(dir.path(), 2, AHEAD, |l| l.take(dir.path()).unwrap().len());
        assert_eq!(n, 3);
        // A stopped lister reads nothing more.
        let l = Listings::new(dir.path(), AHEAD);
        l.lock().alive = 1;
        l.stop();
        l.lister();
        let s = l.lock();
        assert_eq!((s.listed, s.alive), (0, 0));
        drop(s);
        // A lister skips a directory the walk read itself, and keeps nothing of it.
        let l = Listings::new(dir.path(), AHEAD);
        {
            let mut s = l.lock();
            s.alive = 1;
            s.read_here.insert(dir.path().to_path_buf());
        }
        l.lister();
        let s = l.lock();
        assert_eq!((s.listed, s.ready.len(), s.ahead, s.alive), (0, 0, 0, 0));
        drop(s);
        // A walk that panics ends the listers and reaches the caller.
        let panicked = std::panic::catch_unwind(|| {
            with_listers(dir.path(), 2, AHEAD, |_| panic!("the walk failed"))
        });
        assert!(panicked.is_err());
        // A root that is gone is the walk's error.
        let gone = dir.path().join("gone");
        let e = with_listers(&gone, 2, AHEAD, |l| l.take(&gone).err().map(|e| e.kind()));
        assert_eq!(e, Some(io::ErrorKind::NotFound));
    }
}
