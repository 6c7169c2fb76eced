//! The mappings layer: the user's `[mappings]`, host files and trees copied to their
//! destinations with the FHS permission rules.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use super::{invalid, Inputs, Layer, Node, Origin, PlanError, Stack};
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
    for m in &inputs.config.mappings {
        mapping(inputs.config, stack, m)?;
    }
    Ok(())
}

fn mapping(cfg: &Config, stack: &mut Stack, m: &Mapping) -> Result<(), PlanError> {
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
    let origin = Origin::Mapping {
        key: m.key.clone(),
        line: m.line,
    };
    if meta.is_dir() {
        if dest != "/" {
            stack.put(&dest, Node::new(Kind::Dir, 0o755, origin.clone()))?;
        }
        tree(stack, &m.source, &dest, &origin)
    } else if meta.is_file() && dest == "/" {
        Err(stack.invalid(
            m.line,
            &key,
            "maps a file to /, which is the image's root directory: give the file's full destination, e.g. \"/usr/bin/app\"",
        ))
    } else if meta.is_file() {
        stack.put(&dest, file(&m.source, &dest, &meta, origin))
    } else {
        Err(stack.invalid(
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
fn file(source: &Path, dest: &str, meta: &fs::Metadata, origin: Origin) -> Node {
    let perm = fhs_mode(dest, meta.permissions().mode());
    let kind = Kind::File(Content::Path {
        path: source.to_path_buf(),
        size: meta.len(),
    });
    Node::new(kind, perm, origin)
}

/// Copies a directory tree; symlinks stay symlinks, special files are skipped.
fn tree(stack: &mut Stack, src: &Path, dest: &str, origin: &Origin) -> Result<(), PlanError> {
    let read = |path: &Path, e| PlanError::Read {
        path: path.to_path_buf(),
        source: e,
    };
    let mut children: Vec<_> = fs::read_dir(src)
        .map_err(|e| read(src, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(src, e))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let name = child.file_name();
        let Some(name) = name.to_str() else {
            stack.warn(format!(
                "{}: skipped: the name is not UTF-8",
                path.display()
            ));
            continue;
        };
        let to = if dest == "/" {
            format!("/{name}")
        } else {
            format!("{dest}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(|e| read(&path, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            stack.put(&to, Node::new(Kind::Dir, 0o755, origin.clone()))?;
            tree(stack, &path, &to, origin)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| read(&path, e))?;
            let target = target.to_string_lossy().into_owned();
            stack.put(&to, Node::new(Kind::Symlink(target), 0o777, origin.clone()))?;
        } else if ft.is_file() {
            stack.put(&to, file(&path, &to, &meta, origin.clone()))?;
        } else {
            let what = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a FIFO"
            } else {
                "a device node"
            };
            stack.warn(format!("{}: skipped: it is {what}", path.display()));
        }
    }
    Ok(())
}

/// `//a/./b/` -> `/a/b`.
fn clean_dest(dest: &str) -> String {
    let parts: Vec<&str> = dest
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Permission bits for a mapped file, following the FHS rules of the original: an executable
/// source keeps its x bits, normalised to where it has r bits; an executable directory or a
/// `.so` under a library directory gets 0755; anything else 0644.
pub fn fhs_mode(dest: &str, source_mode: u32) -> u32 {
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
