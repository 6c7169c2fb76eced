//! The digests of the image's regular files, read from where the plan takes their bodies.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::archive::{Content, Entry, Kind};
use crate::compress::BodyDigest;

/// A file's sha256 and sha1 (SPDX asks for the second), lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub sha1: String,
}

/// The digests the image writer made of the bodies it wrote, by image path (no leading `/`),
/// so the SBOM and the provenance need not read those files again.
#[derive(Debug, Default)]
pub struct Known<'a>(HashMap<&'a str, BodyDigest>);

impl<'a> Known<'a> {
    /// From the entries as written and their bodies' digests (by entry index): an entry of a
    /// hardlink group has the digest of the group's body, which one of them carries.
    pub fn new(entries: &'a [Entry], bodies: &[Option<BodyDigest>]) -> Known<'a> {
        let group = |e: &Entry| e.nlink > 1 && matches!(e.kind, Kind::File(_));
        let by_ino: HashMap<u32, BodyDigest> = entries
            .iter()
            .zip(bodies)
            .filter_map(|(e, b)| Some((e.ino, (*b)?)).filter(|_| group(e)))
            .collect();
        let known = entries
            .iter()
            .zip(bodies)
            .filter_map(|(e, b)| {
                let d = b.or_else(|| by_ino.get(&e.ino).copied().filter(|_| group(e)))?;
                Some((&*e.path, d))
            })
            .collect();
        Known(known)
    }

    /// The digests of the body at image path `path` (with or without its leading `/`), when
    /// known with a sha1 or `sha1` is not needed (it is then empty).
    fn get(&self, path: &str, sha1: bool) -> Option<Digests> {
        let d = self.0.get(path.strip_prefix('/').unwrap_or(path))?;
        let sha1 = match d.sha1 {
            Some(s) => hex::encode(s),
            None if sha1 => return None,
            None => String::new(),
        };
        Some(Digests {
            sha256: hex::encode(d.sha256),
            sha1,
        })
    }
}

/// The digests of `files` (image path and body), in order: from `known`, else computed on
/// `threads` threads. `sha1` says whether the sha1 is needed (when not, a known digest's may
/// be empty). The error names the host file that could not be read.
pub fn all(
    files: &[(&str, &Content)],
    threads: usize,
    known: &Known,
    sha1: bool,
) -> Result<Vec<Digests>, (PathBuf, io::Error)> {
    let mut out: Vec<Option<Digests>> = files.iter().map(|(p, _)| known.get(p, sha1)).collect();
    let missing: Vec<(usize, &Content)> = files
        .iter()
        .enumerate()
        .filter(|(i, _)| out[*i].is_none())
        .map(|(i, (_, c))| (i, *c))
        .collect();
    let found = crate::util::map_on_threads(&missing, threads.clamp(1, 16), |(_, c)| one(c));
    for ((i, _), d) in missing.iter().zip(found) {
        out[*i] = Some(d?);
    }
    Ok(out
        .into_iter()
        .map(|d| d.expect("every body is known or computed"))
        .collect())
}

/// The digests of one body.
pub fn one(c: &Content) -> Result<Digests, (PathBuf, io::Error)> {
    let at = |e| (c.source().map(Path::to_path_buf).unwrap_or_default(), e);
    let mut h = Hashers::default();
    h.read_all(c.open().map_err(at)?).map_err(at)?;
    Ok(h.finish())
}

/// The first `limit` bytes of a body, when it can be read.
pub fn read(c: &Content, limit: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    c.open().ok()?.take(limit).read_to_end(&mut out).ok()?;
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
        let refs: Vec<(&str, &Content)> = contents.iter().map(|c| ("f", c)).collect();
        let d = all(&refs, 3, &Known::default(), true).unwrap();
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

    #[test]
    fn known_bodies_are_not_read_again_unless_a_sha1_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let gone = |n: &str| Content::Path {
            path: dir.path().join(n),
            size: 5,
        };
        let (a, b) = (gone("a"), gone("b"));
        let body = |sha1| BodyDigest {
            sha256: [1; 32],
            sha1,
        };
        let entry = |path: &str, ino, nlink, content: &Content| Entry {
            path: crate::archive::Name::new(path),
            kind: Kind::File(content.clone()),
            perm: 0o644,
            uid: 0,
            gid: 0,
            ino,
            nlink,
            mtime: 0,
        };
        // "link" is in "a"'s hardlink group and carries no body of its own.
        let entries = [
            entry("a", 7, 2, &a),
            entry("link", 7, 2, &Content::Empty),
            entry("b", 8, 1, &b),
        ];
        let known = Known::new(
            &entries,
            &[Some(body(Some([2; 20]))), None, Some(body(None))],
        );
        let files = [("/a", &a), ("/link", &a), ("/b", &b)];
        let d = all(&files, 2, &known, false).unwrap();
        assert!(
            d.iter().all(|d| d.sha256 == hex::encode([1u8; 32])),
            "{d:?}"
        );
        assert_eq!(d[1].sha1, hex::encode([2u8; 20]), "the group's digest");
        assert_eq!(d[2].sha1, "", "no sha1 was asked for");
        // With sha1s needed, "b" has none known and is read: it does not exist.
        let err = all(&files, 2, &known, true).unwrap_err();
        assert_eq!(err.0, dir.path().join("b"));
    }
}
