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

/// Groups regular files of the same size, content, permissions and owner into hardlinks.
fn link_duplicates(entries: &mut Vec<Entry>) -> Result<(), PlanError> {
    // One inode has one owner: files of different owners are never linked.
    let mut by_size: HashMap<(u64, u32, u32, u32), Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Kind::File(c) = &e.kind {
            if !c.is_empty() {
                let key = (c.len(), e.perm, e.uid, e.gid);
                by_size.entry(key).or_default().push(i);
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    // Files of one size are told apart by their first block, and only files that share it
    // are read whole: most same-size files differ early.
    let by = |idxs: Vec<usize>, limit| -> Result<Vec<Vec<usize>>, PlanError> {
        let mut by_hash: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
        for i in idxs {
            let Kind::File(c) = &entries[i].kind else {
                unreachable!()
            };
            by_hash.entry(content_hash(c, limit)?).or_default().push(i);
        }
        Ok(by_hash.into_values().filter(|v| v.len() > 1).collect())
    };
    for ((size, ..), idxs) in by_size.into_iter().filter(|(_, v)| v.len() > 1) {
        for same_start in by(idxs, PREFIX)? {
            if size <= PREFIX {
                groups.push(same_start);
            } else {
                groups.extend(by(same_start, u64::MAX)?);
            }
        }
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

    #[test]
    fn inodes_are_unique_and_stay_when_a_file_is_added() {
        let entry = |p: &str| Entry {
            path: Name::new(p),
            kind: Kind::File(Content::Empty),
            perm: 0o644,
            uid: 0,
            gid: 0,
            ino: 0,
            nlink: 1,
            mtime: 0,
        };
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
