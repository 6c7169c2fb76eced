//! Segment planning: where the entry list is cut into independent newc archives.
//!
//! Every segment becomes one complete archive with its own trailer, compressed as one member
//! (gzip member, zstd frame, xz stream, lz4 blocks). The kernel's unpacker needs each compressed
//! member to end right after a trailer (`init/initramfs.c`: "junk at the end of compressed
//! archive") and forgets hardlinks at every trailer, so a cut never falls inside a hardlink group.
//!
//! Cuts are content-defined, so they stay put when one file changes and a rebuild finds every
//! other segment in the cache: after each entry, a hash of the entry's path decides whether to
//! cut there, with a chance of `entry size / average` (each byte of the stream has the same
//! chance to end a segment, as in byte-level content-defined chunking), but never before the
//! segment holds [`Limits::min`] bytes, and always before it would pass [`Limits::max`]. A
//! changed file moves at most the cuts next to it (its size enters the min/max checks); an
//! added or removed file adds or removes its own chance to cut. The plan depends only on the
//! entries' paths, sizes and hardlink groups, never on the thread count.

use std::collections::HashMap;
use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::archive::{archive_len, Entry, Kind, TRAILER_LEN};

/// One planned archive: a run of entries and the exact size of the newc bytes it encodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub range: Range<usize>,
    pub raw_len: u64,
}

/// Segment sizes in archive bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// No content-defined cut before a segment holds this many bytes.
    pub min: u64,
    /// Mean distance between content-defined cuts past `min`.
    pub average: u64,
    /// A segment grows past this only when one entry (or one hardlink group) is larger.
    pub max: u64,
}

impl Limits {
    /// No cut at all: one segment.
    pub const UNCUT: Limits = Limits {
        min: u64::MAX,
        average: u64::MAX,
        max: u64::MAX,
    };
}

/// Cuts `entries` into segments as the module doc describes.
///
/// An empty list gives one empty segment, so the image is still a valid archive holding only
/// the trailer.
pub(crate) fn plan(entries: &[Entry], limits: Limits) -> Vec<Segment> {
    let group_end = hardlink_group_ends(entries);
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut open_until = 0usize; // a cut before index i is allowed when open_until < i
    let mut body = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let len = e.encoded_len();
        if i > start && open_until < i && member_len(body + len) > limits.max {
            out.push(segment(entries, start..i));
            start = i;
            body = 0;
        }
        body += len;
        if let Some(&end) = group_end.get(&e.ino).filter(|_| in_group(e)) {
            open_until = open_until.max(end);
        }
        if open_until <= i && body >= limits.min && cuts_after(e, len, limits.average) {
            out.push(segment(entries, start..i + 1));
            start = i + 1;
            body = 0;
        }
    }
    if start < entries.len() || out.is_empty() {
        out.push(segment(entries, start..entries.len()));
    }
    out
}

/// Last index of each hardlink group: the kernel links regular files with nlink >= 2 that
/// share an inode number, and only within one archive.
fn hardlink_group_ends(entries: &[Entry]) -> HashMap<u32, usize> {
    let mut group_end = HashMap::new();
    for (i, e) in entries.iter().enumerate().filter(|(_, e)| in_group(e)) {
        group_end.insert(e.ino, i);
    }
    group_end
}

fn in_group(e: &Entry) -> bool {
    e.nlink > 1 && matches!(e.kind, Kind::File(_))
}

/// Whether the content-defined rule cuts after `e`: true with a chance of `len / average`,
/// decided by a hash of the path (stable across builds, machines and versions of the file).
fn cuts_after(e: &Entry, len: u64, average: u64) -> bool {
    let digest = Sha256::digest(e.path.as_bytes());
    let h = u64::from_le_bytes(digest[..8].try_into().expect("a sha256 has 8 bytes"));
    // h / 2^64 < len / average, without overflow.
    u128::from(h) * u128::from(average) < u128::from(len) << 64
}

fn segment(entries: &[Entry], range: Range<usize>) -> Segment {
    let raw_len = archive_len(&entries[range.clone()]);
    Segment { range, raw_len }
}

/// Archive size for entries whose encoded lengths sum to `body`.
fn member_len(body: u64) -> u64 {
    // Same arithmetic as `archive_len`: trailer entry then padding to 512.
    (body + TRAILER_LEN).div_ceil(512) * 512
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Content;
    use std::sync::Arc;

    fn file(path: &str, size: usize, ino: u32, nlink: u32) -> Entry {
        let content = if size == 0 {
            Content::Empty
        } else {
            Content::Bytes(Arc::from(vec![b'x'; size]))
        };
        Entry {
            path: crate::archive::Name::new(path),
            kind: Kind::File(content),
            perm: 0o644,
            uid: 0,
            gid: 0,
            ino,
            nlink,
            mtime: 0,
        }
    }

    fn covers_all(segs: &[Segment], n: usize) {
        let mut next = 0;
        for s in segs {
            assert_eq!(s.range.start, next, "segments must be contiguous: {segs:?}");
            next = s.range.end;
        }
        assert_eq!(next, n, "segments must cover every entry");
    }

    #[test]
    fn member_len_matches_archive_len() {
        for n in [0usize, 1, 5, 300, 1000] {
            let e = vec![file("a", n, 1, 1), file("bb", n / 2, 2, 1)];
            let body: u64 = e.iter().map(Entry::encoded_len).sum();
            assert_eq!(member_len(body), archive_len(&e), "size {n}");
        }
    }

    const LIMITS: Limits = Limits {
        min: 2048,
        average: 8192,
        max: 32768,
    };

    /// Files of varied sizes (pseudo-random but fixed), paths in order.
    fn files(n: u32) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                file(
                    &format!("f{i:05}"),
                    200 + (i as usize * 7919) % 3000,
                    i + 1,
                    1,
                )
            })
            .collect()
    }

    /// Segments as the paths they start with, for comparing plans of different lists.
    fn starts(e: &[Entry], segs: &[Segment]) -> std::collections::BTreeSet<String> {
        segs.iter()
            .map(|s| e[s.range.start].path.to_string())
            .collect()
    }

    #[test]
    fn cuts_within_limits_and_isolate_big_entries() {
        let mut e = files(400);
        e.insert(100, file("f00099-big", 50_000, 1000, 1));
        let segs = plan(&e, LIMITS);
        covers_all(&segs, e.len());
        assert!(segs.len() > 10, "{segs:?}");
        let mean = segs.iter().map(|s| s.raw_len).sum::<u64>() / segs.len() as u64;
        assert!((4096..=20_000).contains(&mean), "mean segment {mean}");
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s.raw_len, archive_len(&e[s.range.clone()]), "segment {i}");
            let single = s.range.len() == 1;
            assert!(
                s.raw_len <= LIMITS.max || single,
                "segment {i} oversized: {s:?}"
            );
            let body: u64 = e[s.range.clone()].iter().map(Entry::encoded_len).sum();
            let next_forced = segs
                .get(i + 1)
                .is_none_or(|n| member_len(body + e[n.range.start].encoded_len()) > LIMITS.max);
            assert!(
                body >= LIMITS.min || next_forced,
                "segment {i} undersized: {s:?}"
            );
        }
        assert!(segs.iter().any(|s| s.range == (100..101)), "{segs:?}");
    }

    #[test]
    fn a_changed_or_added_file_moves_only_nearby_cuts() {
        let e = files(2000);
        let before = starts(&e, &plan(&e, LIMITS));
        assert!(before.len() > 50, "{} segments", before.len());
        for (name, after) in [
            ("grown", {
                let mut e = e.clone();
                e[1000] = file("f01000", 2900, 1001, 1);
                e
            }),
            ("added", {
                let mut e = e.clone();
                e.insert(1000, file("f00999-new", 1500, 5000, 1));
                e
            }),
            ("removed", {
                let mut e = e.clone();
                e.remove(1000);
                e
            }),
        ] {
            let now = starts(&after, &plan(&after, LIMITS));
            let moved = before.symmetric_difference(&now).count();
            assert!(moved <= 4, "{name}: {moved} cuts moved");
        }
    }

    #[test]
    fn never_splits_a_hardlink_group() {
        // Group ino 7: entries 2 (empty) and 9 (carries the body), with big files between.
        let mut e: Vec<Entry> = (0..12)
            .map(|i| file(&format!("f{i:02}"), 3000, i + 20, 1))
            .collect();
        e[2] = file("f02", 0, 7, 2);
        e[9] = file("f09", 3000, 7, 2);
        let limits = Limits {
            min: 0,
            average: 1,
            max: 4096,
        };
        let segs = plan(&e, limits);
        covers_all(&segs, e.len());
        let holder = segs
            .iter()
            .find(|s| s.range.contains(&2))
            .expect("entry 2 is planned");
        assert!(holder.range.contains(&9), "group split: {segs:?}");
        assert!(
            segs.len() > 2,
            "cuts outside the group still happen: {segs:?}"
        );
    }

    #[test]
    fn whole_is_one_segment_and_empty_is_a_trailer() {
        let e = files(300);
        let whole = Limits {
            min: u64::MAX,
            average: u64::MAX,
            max: u64::MAX,
        };
        assert_eq!(plan(&e, whole), vec![segment(&e, 0..300)]);
        assert_eq!(
            plan(&[], LIMITS),
            vec![Segment {
                range: 0..0,
                raw_len: 512
            }]
        );
    }
}
