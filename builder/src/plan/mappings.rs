//! The mappings layer: the user's `[mappings]`, host files and trees copied to their
//! destinations with the FHS permission rules.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::listing::{self, Listings};
use super::{invalid, Inputs, Layer, Origin, PlanError, Planned, Stack};
use crate::archive::{Content, Kind};
use crate::config::{Config, CustomInit, InitMode, Mapping};
use crate::util::shown;

pub(super) const LAYER: Layer = Layer {
    name: "mappings",
    check,
    add,
};

/// Destinations that get 0755 whatever the source's mode.
const EXEC_DIRS: &[&str] = &[
    "/bin/",
    "/sbin/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/local/bin/",
    "/usr/local/sbin/",
    "/opt/bin/",
    "/opt/sbin/",
];
/// Directories where a `.so` gets 0755.
const LIB_DIRS: &[&str] = &[
    "/lib/",
    "/lib64/",
    "/usr/lib/",
    "/usr/lib64/",
    "/usr/local/lib/",
    "/usr/local/lib64/",
];

/// Every mapping's source exists.
fn check(cfg: &Config) -> Result<(), PlanError> {
    for m in &cfg.mappings {
        source_meta(cfg, m)?;
    }
    Ok(())
}

fn source_meta(cfg: &Config, m: &Mapping) -> Result<fs::Metadata, PlanError> {
    fs::metadata(&m.source).map_err(|e| {
        invalid(
            cfg,
            m.line,
            &key_of(m),
            format!("names {}, which cannot be read ({e}): fix the path (relative to the config's directory) or create it", shown(&m.source)),
        )
    })
}

fn key_of(m: &Mapping) -> String {
    format!("mappings.\"{}\"", m.key)
}

fn add(inputs: &Inputs, stack: &mut Stack) -> Result<(), PlanError> {
    // The image and manifest this build replaces, by identity: never packed into themselves.
    let outputs: Vec<(u64, u64)> = inputs
        .outputs
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    for m in &inputs.config.mappings {
        let mut walk = Walk {
            stack: &mut *stack,
            outputs: &outputs,
            origin: Origin::Mapping {
                key: m.key.clone(),
                line: m.line,
            },
            restricted: Vec::new(),
        };
        walk.mapping(inputs.config, m)?;
        let Walk { restricted, .. } = walk;
        if let Some((first, mode)) = restricted.first() {
            stack.warn(format!(
                "{}: {} pulls in {} file(s) that others may not read on this machine (first: {first}, {mode:04o}); the image keeps that restriction",
                shown(&m.source),
                key_of(m),
                restricted.len()
            ));
        }
    }
    Ok(())
}

/// One mapping being laid out.
struct Walk<'s, 'a> {
    stack: &'s mut Stack<'a>,
    /// `(dev, ino)` of this build's outputs.
    outputs: &'s [(u64, u64)],
    origin: Origin,
    /// Host files others may not read, with their mode.
    restricted: Vec<(String, u32)>,
}

impl Walk<'_, '_> {
    fn mapping(&mut self, cfg: &Config, m: &Mapping) -> Result<(), PlanError> {
        let key = key_of(m);
        let dest = clean_dest(&m.dest);
        let meta = source_meta(cfg, m)?;
        // The seed's idiom: the custom init mapped to /init too. fledge-init stays /init.
        if let (
            "/init",
            InitMode::Custom {
                init: CustomInit::Host(host),
            },
        ) = (dest.as_str(), &cfg.init)
        {
            if same_file(host, &m.source) {
                log::debug!(
                    "{key}: the custom init runs from {}; /init stays fledge-init",
                    fledge_abi::paths::CUSTOM_INIT
                );
                return Ok(());
            }
        }
        if meta.is_dir() {
            if dest != "/" {
                let node = Planned::new(Kind::Dir, 0o755, self.origin.clone());
                self.stack.put(&dest, node)?;
            }
            self.tree(&m.source, &dest)
        } else if meta.is_file() && dest == "/" {
            Err(self.stack.invalid(
                m.line,
                &key,
                "maps a file to /, which is the image's root directory: give the file's full destination, e.g. \"/usr/bin/app\"",
            ))
        } else if meta.is_file() {
            self.file(&m.source, &dest, &meta)
        } else {
            Err(self.stack.invalid(
                m.line,
                &key,
                format!(
                    "names {}, which is neither a file nor a directory",
                    m.source.display()
                ),
            ))
        }
    }

    /// A host file at `dest`, with its FHS permissions.
    fn file(&mut self, source: &Path, dest: &str, meta: &fs::Metadata) -> Result<(), PlanError> {
        let mode = meta.permissions().mode();
        if mode & 0o004 == 0 {
            self.restricted.push((shown(source), mode & 0o7777));
        }
        let kind = Kind::File(Content::Path {
            path: source.to_path_buf(),
            size: meta.len(),
        });
        let node = Planned::new(kind, fhs_mode(dest, mode), self.origin.clone());
        self.stack.put(dest, node)
    }

    /// Copies a directory tree; symlinks stay symlinks, special files are skipped. Depth
    /// first, each directory's entries in name order, with a stack of its own (a deep tree
    /// cannot exhaust the thread's); the tree is listed on other threads as it is walked
    /// ([`listing`]).
    fn tree(&mut self, src: &Path, dest: &str) -> Result<(), PlanError> {
        listing::with_listings(src, |listings| self.walk(listings, src, dest))
    }

    fn walk(&mut self, listings: &Listings, src: &Path, dest: &str) -> Result<(), PlanError> {
        let read = |path: &Path, e| PlanError::Read {
            path: path.to_path_buf(),
            source: e,
        };
        // A directory the listing showed as one is read by the listers; one that became a
        // directory since (its stat says so) is read here.
        let list = |dir: &Path, listed: bool| -> Result<_, PlanError> {
            let children = if listed {
                listings.take(dir)
            } else {
                listings.read(dir)
            };
            let children = children.map_err(|e| read(dir, e))?;
            Ok((dir.to_path_buf(), children.into_iter()))
        };
        // The directories being copied, innermost last: where each is, what is left of it,
        // and its destination.
        let (dir, children) = list(src, true)?;
        let mut open = vec![(dir, children, dest.to_string())];
        while let Some((dir, children, dest)) = open.last_mut() {
            let Some(child) = children.next() else {
                open.pop();
                continue;
            };
            let path = dir.join(&child.name);
            let Some(name) = child.name.to_str() else {
                return Err(self.not_utf8(&path));
            };
            let to = if dest == "/" {
                format!("/{name}")
            } else {
                format!("{dest}/{name}")
            };
            let listed = child.listed.map_err(|e| read(&path, e))?;
            let meta = child.meta.transpose().map_err(|e| read(&path, e))?;
            let ft = meta.as_ref().map_or(listed, fs::Metadata::file_type);
            if ft.is_dir() {
                let node = Planned::new(Kind::Dir, 0o755, self.origin.clone());
                self.stack.put(&to, node)?;
                let (dir, children) = list(&path, listed.is_dir())?;
                open.push((dir, children, to));
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| read(&path, e))?;
                let Some(target) = target.to_str() else {
                    return Err(self.not_utf8(&path));
                };
                let node = Planned::new(Kind::Symlink(target.into()), 0o777, self.origin.clone());
                self.stack.put(&to, node)?;
            } else if let Some(meta) = meta.as_ref().filter(|_| ft.is_file()) {
                if self.is_ours(name, meta) {
                    let why = "fledge's own output or temporary file";
                    self.stack
                        .note(format!("{}: left out: {why}", shown(&path)));
                } else {
                    self.file(&path, &to, meta)?;
                }
            } else {
                let what = if ft.is_socket() {
                    "a socket"
                } else if ft.is_fifo() {
                    "a FIFO"
                } else {
                    "a device node"
                };
                self.stack
                    .warn(format!("{}: skipped: it is {what}", shown(&path)));
            }
        }
        Ok(())
    }

    /// One of this build's outputs, or a temporary file of fledge's naming.
    fn is_ours(&self, name: &str, meta: &fs::Metadata) -> bool {
        crate::output::is_temp_name(name) || self.outputs.contains(&(meta.dev(), meta.ino()))
    }

    fn not_utf8(&self, path: &Path) -> PlanError {
        let (line, key) = self.origin.key();
        self.stack.invalid(
            line,
            &key,
            format!(
                "pulls in {}, whose name (or link target) is not UTF-8, which fledge does not store: rename it or map the files around it",
                path.display()
            ),
        )
    }
}

/// `//a/./b/` -> `/a/b`.
fn clean_dest(dest: &str) -> String {
    crate::tree::absolute(&crate::tree::components(dest).collect::<Vec<_>>())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Permission bits for a mapped file, following the FHS rules of the original: an executable
/// source keeps its x bits, normalised to where it has r bits; an executable directory or a
/// `.so` under a library directory gets 0755; anything else 0644. Whoever may not read the
/// source (group, others) gets no bits in the image either: 0600 and 0640 stay so.
pub fn fhs_mode(dest: &str, source_mode: u32) -> u32 {
    let mut keep = 0o777;
    if source_mode & 0o040 == 0 {
        keep &= !0o070;
    }
    if source_mode & 0o004 == 0 {
        keep &= !0o007;
    }
    fhs_rule(dest, source_mode) & keep
}

fn fhs_rule(dest: &str, source_mode: u32) -> u32 {
    if source_mode & 0o111 != 0 {
        let rw = source_mode & 0o666;
        return rw | ((rw & 0o444) >> 2);
    }
    let under = |dirs: &[&str]| dirs.iter().any(|d| dest.starts_with(d));
    let name = dest.rsplit('/').next().unwrap_or(dest);
    if under(EXEC_DIRS) || (under(LIB_DIRS) && (name.ends_with(".so") || name.contains(".so."))) {
        0o755
    } else {
        0o644
    }
}
