//! The boot check: what would stop this image from booting, one sentence each.
//!
//! It works from an [`Index`] filled while the image is read: the mode of every path (16 bytes
//! per entry: a 64-bit hash of the path with a per-run random key, the mode and the entry's
//! number), every symlink's target and the small files it reads. Paths are resolved the way the kernel walks them: every
//! component, symlinks included (a merged-`/usr` image has `/bin -> usr/bin`), with at most
//! [`tree::MAX_LINKS`] symlinks followed, as Linux allows.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io;

use super::format::{escape, mode_string};
use super::reader::Entry;
use super::{file_type, FileType};
use crate::tree::{self, Node, ReadSeek, Tree};
use fledge_abi::paths::{AGENT, INIT, INIT_CONF, MODULES_LOAD, VOLANT_INIT, WORKLOAD};

/// Directories whose programs are linked to busybox applets or the agent: a dangling link here
/// breaks commands the guest runs.
const BIN_DIRS: &[&str] = &["/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/"];

/// One entry in the index.
#[derive(Debug, Clone, Copy)]
struct Seen {
    hash: u64,
    seq: u32,
    mode: u32,
}

/// What the boot check knows of an image.
#[derive(Debug, Default)]
pub struct Index {
    keys: RandomState,
    /// Every entry's path hash and mode, in archive order until [`Index::problems`] sorts them
    /// by hash (the last entry of a path wins, as when unpacking).
    modes: Vec<Seen>,
    sorted: bool,
    /// Path -> target of each symlink (the last entry of a path wins, as when unpacking).
    links: HashMap<Box<str>, Box<str>>,
    /// The body of `/.volant_init`, when present.
    volant_init: Option<Vec<u8>>,
    /// The body of the module load list, when present.
    modules_load: Option<Vec<u8>>,
    /// The other bodies the reader kept: the programs PID 1 starts, the musl path file.
    bodies: HashMap<Box<str>, Vec<u8>>,
}

/// Default mode, as the image says: `/init` is fledge-init, and it starts Volant's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentStart {
    /// `fledge.supervise=1` in `/etc/fledge-init.conf` (the kernel command line can override).
    pub supervised: bool,
}

impl Index {
    /// The guest architecture `/init` is an ELF program of, when it is one fledge builds for.
    pub fn init_arch(&self) -> Option<crate::arch::Arch> {
        match self.open(INIT).map(crate::libs::elf::read) {
            Ok(Ok(crate::libs::elf::Exec::Elf(e))) => crate::arch::Arch::ALL
                .into_iter()
                .find(|a| a.target() == e.target),
            _ => None,
        }
    }

    /// `Some` when `/init` is fledge-init (it names its own config file, `/etc/fledge-init.conf`)
    /// and what it starts is `/bin/kestrel`: no `/.volant_init`, no argv in the workload spec.
    pub fn agent_start(&self) -> Option<AgentStart> {
        let init = self.bodies.get(INIT)?;
        let marker = INIT_CONF.as_bytes();
        if !init.windows(marker.len()).any(|w| w == marker) {
            return None;
        }
        if self.volant_init.is_some() || !self.bodies.contains_key(AGENT) {
            return None;
        }
        if let Some(spec) = self.bodies.get(WORKLOAD) {
            let spec = fledge_abi::workload::Workload::decode(&String::from_utf8_lossy(spec));
            if spec.map_or(true, |w| !w.argv.is_empty()) {
                return None;
            }
        }
        let conf = self
            .bodies
            .get(INIT_CONF)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        Some(AgentStart {
            supervised: supervise_option(&conf).unwrap_or(false),
        })
    }

    pub fn add(&mut self, e: &Entry<'_>) {
        let path = String::from_utf8_lossy(e.path);
        if path == VOLANT_INIT {
            self.volant_init = e.body.map(<[u8]>::to_vec);
        } else if path == MODULES_LOAD {
            self.modules_load = e.body.map(<[u8]>::to_vec);
        } else if let Some(b) = e.body {
            self.bodies.insert(path.as_ref().into(), b.to_vec());
        } else {
            self.bodies.remove(path.as_ref());
        }
        let seq = self.modes.len() as u32;
        self.modes.push(Seen {
            hash: self.keys.hash_one(path.as_ref()),
            seq,
            mode: e.mode,
        });
        self.sorted = false;
        match e.target {
            Some(t) => {
                self.links
                    .insert(path.into(), String::from_utf8_lossy(t).into());
            }
            None => {
                self.links.remove(path.as_ref());
            }
        }
    }

    fn mode(&self, path: &str) -> Option<u32> {
        if path == "/" {
            return Some(0o040755);
        }
        debug_assert!(self.sorted, "looked up before Index::problems sorted");
        let h = self.keys.hash_one(path);
        let end = self.modes.partition_point(|s| s.hash <= h);
        end.checked_sub(1)
            .map(|i| self.modes[i])
            .filter(|s| s.hash == h)
            .map(|s| s.mode)
    }

    /// Follows `path` component by component to what it names; the error ends a sentence that
    /// starts with the path (`is missing`, `points to /x, which is not in the image`, ...).
    fn resolve(&self, path: &str) -> Result<(String, u32), String> {
        let w = match tree::resolve(self, path) {
            Ok(w) => w,
            Err(e) if tree::is_symlink_loop(&e) => return Err("is a symlink loop".into()),
            Err(e) => return Err(e.to_string()),
        };
        match &w.stopped {
            None => Ok((w.real.clone(), self.mode(&w.real).unwrap_or(0o040755))),
            Some((_, None)) if w.links.is_empty() => Err("is missing".into()),
            Some((_, None)) => Err(format!(
                "points to {}, which is not in the image",
                escape(w.real.as_bytes())
            )),
            Some((at, Some(_))) => Err(format!(
                "goes through {}, which is {}, not a directory",
                escape(at.as_bytes()),
                file_type(self.mode(at).unwrap_or(0)).name()
            )),
        }
    }

    /// What would break a boot of this image, one sentence each; empty when it looks bootable.
    ///
    /// Checks: `/init` exists, is a regular file (or a symlink to one) and is executable;
    /// `/dev/console` is a character device (the kernel opens it for PID 1's stdio); symlinks in
    /// or into `/bin`, `/sbin`, `/usr/bin`, `/usr/sbin` resolve inside the image;
    /// `/.volant_init` names a path that exists; each module of the load list is a file.
    pub fn problems(&mut self) -> Vec<String> {
        if !self.sorted {
            self.modes.sort_unstable_by_key(|s| (s.hash, s.seq));
            self.sorted = true;
        }
        let mut problems = Vec::new();
        problems.extend(self.init_problem());
        problems.extend(self.console_problem());
        let mut links: Vec<(&str, &str)> = self
            .links
            .iter()
            .map(|(p, t)| (p.as_ref(), t.as_ref()))
            .filter(|(p, t)| *p != INIT && (in_bin(p) || in_bin(&lexical(p, t))))
            .collect();
        links.sort_unstable();
        for (path, target) in links {
            if let Err(why) = self.resolve(path) {
                problems.push(format!(
                    "{} -> {} {why}",
                    escape(path.as_bytes()),
                    escape(target.as_bytes())
                ));
            }
        }
        problems.extend(self.volant_init_problem());
        problems.extend(self.module_problems());
        problems.extend(self.start_problems());
        problems
    }

    /// The modules the load list names, in load order, one printable line each
    /// (`PATH [params] (required)`); `None` when the image has no load list.
    pub fn modules(&self) -> Option<Vec<String>> {
        let text = String::from_utf8_lossy(self.modules_load.as_deref()?);
        let lines = fledge_abi::modules::parse(&text).map(|m| match m {
            Ok(m) => {
                let params = if m.params.is_empty() {
                    String::new()
                } else {
                    format!(" {}", m.params)
                };
                let req = if m.required { " (required)" } else { "" };
                escape(format!("{}{params}{req}", m.path).as_bytes())
            }
            Err(e) => escape(e.to_string().as_bytes()),
        });
        Some(lines.collect())
    }

    /// Load-list lines that are malformed or name a module the image does not have.
    fn module_problems(&self) -> Vec<String> {
        let Some(body) = self.modules_load.as_deref() else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(body);
        fledge_abi::modules::parse(&text)
            .filter_map(|m| match m {
                Err(e) => Some(format!("{MODULES_LOAD} {}", escape(e.to_string().as_bytes()))),
                Ok(m) => match self.resolve(m.path) {
                    Ok((_, mode)) if file_type(mode) == FileType::File => None,
                    _ => Some(format!(
                        "{MODULES_LOAD} names {}, which is not a file of the image: fledge-init cannot load it",
                        escape(m.path.as_bytes())
                    )),
                },
            })
            .collect()
    }

    /// `/init` and the program it hands off to (the agent, or the custom init) have their
    /// interpreter and libraries in the image (the libraries' own needs are not followed: the
    /// reader keeps only these programs' bodies).
    fn start_problems(&self) -> Vec<String> {
        let handoff = match &self.volant_init {
            Some(b) => String::from_utf8_lossy(b).trim().to_string(),
            None => AGENT.to_string(),
        };
        // The guest's machine is the one /init (fledge-init or the user's) was built for.
        let target = self.init_arch().unwrap_or_default().target();
        let mut out = Vec::new();
        for p in [INIT, handoff.as_str()] {
            // a missing or non-file start is reported above
            if matches!(self.resolve(p), Ok((_, mode)) if file_type(mode) == FileType::File) {
                let found = crate::plan::problems(self, p, &[], target);
                out.extend(found.iter().map(|f| format!("{p} cannot start: {f}")));
            }
        }
        out
    }

    fn init_problem(&self) -> Option<String> {
        if self.mode(INIT).is_none() {
            return Some("/init is missing: the kernel has nothing to run as PID 1 (map your init program to /init, or use fledge's default or custom init mode)".into());
        }
        match self.resolve(INIT) {
            Err(why) => Some(format!("/init {why}")),
            Ok((_, mode)) if file_type(mode) != FileType::File => Some(format!(
                "/init is not a regular file (it is {}): the kernel can only execute a file",
                file_type(mode).name()
            )),
            Ok((at, mode)) if mode & 0o111 == 0 => Some(format!(
                "/init is not executable (mode {}{}): the kernel cannot run it as PID 1; give it mode 0755",
                mode_string(mode),
                if at != INIT { format!(", via {}", escape(at.as_bytes())) } else { String::new() }
            )),
            Ok(_) => None,
        }
    }

    fn console_problem(&self) -> Option<String> {
        match self.resolve("/dev/console") {
            Ok((_, mode)) if file_type(mode) == FileType::CharDev => None,
            Ok((_, mode)) => Some(format!(
                "/dev/console is {}, not a character device: PID 1 would start without a console; it should be c 5,1",
                file_type(mode).name()
            )),
            Err(_) => Some("/dev/console is missing: PID 1 would start without a console (the kernel opens it before running /init); add a character device 5,1".into()),
        }
    }

    fn volant_init_problem(&self) -> Option<String> {
        self.mode(VOLANT_INIT)?;
        let named = self
            .volant_init
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
            .unwrap_or_default();
        let shown = escape(named.as_bytes());
        if named.is_empty() {
            return Some(format!(
                "{VOLANT_INIT} is empty: fledge-init reads the custom init's path from it"
            ));
        }
        match self.resolve(&named) {
            Err(_) => Some(format!(
                "{VOLANT_INIT} names {shown}, which is not in the image: fledge-init would have no init to run; map your init program to {shown}"
            )),
            Ok((_, mode)) if file_type(mode) != FileType::File || mode & 0o111 == 0 => {
                Some(format!(
                    "{VOLANT_INIT} names {shown}, which is not an executable file ({})",
                    mode_string(mode)
                ))
            }
            Ok(_) => None,
        }
    }
}

/// The image as the library search sees it: types and links for every path, bodies for the
/// few files kept.
impl Tree for Index {
    fn node(&self, path: &str) -> io::Result<Option<Node>> {
        let Some(mode) = self.mode(path) else {
            return Ok(None);
        };
        Ok(Some(match self.links.get(path) {
            Some(t) => Node::Symlink(t.to_string()),
            None => match file_type(mode) {
                FileType::Dir => Node::Dir,
                FileType::File => Node::File,
                _ => Node::Other,
            },
        }))
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek + '_>> {
        match self.bodies.get(path) {
            Some(b) => Ok(Box::new(io::Cursor::new(b.as_slice()))),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn list(&self, _: &str) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn has_body(&self, path: &str) -> bool {
        self.bodies.contains_key(path)
    }
}

fn in_bin(p: &str) -> bool {
    BIN_DIRS.iter().any(|d| p.starts_with(d))
}

/// The absolute, `.`/`..`-free path a symlink at `link` with `target` names, read as text (no
/// symlinks followed): decides whether a link points into a bin directory.
pub fn lexical(link: &str, target: &str) -> String {
    tree::join(tree::parent(link), target)
}

/// The last `fledge.supervise=` setting in `text` (fledge-init's options: whitespace-separated
/// tokens, `#` starting a comment line), as fledge-init reads it; `None` when there is none or
/// its value is not one fledge-init takes.
pub fn supervise_option(text: &str) -> Option<bool> {
    let key = format!("{}=", fledge_abi::options::SUPERVISE);
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .filter_map(|t| t.strip_prefix(&key))
        .next_back()
        .and_then(|v| match v {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => None,
        })
}
