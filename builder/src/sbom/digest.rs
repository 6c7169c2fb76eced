//! The digests of the image's regular files, read from where the plan takes their bodies.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::archive::Content;

/// A file's sha256 and sha1 (SPDX asks for the second), lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub sha1: String,
}

/// The digests of `contents`, in order, computed on `threads` threads. The error names the
/// host file that could not be read.
pub fn all(contents: &[&Content], threads: usize) -> Result<Vec<Digests>, (PathBuf, io::Error)> {
    let threads = threads.clamp(1, 16).min(contents.len().max(1));
    let chunk = contents.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = contents
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|c| one(c)).collect::<Result<Vec<_>, _>>()))
            .collect();
        let mut out = Vec::with_capacity(contents.len());
        for w in workers {
            out.extend(w.join().expect("a digest worker does not panic")?);
        }
        Ok(out)
    })
}

/// The digests of one body.
pub fn one(c: &Content) -> Result<Digests, (PathBuf, io::Error)> {
    let mut h = Hashers::default();
    match c {
        Content::Empty => {}
        Content::Bytes(b) => h.update(b),
        Content::Path { path, size } => {
            let f = File::open(path).map_err(|e| (path.clone(), e))?;
            h.read_all(f.take(*size)).map_err(|e| (path.clone(), e))?;
        }
        Content::Slice { path, offset, size } => {
            let err = |e| (path.to_path_buf(), e);
            let mut f = File::open(path).map_err(err)?;
            f.seek(SeekFrom::Start(*offset)).map_err(err)?;
            h.read_all(f.take(*size)).map_err(err)?;
        }
    }
    Ok(h.finish())
}

/// The first `limit` bytes of a body, when it can be read.
pub fn read(c: &Content, limit: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match c {
        Content::Empty => {}
        Content::Bytes(b) => out.extend_from_slice(&b[..b.len().min(limit as usize)]),
        Content::Path { path, size } => {
            File::open(path)
                .ok()?
                .take((*size).min(limit))
                .read_to_end(&mut out)
                .ok()?;
        }
        Content::Slice { path, offset, size } => {
            let mut f = File::open(path).ok()?;
            f.seek(SeekFrom::Start(*offset)).ok()?;
            f.take((*size).min(limit)).read_to_end(&mut out).ok()?;
        }
    }
    Some(out)
}

/// sha256 and sha1 over the same bytes.
#[derive(Default)]
pub struct Hashers {
    sha256: Sha256,
    sha1: Sha1,
}

impl Hashers {
    pub fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        self.sha1.update(b);
    }

    pub fn read_all(&mut self, mut r: impl Read) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: hex::encode(self.sha256.finalize()),
            sha1: hex::encode(self.sha1.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_kind_of_body_is_hashed_and_order_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"xxhelloyy").unwrap();
        let contents = [
            Content::Empty,
            Content::Bytes(Arc::from(&b"hello"[..])),
            Content::Path {
                path: p.clone(),
                size: 9,
            },
            Content::Slice {
                path: Arc::from(p.as_path()),
                offset: 2,
                size: 5,
            },
        ];
        let refs: Vec<&Content> = contents.iter().collect();
        let d = all(&refs, 3).unwrap();
        let hello = hex::encode(Sha256::digest(b"hello"));
        assert_eq!(d[0].sha256, hex::encode(Sha256::digest(b"")));
        assert_eq!(d[1].sha256, hello);
        assert_eq!(d[2].sha256, hex::encode(Sha256::digest(b"xxhelloyy")));
        assert_eq!(d[3].sha256, hello, "a slice hashes its bytes only");
        assert_eq!(d[1].sha1, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
        let missing = Content::Path {
            path: dir.path().join("gone"),
            size: 1,
        };
        assert_eq!(one(&missing).unwrap_err().0, dir.path().join("gone"));
    }
}
