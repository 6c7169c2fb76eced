//! The image's root file system, assembled in memory from its layers.
//!
//! This module owns what a layer's tar entries mean: regular files, directories, symlinks,
//! hardlinks, fifos and device nodes with the owner, group and mode bits of their headers;
//! whiteouts (`.wh.NAME`) and opaque directories (`.wh..wh..opq`) as the OCI image spec
//! defines them (they hide what lower layers gave, never what the same layer gives); and names
//! resolved inside the image root only.
//!
//! Names are untrusted. Each entry name is cleaned lexically as if rooted at `/` (so `..` never
//! climbs above the root, as umoci does with `filepath.Join("/", name)`), then its parent
//! directories are resolved through the tree itself, following the image's own symlinks inside
//! the image root (an absolute target restarts at the image root, `..` stops there), the way
//! runc's and umoci's `securejoin` does. So a layer that writes `evil/passwd` after making
//! `evil -> /etc` changes the image's `/etc/passwd`, never the build host's. Nothing is written
//! to disk: a file node is a range of the layer's uncompressed tar in the cache, streamed when
//! the archive is written, so memory grows with the number of entries, not their size.
//!
//! The tree is a tree of components: each directory holds its children by name, and a node
//! stores its own name only, never its full path. So an entry costs the same whatever its
//! depth, and resolving a name takes one step per component (a lookup among one directory's
//! children), never a search of every path by a key as long as the path.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// Most entries an image may have (all layers together): bounds the memory the tree takes.
pub const MAX_ENTRIES: usize = 2_000_000;
/// Longest path inside the image.
pub const MAX_PATH: usize = 4096;
use crate::tree::{self, Last, Lookup, Missing, MAX_LINKS};

/// What a path of the image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    /// `size` bytes at `offset` of the uncompressed layer tar `data`.
    File {
        data: Arc<Path>,
        offset: u64,
        size: u64,
    },
    Symlink(String),
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One path of the image with the metadata its layer gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub kind: NodeKind,
    /// Permission bits, setuid/setgid/sticky included (`0o7777` at most).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Index of the layer that wrote it (0 = the bottom layer).
    pub layer: usize,
}

/// A layer entry that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[error("entry {entry:?}: {problem}")]
pub struct EntryError {
    pub entry: String,
    pub problem: String,
}

/// The root file system: a tree of components whose root (slot 0) is the image root.
#[derive(Debug)]
pub struct RootFs {
    /// Every node, the root first; removed nodes' slots are reused.
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Nodes in the tree, the root not counted.
    len: usize,
    /// Paths whose last header carried extended attributes, with the attributes by name (a
    /// squashfs disk stores them; newc cannot).
    pub xattrs: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// One node and, for a directory, its children by name.
#[derive(Debug)]
struct Slot {
    node: Inode,
    children: BTreeMap<Box<str>, u32>,
}

const ROOT: u32 = 0;

impl Default for RootFs {
    fn default() -> RootFs {
        let root = Inode {
            kind: NodeKind::Dir,
            perm: 0o755,
            uid: 0,
            gid: 0,
            layer: 0,
        };
        RootFs {
            slots: vec![Slot {
                node: root,
                children: BTreeMap::new(),
            }],
            free: Vec::new(),
            len: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

/// What one tar entry asks for, decoded from its header.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// The name as written in the layer.
    pub name: String,
    pub what: What,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The kind of a tar entry.
#[derive(Debug, Clone)]
pub enum What {
    Node(NodeKind),
    /// A hardlink to the entry named here (a name of this image, resolved like any other).
    Hardlink(String),
}

impl RootFs {
    /// The node at `path` (relative or absolute, already resolved: no symlink is followed).
    pub fn get(&self, path: &str) -> Option<&Inode> {
        let mut at = ROOT;
        let mut any = false;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            at = *self.slot(at).children.get(c)?;
            any = true;
        }
        any.then(|| &self.slot(at).node)
    }

    /// Calls `f` with every path (absolute, `/usr/bin/env`) and its node, each directory
    /// before what it holds; stops at the first error.
    pub fn for_each<E>(&self, mut f: impl FnMut(&str, &Inode) -> Result<(), E>) -> Result<(), E> {
        let mut path = String::new();
        let mut stack = vec![(self.slot(ROOT).children.iter(), 0)];
        while let Some((children, base)) = stack.last_mut() {
            let base = *base;
            let Some((name, &id)) = children.next() else {
                stack.pop();
                continue;
            };
            path.truncate(base);
            path.push('/');
            path.push_str(name);
            let slot = self.slot(id);
            f(&path, &slot.node)?;
            if !slot.children.is_empty() {
                stack.push((slot.children.iter(), path.len()));
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads a regular file of the image (following symlinks inside the root), at most `limit`
    /// bytes; `None` when it is not there.
    pub fn read(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Ok(Some(w)) = self.walk(&tree::clean(path), false, false) else {
            return Ok(None);
        };
        let Pos::Real(id) = w.end else {
            return Ok(None);
        };
        let NodeKind::File { data, offset, size } = &self.slot(id).node.kind else {
            return Ok(None);
        };
        let mut f = File::open(data)?;
        f.seek(SeekFrom::Start(*offset))?;
        let mut buf = Vec::new();
        f.take((*size).min(limit)).read_to_end(&mut buf)?;
        Ok(Some(buf))
    }

    /// Applies one tar entry of layer `layer`.
    pub fn apply(&mut self, layer: usize, e: TarEntry) -> Result<(), EntryError> {
        let fail = |problem: String| EntryError {
            entry: e.name.clone(),
            problem,
        };
        if e.name.len() > MAX_PATH {
            return Err(fail(format!("the name is longer than {MAX_PATH} bytes")));
        }
        if let What::Node(NodeKind::Symlink(t)) | What::Hardlink(t) = &e.what {
            if t.len() > MAX_PATH {
                return Err(fail(format!(
                    "is a link whose target is longer than {MAX_PATH} bytes"
                )));
            }
        }
        let comps = tree::clean(&e.name);
        let Some((last, parents)) = comps.split_last() else {
            // The root itself (`./`): its metadata is not part of an initramfs.
            return Ok(());
        };
        if let Some(hidden) = last.strip_prefix(".wh.") {
            let Some(dir) = self.find(parents, true).map_err(fail)? else {
                return Ok(());
            };
            if hidden == ".wh..opq" {
                self.prune(dir, layer);
            } else if !hidden.starts_with(".wh.") && !hidden.is_empty() {
                self.whiteout(dir, hidden, layer);
            }
            // Other `.wh..wh.` names are aufs bookkeeping: not content.
            return Ok(());
        }
        let (dir, len) = self.make_dirs(parents, layer).map_err(fail)?;
        if len + 1 + last.len() > MAX_PATH {
            return Err(fail(too_long()));
        }
        let node = match e.what {
            What::Node(kind) => Inode {
                kind,
                perm: e.perm & 0o7777,
                uid: e.uid,
                gid: e.gid,
                layer,
            },
            What::Hardlink(target) => {
                let missing = || format!("is a hardlink to {target:?}, which is not in the image");
                let t = tree::clean(&target);
                let Some((name, parents)) = t.split_last() else {
                    return Err(fail(missing()));
                };
                let linked = self
                    .find(parents, true)
                    .map_err(fail)?
                    .and_then(|d| self.slot(d).children.get(*name).copied())
                    .ok_or_else(|| fail(missing()))?;
                let n = &self.slot(linked).node;
                if n.kind == NodeKind::Dir {
                    return Err(fail(format!("is a hardlink to the directory {target:?}")));
                }
                // Same inode, same metadata: the link carries the target's.
                Inode { layer, ..n.clone() }
            }
        };
        self.put(dir, last, node).map_err(fail)
    }

    fn slot(&self, id: u32) -> &Slot {
        &self.slots[id as usize]
    }

    fn slot_mut(&mut self, id: u32) -> &mut Slot {
        &mut self.slots[id as usize]
    }

    /// Puts `node` as `name` in the directory `dir`: a directory over a directory keeps the
    /// children; anything else replaces what was there (a directory with everything below it).
    fn put(&mut self, dir: u32, name: &str, node: Inode) -> Result<(), String> {
        if let Some(&id) = self.slot(dir).children.get(name) {
            if !(self.slot(id).node.kind == NodeKind::Dir && node.kind == NodeKind::Dir) {
                self.remove_children(id);
            }
            self.slot_mut(id).node = node;
            return Ok(());
        }
        if self.len >= MAX_ENTRIES {
            return Err(format!("the image has more than {MAX_ENTRIES} entries"));
        }
        let id = self.alloc(node);
        self.slot_mut(dir).children.insert(name.into(), id);
        Ok(())
    }

    fn alloc(&mut self, node: Inode) -> u32 {
        self.len += 1;
        let slot = Slot {
            node,
            children: BTreeMap::new(),
        };
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Frees the node `id` (already taken out of its directory) and everything below it.
    fn free_subtree(&mut self, id: u32) {
        self.remove_children(id);
        self.free.push(id);
        self.len -= 1;
    }

    /// Frees everything below `id`.
    fn remove_children(&mut self, id: u32) {
        let mut todo: Vec<u32> = std::mem::take(&mut self.slot_mut(id).children)
            .into_values()
            .collect();
        while let Some(k) = todo.pop() {
            todo.extend(std::mem::take(&mut self.slot_mut(k).children).into_values());
            self.free.push(k);
            self.len -= 1;
        }
    }

    /// `.wh.NAME` in `dir`: NAME and everything below it go, when a lower layer gave it.
    fn whiteout(&mut self, dir: u32, name: &str, layer: usize) {
        let Some(&id) = self.slot(dir).children.get(name) else {
            return;
        };
        if self.slot(id).node.layer < layer {
            self.slot_mut(dir).children.remove(name);
            self.free_subtree(id);
        }
    }

    /// `.wh..wh..opq` in `dir`: what lower layers put below `dir` goes; what this layer put
    /// there stays, with the directories leading to it. Returns whether anything stays.
    fn prune(&mut self, dir: u32, layer: usize) -> bool {
        let kids: Vec<u32> = self.slot(dir).children.values().copied().collect();
        let mut stays = Vec::with_capacity(kids.len());
        for k in kids {
            let keep = self.prune(k, layer) || self.slot(k).node.layer >= layer;
            if !keep {
                self.free_subtree(k);
            }
            stays.push(keep);
        }
        let mut i = 0;
        self.slot_mut(dir).children.retain(|_, _| {
            i += 1;
            stays[i - 1]
        });
        stays.contains(&true)
    }

    /// Resolves `comps` to an existing node, following every symlink; with `want_dir` it must
    /// be a directory.
    fn find(&self, comps: &[&str], want_dir: bool) -> Result<Option<u32>, String> {
        Ok(self.walk(comps, want_dir, false)?.map(|w| match w.end {
            Pos::Real(id) => id,
            Pos::New(_) => unreachable!("nothing is created without `create`"),
        }))
    }

    /// Resolves directories, creating the missing ones (0755, owned by root, as tar does).
    /// Returns the directory and the length of its path.
    fn make_dirs(&mut self, comps: &[&str], layer: usize) -> Result<(u32, usize), String> {
        let w = self
            .walk(comps, true, true)?
            .expect("walk creates what is missing");
        if self.len + w.new.len() > MAX_ENTRIES {
            return Err(format!("the image has more than {MAX_ENTRIES} entries"));
        }
        let mut made: Vec<u32> = Vec::with_capacity(w.new.len());
        let real = |made: &[u32], p: Pos| match p {
            Pos::Real(id) => id,
            Pos::New(i) => made[i],
        };
        for (parent, name) in w.new {
            let dir = Inode {
                kind: NodeKind::Dir,
                perm: 0o755,
                uid: 0,
                gid: 0,
                layer,
            };
            let id = self.alloc(dir);
            let parent = real(&made, parent);
            self.slot_mut(parent).children.insert(name.into(), id);
            made.push(id);
        }
        Ok((real(&made, w.end), w.len))
    }

    /// Resolves `comps` through the tree, following every symlink, inside the image root; with
    /// `want_dir` the last component must be a directory too. Missing components are `None`,
    /// or with `create` directories to make, collected and not made, so a failed resolution
    /// changes nothing.
    fn walk(&self, comps: &[&str], want_dir: bool, create: bool) -> Result<Option<Walked>, String> {
        let whole = tree::absolute(comps);
        let missing = if create {
            Missing::Create
        } else {
            Missing::Stop
        };
        let w =
            tree::walk(self, &whole, Last::Follow, missing).map_err(
                |e| match tree::symlink_loop(&e) {
                    Some(_) => format!("more than {MAX_LINKS} symlinks while resolving {whole}"),
                    None => e.to_string(),
                },
            )?;
        if w.real.len() > MAX_PATH {
            return Err(too_long());
        }
        let not_dir = |at: &str| format!("{at} is not a directory, but {whole} goes through it");
        match (&w.stopped, w.end) {
            (Some((_, None)), _) => Ok(None),
            (Some((at, Some(_))), _) => Err(not_dir(at)),
            (None, _) if want_dir && w.node != Some(tree::Node::Dir) => Err(not_dir(&w.real)),
            (None, Some(end)) => Ok(Some(Walked {
                end,
                len: if w.real == "/" { 0 } else { w.real.len() },
                new: w.new,
            })),
            (None, None) => unreachable!("a walk that did not stop has an end"),
        }
    }
}

/// The image seen by [`tree::walk`]: one lookup among a directory's children per step.
impl Lookup for RootFs {
    type At = u32;

    fn root(&self) -> u32 {
        ROOT
    }

    fn step(&self, dir: u32, path: &str) -> io::Result<Option<(u32, tree::Node)>> {
        let Some(&id) = self.slot(dir).children.get(tree::name(path)) else {
            return Ok(None);
        };
        let node = match &self.slot(id).node.kind {
            NodeKind::Dir => tree::Node::Dir,
            NodeKind::File { .. } => tree::Node::File,
            NodeKind::Symlink(t) => tree::Node::Symlink(t.clone()),
            _ => tree::Node::Other,
        };
        Ok(Some((id, node)))
    }
}

type Pos = tree::Pos<u32>;

/// Where a name resolved to.
struct Walked {
    end: Pos,
    /// Directories to create, parents first: where, and the name.
    new: Vec<(Pos, String)>,
    /// The length of the resolved path (`/a/b`).
    len: usize,
}

fn too_long() -> String {
    format!("resolves to a path longer than {MAX_PATH} bytes")
}
