//! The content-addressed blob store, `<cache>/blobs/<sha256 hex>`: the one place downloads
//! (busybox, the agent), registry manifests and image configs are kept.
//!
//! One writer: [`BlobStore::writer`] hashes a blob as it is written into a temporary file of
//! [`crate::output`] and names it by its digest only when it is complete (and, when a digest
//! was expected, only when it matches). One reader: [`BlobStore::verified`] and
//! [`BlobStore::read`] hash a blob again before handing it out; one that does not match its
//! name is removed and taken as absent, so a damaged or forged entry is fetched again.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::hashing::{sha256_reader, Hashing};
use crate::output::Pending;

/// `<cache>/blobs`.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

/// A blob written and named by its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub path: PathBuf,
    /// Lowercase hex sha256.
    pub hex: String,
    pub size: u64,
}

/// Why [`BlobWriter::commit`] stored nothing.
#[derive(Debug)]
pub enum CommitError {
    /// The bytes hash to `actual`, not to what was expected.
    Mismatch {
        actual: String,
    },
    Io(io::Error),
}

impl BlobStore {
    /// The store of the cache directory `cache`.
    pub fn new(cache: &Path) -> BlobStore {
        BlobStore {
            dir: cache.join("blobs"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `hex` lives (present or not).
    pub fn path(&self, hex: &str) -> PathBuf {
        self.dir.join(hex)
    }

    /// The blob `hex` when it is present and its bytes hash to its name: path and size. A
    /// blob that does not is removed.
    pub fn verified(&self, hex: &str) -> Option<(PathBuf, u64)> {
        let path = self.path(hex);
        let mut f = File::open(&path).ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let (digest, size) = sha256_reader(&mut f).ok()?;
        self.keep_if(&path, hex, &hex::encode(digest))
            .then_some((path, size))
    }

    /// The bytes of the blob `hex` when present, at most `max` bytes long and intact.
    pub fn read(&self, hex: &str, max: u64) -> Option<Vec<u8>> {
        let path = self.path(hex);
        let mut bytes = Vec::new();
        File::open(&path)
            .ok()?
            .take(max + 1)
            .read_to_end(&mut bytes)
            .ok()?;
        if bytes.len() as u64 > max {
            return None;
        }
        let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        self.keep_if(&path, hex, &actual).then_some(bytes)
    }

    fn keep_if(&self, path: &Path, hex: &str, actual: &str) -> bool {
        if actual == hex {
            return true;
        }
        log::warn!(
            "cache: {} does not match its name (its bytes hash to {actual}); removing it",
            path.display()
        );
        let _ = fs::remove_file(path);
        false
    }

    /// Stores `bytes`; returns where.
    pub fn put(&self, bytes: &[u8]) -> io::Result<Stored> {
        let mut w = self.writer()?;
        w.write_all(bytes)?;
        w.commit(None).map_err(|e| match e {
            CommitError::Io(e) => e,
            CommitError::Mismatch { .. } => unreachable!("nothing was expected"),
        })
    }

    /// A writer of one blob; temporary files a killed build left in the store go first.
    pub fn writer(&self) -> io::Result<BlobWriter> {
        // Named by its digest once complete.
        let pending = Pending::create(&self.dir.join("download"))?;
        Ok(BlobWriter {
            out: Hashing::new(pending),
        })
    }
}

/// A blob being written; nothing is stored unless [`BlobWriter::commit`] succeeds.
pub struct BlobWriter {
    out: Hashing<Pending>,
}

impl Write for BlobWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.out.write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl BlobWriter {
    /// Names the blob by its digest; with `expected`, only when it matches (else nothing is
    /// kept).
    pub fn commit(self, expected: Option<&str>) -> Result<Stored, CommitError> {
        let size = self.out.passed();
        let (digest, mut pending) = self.out.into_parts();
        let hex = hex::encode(digest);
        if expected.is_some_and(|want| want != hex) {
            return Err(CommitError::Mismatch { actual: hex });
        }
        let path = pending.path().with_file_name(&hex);
        pending.rename_to(&path);
        crate::output::commit(vec![pending]).map_err(|(_, e)| CommitError::Io(e))?;
        Ok(Stored { path, hex, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_named_by_its_digest_and_a_changed_one_is_not_handed_out() {
        let cache = tempfile::tempdir().unwrap();
        let store = BlobStore::new(cache.path());
        let s = store.put(b"blob bytes").unwrap();
        assert_eq!(
            s.hex,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"blob bytes"))
        );
        assert_eq!(store.read(&s.hex, 100).as_deref(), Some(&b"blob bytes"[..]));
        assert_eq!(store.verified(&s.hex), Some((s.path.clone(), 10)));
        assert_eq!(store.read(&s.hex, 5), None, "over the bound");
        fs::write(&s.path, b"forged").unwrap();
        assert_eq!(store.read(&s.hex, 100), None);
        assert!(!s.path.exists(), "a blob that does not match its name goes");

        let mut w = store.writer().unwrap();
        w.write_all(b"other").unwrap();
        let e = w.commit(Some(&"0".repeat(64))).unwrap_err();
        assert!(matches!(e, CommitError::Mismatch { .. }), "{e:?}");
        let left: Vec<_> = fs::read_dir(store.dir()).unwrap().flatten().collect();
        assert!(left.is_empty(), "nothing kept: {left:?}");
    }
}
