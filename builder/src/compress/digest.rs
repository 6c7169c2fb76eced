//! The digest of a segment: each body of its newc bytes hashed once, and the segment's digest
//! made of the bytes around the bodies with each body's sha256 in its place.
//!
//! One pass over the data gives the segment cache its key and the SBOM and the provenance
//! their file digests, where hashing the segment and then every file would read each byte
//! twice. Two archives with the same digest are the same bytes (short of a sha256 collision):
//! the bytes around the bodies are hashed as they are, and a body's length is in the header
//! hashed before it. [`SegmentDigest`] follows the newc layout of whatever it is fed, so the
//! bytes a cached member decompresses to are checked by the same rule that keyed them; bytes
//! that are not newc (a forged member) are hashed as they are, and cannot match.

use std::io::{self, Write};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::archive::TRAILER;

/// The digests of one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDigest {
    pub sha256: [u8; 32],
    /// When asked for ([`super::Options::body_sha1`]).
    pub sha1: Option<[u8; 20]>,
}

/// newc header length.
const HEADER: usize = 110;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a header's bytes.
    Header,
    /// In a member's name and padding; the name is collected to see the trailer.
    Name {
        left: u64,
    },
    Body {
        left: u64,
    },
    Pad {
        left: u64,
    },
    /// After the trailer, or after bytes that are not newc: hashed as they are.
    Raw,
}

/// A `Write` that digests a newc archive as the module doc says.
pub(crate) struct SegmentDigest {
    segment: Sha256,
    body: Sha256,
    body_sha1: Option<Sha1>,
    state: State,
    header: [u8; HEADER],
    filled: usize,
    name: Vec<u8>,
    /// Body length and padding of the member whose name is being read.
    pending: (u64, u64),
    /// Members seen, counting from 0.
    member: usize,
    bodies: Vec<(usize, BodyDigest)>,
}

impl SegmentDigest {
    pub fn new(sha1: bool) -> SegmentDigest {
        SegmentDigest {
            segment: Sha256::new(),
            body: Sha256::new(),
            body_sha1: sha1.then(Sha1::new),
            state: State::Header,
            header: [0; HEADER],
            filled: 0,
            name: Vec::new(),
            pending: (0, 0),
            member: 0,
            bodies: Vec::new(),
        }
    }

    /// The segment's digest, and the digest of every non-empty body by the index of its member.
    pub fn finish(self) -> ([u8; 32], Vec<(usize, BodyDigest)>) {
        (self.segment.finalize().into(), self.bodies)
    }

    fn header_done(&mut self) {
        let h = &self.header;
        let field = |i: usize| {
            std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i])
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
        };
        let (Some(size), Some(namesize)) = (field(6), field(11)) else {
            self.state = State::Raw;
            return;
        };
        if &h[..6] != b"070701" {
            self.state = State::Raw;
            return;
        }
        let name_end = pad4(HEADER as u64 + u64::from(namesize));
        let size = u64::from(size);
        self.pending = (size, pad4(size) - size);
        self.name.clear();
        self.state = State::Name {
            left: name_end - HEADER as u64,
        };
    }

    fn name_done(&mut self) {
        let name = self.name.split(|&b| b == 0).next().unwrap_or(&[]);
        if name == TRAILER.as_bytes() {
            self.state = State::Raw;
            return;
        }
        // An empty body has no padding either.
        self.state = match self.pending.0 {
            0 => {
                self.member += 1;
                State::Header
            }
            size => State::Body { left: size },
        };
    }

    fn body_done(&mut self) {
        let sha256: [u8; 32] = std::mem::take(&mut self.body).finalize().into();
        let sha1 = self
            .body_sha1
            .as_mut()
            .map(|h| std::mem::take(h).finalize().into());
        self.segment.update(sha256);
        self.bodies.push((self.member, BodyDigest { sha256, sha1 }));
        self.member += 1;
        let pad = self.pending.1;
        self.state = if pad > 0 {
            State::Pad { left: pad }
        } else {
            State::Header
        };
    }
}

fn pad4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

/// The first `left` bytes of `b`, at most.
fn upto(b: &[u8], left: u64) -> usize {
    usize::try_from(left).map_or(b.len(), |l| l.min(b.len()))
}

impl Write for SegmentDigest {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let mut rest = b;
        while !rest.is_empty() {
            match self.state {
                State::Header => {
                    let n = (HEADER - self.filled).min(rest.len());
                    self.header[self.filled..self.filled + n].copy_from_slice(&rest[..n]);
                    self.segment.update(&rest[..n]);
                    self.filled += n;
                    rest = &rest[n..];
                    if self.filled == HEADER {
                        self.filled = 0;
                        self.header_done();
                    }
                }
                State::Name { left } => {
                    let n = upto(rest, left);
                    // A name is at most a page; longer ones are not ours and need no keeping.
                    if self.name.len() < 4096 {
                        self.name.extend_from_slice(&rest[..n]);
                    }
                    self.segment.update(&rest[..n]);
                    rest = &rest[n..];
                    if left == n as u64 {
                        self.name_done();
                    } else {
                        self.state = State::Name {
                            left: left - n as u64,
                        };
                    }
                }
                State::Body { left } => {
                    let n = upto(rest, left);
                    self.body.update(&rest[..n]);
                    if let Some(h) = self.body_sha1.as_mut() {
                        h.update(&rest[..n]);
                    }
                    rest = &rest[n..];
                    if left == n as u64 {
                        self.body_done();
                    } else {
                        self.state = State::Body {
                            left: left - n as u64,
                        };
                    }
                }
                State::Pad { left } => {
                    let n = upto(rest, left);
                    self.segment.update(&rest[..n]);
                    rest = &rest[n..];
                    self.state = if left == n as u64 {
                        State::Header
                    } else {
                        State::Pad {
                            left: left - n as u64,
                        }
                    };
                }
                State::Raw => {
                    self.segment.update(rest);
                    rest = &[];
                }
            }
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Content, Entry, Kind, NewcWriter};
    use std::sync::Arc;

    fn file(path: &str, body: &[u8], ino: u32) -> Entry {
        Entry {
            path: crate::archive::Name::new(path),
            kind: if body.is_empty() {
                Kind::File(Content::Empty)
            } else {
                Kind::File(Content::Bytes(Arc::from(body)))
            },
            perm: 0o644,
            uid: 0,
            gid: 0,
            ino,
            nlink: 1,
            mtime: 0,
        }
    }

    fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = NewcWriter::new(&mut out);
        for e in entries {
            w.append(e).unwrap();
        }
        w.finish().unwrap();
        out
    }

    fn digest(bytes: &[u8], step: usize) -> ([u8; 32], Vec<(usize, BodyDigest)>) {
        let mut d = SegmentDigest::new(true);
        for part in bytes.chunks(step) {
            d.write_all(part).unwrap();
        }
        d.finish()
    }

    #[test]
    fn bodies_are_found_by_member_whatever_the_write_sizes() {
        let entries = [
            file("a", b"hello", 1),
            file("empty", b"", 2),
            file("dir/b", &[7u8; 5000], 3),
        ];
        let bytes = archive(&entries);
        let (whole, bodies) = digest(&bytes, bytes.len());
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        assert_eq!(bodies[0].0, 0);
        assert_eq!(bodies[1].0, 2);
        assert_eq!(
            bodies[0].1.sha256,
            <[u8; 32]>::from(Sha256::digest(b"hello"))
        );
        assert_eq!(
            bodies[1].1.sha1,
            Some(<[u8; 20]>::from(Sha1::digest([7u8; 5000])))
        );
        for step in [1, 3, 110, 111, 4096] {
            assert_eq!(digest(&bytes, step), (whole, bodies.clone()), "step {step}");
        }
    }

    #[test]
    fn any_changed_byte_changes_the_digest() {
        let entries = [file("a", b"hello", 1), file("bb", b"world!", 2)];
        let bytes = archive(&entries);
        let (whole, _) = digest(&bytes, 64);
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 1;
            assert_ne!(digest(&changed, 64).0, whole, "byte {i} of {}", bytes.len());
        }
        assert_ne!(digest(&bytes[..bytes.len() - 1], 64).0, whole);
    }
}
