//! Segment planning: where the entry list is cut into independent newc archives.
//!
//! Every segment becomes one complete archive with its own trailer, compressed as one member
//! (gzip member, zstd frame, xz stream, lz4 blocks). The kernel's unpacker needs each compressed
//! member to end right after a trailer (`init/initramfs.c`: "junk at the end of compressed
//! archive") and forgets hardlinks at every trailer, so a cut never falls inside a hardlink group.
//! The plan depends only on the entries and the target size, never on the thread count.

use std::collections::HashMap;
use std::ops::Range;

use crate::archive::{archive_len, Entry, Kind, TRAILER_LEN};

/// One planned archive: a run of entries and the exact size of the newc bytes it encodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub range: Range<usize>,
    pub raw_len: u64,
}

/// Cuts `entries` into segments whose archives stay within `target` bytes where possible.
///
/// A segment grows past `target` only when a single entry is larger (it then gets a segment of
/// its own) or when a hardlink group spans the cut. An empty list gives one empty segment, so
/// the image is still a valid archive holding only the trailer.
pub(crate) fn plan(entries: &[Entry], target: u64) -> Vec<Segment> {
    // Last index of each hardlink group: the kernel links regular files with nlink >= 2 that
    // share an inode number, and only within one archive.
    let mut group_end: HashMap<u32, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.nlink > 1 && matches!(e.kind, Kind::File(_)) {
            group_end.insert(e.ino, i);
        }
    }

    let mut out = Vec::new();
    let mut start = 0usize;
    let mut open_until = 0usize; // a cut before index i is allowed when open_until < i
    let mut body = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let len = e.encoded_len();
        let can_cut = i > start && open_until < i;
        if can_cut && member_len(body + len) > target {
            out.push(segment(entries, start..i));
            start = i;
            body = 0;
        }
        body += len;
        if let Some(&end) = group_end.get(&e.ino) {
            if e.nlink > 1 && matches!(e.kind, Kind::File(_)) {
                open_until = open_until.max(end);
            }
        }
    }
    out.push(segment(entries, start..entries.len()));
    out
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
            path: path.to_string(),
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

    #[test]
    fn cuts_near_target_and_isolates_big_entries() {
        let mut e: Vec<Entry> = (0..40)
            .map(|i| file(&format!("f{i}"), 1000, i + 1, 1))
            .collect();
        e.insert(10, file("big", 50_000, 100, 1));
        let segs = plan(&e, 8192);
        covers_all(&segs, e.len());
        assert!(segs.len() > 5, "{segs:?}");
        for s in &segs {
            let single = s.range.len() == 1;
            assert!(s.raw_len <= 8192 || single, "oversized segment {s:?}");
            assert_eq!(s.raw_len, archive_len(&e[s.range.clone()]));
        }
        assert!(segs.iter().any(|s| s.range == (10..11)), "{segs:?}");
    }

    #[test]
    fn never_splits_a_hardlink_group() {
        // Group ino 7: entries 2 (empty) and 9 (carries the body), with big files between.
        let mut e: Vec<Entry> = (0..12)
            .map(|i| file(&format!("f{i:02}"), 3000, i + 20, 1))
            .collect();
        e[2] = file("f02", 0, 7, 2);
        e[9] = file("f09", 3000, 7, 2);
        let segs = plan(&e, 4096);
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
    fn empty_list_is_one_trailer_only_segment() {
        assert_eq!(
            plan(&[], 4096),
            vec![Segment {
                range: 0..0,
                raw_len: 512
            }]
        );
    }
}
