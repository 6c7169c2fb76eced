//! A file tree seen from inside, as a program in it would see it: the sysroot libraries come from,
//! the planned image, or an image read back. [`walk`] resolves a path the way the kernel does in a
//! chroot - every component, symlinks included, absolute targets from the tree's own root, `..`
//! never above it - and records each symlink passed, so the chain can be reproduced in the image.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Cursor, Read, Seek};
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::util::MAX_LINKS;

/// What a path is, without following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File,
    Symlink(String),
    /// Devices, fifos, sockets.
    Other,
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
    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek + '_>>;
    /// The names in the directory at a resolved `path`.
    fn list(&self, path: &str) -> io::Result<Vec<String>>;
    /// Whether the body of the regular file at a resolved `path` can be read (an image read
    /// back keeps only some).
    fn has_body(&self, _path: &str) -> bool {
        true
    }
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
pub struct Walk {
    /// The path with every symlink resolved.
    pub real: String,
    /// What is there; `None` when it (or a parent) does not exist.
    pub node: Option<Node>,
    /// The symlinks passed, in order.
    pub links: Vec<Link>,
}

/// A lookup passed more than [`MAX_LINKS`] symlinks (`ELOOP`): a loop, most likely. The loader
/// takes it as "not here" and goes on searching; [`is_symlink_loop`] tells it from other errors.
#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_LINKS} symlinks resolving {0}")]
pub struct SymlinkLoop(pub String);

/// Whether `e` is [`walk`]'s [`SymlinkLoop`].
pub fn is_symlink_loop(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SymlinkLoop>())
}

/// Resolves `path` inside `tree`, following every symlink (at most [`MAX_LINKS`]).
pub fn walk(tree: &dyn Tree, path: &str) -> io::Result<Walk> {
    let mut todo: Vec<String> = components(path).rev().map(str::to_string).collect();
    let mut cur = String::new();
    let mut node = Some(Node::Dir);
    let mut links = Vec::new();
    while let Some(c) = todo.pop() {
        if node != Some(Node::Dir) {
            // a missing parent, or a file used as a directory
            cur.push('/');
            cur.push_str(&c);
            node = None;
            continue;
        }
        if c == ".." {
            cur.truncate(cur.rfind('/').unwrap_or(0));
            continue;
        }
        let next = format!("{cur}/{c}");
        match tree.node(&next)? {
            Some(Node::Symlink(target)) => {
                if links.len() == MAX_LINKS {
                    return Err(io::Error::other(SymlinkLoop(path.to_string())));
                }
                if target.starts_with('/') {
                    cur.clear();
                }
                todo.extend(components(&target).rev().map(str::to_string));
                links.push(Link { at: next, target });
            }
            n => {
                cur = next;
                node = n;
            }
        }
    }
    if cur.is_empty() {
        cur.push('/');
    }
    Ok(Walk {
        real: cur,
        node,
        links,
    })
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// `dir` joined with `name`, normalised lexically (`..` never above `/`).
pub fn join(dir: &str, name: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let base = if name.starts_with('/') { "" } else { dir };
    for c in components(base).chain(components(name)) {
        if c == ".." {
            out.pop();
        } else {
            out.push(c);
        }
    }
    format!("/{}", out.join("/"))
}

/// The directory part of an absolute path (`/` for `/x`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// A directory of the host seen as the root of a tree (a sysroot).
#[derive(Debug, Clone)]
pub struct HostTree {
    pub root: PathBuf,
}

impl HostTree {
    /// Where `path` of this tree is on the host: its parent resolved inside the tree first, so
    /// a symlink in the sysroot never leads the host out of it. `None` when the parent is not a
    /// directory of the tree.
    pub fn host_path(&self, path: &str) -> io::Result<Option<PathBuf>> {
        if path == "/" {
            return Ok(Some(self.root.clone()));
        }
        let dir = walk(&Resolved(self), parent(path))?;
        if dir.node != Some(Node::Dir) {
            return Ok(None);
        }
        let name = &path[path.rfind('/').map_or(0, |i| i + 1)..];
        Ok(Some(
            self.root
                .join(join(&dir.real, name).trim_start_matches('/')),
        ))
    }
}

/// A host tree asked only about paths whose parents hold no symlinks (as [`walk`] does).
struct Resolved<'a>(&'a HostTree);

impl Tree for Resolved<'_> {
    fn node(&self, path: &str) -> io::Result<Option<Node>> {
        host_node(&self.0.root.join(path.trim_start_matches('/')))
    }
    fn open(&self, _: &str) -> io::Result<Box<dyn ReadSeek + '_>> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    fn list(&self, _: &str) -> io::Result<Vec<String>> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

fn host_node(host: &std::path::Path) -> io::Result<Option<Node>> {
    let meta = match fs::symlink_metadata(host) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let ft = meta.file_type();
    Ok(Some(if ft.is_symlink() {
        match fs::read_link(host)?.into_os_string().into_string() {
            Ok(t) => Node::Symlink(t),
            Err(_) => Node::Other, // a target that is not UTF-8 leads nowhere we search
        }
    } else if ft.is_dir() {
        Node::Dir
    } else if ft.is_file() {
        Node::File
    } else {
        Node::Other
    }))
}

fn missing() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl Tree for HostTree {
    fn node(&self, path: &str) -> io::Result<Option<Node>> {
        match self.host_path(path)? {
            Some(host) => host_node(&host),
            None => Ok(None),
        }
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek + '_>> {
        let host = self.host_path(path)?.ok_or_else(missing)?;
        Ok(Box::new(fs::File::open(host)?))
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let host = self.host_path(path)?.ok_or_else(missing)?;
        let mut names = Vec::new();
        for e in fs::read_dir(host)? {
            if let Ok(n) = e?.file_name().into_string() {
                names.push(n);
            }
        }
        Ok(names)
    }
}

/// A tree held in memory: an image read back, or a test fixture.
#[derive(Debug, Clone, Default)]
pub struct MemTree {
    pub nodes: BTreeMap<String, (Node, Arc<[u8]>)>,
}

impl MemTree {
    /// Adds `path` (and its missing parents as directories).
    pub fn put(&mut self, path: &str, node: Node, body: &[u8]) {
        let mut p = parent(path);
        while p != "/" && !self.nodes.contains_key(p) {
            self.nodes
                .insert(p.to_string(), (Node::Dir, Arc::from(&[][..])));
            p = parent(p);
        }
        self.nodes.insert(path.to_string(), (node, Arc::from(body)));
    }
}

impl Tree for MemTree {
    fn node(&self, path: &str) -> io::Result<Option<Node>> {
        if path == "/" {
            return Ok(Some(Node::Dir));
        }
        Ok(self.nodes.get(path).map(|(n, _)| n.clone()))
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek + '_>> {
        match self.nodes.get(path) {
            Some((Node::File, body)) => Ok(Box::new(Cursor::new(body.clone()))),
            _ => Err(missing()),
        }
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        Ok(self
            .nodes
            .keys()
            .filter(|k| parent(k) == path && k.as_str() != path)
            .map(|k| k[k.rfind('/').unwrap_or(0) + 1..].to_string())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged_usr() -> MemTree {
        let mut t = MemTree::default();
        t.put("/lib", Node::Symlink("usr/lib".into()), b"");
        t.put("/lib64", Node::Symlink("usr/lib64".into()), b"");
        t.put(
            "/usr/lib64/ld-linux-x86-64.so.2",
            Node::Symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()),
            b"",
        );
        t.put(
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            Node::File,
            b"ld",
        );
        t.put("/loop", Node::Symlink("loop".into()), b"");
        t.put("/up", Node::Symlink("../../../usr".into()), b"");
        t
    }

    #[test]
    fn walk_records_every_link_of_a_chain() {
        let w = walk(&merged_usr(), "/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(w.real, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        assert_eq!(w.node, Some(Node::File));
        let at: Vec<_> = w.links.iter().map(|l| l.at.as_str()).collect();
        assert_eq!(at, ["/lib64", "/usr/lib64/ld-linux-x86-64.so.2", "/lib"]);
    }

    #[test]
    fn walk_stays_inside_and_is_bounded() {
        let t = merged_usr();
        let cases = [
            ("/up/lib64", "/usr/lib64", Some(Node::Dir)),
            ("/../../usr/./lib", "/usr/lib", Some(Node::Dir)),
            ("/nope/libc.so", "/nope/libc.so", None),
            (
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2/x",
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2/x",
                None,
            ),
            ("/", "/", Some(Node::Dir)),
        ];
        for (i, (path, real, node)) in cases.into_iter().enumerate() {
            let w = walk(&t, path).unwrap();
            assert_eq!((w.real.as_str(), w.node), (real, node), "case {i}: {path}");
        }
        assert!(walk(&t, "/loop/x").is_err());
    }

    #[test]
    fn join_and_parent() {
        assert_eq!(join("/usr/bin", "../lib"), "/usr/lib");
        assert_eq!(join("/usr/bin", "/lib/x"), "/lib/x");
        assert_eq!(join("/", "../../x"), "/x");
        assert_eq!(parent("/x"), "/");
        assert_eq!(parent("/usr/lib/x"), "/usr/lib");
    }

    #[test]
    fn host_tree_never_leaves_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/os-release"), "inside").unwrap();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc", root.join("usr/etc")).unwrap();
        let t = HostTree { root: root.into() };
        // /lib -> /usr/lib is the sysroot's /usr/lib, not the host's
        assert_eq!(t.node("/lib/os-release").unwrap(), Some(Node::File));
        assert_eq!(t.node("/lib/x86_64-linux-gnu").unwrap(), None);
        assert_eq!(
            t.host_path("/usr/etc/passwd").unwrap().unwrap(),
            root.join("etc/passwd")
        );
        let mut body = String::new();
        t.open("/lib/os-release")
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        assert_eq!(body, "inside");
    }

    #[test]
    fn host_tree_reads_this_machine() {
        let t = HostTree { root: "/".into() };
        let w = walk(&t, "/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(w.node, Some(Node::File));
        assert!(
            w.links
                .iter()
                .any(|l| l.at.ends_with("64/ld-linux-x86-64.so.2")),
            "{w:?}"
        );
    }
}
