//! Paths inside an image root and the one walk that resolves them.
//!
//! Every in-image path of the builder goes through this module: [`clean`], [`join`] and
//! [`parent`] are the only lexical path operations (absolute, `/`-separated, `.`-free, `..`
//! never above the root), and [`walk`] is the only resolver through symlinks. A walk goes the
//! way the kernel walks a path in a chroot - one component at a time, symlinks included,
//! absolute targets restarting at the tree's own root, at most [`MAX_LINKS`] links - over any
//! tree that can answer "what is the entry at this path" ([`Lookup`]): the planned image, a
//! container image's root file system, an image read back for inspection, or a host sysroot.
//! Nothing is ever followed out of the tree's root, so a name from an untrusted layer or image
//! can only ever name something inside it.

use std::borrow::Cow;
use std::io::{self, Read, Seek};

mod host;
mod mem;

pub use host::HostTree;
pub use mem::MemTree;

/// Most symlinks one path resolution follows before it counts as a loop (the kernel's
/// `MAXSYMLINKS`): the one limit of every resolver, in-image or host.
pub const MAX_LINKS: usize = 40;

/// What a path is, without following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File,
    Symlink(String),
    /// Devices, fifos, sockets.
    Other,
}

/// The non-empty, non-`.` components of `path`, `..` included.
pub fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// The components of `name` cleaned as if rooted at `/`: no empty, `.` or `..` components, and
/// never above the root.
pub fn clean(name: &str) -> Vec<&str> {
    lexical(components(name))
}

/// `name` read from the directory `dir` (an absolute `name` from the root), normalised
/// lexically: `..` never above `/`, no symlink followed.
pub fn join(dir: &str, name: &str) -> String {
    let base = if name.starts_with('/') { "" } else { dir };
    absolute(&lexical(components(base).chain(components(name))))
}

/// `parts` with each `..` taking the one before it away (never above the root).
fn lexical<'a>(parts: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for c in parts {
        if c == ".." {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

/// `/a/b` for the components `[a, b]`, `/` for none.
pub fn absolute(parts: &[&str]) -> String {
    format!("/{}", parts.join("/"))
}

/// The directory part of an absolute path (`/` for `/x`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a path (`x` for `/a/x`).
pub fn name(path: &str) -> &str {
    &path[path.rfind('/').map_or(0, |i| i + 1)..]
}

/// Something a file body can be read from.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// A tree of files addressed by absolute, normalised paths (`/usr/lib/libc.so.6`).
pub trait Tree {
    /// The node at `path` (not followed), `None` when absent. The parents of `path` hold no
    /// symlinks: [`walk`] only asks about paths it has resolved so far.
    fn node(&self, path: &str) -> io::Result<Option<Node>>;
    /// The body of the regular file at a resolved `path`.
    fn open(&self, _path: &str) -> io::Result<Box<dyn ReadSeek + '_>> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// The names in the directory at a resolved `path`.
    fn list(&self, _path: &str) -> io::Result<Vec<String>> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Whether the body of the regular file at a resolved `path` can be read (an image read
    /// back keeps only some).
    fn has_body(&self, _path: &str) -> bool {
        true
    }
}

/// What a walk asks of a tree: the entry one step below a directory it stands in.
pub trait Lookup {
    /// A directory of the tree the walk stands in (`()` for a tree addressed by paths).
    type At: Copy + PartialEq;
    /// The tree's root directory.
    fn root(&self) -> Self::At;
    /// The entry at `path` - the directory `dir`'s path plus one name - not followed; `None`
    /// when absent.
    fn step(&self, dir: Self::At, path: &str) -> io::Result<Option<(Self::At, Node)>>;
}

impl<T: Tree + ?Sized> Lookup for T {
    type At = ();
    fn root(&self) {}
    fn step(&self, _: (), path: &str) -> io::Result<Option<((), Node)>> {
        Ok(self.node(path)?.map(|n| ((), n)))
    }
}

/// Whether a walk follows a symlink that is the path's last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// Follow it, as `open` does.
    Follow,
    /// Keep it, as `lstat` (and creating an entry over it) does.
    Keep,
}

/// What a walk does at a component that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Stop: the rest of the path is kept as written.
    Stop,
    /// Take it as a directory to create ([`Walk::new`]) and go on.
    Create,
}

/// A directory a walk stands in: one of the tree, or one it would create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos<A> {
    Real(A),
    /// The directory at this index of [`Walk::new`].
    New(usize),
}

/// One symlink passed while resolving a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Where the link is (resolved path, itself not followed).
    pub at: String,
    /// Its target as stored.
    pub target: String,
}

/// A resolved path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk<A = ()> {
    /// The path with every symlink resolved; after a stop, the rest as written.
    pub real: String,
    /// What is at `real`; `None` when the walk stopped before it.
    pub node: Option<Node>,
    /// Where `real` is in the tree, when the walk got there.
    pub end: Option<Pos<A>>,
    /// The symlinks passed, in order.
    pub links: Vec<Link>,
    /// Where the walk stopped: the path of a missing component (`None`) or of one that is not
    /// a directory but has components after it (what it is).
    pub stopped: Option<(String, Option<Node>)>,
    /// With [`Missing::Create`], the directories to create, parents first: in which directory
    /// and the name.
    pub new: Vec<(Pos<A>, String)>,
}

/// A walk passed more than [`MAX_LINKS`] symlinks (`ELOOP`): a loop, most likely.
#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_LINKS} symlinks resolving {path}")]
pub struct SymlinkLoop {
    /// The path asked for.
    pub path: String,
    /// Where the walk was when it gave up, the rest as written.
    pub partial: String,
}

/// The [`SymlinkLoop`] that `e` is, when it is one.
pub fn symlink_loop(e: &io::Error) -> Option<&SymlinkLoop> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<SymlinkLoop>())
}

/// Whether `e` is [`walk`]'s [`SymlinkLoop`].
pub fn is_symlink_loop(e: &io::Error) -> bool {
    symlink_loop(e).is_some()
}

/// Resolves `path` (read from the root) inside `tree`, following every symlink but, with
/// [`Last::Keep`], the last component; the error of a loop is a [`SymlinkLoop`].
pub fn walk<T: Lookup + ?Sized>(
    tree: &T,
    path: &str,
    last: Last,
    missing: Missing,
) -> io::Result<Walk<T::At>> {
    let root = Pos::Real(tree.root());
    // Components still to walk, the next one last.
    let mut todo: Vec<Cow<str>> = components(path).rev().map(Cow::Borrowed).collect();
    let mut real = String::new();
    // Where each resolved component stands, and where its text starts in `real`.
    let mut done: Vec<(Pos<T::At>, usize)> = Vec::new();
    let mut w = Walk {
        real: String::new(),
        node: Some(Node::Dir),
        end: None,
        links: Vec::new(),
        stopped: None,
        new: Vec::new(),
    };
    while let Some(c) = todo.pop() {
        if w.stopped.is_some() {
            real.push('/');
            real.push_str(&c);
            continue;
        }
        if c == ".." {
            if let Some((_, start)) = done.pop() {
                real.truncate(start);
            }
            w.node = Some(Node::Dir);
            continue;
        }
        let here = done.last().map_or(root, |d| d.0);
        let start = real.len();
        real.push('/');
        real.push_str(&c);
        let found = match here {
            Pos::Real(at) => tree.step(at, &real)?.map(|(a, n)| (Pos::Real(a), n)),
            Pos::New(_) => None,
        };
        // A directory this walk would create, come back to through `..`.
        let found = found.or_else(|| {
            w.new
                .iter()
                .position(|(p, n)| *p == here && *n == *c)
                .map(|i| (Pos::New(i), Node::Dir))
        });
        match found {
            Some((_, Node::Symlink(target))) if !(todo.is_empty() && last == Last::Keep) => {
                if w.links.len() == MAX_LINKS {
                    todo.iter().rev().for_each(|c| {
                        real.push('/');
                        real.push_str(c);
                    });
                    return Err(io::Error::other(SymlinkLoop {
                        path: path.to_string(),
                        partial: real,
                    }));
                }
                w.links.push(Link {
                    at: real.clone(),
                    target: target.clone(),
                });
                real.truncate(start);
                if target.starts_with('/') {
                    real.clear();
                    done.clear();
                }
                todo.extend(components(&target).rev().map(|t| Cow::Owned(t.to_string())));
            }
            Some((pos, node)) => {
                if node != Node::Dir && !todo.is_empty() {
                    w.stopped = Some((real.clone(), Some(node)));
                    w.node = None;
                } else {
                    done.push((pos, start));
                    w.node = Some(node);
                }
            }
            None if missing == Missing::Create => {
                w.new.push((here, c.into_owned()));
                done.push((Pos::New(w.new.len() - 1), start));
                w.node = Some(Node::Dir);
            }
            None => {
                w.stopped = Some((real.clone(), None));
                w.node = None;
            }
        }
    }
    if w.stopped.is_none() {
        w.end = Some(done.last().map_or(root, |d| d.0));
    }
    if real.is_empty() {
        real.push('/');
    }
    w.real = real;
    Ok(w)
}

/// Resolves `path` inside `tree` following every symlink, stopping at what is missing.
pub fn resolve<T: Lookup + ?Sized>(tree: &T, path: &str) -> io::Result<Walk<T::At>> {
    walk(tree, path, Last::Follow, Missing::Stop)
}

#[cfg(test)]
mod tests;
