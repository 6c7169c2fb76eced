//! A directory of the host seen as the root of a tree: a sysroot libraries come from. Every
//! path is resolved inside it first, so a symlink of the sysroot never leads out of it.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::{join, name, parent, resolve, Node, ReadSeek, Tree};

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
        let dir = resolve(&Resolved(self), parent(path))?;
        if dir.node != Some(Node::Dir) {
            return Ok(None);
        }
        Ok(Some(
            self.root
                .join(join(&dir.real, name(path)).trim_start_matches('/')),
        ))
    }
}

/// A host tree asked only about paths whose parents hold no symlinks (as [`super::walk`] does).
struct Resolved<'a>(&'a HostTree);

impl Tree for Resolved<'_> {
    fn node(&self, path: &str) -> io::Result<Option<Node>> {
        host_node(&self.0.root.join(path.trim_start_matches('/')))
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
