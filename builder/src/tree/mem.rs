//! A tree held in memory: an image read back, or a test fixture.

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::sync::Arc;

use super::{parent, Node, ReadSeek, Tree};

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
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
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
