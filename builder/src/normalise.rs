//! The normaliser: turns a [`Plan`] into archive entries, the one place that fixes everything
//! the byte-for-byte reproducibility of an image depends on (owner, mtime, inode numbers,
//! hardlinks, order). See [`normalise`] for the guarantee.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use crate::archive::{Content, Entry, Kind, Name};
use crate::plan::{Plan, PlanError};

/// Turns a plan into archive entries, the one place that fixes everything reproducibility
/// depends on.
///
/// Guarantee: the result, and so the archive bytes, is a function of the plan's paths, kinds,
/// permission bits and file contents, and of `mtime` only. Owners are the planned ones (0:0 unless a source set another); every mtime is
/// `mtime`; entries are in byte order of their paths, which puts every directory before its
/// children; inode numbers come from a hash of each path ([`assign_inodes`]). With `dedup`, regular files of equal
/// content, permissions and owner become one newc hardlink group: they share the inode of the first,
/// and only the last of the group carries the body (the layout GNU cpio writes and the kernel
/// reads). The bodiless members move to just before that last one, so a group is contiguous
/// and never holds a long stretch of the archive in one compression segment (moving a file
/// later cannot put it before its parent).
pub fn normalise(plan: &Plan, mtime: u32, dedup: bool) -> Result<Vec<Entry>, PlanError> {
    let mut entries: Vec<Entry> = plan
        .nodes
        .iter()
        .map(|(path, node)| Entry {
            path: Name::shared(path),
            kind: node.kind.clone(),
            perm: node.perm,
            uid: node.uid,
            gid: node.gid,
            ino: 0,
            nlink: if matches!(node.kind, Kind::Dir) { 2 } else { 1 },
            mtime,
        })
        .collect();
    assign_inodes(&mut entries);
    if dedup {
        link_duplicates(&mut entries)?;
    }
    Ok(entries)
}

/// Inode numbers from a hash of each path (the next free number on a collision, never 0), so
/// adding or removing a file leaves every other entry's header, and so the compressed
/// segments a rebuild takes from the cache, as they were.
fn assign_inodes(entries: &mut [Entry]) {
    let mut used = std::collections::HashSet::with_capacity(entries.len());
    for e in entries {
        let d = Sha256::digest(e.path.as_bytes());
        let mut ino = u32::from_le_bytes([d[0], d[1], d[2], d[3]]).max(1);
        while !used.insert(ino) {
            ino = ino.checked_add(1).unwrap_or(1);
        }
        e.ino = ino;
    }
}

/// What files must share to be linked: size, permissions and owner (one inode has one
/// owner); `None` for entries without a body.
type LinkKey = (u64, u32, u32, u32);

fn link_key(e: &Entry) -> Option<LinkKey> {
    match &e.kind {
        Kind::File(c) if !c.is_empty() => Some((c.len(), e.perm, e.uid, e.gid)),
        _ => None,
    }
}

/// Groups regular files of the same size, content, permissions and owner into hardlinks.
fn link_duplicates(entries: &mut Vec<Entry>) -> Result<(), PlanError> {
    let mut by_key: HashMap<LinkKey, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(key) = link_key(e) {
            by_key.entry(key).or_default().push(i);
        }
    }
    // Files of one size are told apart by their first block, and only files that share it
    // are read whole: most same-size files differ early.
    let mut sized: Vec<usize> = by_key
        .into_values()
        .filter(|v| v.len() > 1)
        .flatten()
        .collect();
    // In entry order, so that of several unreadable files the first is the one named.
    sized.sort_unstable();
    let mut same_start: BTreeMap<(LinkKey, [u8; 32]), Vec<usize>> = BTreeMap::new();
    for (&i, h) in sized.iter().zip(content_hashes(entries, &sized, PREFIX)?) {
        let key = link_key(&entries[i]).expect("only files with a body are sized");
        same_start.entry((key, h)).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut to_read: Vec<Vec<usize>> = Vec::new();
    for (((size, ..), _), g) in same_start.into_iter().filter(|(_, v)| v.len() > 1) {
        if size <= PREFIX {
            groups.push(g);
        } else {
            to_read.push(g);
        }
    }
    let whole: Vec<usize> = to_read.iter().flatten().copied().collect();
    let mut hashes = content_hashes(entries, &whole, u64::MAX)?.into_iter();
    for g in to_read {
        let mut by_hash: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
        for i in g {
            let h = hashes.next().expect("one hash for each file read");
            by_hash.entry(h).or_default().push(i);
        }
        groups.extend(by_hash.into_values().filter(|v| v.len() > 1));
    }
    // Index of each group's last member -> the members that go just before it.
    let mut before: HashMap<usize, Vec<usize>> = HashMap::new();
    for mut g in groups {
        g.sort_unstable();
        let ino = entries[g[0]].ino;
        let n = g.len() as u32;
        let (last, rest) = g.split_last().expect("groups have two members or more");
        for &i in rest {
            entries[i].kind = Kind::File(Content::Empty);
        }
        for &i in rest.iter().chain([last]) {
            entries[i].ino = ino;
            entries[i].nlink = n;
        }
        before.insert(*last, rest.to_vec());
    }
    if before.is_empty() {
        return Ok(());
    }
    let moved: std::collections::HashSet<usize> = before.values().flatten().copied().collect();
    let mut slots: Vec<Option<Entry>> = std::mem::take(entries).into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(slots.len());
    for i in 0..slots.len() {
        if moved.contains(&i) {
            continue;
        }
        for &j in before.get(&i).map(Vec::as_slice).unwrap_or_default() {
            ordered.push(slots[j].take().expect("each member moves once"));
        }
        ordered.push(slots[i].take().expect("each entry is placed once"));
    }
    *entries = ordered;
    Ok(())
}

/// How much of each same-size file is compared first.
const PREFIX: u64 = 4096;

/// The sha256 of the first `limit` bytes of the body of each of `idxs`, in their order, read
/// on every core (the rest of the build waits for them). A file that cannot be read fails it,
/// the first in `idxs` order when several do.
fn content_hashes(
    entries: &[Entry],
    idxs: &[usize],
    limit: u64,
) -> Result<Vec<[u8; 32]>, PlanError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::util::map_on_threads(idxs, threads, |&i| body_hash(&entries[i], limit))
        .into_iter()
        .collect()
}

fn body_hash(e: &Entry, limit: u64) -> Result<[u8; 32], PlanError> {
    match &e.kind {
        Kind::File(c) => content_hash(c, limit),
        _ => unreachable!("only files are hashed"),
    }
}

/// The sha256 of the first `limit` bytes of a body.
fn content_hash(c: &Content, limit: u64) -> Result<[u8; 32], PlanError> {
    match c {
        Content::Empty => Ok(Sha256::digest(b"").into()),
        Content::Bytes(b) => {
            let n = usize::try_from(limit).map_or(b.len(), |l| l.min(b.len()));
            Ok(Sha256::digest(&b[..n]).into())
        }
        Content::Path { path, .. } => {
            let err = |e| PlanError::Read {
                path: path.clone(),
                source: e,
            };
            let f = fs::File::open(path).map_err(err)?;
            Ok(crate::hashing::sha256_reader(&mut f.take(limit))
                .map_err(err)?
                .0)
        }
        Content::Slice { path, offset, size } => {
            let err = |e| PlanError::Read {
                path: path.to_path_buf(),
                source: e,
            };
            let mut f = fs::File::open(path).map_err(err)?;
            f.seek(SeekFrom::Start(*offset)).map_err(err)?;
            Ok(
                crate::hashing::sha256_reader(&mut f.take((*size).min(limit)))
                    .map_err(err)?
                    .0,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regular file at `path` (root-owned, 0644, inode not yet assigned).
    fn file(path: &str, content: Content) -> Entry {
        Entry {
            path: Name::new(path),
            kind: Kind::File(content),
            perm: 0o644,
            uid: 0,
            gid: 0,
            ino: 0,
            nlink: 1,
            mtime: 0,
        }
    }

    #[test]
    fn inodes_are_unique_and_stay_when_a_file_is_added() {
        let entry = |p: &str| file(p, Content::Empty);
        let mut a: Vec<Entry> = (0..3000).map(|i| entry(&format!("f{i:04}"))).collect();
        let mut b = a.clone();
        b.insert(1500, entry("f1499-new"));
        assign_inodes(&mut a);
        assign_inodes(&mut b);
        let unique: std::collections::HashSet<u32> = b.iter().map(|e| e.ino).collect();
        assert_eq!(unique.len(), b.len(), "inode numbers are unique");
        assert!(!unique.contains(&0), "no inode 0");
        b.remove(1500);
        assert_eq!(a, b, "the added file changes no other inode");
    }

    #[test]
    fn duplicates_read_on_every_core_group_as_one_build_would_and_the_first_missing_file_is_named()
    {
        let dir = tempfile::tempdir().unwrap();
        // 24 files of one size sharing their first block: 8 contents, three copies of each.
        let entries: Vec<Entry> = (0..24)
            .map(|i| {
                let mut body = vec![7u8; 3 * PREFIX as usize];
                body[PREFIX as usize + 100] = (i % 8) as u8;
                let path = dir.path().join(format!("f{i:02}"));
                fs::write(&path, &body).unwrap();
                let size = body.len() as u64;
                file(&format!("/f{i:02}"), Content::Path { path, size })
            })
            .collect();
        let mut linked = entries.clone();
        assign_inodes(&mut linked);
        link_duplicates(&mut linked).unwrap();
        let with_body: Vec<&str> = linked
            .iter()
            .filter(|e| !matches!(e.kind, Kind::File(Content::Empty)))
            .map(|e| &*e.path)
            .collect();
        // Each group's last member carries the body; the others move just before it.
        assert_eq!(
            with_body,
            ["f16", "f17", "f18", "f19", "f20", "f21", "f22", "f23"]
        );
        for e in &linked {
            let i: usize = e.path[1..].parse().unwrap();
            let last = linked
                .iter()
                .find(|l| *l.path == format!("f{}", 16 + i % 8));
            assert_eq!(e.nlink, 3, "{}", e.path);
            assert_eq!(
                e.ino,
                last.unwrap().ino,
                "{} shares its group's inode",
                e.path
            );
        }
        fs::remove_file(dir.path().join("f19")).unwrap();
        fs::remove_file(dir.path().join("f05")).unwrap();
        let err = link_duplicates(&mut entries.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f05"),
            "the first missing file in order is named: {err}"
        );
    }

    #[test]
    fn entries_share_the_plans_paths() {
        let mut plan = Plan::default();
        let long = format!("/srv/{}", "d".repeat(3000));
        for p in ["/srv", long.as_str()] {
            let node = crate::plan::Planned::new(Kind::Dir, 0o755, crate::plan::Origin::Base);
            plan.nodes.insert(p.into(), node);
        }
        let entries = normalise(&plan, 0, false).unwrap();
        assert_eq!(entries[1].path, &long[1..]);
        for (e, (key, _)) in entries.iter().zip(&plan.nodes) {
            assert!(
                std::ptr::eq(e.path.as_ptr(), key[1..].as_ptr()),
                "{} is not a copy",
                e.path
            );
        }
    }
}
