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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// Most entries an image may have (all layers together): bounds the memory the tree takes.
pub const MAX_ENTRIES: usize = 2_000_000;
/// Longest path inside the image.
pub const MAX_PATH: usize = 4096;
use crate::util::MAX_LINKS;

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
pub struct Node {
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

/// The root file system: every path (relative, `usr/bin/env`) with its node. The root itself
/// is implicit.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Paths whose headers carried extended attributes, with the attribute names (newc cannot
    /// store them).
    pub xattrs: BTreeMap<String, BTreeSet<String>>,
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

impl Tree {
    /// The node at `path` (relative or absolute, already resolved).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path.trim_start_matches('/'))
    }

    /// Every path in order, with its node.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Takes the nodes out.
    pub fn into_nodes(self) -> BTreeMap<String, Node> {
        self.nodes
    }

    /// Resolves `path` (absolute inside the image) to the path it names in the tree, following
    /// symlinks in every component, the last one too, inside the image root. `None` when some
    /// component does not exist.
    pub fn resolve(&self, path: &str) -> Result<Option<String>, String> {
        self.walk(&clean(path), false)
    }

    /// Reads a regular file of the image (following symlinks inside the root), at most `limit`
    /// bytes; `None` when it is not there.
    pub fn read(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Ok(Some(real)) = self.resolve(path) else {
            return Ok(None);
        };
        let Some(Node {
            kind: NodeKind::File { data, offset, size },
            ..
        }) = self.nodes.get(&real)
        else {
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
        let comps = clean(&e.name);
        let Some((last, parents)) = comps.split_last() else {
            // The root itself (`./`): its metadata is not part of an initramfs.
            return Ok(());
        };
        if let Some(hidden) = last.strip_prefix(".wh.") {
            let Some(dir) = self.walk(parents, true).map_err(fail)? else {
                return Ok(());
            };
            if hidden == ".wh..opq" {
                self.opaque(&dir, layer);
            } else if !hidden.starts_with(".wh.") && !hidden.is_empty() {
                self.whiteout(&join(&dir, hidden), layer);
            }
            // Other `.wh..wh.` names are aufs bookkeeping: not content.
            return Ok(());
        }
        let dir = self
            .make_dirs(parents, layer)
            .map_err(fail)?
            .expect("make_dirs creates what is missing");
        let path = join(&dir, last);
        let kind = match e.what {
            What::Node(k) => k,
            What::Hardlink(target) => {
                let t = self
                    .walk_parent(&clean(&target))
                    .map_err(fail)?
                    .ok_or_else(|| {
                        fail(format!(
                            "is a hardlink to {target:?}, which is not in the image"
                        ))
                    })?;
                match self.nodes.get(&t) {
                    Some(n) if n.kind != NodeKind::Dir => {
                        // Same inode, same metadata: the link carries the target's.
                        let n = Node { layer, ..n.clone() };
                        return self.put(path, n).map_err(fail);
                    }
                    Some(_) => {
                        return Err(fail(format!("is a hardlink to the directory {target:?}")))
                    }
                    None => {
                        return Err(fail(format!(
                            "is a hardlink to {target:?}, which is not in the image"
                        )))
                    }
                }
            }
        };
        let node = Node {
            kind,
            perm: e.perm & 0o7777,
            uid: e.uid,
            gid: e.gid,
            layer,
        };
        self.put(path, node).map_err(fail)
    }

    /// Puts a node at a resolved path: a directory over a directory keeps the children; anything
    /// else replaces what was there (a directory with everything below it).
    fn put(&mut self, path: String, node: Node) -> Result<(), String> {
        match self.nodes.get(&path) {
            Some(old) if old.kind == NodeKind::Dir && node.kind == NodeKind::Dir => {}
            Some(old) if old.kind == NodeKind::Dir => self.remove_below(&path),
            _ => {}
        }
        if self.nodes.len() >= MAX_ENTRIES && !self.nodes.contains_key(&path) {
            return Err(format!("the image has more than {MAX_ENTRIES} entries"));
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    /// `.wh.NAME`: NAME and everything below it go, when a lower layer gave it.
    fn whiteout(&mut self, path: &str, layer: usize) {
        if self.nodes.get(path).is_some_and(|n| n.layer < layer) {
            self.nodes.remove(path);
            self.remove_below(path);
        }
    }

    /// `.wh..wh..opq` in `dir`: what lower layers put below `dir` goes; what this layer put
    /// there stays, with the directories leading to it.
    fn opaque(&mut self, dir: &str, layer: usize) {
        let below: Vec<String> = self.below(dir).map(|(k, _)| k.clone()).collect();
        let mut keep = BTreeSet::new();
        for k in &below {
            if self.nodes[k].layer >= layer {
                let mut p = k.as_str();
                while let Some((parent, _)) = p.rsplit_once('/') {
                    keep.insert(parent.to_string());
                    p = parent;
                }
            }
        }
        for k in below {
            if self.nodes[&k].layer < layer && !keep.contains(&k) {
                self.nodes.remove(&k);
            }
        }
    }

    /// Entries strictly below `dir` (`""` = the root).
    fn below<'a>(&'a self, dir: &str) -> Box<dyn Iterator<Item = (&'a String, &'a Node)> + 'a> {
        if dir.is_empty() {
            return Box::new(self.nodes.iter());
        }
        // Keys starting with "dir/" sort between "dir/" and "dir0" ('0' follows '/').
        Box::new(self.nodes.range(format!("{dir}/")..format!("{dir}0")))
    }

    fn remove_below(&mut self, dir: &str) {
        let below: Vec<String> = self.below(dir).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.nodes.remove(&k);
        }
    }

    /// Resolves the parents of a cleaned name and joins the last component unresolved.
    fn walk_parent(&self, comps: &[String]) -> Result<Option<String>, String> {
        let Some((last, parents)) = comps.split_last() else {
            return Ok(Some(String::new()));
        };
        Ok(self.walk(parents, true)?.map(|d| join(&d, last)))
    }

    /// Resolves directories, creating the missing ones (0755, owned by root, as tar does).
    fn make_dirs(&mut self, comps: &[String], layer: usize) -> Result<Option<String>, String> {
        let mut r = Resolver {
            tree: self,
            created: Vec::new(),
        };
        let out = r.run(comps, true, Some(layer))?;
        let created = r.created;
        if self.nodes.len() + created.len() > MAX_ENTRIES {
            return Err(format!("the image has more than {MAX_ENTRIES} entries"));
        }
        for (path, layer) in created {
            let dir = Node {
                kind: NodeKind::Dir,
                perm: 0o755,
                uid: 0,
                gid: 0,
                layer,
            };
            self.nodes.insert(path, dir);
        }
        Ok(out)
    }

    /// Resolves `comps` through the tree, following every symlink; with `want_dir` the last
    /// component must be a directory too.
    fn walk(&self, comps: &[String], want_dir: bool) -> Result<Option<String>, String> {
        let mut r = Resolver {
            tree: self,
            created: Vec::new(),
        };
        r.run(comps, want_dir, None)
    }
}

/// Resolves names through a tree; directories it would create are collected, not made, so a
/// failed resolution changes nothing.
struct Resolver<'a> {
    tree: &'a Tree,
    created: Vec<(String, usize)>,
}

impl Resolver<'_> {
    /// The resolved path of `comps`, or `None` when a component is missing and `create` (the
    /// layer to create directories for) is not given.
    fn run(
        &mut self,
        comps: &[String],
        want_dir: bool,
        create: Option<usize>,
    ) -> Result<Option<String>, String> {
        let mut todo: VecDeque<String> = comps.iter().cloned().collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let path = if done.is_empty() {
                c.clone()
            } else {
                format!("{}/{c}", done.join("/"))
            };
            let created = || self.created.iter().any(|(p, _)| *p == path);
            match self.tree.nodes.get(&path).map(|n| &n.kind) {
                None if created() => {}
                None => match create {
                    Some(layer) => self.created.push((path, layer)),
                    None => return Ok(None),
                },
                Some(NodeKind::Symlink(target)) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(format!(
                            "more than {MAX_LINKS} symlinks while resolving /{}",
                            comps.join("/")
                        ));
                    }
                    if target.starts_with('/') {
                        done.clear();
                    }
                    for t in target.split('/').rev() {
                        todo.push_front(t.to_string());
                    }
                    continue;
                }
                Some(NodeKind::Dir) => {}
                Some(_) if todo.is_empty() && !want_dir => {}
                Some(_) => {
                    return Err(format!(
                        "/{path} is not a directory, but /{} goes through it",
                        comps.join("/")
                    ))
                }
            }
            done.push(c);
        }
        Ok(Some(done.join("/")))
    }
}

/// The components of `name` cleaned as if rooted at `/`: no empty, `.` or `..` components, and
/// never above the root.
pub fn clean(name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}
