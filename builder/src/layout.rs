//! Image layout: decides what goes where in the image, and the normaliser that makes it
//! reproducible.
//!
//! [`plan`] turns a validated [`Config`] and the fetched inputs into a [`Plan`]: every path of the
//! image with its kind, permission bits and where it came from, with the mode rules (init modes,
//! FHS permissions for mappings, conflicts) applied. [`normalise`] is the single place that
//! decides owner, mtime, inode numbers, hardlinks and order; see its doc for the guarantee.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::archive::{Content, Entry, Kind};
use crate::config::{Config, CustomInit, InitMode, Location, Mapping, CUSTOM_INIT_PATH};
use crate::source::Fetched;

/// Directories every image has (0755), besides `/tmp` (1777).
pub const BASE_DIRS: &[&str] = &[
    "/bin",
    "/dev",
    "/etc",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/sbin",
    "/var",
    "/var/log",
];

/// busybox applets linked in `/bin` (the original's list, plus what debugging a guest needs).
pub const BASE_APPLETS: &[&str] = &[
    // the original's
    "sh", "ash", "ls", "cat", "cp", "mv", "rm", "mkdir", "rmdir", "ln", "chmod", "chown", "ps",
    "kill", "mount", "umount", "grep", "sed", "awk", "find", "test", "echo", "printf", "true",
    "false", "sleep", "pwd", "cd", "env", "which", "tar", "gzip", "gunzip", "wget", "vi",
    // debugging and shutdown
    "[", "basename", "cut", "date", "df", "dirname", "dmesg", "du", "free", "head", "hostname",
    "id", "ip", "less", "mknod", "nc", "ping", "poweroff", "readlink", "reboot", "sort", "stat",
    "sync", "tail", "top", "touch", "tr", "uname", "uniq", "wc", "xargs",
];

/// Path of the file holding `fledge-init`'s baked options (kernel command-line syntax).
pub const INIT_CONF_PATH: &str = "/etc/fledge-init.conf";
/// Path of the file naming the custom init for `fledge-init`.
pub const VOLANT_INIT_PATH: &str = "/.volant_init";
/// Where the agent goes.
pub const AGENT_PATH: &str = "/bin/kestrel";
/// Where busybox goes.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

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

/// A layout that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
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

/// `path` for messages, without the `./` a relative config directory leaves inside it
/// (`././app` -> `./app`).
pub fn shown(path: &Path) -> String {
    path.components().collect::<PathBuf>().display().to_string()
}

/// Where a path in the plan came from: decides what may replace it and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Part of every image (directories, device nodes).
    Base,
    /// A busybox applet link: a mapping may replace it.
    Applet,
    /// Put there by the builder because of this config key.
    Builder(&'static str),
    /// From a mapping.
    Mapping { key: String, line: Option<usize> },
}

/// One path of the image before normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub perm: u32,
    pub origin: Origin,
}

/// Every path of the image (absolute, normalised), with what it is.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub nodes: BTreeMap<String, Node>,
    /// Things worth telling the user (skipped sockets, ...).
    pub warnings: Vec<String>,
}

/// What [`plan`] lays out besides the config's mappings.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub busybox: &'a Fetched,
    /// The agent; present in default mode.
    pub agent: Option<&'a Fetched>,
    /// The `fledge-init` binary for the guest.
    pub init: &'a [u8],
}

/// Checks that every host file the config names exists, before anything is fetched, so a typo
/// fails at once rather than after a download.
pub fn check_sources(cfg: &Config) -> Result<(), LayoutError> {
    let p = Planner {
        cfg,
        plan: Plan::default(),
    };
    if let InitMode::Custom {
        init: CustomInit::Host(host),
    } = &cfg.init
    {
        fs::metadata(host).map_err(|e| {
            p.invalid(
                None,
                "init.path",
                format!("names {}, which cannot be read ({e}): fix the path (relative to the config's directory) or create the file", shown(host)),
            )
        })?;
    }
    for m in &cfg.mappings {
        fs::metadata(&m.source).map_err(|e| {
            let key = format!("mappings.\"{}\"", m.key);
            p.invalid(
                m.line,
                &key,
                format!("names {}, which cannot be read ({e}): fix the path (relative to the config's directory) or create it", shown(&m.source)),
            )
        })?;
    }
    Ok(())
}

/// Lays out the image.
pub fn plan(inputs: &Inputs) -> Result<Plan, LayoutError> {
    let cfg = inputs.config;
    let mut p = Planner {
        cfg,
        plan: Plan::default(),
    };
    for d in BASE_DIRS {
        p.put(d, Kind::Dir, 0o755, Origin::Base)?;
    }
    p.put("/tmp", Kind::Dir, 0o1777, Origin::Base)?;
    p.put(
        "/dev/console",
        Kind::CharDev { major: 5, minor: 1 },
        0o600,
        Origin::Base,
    )?;
    p.put(
        "/dev/null",
        Kind::CharDev { major: 1, minor: 3 },
        0o666,
        Origin::Base,
    )?;

    let bb = Kind::File(Content::Path {
        path: inputs.busybox.path.clone(),
        size: inputs.busybox.size,
    });
    p.put(
        BUSYBOX_PATH,
        bb,
        0o755,
        Origin::Builder("source.busybox_url"),
    )?;
    let mut applets: Vec<&str> = BASE_APPLETS.to_vec();
    applets.extend(cfg.extra_applets.iter().map(String::as_str));
    for a in applets {
        let path = format!("/bin/{a}");
        if !p.plan.nodes.contains_key(&path) {
            p.put(
                &path,
                Kind::Symlink("busybox".into()),
                0o777,
                Origin::Applet,
            )?;
        }
    }

    let init_bin = || Kind::File(Content::Bytes(Arc::from(inputs.init)));
    match &cfg.init {
        InitMode::Default { .. } => {
            p.put("/init", init_bin(), 0o755, Origin::Builder("init"))?;
            let agent = inputs.agent.expect("default mode is planned with an agent");
            let kind = Kind::File(Content::Path {
                path: agent.path.clone(),
                size: agent.size,
            });
            p.put(AGENT_PATH, kind, 0o755, Origin::Builder("agent"))?;
        }
        InitMode::Custom { init } => {
            p.put("/init", init_bin(), 0o755, Origin::Builder("init"))?;
            let target = match init {
                CustomInit::InImage(path) => path.clone(),
                CustomInit::Host(host) => {
                    let meta = fs::metadata(host).map_err(|e| {
                        p.invalid(
                            None,
                            "init.path",
                            format!("names {}, which cannot be read ({e}): fix the path (relative to the config's directory) or create the file", shown(host)),
                        )
                    })?;
                    if !meta.is_file() {
                        return Err(p.invalid(
                            None,
                            "init.path",
                            format!("names {}, which is not a regular file: point `init.path` at your init script or program", shown(host)),
                        ));
                    }
                    let kind = Kind::File(Content::Path {
                        path: host.clone(),
                        size: meta.len(),
                    });
                    p.put(CUSTOM_INIT_PATH, kind, 0o755, Origin::Builder("init.path"))?;
                    CUSTOM_INIT_PATH.to_string()
                }
            };
            let line = Content::Bytes(Arc::from(format!("{target}\n").into_bytes()));
            p.put(
                VOLANT_INIT_PATH,
                Kind::File(line),
                0o644,
                Origin::Builder("init.path"),
            )?;
        }
        InitMode::None => {}
    }
    if cfg.supervise {
        let conf = Content::Bytes(Arc::from(
            &b"# written by fledge from [init] supervise = true\nfledge.supervise=1\n"[..],
        ));
        p.put(
            INIT_CONF_PATH,
            Kind::File(conf),
            0o644,
            Origin::Builder("init.supervise"),
        )?;
    }

    for m in &cfg.mappings {
        p.mapping(m)?;
    }

    match &cfg.init {
        // The program PID 1 execs must be executable wherever its mapping put it.
        InitMode::Custom { init: CustomInit::InImage(path) } => match p.plan.nodes.get_mut(path) {
            Some(Node { kind: Kind::File(_), perm, .. }) => *perm = 0o755,
            Some(Node { kind: Kind::Symlink(_), .. }) => {}
            _ => {
                return Err(p.invalid(
                    None,
                    "init.path",
                    format!("is {path}, but nothing in the image provides it: add a [mappings] entry whose destination is \"{path}\""),
                ));
            }
        },
        InitMode::None => match p.plan.nodes.get_mut("/init") {
            Some(Node { kind: Kind::File(_), perm, .. }) => *perm = 0o755,
            Some(Node { kind: Kind::Symlink(_), .. }) => {}
            _ => {
                return Err(p.invalid(
                    None,
                    "init.none",
                    "is true, but no mapping provides /init: add `\"./your-init\" = \"/init\"` under [mappings]",
                ))
            }
        },
        _ => {}
    }
    Ok(p.plan)
}

struct Planner<'a> {
    cfg: &'a Config,
    plan: Plan,
}

impl Planner<'_> {
    fn invalid(&self, line: Option<usize>, key: &str, problem: impl Into<String>) -> LayoutError {
        LayoutError::Invalid {
            at: Location {
                file: self.cfg.path.clone(),
                line,
            },
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    /// Adds a path, creating missing parents (0755) and applying the replacement rules.
    fn put(
        &mut self,
        path: &str,
        kind: Kind,
        perm: u32,
        origin: Origin,
    ) -> Result<(), LayoutError> {
        self.parents(path, &origin)?;
        if let Some(old) = self.plan.nodes.get(path) {
            match (&old.kind, &kind, &old.origin) {
                (Kind::Dir, Kind::Dir, _) => return Ok(()),
                (_, _, Origin::Applet) if !matches!(kind, Kind::Dir) => {}
                _ => return Err(self.conflict(path, &old.origin, &origin)),
            }
        }
        self.plan
            .nodes
            .insert(path.to_string(), Node { kind, perm, origin });
        Ok(())
    }

    fn parents(&mut self, path: &str, origin: &Origin) -> Result<(), LayoutError> {
        let mut end = 0;
        while let Some(i) = path[end + 1..].find('/') {
            end += 1 + i;
            let dir = &path[..end];
            match self.plan.nodes.get(dir) {
                None => {
                    let node = Node {
                        kind: Kind::Dir,
                        perm: 0o755,
                        origin: origin.clone(),
                    };
                    self.plan.nodes.insert(dir.to_string(), node);
                }
                Some(Node {
                    kind: Kind::Dir, ..
                }) => {}
                Some(old) => {
                    let old = old.origin.clone();
                    return Err(self.conflict(dir, &old, origin));
                }
            }
        }
        Ok(())
    }

    fn conflict(&self, path: &str, old: &Origin, new: &Origin) -> LayoutError {
        let (line, key) = match new {
            Origin::Mapping { key, line } => (*line, format!("mappings.\"{key}\"")),
            Origin::Builder(k) => (None, (*k).to_string()),
            _ => (None, "mappings".to_string()),
        };
        let problem = match old {
            Origin::Mapping { key: other, line: other_line } => {
                let at = other_line.map(|l| format!(" (line {l})")).unwrap_or_default();
                format!("writes {path}, which mappings.\"{other}\"{at} also writes: each path may come from one mapping only")
            }
            Origin::Builder("agent") => format!(
                "writes {path}, where fledge puts the kestrel agent: set [agent] source_strategy = \"local\" and path = \"...\" instead"
            ),
            Origin::Builder("source.busybox_url") => format!(
                "writes {path}, where fledge puts busybox: set [source] busybox_url = \"...\" instead"
            ),
            Origin::Builder("init") => format!(
                "writes {path}, which is fledge-init in this mode: to run your own program as /init set [init] none = true"
            ),
            Origin::Builder(k) => format!("writes {path}, which fledge creates from `{k}`: choose another destination"),
            Origin::Base | Origin::Applet => {
                format!("writes {path}, which every image needs as it is: choose another destination")
            }
        };
        LayoutError::Invalid {
            at: Location {
                file: self.cfg.path.clone(),
                line,
            },
            key,
            problem,
        }
    }

    fn mapping(&mut self, m: &Mapping) -> Result<(), LayoutError> {
        let key = format!("mappings.\"{}\"", m.key);
        let dest = clean_dest(&m.dest);
        let meta = fs::metadata(&m.source).map_err(|e| {
            self.invalid(
                m.line,
                &key,
                format!("names {}, which cannot be read ({e}): fix the path (relative to the config's directory) or create it", shown(&m.source)),
            )
        })?;
        // The seed's idiom: the custom init mapped to /init too. fledge-init stays /init.
        if dest == "/init" {
            if let InitMode::Custom {
                init: CustomInit::Host(host),
            } = &self.cfg.init
            {
                if same_file(host, &m.source) {
                    log::debug!("{key}: the custom init runs from {CUSTOM_INIT_PATH}; /init stays fledge-init");
                    return Ok(());
                }
            }
        }
        let origin = Origin::Mapping {
            key: m.key.clone(),
            line: m.line,
        };
        if meta.is_dir() {
            if dest != "/" {
                self.put(&dest, Kind::Dir, 0o755, origin.clone())?;
            }
            self.tree(&m.source, &dest, &origin)
        } else if meta.is_file() && dest == "/" {
            Err(self.invalid(
                m.line,
                &key,
                "maps a file to /, which is the image's root directory: give the file's full destination, e.g. \"/usr/bin/app\"",
            ))
        } else if meta.is_file() {
            let perm = fhs_mode(&dest, meta.permissions().mode());
            let kind = Kind::File(Content::Path {
                path: m.source.clone(),
                size: meta.len(),
            });
            self.put(&dest, kind, perm, origin)
        } else {
            Err(self.invalid(
                m.line,
                &key,
                format!(
                    "names {}, which is neither a file nor a directory",
                    m.source.display()
                ),
            ))
        }
    }

    /// Copies a directory tree; symlinks stay symlinks, special files are skipped.
    fn tree(&mut self, src: &Path, dest: &str, origin: &Origin) -> Result<(), LayoutError> {
        let read = |path: &Path, e| LayoutError::Read {
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
                self.plan.warnings.push(format!(
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
                self.put(&to, Kind::Dir, 0o755, origin.clone())?;
                self.tree(&path, &to, origin)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| read(&path, e))?;
                let target = target.to_string_lossy().into_owned();
                self.put(&to, Kind::Symlink(target), 0o777, origin.clone())?;
            } else if ft.is_file() {
                let perm = fhs_mode(&to, meta.permissions().mode());
                let kind = Kind::File(Content::Path {
                    path: path.clone(),
                    size: meta.len(),
                });
                self.put(&to, kind, perm, origin.clone())?;
            } else {
                let what = if ft.is_socket() {
                    "a socket"
                } else if ft.is_fifo() {
                    "a FIFO"
                } else {
                    "a device node"
                };
                self.plan
                    .warnings
                    .push(format!("{}: skipped: it is {what}", path.display()));
            }
        }
        Ok(())
    }
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

/// Turns a plan into archive entries, the one place that fixes everything reproducibility
/// depends on.
///
/// Guarantee: the result, and so the archive bytes, is a function of the plan's paths, kinds,
/// permission bits and file contents, and of `mtime` only. Owners are 0:0; every mtime is
/// `mtime`; entries are in byte order of their paths, which puts every directory before its
/// children; inode numbers count from 1 in that order. With `dedup`, regular files of equal
/// content and permissions become one newc hardlink group: they share the inode of the first,
/// and only the last of the group carries the body (the layout GNU cpio writes and the kernel
/// reads). The bodiless members move to just before that last one, so a group is contiguous
/// and never holds a long stretch of the archive in one compression segment (moving a file
/// later cannot put it before its parent).
pub fn normalise(plan: &Plan, mtime: u32, dedup: bool) -> Result<Vec<Entry>, LayoutError> {
    let mut entries: Vec<Entry> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, (path, node))| Entry {
            path: path.trim_start_matches('/').to_string(),
            kind: node.kind.clone(),
            perm: node.perm,
            uid: 0,
            gid: 0,
            ino: i as u32 + 1,
            nlink: if matches!(node.kind, Kind::Dir) { 2 } else { 1 },
            mtime,
        })
        .collect();
    if dedup {
        link_duplicates(&mut entries)?;
    }
    Ok(entries)
}

/// Groups regular files of the same size, content and permissions into hardlinks.
fn link_duplicates(entries: &mut Vec<Entry>) -> Result<(), LayoutError> {
    let mut by_size: HashMap<(u64, u32), Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Kind::File(c) = &e.kind {
            if !c.is_empty() {
                by_size.entry((c.len(), e.perm)).or_default().push(i);
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (_, idxs) in by_size.into_iter().filter(|(_, v)| v.len() > 1) {
        let mut by_hash: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
        for i in idxs {
            let Kind::File(c) = &entries[i].kind else {
                unreachable!()
            };
            by_hash.entry(content_hash(c)?).or_default().push(i);
        }
        groups.extend(by_hash.into_values().filter(|v| v.len() > 1));
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

fn content_hash(c: &Content) -> Result<[u8; 32], LayoutError> {
    match c {
        Content::Empty => Ok(Sha256::digest(b"").into()),
        Content::Bytes(b) => Ok(Sha256::digest(b).into()),
        Content::Path { path, .. } => {
            let err = |e| LayoutError::Read {
                path: path.clone(),
                source: e,
            };
            let mut f = fs::File::open(path).map_err(err)?;
            Ok(crate::source::sha256_reader(&mut f).map_err(err)?.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    struct Fixture {
        dir: tempfile::TempDir,
        busybox: Fetched,
        agent: Fetched,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let bb = dir.path().join("busybox");
        fs::write(&bb, b"bb").unwrap();
        let ag = dir.path().join("kestrel");
        fs::write(&ag, b"agent").unwrap();
        let f = |p: PathBuf| Fetched {
            path: p,
            sha256: String::new(),
            size: 2,
            origin: String::new(),
            cached: false,
        };
        let mut agent = f(ag);
        agent.size = 5;
        Fixture {
            busybox: f(bb),
            agent,
            dir,
        }
    }

    fn write(fx: &Fixture, rel: &str, body: &[u8], mode: u32) {
        let p = fx.dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn plan_of(fx: &Fixture, body: &str) -> Result<Plan, LayoutError> {
        let text = format!("version = \"1\"\nstrategy = \"initramfs\"\n{body}");
        let cfg = Config::from_str(&text, &fx.dir.path().join("fledge.toml")).unwrap();
        let agent = matches!(cfg.init, InitMode::Default { .. }).then_some(&fx.agent);
        plan(&Inputs {
            config: &cfg,
            busybox: &fx.busybox,
            agent,
            init: b"INIT",
        })
    }

    fn node<'a>(p: &'a Plan, path: &str) -> &'a Node {
        p.nodes
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from plan"))
    }

    #[test]
    fn default_mode_layout() {
        let fx = fixture();
        let p = plan_of(
            &fx,
            "[agent]\nsource_strategy = \"local\"\npath = \"kestrel\"\n",
        )
        .unwrap();
        assert_eq!(
            node(&p, "/init").kind,
            Kind::File(Content::Bytes(Arc::from(&b"INIT"[..])))
        );
        assert_eq!(node(&p, "/bin/kestrel").perm, 0o755);
        assert_eq!(node(&p, "/tmp").perm, 0o1777);
        assert_eq!(
            node(&p, "/dev/console").kind,
            Kind::CharDev { major: 5, minor: 1 }
        );
        assert_eq!(node(&p, "/dev/console").perm, 0o600);
        assert_eq!(
            node(&p, "/dev/null").kind,
            Kind::CharDev { major: 1, minor: 3 }
        );
        assert_eq!(node(&p, "/bin/sh").kind, Kind::Symlink("busybox".into()));
        for d in BASE_DIRS {
            assert_eq!(node(&p, d).kind, Kind::Dir, "{d}");
        }
        assert!(!p.nodes.contains_key(VOLANT_INIT_PATH));
    }

    #[test]
    fn custom_mode_host_file_and_seed_idiom() {
        let fx = fixture();
        write(&fx, "my-init", b"#!/bin/sh\n", 0o644);
        let p = plan_of(
            &fx,
            "[init]\npath = \"./my-init\"\n[mappings]\n\"./my-init\" = \"/init\"\n",
        )
        .unwrap();
        assert_eq!(
            node(&p, "/init").kind,
            Kind::File(Content::Bytes(Arc::from(&b"INIT"[..]))),
            "fledge-init stays /init"
        );
        assert_eq!(node(&p, CUSTOM_INIT_PATH).perm, 0o755);
        assert_eq!(
            node(&p, VOLANT_INIT_PATH).kind,
            Kind::File(Content::Bytes(Arc::from(&b"/sbin/custom-init\n"[..])))
        );
        assert!(!p.nodes.contains_key("/bin/kestrel"));
    }

    #[test]
    fn custom_mode_in_image_path() {
        let fx = fixture();
        write(&fx, "my-init.sh", b"#!/bin/sh\n", 0o755);
        let ok = "[init]\npath = \"/usr/local/bin/my-init.sh\"\n[mappings]\n\"my-init.sh\" = \"/usr/local/bin/my-init.sh\"\n";
        write(&fx, "plain.sh", b"#!/bin/sh\n", 0o644);
        let p = plan_of(
            &fx,
            "[init]\npath = \"/etc/plain.sh\"\n[mappings]\n\"plain.sh\" = \"/etc/plain.sh\"\n",
        )
        .unwrap();
        assert_eq!(
            node(&p, "/etc/plain.sh").perm,
            0o755,
            "the custom init is made executable"
        );
        let p = plan_of(&fx, ok).unwrap();
        assert_eq!(
            node(&p, VOLANT_INIT_PATH).kind,
            Kind::File(Content::Bytes(Arc::from(
                &b"/usr/local/bin/my-init.sh\n"[..]
            )))
        );
        assert_eq!(node(&p, "/usr/local").kind, Kind::Dir);
        let err = plan_of(&fx, "[init]\npath = \"/usr/local/bin/nothing\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`init.path`") && err.contains("nothing in the image provides it"),
            "{err}"
        );
    }

    #[test]
    fn none_mode_requires_init_mapping_and_makes_it_executable() {
        let fx = fixture();
        write(&fx, "sup", b"\x7fELF", 0o644);
        let p = plan_of(
            &fx,
            "[init]\nnone = true\n[mappings]\n\"sup\" = \"/init\"\n",
        )
        .unwrap();
        assert_eq!(node(&p, "/init").perm, 0o755);
        assert!(!p.nodes.contains_key("/bin/kestrel"));
        let err = plan_of(&fx, "[init]\nnone = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`init.none`") && err.contains("/init"),
            "{err}"
        );
    }

    #[test]
    fn mapping_errors_name_the_key() {
        let fx = fixture();
        write(&fx, "a", b"a", 0o644);
        write(&fx, "b", b"b", 0o644);
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "missing source",
                "[mappings]\n\"./nope\" = \"/x\"\n",
                &["fledge.toml:4", "mappings.\"./nope\"", "cannot be read"],
            ),
            (
                "two writers",
                "[mappings]\n\"a\" = \"/x\"\n\"b\" = \"/x\"\n",
                &["mappings.\"b\"", "mappings.\"a\" (line 4)"],
            ),
            (
                "onto kestrel",
                "[mappings]\n\"a\" = \"/bin/kestrel\"\n",
                &["mappings.\"a\"", "source_strategy = \"local\""],
            ),
            (
                "onto busybox",
                "[mappings]\n\"a\" = \"/bin/busybox\"\n",
                &["busybox_url"],
            ),
            (
                "onto /init",
                "[mappings]\n\"a\" = \"/init\"\n",
                &["mappings.\"a\"", "none = true"],
            ),
            (
                "file over dir",
                "[mappings]\n\"a\" = \"/usr/bin\"\n",
                &["mappings.\"a\"", "/usr/bin"],
            ),
            (
                "under a file",
                "[mappings]\n\"a\" = \"/x\"\n\"b\" = \"/x/y\"\n",
                &["mappings.\"b\"", "/x"],
            ),
            (
                "file onto /",
                "[mappings]\n\"a\" = \"/\"\n",
                &["mappings.\"a\"", "root directory"],
            ),
        ];
        for (name, body, needles) in cases {
            let err = plan_of(&fx, body).expect_err(name).to_string();
            for n in *needles {
                assert!(err.contains(n), "case {name}: {err:?} should contain {n:?}");
            }
        }
    }

    #[test]
    fn directory_mapping_keeps_symlinks_and_skips_fifos() {
        let fx = fixture();
        write(&fx, "tree/lib/libx.so.1", b"so", 0o644);
        write(&fx, "tree/share/data.txt", b"d", 0o600);
        write(&fx, "tree/bin/tool", b"t", 0o700);
        std::os::unix::fs::symlink("../../etc/passwd", fx.dir.path().join("tree/share/link"))
            .unwrap();
        let fifo = fx.dir.path().join("tree/fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        write(&fx, "a", b"a", 0o755);
        let p = plan_of(
            &fx,
            "[init]\nnone = true\n[mappings]\n\"tree\" = \"/usr\"\n\"a\" = \"/init\"\n",
        )
        .unwrap();
        assert_eq!(node(&p, "/usr/lib/libx.so.1").perm, 0o755);
        assert_eq!(node(&p, "/usr/share/data.txt").perm, 0o644);
        assert_eq!(node(&p, "/usr/bin/tool").perm, 0o700 & 0o666 | 0o100);
        assert_eq!(
            node(&p, "/usr/share/link").kind,
            Kind::Symlink("../../etc/passwd".into())
        );
        assert!(!p.nodes.contains_key("/usr/fifo"));
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("fifo") && w.contains("FIFO")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn applet_links_may_be_replaced_by_a_mapping() {
        let fx = fixture();
        write(&fx, "ls", b"my ls", 0o755);
        let p = plan_of(&fx, "[mappings]\n\"ls\" = \"/bin/ls\"\n").unwrap();
        assert!(matches!(node(&p, "/bin/ls").kind, Kind::File(_)));
    }

    #[test]
    fn fhs_modes() {
        let cases = [
            ("/usr/bin/x", 0o644, 0o755),
            ("/opt/bin/x", 0o600, 0o755),
            ("/etc/x", 0o755, 0o755),
            ("/etc/x", 0o700, 0o700),
            ("/etc/x", 0o750, 0o750),
            ("/etc/x", 0o640, 0o644),
            ("/usr/lib/libc.so", 0o644, 0o755),
            ("/lib/libz.so.1.2", 0o644, 0o755),
            ("/usr/lib/readme.txt", 0o644, 0o644),
            ("/srv/app.so", 0o644, 0o644),
            ("/etc/suid", 0o4755, 0o755),
        ];
        for (dest, src, want) in cases {
            assert_eq!(fhs_mode(dest, src), want, "{dest} from {src:o}");
        }
    }

    #[test]
    fn normaliser_orders_parents_first_and_links_duplicates() {
        let fx = fixture();
        write(&fx, "t/a", b"same", 0o644);
        write(&fx, "t/b", b"same", 0o644);
        write(&fx, "t/c", b"diff", 0o644);
        write(&fx, "t/d-x", b"same", 0o755);
        write(&fx, "t/z", b"same", 0o644);
        let p = plan_of(&fx, "[mappings]\n\"t\" = \"/srv/t\"\n").unwrap();
        let entries = normalise(&p, 42, true).unwrap();
        let pos = |name: &str| entries.iter().position(|e| e.path == name).unwrap();
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.path.rsplit_once('/') {
                assert!(pos(parent) < i, "{} before its parent", e.path);
            }
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 42));
        }
        let (a, b, c) = (
            &entries[pos("srv/t/a")],
            &entries[pos("srv/t/b")],
            &entries[pos("srv/t/c")],
        );
        let z = &entries[pos("srv/t/z")];
        assert_eq!((a.ino, a.nlink), (b.ino, 3));
        assert_eq!((z.ino, z.nlink), (a.ino, 3));
        assert_eq!(a.kind, Kind::File(Content::Empty), "first has no body");
        assert_eq!(b.kind, Kind::File(Content::Empty), "middle has no body");
        assert_eq!(z.body_len(), 4, "last of a group has the body");
        let (pa, pb, pz) = (pos("srv/t/a"), pos("srv/t/b"), pos("srv/t/z"));
        assert_eq!(
            (pa + 1, pb + 1),
            (pb, pz),
            "a group is contiguous, body last"
        );
        assert!(pos("srv/t/c") < pa, "members move later, next to the body");
        assert_eq!(c.nlink, 1);
        assert_eq!(
            entries[pos("srv/t/d-x")].nlink,
            1,
            "other permissions: not linked"
        );
        let inos: std::collections::HashSet<u32> = entries.iter().map(|e| e.ino).collect();
        assert_eq!(inos.len(), entries.len() - 2, "three paths, one inode");
        let plain = normalise(&p, 42, false).unwrap();
        let a = plain.iter().find(|e| e.path == "srv/t/a").unwrap();
        assert_eq!(
            (a.nlink, a.body_len()),
            (1, 4),
            "no dedup: every body stored"
        );
    }
}
