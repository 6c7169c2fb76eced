//! The image plan: every path of the image, composed from an ordered stack of sources.
//!
//! [`plan`] runs the layers of [`LAYERS`] bottom to top. Each layer is one module that adds the
//! entries of one source (base directories and nodes, busybox and its links, the user's
//! mappings, fledge's own files) to a [`Stack`], and may read what the layers below it placed
//! ([`Stack::plan`]), e.g. to find the ELF files placed so far. Every entry carries its
//! [`Origin`], which decides what may replace it and what messages say.
//!
//! # Precedence
//!
//! When a layer gives a path an earlier layer already placed, one rule decides
//! ([`Stack::put`]):
//!
//! 1. a directory onto a directory merges: the first keeps its permissions, owner and origin;
//! 2. a non-directory onto an entry whose origin is [`Origin::replaceable`] (a busybox applet
//!    link) replaces it: the later wins, noted in [`Plan::notes`] (shown by `-v`);
//! 3. anything else is an error that names both origins.
//!
//! Missing parent directories are created 0755, owned 0:0, with the origin of the entry that
//! needed them; a non-directory in the way is an error by rule 3.
//!
//! # Adding a source
//!
//! Write a module with an `add(inputs, stack)` function (and a `check` for what can be checked
//! before any download), give its entries a new [`Origin`] variant, and add one line to
//! [`LAYERS`] where it belongs. Its inputs go in a new field of [`Inputs`].

mod base;
mod busybox;
mod fledge;
mod image;
mod kernel;
mod libraries;
mod listing;
mod mappings;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use crate::archive::Kind;
use crate::config::{Config, Location};
use crate::fetch::Fetched;
use crate::tree::{self, Last, Missing, Tree};

pub use base::BASE_DIRS;
pub use busybox::BASE_APPLETS;
pub use libraries::{problems, runnable, PlanTree, Strictness};
pub use mappings::fhs_mode;

/// A layout that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{at}: `{key}` {problem}")]
    Invalid {
        at: Location,
        key: String,
        problem: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a path in the plan came from: decides what may replace it and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Part of every image (directories, device nodes).
    Base,
    /// busybox itself (`[source] busybox_url`).
    Busybox,
    /// A busybox applet link: a later source may replace it.
    Applet,
    /// From a `[mappings]` entry.
    Mapping { key: String, line: Option<usize> },
    /// `fledge-init` as `/init`.
    FledgeInit,
    /// The kestrel agent (`[agent]`).
    Agent,
    /// The custom init installed from a host file (`init.path`).
    CustomInit,
    /// `/.volant_init`, naming the custom init (`init.path`).
    VolantInit,
    /// `fledge-init`'s baked options (`init.supervise`).
    InitConf,
    /// From `[kernel]`: a module, firmware or the load list; the text says which and why.
    Kernel(String),
    /// From layer `layer` (1 = the bottom one) of `[source] image`.
    Image { layer: usize },
    /// The workload spec (`[init] command`, `env`, `workdir`, `user`, `hostname`, `nofile`).
    Workload,
    /// A shared library (or its link) the program at this path needs (`[build] libraries`).
    Library { program: String },
}

impl Origin {
    /// A later source may replace an entry of this origin (rule 2 of the module doc).
    pub fn replaceable(&self) -> bool {
        matches!(self, Origin::Applet | Origin::Image { .. })
    }

    /// One of fledge's own files, which must win over an image's and says so.
    fn is_fledge_file(&self) -> bool {
        matches!(
            self,
            Origin::FledgeInit
                | Origin::Agent
                | Origin::CustomInit
                | Origin::VolantInit
                | Origin::InitConf
                | Origin::Workload
        )
    }

    /// The config key behind this origin and its line, for the location of a message.
    fn key(&self) -> (Option<usize>, String) {
        let key = match self {
            Origin::Mapping { key, line } => return (*line, format!("mappings.\"{key}\"")),
            Origin::Base | Origin::Applet => "mappings",
            Origin::Busybox => "source.busybox_url",
            Origin::FledgeInit => "init",
            Origin::Agent => "agent",
            Origin::CustomInit | Origin::VolantInit => "init.path",
            Origin::InitConf => "init.supervise",
            Origin::Kernel(_) => "kernel.modules",
            Origin::Image { .. } => "source.image",
            Origin::Workload => "init",
            Origin::Library { .. } => "build.libraries",
        };
        (None, key.to_string())
    }

    /// "writes PATH, which ...": what `path` already is, and what to do instead.
    fn clash(&self, path: &str) -> String {
        match self {
            Origin::Mapping { key, line } => {
                let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
                format!("writes {path}, which mappings.\"{key}\"{at} also writes: each path may come from one mapping only")
            }
            Origin::Agent => format!(
                "writes {path}, where fledge puts the kestrel agent: set [agent] source_strategy = \"local\" and path = \"...\" instead"
            ),
            Origin::Busybox => format!(
                "writes {path}, where fledge puts busybox: set [source] busybox_url = \"...\" instead"
            ),
            Origin::FledgeInit => format!(
                "writes {path}, which is fledge-init in this mode: to run your own program as /init set [init] none = true"
            ),
            Origin::CustomInit
            | Origin::VolantInit
            | Origin::InitConf
            | Origin::Kernel(_)
            | Origin::Workload => {
                let (_, k) = self.key();
                format!("writes {path}, which fledge creates from `{k}`: choose another destination")
            }
            Origin::Base => format!(
                "writes {path}, which every image needs as it is (fledge's base layout): choose another destination"
            ),
            Origin::Applet => format!(
                "writes {path}, which every image needs as it is (a busybox applet link): choose another destination"
            ),
            Origin::Image { layer } => format!(
                "writes {path}, which layer {layer} of the image has as another kind of file: choose another destination"
            ),
            Origin::Library { program } => format!(
                "writes {path}, which {program} needs from `build.sysroot`: choose another destination"
            ),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Mapping { key, line: Some(l) } => write!(f, "mappings.\"{key}\" (line {l})"),
            Origin::Mapping { key, line: None } => write!(f, "mappings.\"{key}\""),
            Origin::Base => f.write_str("fledge's base layout"),
            Origin::Busybox => f.write_str("busybox (source.busybox_url)"),
            Origin::Applet => f.write_str("a busybox applet link"),
            Origin::FledgeInit => f.write_str("fledge-init"),
            Origin::Agent => f.write_str("the kestrel agent ([agent])"),
            Origin::CustomInit => f.write_str("the custom init (init.path)"),
            Origin::VolantInit => f.write_str("the custom init's name (init.path)"),
            Origin::InitConf => f.write_str("fledge-init's options (init.supervise)"),
            Origin::Kernel(why) => write!(f, "kernel modules ([kernel]: {why})"),
            Origin::Image { layer } => write!(f, "layer {layer} of the image (source.image)"),
            Origin::Workload => f.write_str("the workload spec ([init] command, env, ...)"),
            Origin::Library { program } => write!(f, "the shared libraries of {program}"),
        }
    }
}

/// One planned path of the image, before normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub kind: Kind,
    /// Permission bits (with setuid/setgid/sticky), no file-type bits.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub origin: Origin,
}

impl Planned {
    /// A node owned by 0:0.
    pub fn new(kind: Kind, perm: u32, origin: Origin) -> Planned {
        Planned {
            kind,
            perm,
            uid: 0,
            gid: 0,
            origin,
        }
    }

    /// The same node with another owner.
    pub fn owned_by(self, uid: u32, gid: u32) -> Planned {
        Planned { uid, gid, ..self }
    }
}

/// Whether `path` is absolute with no empty, `.` or `..` component and no trailing `/`.
fn is_normal(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    })
}

/// Every path of the image (absolute, normalised), with what it is. A path is stored once:
/// the archive entries made from the plan share it ([`crate::normalise`]).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub nodes: BTreeMap<Arc<str>, Planned>,
    /// Things worth telling the user (skipped sockets, ...).
    pub warnings: Vec<String>,
    /// What `-v` shows: entries a later source replaced.
    pub notes: Vec<String>,
}

impl Plan {
    /// `path` with its parent directories resolved through every planned symlink, as the
    /// kernel's path walk will at boot; the last component is kept as it is. A loop leaves the
    /// rest unresolved, for the put to refuse.
    pub fn resolved(&self, path: &str) -> String {
        self.resolve(path, None, Last::Keep)
    }

    /// `path` resolved through the planned symlinks (only those in `only`, when given);
    /// directories not planned yet count as made.
    fn resolve(&self, path: &str, only: Option<&BTreeSet<Arc<str>>>, last: Last) -> String {
        let view = View { plan: self, only };
        match tree::walk(&view, path, last, Missing::Create) {
            Ok(w) => w.real,
            Err(e) => tree::symlink_loop(&e)
                .map(|l| l.partial.clone())
                .unwrap_or_else(|| path.to_string()),
        }
    }
}

/// The plan seen as a tree by [`tree::walk`]: with `only`, symlinks outside it are plain
/// entries.
struct View<'a> {
    plan: &'a Plan,
    only: Option<&'a BTreeSet<Arc<str>>>,
}

impl Tree for View<'_> {
    fn node(&self, path: &str) -> std::io::Result<Option<tree::Node>> {
        Ok(self.plan.nodes.get(path).map(|n| match &n.kind {
            Kind::Symlink(t) if self.only.is_none_or(|l| l.contains(path)) => {
                tree::Node::Symlink(t.clone())
            }
            Kind::Dir => tree::Node::Dir,
            Kind::File(_) => tree::Node::File,
            _ => tree::Node::Other,
        }))
    }
}

/// What the layers lay out besides the config's mappings.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub busybox: &'a Fetched,
    /// The agent; present in default mode.
    pub agent: Option<&'a Fetched>,
    /// The `fledge-init` binary for the guest.
    pub init: &'a [u8],
    /// The kernel modules `[kernel]` asks for, read and checked.
    pub modules: Option<&'a crate::kmod::Modules>,
    /// The files this build writes (image, manifest): left out of mapped trees.
    pub outputs: &'a [PathBuf],
    /// `[source] image`, read and applied (`None` when there is none, or for `validate`,
    /// which does not pull).
    pub image: Option<&'a crate::image::Image>,
}

/// One source of image entries.
pub struct Layer {
    /// What the source is, for messages.
    pub name: &'static str,
    /// Checks what can be checked before anything is fetched (host files exist, ...).
    pub check: fn(&Config) -> Result<(), PlanError>,
    /// Adds the source's entries on top of what the layers below placed.
    pub add: fn(&Inputs, &mut Stack) -> Result<(), PlanError>,
}

/// What fledge-init reads: fledge's own in every mode, never an image's, never through a link.
pub const OWN_PATHS: [&str; 5] = [
    fledge_abi::paths::INIT,
    fledge_abi::paths::VOLANT_INIT,
    fledge_abi::paths::INIT_CONF,
    fledge_abi::paths::WORKLOAD,
    fledge_abi::paths::MODULES_LOAD,
];

/// The largest file a newc archive holds (its size field is 32 bits).
pub const MAX_FILE: u64 = u32::MAX as u64;

/// The image's sources, bottom to top.
pub const LAYERS: &[Layer] = &[
    image::LAYER,
    base::LAYER,
    busybox::LAYER,
    mappings::LAYER,
    kernel::LAYER,
    fledge::LAYER,
    // last: it needs every ELF file placed, fledge's own (agent, custom init) included
    libraries::LAYER,
];

/// Checks, for every layer, what can be checked before anything is fetched, so a typo fails at
/// once rather than after a download.
pub fn check_sources(cfg: &Config) -> Result<(), PlanError> {
    LAYERS.iter().try_for_each(|l| (l.check)(cfg))
}

/// Lays out the image: every layer of [`LAYERS`] in order.
pub fn plan(inputs: &Inputs) -> Result<Plan, PlanError> {
    let mut stack = Stack {
        cfg: inputs.config,
        plan: Plan::default(),
        links: BTreeSet::new(),
    };
    for layer in LAYERS {
        log::trace!("planning {}", layer.name);
        (layer.add)(inputs, &mut stack)?;
    }
    Ok(stack.plan)
}

/// The plan being built: what the layers so far placed, and the one way to add to it.
pub struct Stack<'a> {
    cfg: &'a Config,
    plan: Plan,
    /// The planned paths that are the image's symlinks: the only links paths resolve through.
    links: BTreeSet<Arc<str>>,
}

impl Stack<'_> {
    /// What the layers so far placed.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// A warning for the user (each said once).
    pub fn warn(&mut self, message: String) {
        if !self.plan.warnings.contains(&message) {
            self.plan.warnings.push(message);
        }
    }

    /// A note for `-v`.
    pub fn note(&mut self, message: String) {
        self.plan.notes.push(message);
    }

    /// Sets the permission bits of a planned path (the source that needs it says why).
    pub fn set_perm(&mut self, path: &str, perm: u32) {
        if let Some(n) = self.plan.nodes.get_mut(path) {
            n.perm = perm;
        }
    }

    /// An error about `key` of the config, at `line`.
    pub fn invalid(&self, line: Option<usize>, key: &str, problem: impl Into<String>) -> PlanError {
        invalid(self.cfg, line, key, problem)
    }

    /// Whether `path` is planned, its parents resolved through the image's symlinks.
    pub fn has(&self, path: &str) -> bool {
        self.plan
            .nodes
            .contains_key(self.resolve(path, false).as_str())
    }

    /// `path` with its parent directories resolved through the image's symlinks: where the
    /// plan holds it.
    pub fn resolved(&self, path: &str) -> String {
        self.resolve(path, false)
    }

    /// `path` with its parent directories resolved through the image's symlinks (its
    /// `/bin -> usr/bin`), inside the image root; with `follow`, the last component too.
    fn resolve(&self, path: &str, follow: bool) -> String {
        // With no image link to follow, a path in normal form is where it is (the walk would
        // give it back unchanged, one lookup per component).
        if self.links.is_empty() && is_normal(path) {
            return path.to_string();
        }
        let last = if follow { Last::Follow } else { Last::Keep };
        self.plan.resolve(path, Some(&self.links), last)
    }

    /// Adds an entry of the container image at `path`, which the image's tree resolved: the
    /// image is the bottom layer, so nothing is there yet and its parent directory is planned
    /// (the tree gives directories first). The path is kept as given, not copied.
    pub fn put_resolved(&mut self, path: Arc<str>, node: Planned) -> Result<(), PlanError> {
        let parent = path.rfind('/').map_or("", |i| &path[..i]);
        let parent_planned = parent.is_empty()
            || self
                .plan
                .nodes
                .get(parent)
                .is_some_and(|n| n.kind == Kind::Dir);
        if !parent_planned
            || self.plan.nodes.contains_key(&*path)
            || path.strip_prefix('/') == Some(crate::archive::TRAILER)
        {
            return self.put(&path, node);
        }
        self.insert(path, node);
        Ok(())
    }

    /// Inserts a node at a resolved path, keeping the image's links known.
    fn insert(&mut self, path: Arc<str>, node: Planned) {
        if matches!(
            (&node.kind, &node.origin),
            (Kind::Symlink(_), Origin::Image { .. })
        ) {
            self.links.insert(path.clone());
        } else if !self.links.is_empty() {
            self.links.remove(&*path);
        }
        self.plan.nodes.insert(path, node);
    }

    /// Adds `node` at `path` by the precedence rule of the module doc.
    pub fn put(&mut self, path: &str, node: Planned) -> Result<(), PlanError> {
        if let Kind::File(c) = &node.kind {
            if c.len() > MAX_FILE {
                let (line, key) = node.origin.key();
                return Err(self.invalid(line, &key, format!(
                    "puts {path} in the image, {} bytes, over the newc format's limit of {MAX_FILE} bytes (4 GiB - 1): leave it out or split it",
                    c.len()
                )));
            }
        }
        let resolved = self.resolve(path, false);
        if OWN_PATHS.contains(&path) && resolved != path {
            // fledge-init opens the literal path at boot, where the image's link may lead
            // somewhere a mount hides (`/etc -> tmp`).
            let (line, key) = node.origin.key();
            let (link, target) = self.first_image_link(path);
            return Err(self.invalid(line, &key, format!(
                "puts {path} in the image, but the image's {link} is a symlink to {target}: fledge-init reads {path} at boot and fledge does not write it through an image's link; make {link} a directory in the image"
            )));
        }
        let path = resolved.as_str();
        if path.strip_prefix('/') == Some(crate::archive::TRAILER) {
            let (line, key) = node.origin.key();
            return Err(self.invalid(line, &key, format!(
                "puts {path} in the image, but the newc format ends an archive at an entry named {}: the kernel would not create it (give it another name)",
                crate::archive::TRAILER
            )));
        }
        self.parents(path, &node.origin)?;
        if let Some(old) = self.plan.nodes.get(path) {
            match (&old.kind, &node.kind) {
                (Kind::Dir, Kind::Dir) => return Ok(()),
                // A directory onto an image's symlink to a directory merges into that one; onto
                // one whose target is missing (`/bin -> usr/bin` without `/usr/bin`) it makes it.
                (Kind::Symlink(_), Kind::Dir) if matches!(old.origin, Origin::Image { .. }) => {
                    let target = self.resolve(path, true);
                    match self.plan.nodes.get(target.as_str()).map(|n| &n.kind) {
                        Some(Kind::Dir) => return Ok(()),
                        None if target != path => return self.put(&target, node),
                        _ => return Err(self.conflict(path, &old.origin, &node.origin)),
                    }
                }
                (old_kind, k) if old.origin.replaceable() && !matches!(k, Kind::Dir) => {
                    let note = format!("{path}: {} replaces {}", node.origin, old.origin);
                    // What was below a directory goes with it (fledge's own files say what
                    // of the image's they leave out, see the fledge layer).
                    let below = matches!(old_kind, Kind::Dir) && !node.origin.is_fledge_file();
                    if matches!(old.origin, Origin::Image { .. }) && node.origin.is_fledge_file() {
                        self.plan.warnings.push(note);
                    } else {
                        self.plan.notes.push(note);
                    }
                    if below {
                        let gone = self.remove_tree(path).len() - 1;
                        if gone > 0 {
                            self.plan
                                .notes
                                .push(format!("{path}: {gone} paths under it go with it"));
                        }
                    }
                }
                _ => return Err(self.conflict(path, &old.origin, &node.origin)),
            }
        }
        self.insert(path.into(), node);
        Ok(())
    }

    /// The first parent directory of `path` that is an image's symlink, and its target.
    fn first_image_link(&self, path: &str) -> (String, String) {
        let mut at = String::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            at.push('/');
            at.push_str(c);
            if let Some(Planned {
                kind: Kind::Symlink(t),
                origin: Origin::Image { .. },
                ..
            }) = self.plan.nodes.get(at.as_str())
            {
                return (at, t.clone());
            }
        }
        (path.to_string(), String::new())
    }

    /// Removes `path` and everything under it; returns the removed paths' origins by path.
    pub fn remove_tree(&mut self, path: &str) -> Vec<(String, Origin)> {
        // Keys starting with "path/" sort between "path/" and "path0" ('0' follows '/').
        let (from, to) = (format!("{path}/"), format!("{path}0"));
        let below = (Bound::Included(from.as_str()), Bound::Excluded(to.as_str()));
        let gone: Vec<Arc<str>> = self
            .plan
            .nodes
            .get_key_value(path)
            .map(|(k, _)| k.clone())
            .into_iter()
            .chain(
                self.plan
                    .nodes
                    .range::<str, _>(below)
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        gone.into_iter()
            .filter_map(|p| {
                self.links.remove(&p);
                self.plan
                    .nodes
                    .remove(&p)
                    .map(|n| (p.to_string(), n.origin))
            })
            .collect()
    }

    /// Plans the missing parent directories of `path` (resolved). The parents of a planned
    /// path are planned directories, so the nearest planned one decides: a directory, or a
    /// conflict.
    fn parents(&mut self, path: &str, origin: &Origin) -> Result<(), PlanError> {
        let mut missing = Vec::new();
        let mut end = path.len();
        while let Some(i) = path[..end].rfind('/').filter(|i| *i > 0) {
            let dir = &path[..i];
            match self.plan.nodes.get(dir) {
                None => missing.push(i),
                Some(n) if n.kind == Kind::Dir => break,
                Some(old) => return Err(self.conflict(dir, &old.origin, origin)),
            }
            end = i;
        }
        for i in missing.into_iter().rev() {
            let node = Planned::new(Kind::Dir, 0o755, origin.clone());
            self.insert(path[..i].into(), node);
        }
        Ok(())
    }

    /// Two sources give one path: the message is about the user's entry (a mapping, when one of
    /// the two is) and names the other.
    fn conflict(&self, path: &str, old: &Origin, new: &Origin) -> PlanError {
        let is_mapping = |o: &Origin| matches!(o, Origin::Mapping { .. });
        // What every image has is never the one to change: the image's entry is.
        let is_base = |o: &Origin| matches!(o, Origin::Base | Origin::Applet);
        let (subject, other) = if is_base(new) && matches!(old, Origin::Image { .. }) {
            (old, new)
        } else if is_mapping(new) || !is_mapping(old) {
            (new, old)
        } else {
            (old, new)
        };
        let (line, key) = subject.key();
        self.invalid(line, &key, other.clash(path))
    }
}

fn invalid(cfg: &Config, line: Option<usize>, key: &str, problem: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        at: Location {
            file: cfg.path.clone(),
            line,
        },
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// A layer with nothing to check before fetching.
fn nothing_to_check(_: &Config) -> Result<(), PlanError> {
    Ok(())
}

#[cfg(test)]
mod tests;
