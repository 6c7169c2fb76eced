//! Every file fledge writes: written to a temporary file beside its final name, synced, and
//! renamed into place only when complete, so no reader ever sees half a file.
//!
//! This module owns every temporary file of the builder - outputs, downloads, cache blobs,
//! uncompressed layers, cached segments: one naming scheme (`.NAME.XXXXXX.tmp`, locked while
//! written), their cleanup (on drop, on SIGINT/SIGTERM/SIGHUP once [`clean_up_on_signals`]
//! runs, and stale ones a killed build left, by [`sweep`]), and the commit of a group of files
//! (image + manifest) as one step under a lock on their directory, with the directory synced
//! before success is reported; an image's data is written out while it is written
//! ([`Flushing`]), so that sync is short. Cache entries ([`Pending::cache_entry`]) skip the syncs: every
//! reader of the cache verifies what it reads. The scratch directories of `fledge run` and
//! `fledge verify --rebuild` ([`ScratchDir`]) follow the same naming and signal cleanup.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{flock, FlockOperation};

/// Temporary files being written now: removed if a signal ends the process.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Scratch directories in use now: removed, with what they hold, if a signal ends the process.
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Length of the random part tempfile puts in our names.
const RANDOM_LEN: usize = 6;

/// A file being written; nothing appears at its final name until [`commit`].
pub struct Pending {
    tmp: Option<tempfile::NamedTempFile>,
    path: PathBuf,
    mode: u32,
    replace: bool,
    /// Synced (data and directory) on commit.
    durable: bool,
    /// The sync [`Pending::sync_ahead`] started.
    syncing: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Pending {
    /// Starts writing `path` (mode 0644 once committed); stale temporary files of the same
    /// name go first.
    pub fn create(path: &Path) -> io::Result<Pending> {
        remove_stale(path);
        Self::start(path, true)
    }

    /// Starts writing a cache entry at `path`: like [`Pending::create`], but not synced on
    /// commit and without a look for stale files of its name (the cache's owner calls
    /// [`sweep`] once for its directory).
    pub fn cache_entry(path: &Path) -> io::Result<Pending> {
        Self::start(path, false)
    }

    fn start(path: &Path, durable: bool) -> io::Result<Pending> {
        let dir = parent(path);
        fs::create_dir_all(dir)?;
        let tmp = loop {
            let tmp = {
                // Created and registered under one lock, so a signal handler sees every file.
                let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
                let tmp = tempfile::Builder::new()
                    .prefix(&format!(".{}.", file_name(path)))
                    .suffix(".tmp")
                    .rand_bytes(RANDOM_LEN)
                    .tempfile_in(dir)?;
                live.push(tmp.path().to_path_buf());
                tmp
            };
            // Held while the file is written: tells another build the file is live. Another
            // build may have taken it for stale in the moment before: then it is gone; retry.
            flock(tmp.as_file(), FlockOperation::LockExclusive)?;
            if tmp.as_file().metadata()?.nlink() > 0 {
                break tmp;
            }
            track(tmp.path(), false);
        };
        Ok(Pending {
            tmp: Some(tmp),
            path: path.to_path_buf(),
            mode: 0o644,
            replace: true,
            durable,
            syncing: None,
        })
    }

    /// Changes the final name, in the same directory (a download named by its digest once
    /// it is complete).
    pub fn rename_to(&mut self, path: &Path) {
        debug_assert_eq!(parent(path), parent(&self.path));
        self.path = path.to_path_buf();
    }

    /// Permission bits of the committed file (0644 unless set).
    pub fn with_mode(mut self, mode: u32) -> Pending {
        self.mode = mode;
        self
    }

    /// The commit fails rather than replace a file at the final name.
    pub fn without_replacing(mut self) -> Pending {
        self.replace = false;
        self
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A writer to the file that, for a file synced on commit, has its data written out as it
    /// goes (see [`Flushing`]).
    pub fn flushing(&mut self) -> Flushing<'_> {
        let syncer = if self.durable {
            self.file().try_clone().ok().map(|copy| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
                let thread = std::thread::spawn(move || {
                    for () in rx {
                        // Ahead of time only: the sync on commit reports what fails.
                        let _ = copy.sync_data();
                    }
                });
                (tx, thread)
            })
        } else {
            None
        };
        Flushing {
            file: self.file(),
            unsynced: 0,
            syncer,
        }
    }

    /// The file to write to.
    pub fn file(&mut self) -> &mut File {
        self.tmp
            .as_mut()
            .expect("present until committed")
            .as_file_mut()
    }

    /// For a complete file: sets its final mode and starts the sync [`commit`] would make on
    /// a thread of its own, so that it runs while the build renders what comes next (and
    /// beside the syncs of the other files of the commit). Nothing may be written after it.
    pub fn sync_ahead(&mut self) -> io::Result<()> {
        if !self.durable || self.syncing.is_some() {
            return Ok(());
        }
        let f = self.file().try_clone()?;
        f.set_permissions(fs::Permissions::from_mode(self.mode))?;
        self.syncing = Some(std::thread::spawn(move || f.sync_all()));
        Ok(())
    }

    /// Syncs the data and sets the final mode (or waits for [`Pending::sync_ahead`]'s sync):
    /// done before any rename.
    fn finish(&mut self) -> io::Result<()> {
        if let Some(sync) = self.syncing.take() {
            return sync
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the thread syncing the file panicked")));
        }
        let f = self
            .tmp
            .as_ref()
            .expect("present until committed")
            .as_file();
        f.set_permissions(fs::Permissions::from_mode(self.mode))?;
        if self.durable {
            f.sync_all()?;
        }
        Ok(())
    }
}

impl io::Write for Pending {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.file().write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(t) = &self.tmp {
            track(t.path(), false);
        }
    }
}

/// A writer to a [`Pending`] file that asks a thread of its own to write the data out to disk
/// every [`FLUSH_EVERY`] bytes, so that the sync before the rename, after the last byte, finds
/// little left to do: a 60 MB image took 29 ms to sync there. Dropping it waits for that thread.
pub struct Flushing<'a> {
    file: &'a mut File,
    /// Bytes written since the last request.
    unsynced: u64,
    syncer: Option<(std::sync::mpsc::SyncSender<()>, std::thread::JoinHandle<()>)>,
}

/// How much a [`Flushing`] writer writes between two requests to write out.
const FLUSH_EVERY: u64 = 8 << 20;

impl io::Write for Flushing<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.file.write(b)?;
        self.unsynced += n as u64;
        if self.unsynced >= FLUSH_EVERY {
            self.unsynced = 0;
            if let Some((tx, _)) = &self.syncer {
                // Full: a sync is already asked for, and it will take these bytes too.
                let _ = tx.try_send(());
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl io::Seek for Flushing<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(to)
    }
}

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        if let Some((tx, thread)) = self.syncer.take() {
            drop(tx);
            let _ = thread.join();
        }
    }
}

/// Writes `bytes` to `path` atomically (one file of a group of one).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut p = Pending::create(path)?;
    io::Write::write_all(p.file(), bytes)?;
    commit(vec![p]).map_err(|(_, e)| e)
}

/// Renames every file into place, in order, under an exclusive lock on the directory of the
/// first, then syncs the directories: another build committing the same names waits, so a
/// group (image and manifest) is always one build's. On failure returns the path that failed.
pub fn commit(mut files: Vec<Pending>) -> Result<(), (PathBuf, io::Error)> {
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    for f in &mut files {
        f.finish().map_err(at(f.path()))?;
    }
    let Some(first) = files.first().map(|f| f.path().to_path_buf()) else {
        return Ok(());
    };
    let dir = File::open(parent(&first)).map_err(at(&first))?;
    flock(&dir, FlockOperation::LockExclusive).map_err(|e| at(&first)(e.into()))?;
    let durable = files.iter().any(|f| f.durable);
    let mut dirs = vec![parent(&first).to_path_buf()];
    for mut f in files {
        let tmp = f.tmp.take().expect("present until committed");
        track(tmp.path(), false);
        let done = if f.replace {
            tmp.persist(&f.path)
        } else {
            tmp.persist_noclobber(&f.path)
        };
        done.map_err(|e| (f.path.clone(), e.error))?;
        let d = parent(&f.path).to_path_buf();
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    if durable {
        for d in &dirs {
            File::open(d).and_then(|f| f.sync_all()).map_err(at(d))?;
        }
    }
    Ok(())
}

/// Removes the temporary files of `path` a killed build left: ours by name, and not locked by
/// a build still writing them.
fn remove_stale(path: &Path) {
    let prefix = format!(".{}.", file_name(path));
    remove_stale_in(parent(path), |name| {
        name.strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
            .is_some_and(is_random_part)
    });
}

/// Removes every temporary file of ours in `dir` that a killed build left (not locked by a
/// build still writing it). A missing directory holds none.
pub fn sweep(dir: &Path) {
    remove_stale_in(dir, is_temp_name);
}

fn remove_stale_in(dir: &Path, ours: impl Fn(&str) -> bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !ours(name) || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(f) = File::open(e.path()) else {
            continue;
        };
        if flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok() {
            log::debug!(
                "removing {}, left by an interrupted build",
                e.path().display()
            );
            let _ = fs::remove_file(e.path());
        }
    }
}

fn is_random_part(s: &str) -> bool {
    s.len() == RANDOM_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `name` is one of our temporary file names (`.NAME.XXXXXX.tmp`).
pub fn is_temp_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|r| r.strip_suffix(".tmp"))
        .and_then(|r| r.rsplit_once('.'))
        .is_some_and(|(n, random)| !n.is_empty() && is_random_part(random))
}

/// A scratch directory (`.WHAT.XXXXXX.tmp` in the system's temporary directory) that a
/// command builds into and reads back from: removed with its contents on drop, and on
/// SIGINT/SIGTERM/SIGHUP once [`clean_up_on_signals`] runs.
pub struct ScratchDir {
    dir: Option<tempfile::TempDir>,
}

impl ScratchDir {
    /// Creates the directory; `what` names it (`fledge-run`, `fledge-verify`).
    pub fn new(what: &str) -> io::Result<ScratchDir> {
        let mut live = LIVE_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{what}."))
            .suffix(".tmp")
            .rand_bytes(RANDOM_LEN)
            .tempdir()?;
        live.push(dir.path().to_path_buf());
        Ok(ScratchDir { dir: Some(dir) })
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until dropped").path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            let _ = dir.close();
            let mut live = LIVE_DIRS.lock().unwrap_or_else(|e| e.into_inner());
            live.retain(|p| *p != path);
        }
    }
}

fn track(path: &Path, live: bool) {
    let mut l = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if live {
        l.push(path.to_path_buf());
    } else {
        l.retain(|p| p != path);
    }
}

/// Removes the temporary files being written and exits 128+signal on SIGINT, SIGTERM or
/// SIGHUP (130, 143, 129). The CLI calls this once.
pub fn clean_up_on_signals() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            for p in live.iter() {
                let _ = fs::remove_file(p);
            }
            let dirs = LIVE_DIRS.lock().unwrap_or_else(|e| e.into_inner());
            for d in dirs.iter() {
                let _ = fs::remove_dir_all(d);
            }
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flushing_writer_writes_every_byte_where_asked() {
        use io::{Seek, Write};
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(FLUSH_EVERY * 2 + 12345))
            .map(|i| (i % 253) as u8)
            .collect();
        for (path, durable) in [
            (dir.path().join("out.img"), true),
            (dir.path().join("c"), false),
        ] {
            let mut p = if durable {
                Pending::create(&path).unwrap()
            } else {
                Pending::cache_entry(&path).unwrap()
            };
            {
                let mut w = p.flushing();
                assert_eq!(
                    w.syncer.is_some(),
                    durable,
                    "only a durable file is written out early"
                );
                for piece in data.chunks(1 << 20) {
                    w.write_all(piece).unwrap();
                }
                // A header written last, at the start (as squashfs does).
                w.seek(io::SeekFrom::Start(0)).unwrap();
                w.write_all(b"HEAD").unwrap();
            }
            commit(vec![p]).unwrap();
            let got = fs::read(&path).unwrap();
            assert_eq!(got.len(), data.len());
            assert_eq!(&got[..4], b"HEAD");
            assert!(
                got[4..] == data[4..],
                "{}: the bytes differ",
                path.display()
            );
        }
    }

    #[test]
    fn nothing_at_the_name_until_commit_and_no_temp_left() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("a.json"));
        let mut pa = Pending::create(&a).unwrap();
        let mut pb = Pending::create(&b).unwrap();
        io::Write::write_all(pa.file(), b"image").unwrap();
        io::Write::write_all(pb.file(), b"manifest").unwrap();
        assert!(!a.exists() && !b.exists());
        commit(vec![pa, pb]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"image");
        assert_eq!(fs::read(&b).unwrap(), b"manifest");
        let mode = fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let dropped = Pending::create(&dir.path().join("c")).unwrap();
        drop(dropped);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_file_synced_ahead_commits_with_its_mode_beside_one_synced_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("run.sh"), dir.path().join("b.json"));
        let mut pa = Pending::create(&a).unwrap().with_mode(0o755);
        let mut pb = Pending::create(&b).unwrap();
        io::Write::write_all(pa.file(), b"#!/bin/sh\n").unwrap();
        io::Write::write_all(pb.file(), b"{}").unwrap();
        pa.sync_ahead().unwrap();
        assert!(pa.syncing.is_some(), "a durable file is synced on a thread");
        assert!(!a.exists(), "nothing at the name before the commit");
        commit(vec![pa, pb]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(fs::read(&b).unwrap(), b"{}");
        let mut cache = Pending::cache_entry(&dir.path().join("c")).unwrap();
        cache.sync_ahead().unwrap();
        assert!(cache.syncing.is_none(), "a cache entry is never synced");
    }

    #[test]
    fn stale_temp_files_go_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.img");
        let stale = dir.path().join(".x.img.AbC123.tmp");
        let foreign = dir.path().join(".x.img.notours.tmp");
        fs::write(&stale, b"old").unwrap();
        fs::write(&foreign, b"keep").unwrap();
        let live = Pending::create(&out).unwrap();
        assert!(!stale.exists(), "a stale temporary file is removed");
        assert!(foreign.exists(), "a name not of our pattern is kept");
        let live_path = live.tmp.as_ref().unwrap().path().to_path_buf();
        let _second = Pending::create(&out).unwrap();
        assert!(live_path.exists(), "a locked, live temporary file is kept");
    }

    #[test]
    fn scratch_dirs_are_ours_and_go_on_drop() {
        let s = ScratchDir::new("fledge-test").unwrap();
        let path = s.path().to_path_buf();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(is_temp_name(&name), "{name}");
        assert!(name.starts_with(".fledge-test."), "{name}");
        fs::write(path.join("inside"), b"x").unwrap();
        assert!(LIVE_DIRS.lock().unwrap().contains(&path));
        drop(s);
        assert!(!path.exists());
        assert!(!LIVE_DIRS.lock().unwrap().contains(&path));
    }

    #[test]
    fn temp_names() {
        assert!(is_temp_name(".plugin.cpio.gz.Ab12Cd.tmp"));
        assert!(!is_temp_name(".plugin.cpio.gz.tmp"));
        assert!(!is_temp_name("plugin.Ab12Cd.tmp"));
        assert!(!is_temp_name(".Ab12Cd.tmp"));
    }
}
