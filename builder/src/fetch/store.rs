//! The content-addressed blob store, `<cache>/blobs/<sha256 hex>`: the one place downloads
//! (busybox, the agent), registry manifests and image configs are kept, and the hashing reader
//! every stream of the builder is checked through ([`Hashing`]).
//!
//! One writer: [`BlobStore::writer`] hashes a blob as it is written into a temporary file of
//! [`crate::output`] and names it by its digest only when it is complete (and, when a digest
//! was expected, only when it matches). One reader: [`BlobStore::verified`] and
//! [`BlobStore::read`] hash a blob again before handing it out; one that does not match its
//! name is removed and taken as absent, so a damaged or forged entry is fetched again.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

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
        let actual = hex::encode(Sha256::digest(&bytes));
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
            pending,
            hasher: Sha256::new(),
            size: 0,
        })
    }
}

/// A blob being written; nothing is stored unless [`BlobWriter::commit`] succeeds.
pub struct BlobWriter {
    pending: Pending,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.pending.file().write(b)?;
        self.hasher.update(&b[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pending.file().flush()
    }
}

impl BlobWriter {
    /// Names the blob by its digest; with `expected`, only when it matches (else nothing is
    /// kept).
    pub fn commit(mut self, expected: Option<&str>) -> Result<Stored, CommitError> {
        let hex = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if expected.is_some_and(|want| want != hex) {
            return Err(CommitError::Mismatch { actual: hex });
        }
        let path = self.pending.path().with_file_name(&hex);
        self.pending.rename_to(&path);
        crate::output::commit(vec![self.pending]).map_err(|(_, e)| CommitError::Io(e))?;
        Ok(Stored {
            path,
            hex,
            size: self.size,
        })
    }
}

/// A reader that hashes what passes through and fails past a size limit.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    pub len: u64,
    limit: u64,
    /// Names the limit in the error ("32 GiB (FLEDGE_...)").
    limit_text: String,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Self::named(inner, limit, format!("{limit} bytes"))
    }

    /// With a limit that the error names as `limit_text`.
    pub fn named(inner: R, limit: u64, limit_text: String) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
            limit,
            limit_text,
        }
    }

    /// Reads what is left and returns the sha256 of everything read.
    pub fn finish(mut self) -> io::Result<[u8; 32]> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finalize().into())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        if self.len > self.limit {
            return Err(io::Error::other(format!("more than {}", self.limit_text)));
        }
        Ok(n)
    }
}

/// sha256 and length of everything `r` yields.
pub fn sha256_reader(r: &mut impl Read) -> io::Result<([u8; 32], u64)> {
    let mut h = Hashing::new(r, u64::MAX);
    io::copy(&mut h, &mut io::sink())?;
    let len = h.len;
    Ok((h.finish()?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_named_by_its_digest_and_a_changed_one_is_not_handed_out() {
        let cache = tempfile::tempdir().unwrap();
        let store = BlobStore::new(cache.path());
        let s = store.put(b"blob bytes").unwrap();
        assert_eq!(s.hex, hex::encode(Sha256::digest(b"blob bytes")));
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
