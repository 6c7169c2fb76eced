//! A guest kernel's module tree (`lib/modules/<release>`) as depmod describes it.
//!
//! This module owns reading the index files depmod writes: `modules.dep` (required), and
//! `modules.softdep`, `modules.alias`, `modules.builtin` and `modules.builtin.modinfo` (each
//! optional: a tree without one has nothing of that kind). Every file is read with a size
//! bound, every module path must stay inside the tree, and [`ModuleTree::lookup`] answers what a name
//! or alias means the way `modprobe` looks it up: module name, builtin name, then aliases.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use super::{read_bounded, Budget, KmodError, INDEX_LIMIT};

/// What a name given by the user (or a softdep) stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Loadable modules (one for a module name; every match for an alias, as modprobe loads
    /// them all), by module name.
    Modules(Vec<String>),
    /// Built into the kernel image: nothing to load.
    Builtin(String),
    /// Nothing in the tree has this name or alias.
    Unknown,
}

/// One loadable module of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    /// Path relative to the tree, as `modules.dep` names it (`kernel/drivers/net/virtio_net.ko`).
    pub rel: String,
    /// Module names of its dependencies, as `modules.dep` lists them (nearest first).
    pub deps: Vec<String>,
}

/// The index files of one module tree.
#[derive(Debug)]
pub struct ModuleTree {
    /// The tree (`.../lib/modules/<release>`).
    pub dir: PathBuf,
    /// Loadable modules by name.
    pub modules: BTreeMap<String, Indexed>,
    /// Names of the modules built into the kernel.
    pub builtin: BTreeSet<String>,
    /// `pre:` soft dependencies by module name (names or aliases, as written).
    pub softdeps: HashMap<String, Vec<String>>,
    /// `modules.alias`: pattern -> module name, in file order.
    aliases: Vec<(Alias, String)>,
    /// Aliases of builtin modules (from `modules.builtin.modinfo`).
    builtin_aliases: Vec<(Alias, String)>,
}

/// An alias: a literal or an fnmatch pattern, normalised. Kept as its text, so an alias costs
/// its length and no more (`modules.alias` has hundreds of thousands of them).
#[derive(Debug)]
enum Alias {
    Exact(String),
    Glob(String),
}

impl Alias {
    fn new(raw: &str) -> Option<Alias> {
        let norm = normalise_alias(raw);
        if norm.contains(['*', '?', '[']) {
            Some(Alias::Glob(norm))
        } else {
            Some(Alias::Exact(norm))
        }
    }

    fn matches(&self, query: &str) -> bool {
        match self {
            Alias::Exact(s) => s == query,
            Alias::Glob(p) => fnmatch(p, query),
        }
    }
}

/// fnmatch(3) without flags, as kmod matches aliases: `*` any run of characters, `?` one,
/// `[...]` one of a set (ranges, `!` or `^` to negate); a `[` that is not closed is itself.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and where in the text its match ends so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match class(&p, pi, t[ti]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                None => (t[ti] == '[').then_some(pi + 1),
            },
            Some(c) if *c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `c` is in the set `p[at..]` (starting at its `[`), and the index after the set;
/// `None` when the set is not closed.
fn class(p: &[char], at: usize, c: char) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let (mut found, mut first) = (false, true);
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            found |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            found |= p[i] == c;
            i += 1;
        }
    }
    None
}

/// A module name as the kernel knows it: `-` and `_` are the same.
pub fn normalise_name(name: &str) -> String {
    name.replace('-', "_")
}

/// An alias as kmod compares it: `-` becomes `_`, except inside `[...]` where it is a range.
pub fn normalise_alias(alias: &str) -> String {
    let mut out = String::with_capacity(alias.len());
    let mut in_brackets = false;
    for c in alias.chars() {
        match c {
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            '-' if !in_brackets => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// The module name of a path in the tree: its file name without `.ko` and a compression suffix.
pub fn name_of(rel: &str) -> Option<String> {
    let file = rel.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    (!stem.is_empty()).then(|| normalise_name(stem))
}

/// A path from an index file: relative, made of plain components only.
fn check_rel(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.chars().any(char::is_control)
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

impl ModuleTree {
    /// Reads the index files of the tree at `dir` within the default [`Budget`].
    pub fn open(dir: &Path) -> Result<ModuleTree, KmodError> {
        Self::open_within(dir, &mut Budget::default())
    }

    /// Reads the index files of the tree at `dir`, charging their bytes to `budget`.
    pub fn open_within(dir: &Path, budget: &mut Budget) -> Result<ModuleTree, KmodError> {
        if !dir.is_dir() {
            return Err(KmodError::NoTree {
                dir: dir.to_path_buf(),
            });
        }
        let dep_path = dir.join("modules.dep");
        if !dep_path.is_file() {
            return Err(KmodError::NoDepFile {
                dir: dir.to_path_buf(),
            });
        }
        let mut tree = ModuleTree {
            dir: dir.to_path_buf(),
            modules: BTreeMap::new(),
            builtin: BTreeSet::new(),
            softdeps: HashMap::new(),
            aliases: Vec::new(),
            builtin_aliases: Vec::new(),
        };
        tree.read_dep(&text(&dep_path, budget)?, &dep_path)?;
        if let Some(t) = optional(&dir.join("modules.builtin"), budget)? {
            tree.builtin = t
                .lines()
                .filter_map(|l| name_of(l.trim()))
                .filter(|n| !tree.modules.contains_key(n))
                .collect();
        }
        if let Some(t) = optional(&dir.join("modules.softdep"), budget)? {
            tree.read_softdep(&t);
        }
        if let Some(t) = optional(&dir.join("modules.alias"), budget)? {
            tree.aliases = t
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    match (w.next(), w.next(), w.next()) {
                        (Some("alias"), Some(a), Some(m)) => {
                            Some((Alias::new(a)?, normalise_name(m)))
                        }
                        _ => None,
                    }
                })
                .collect();
        }
        let modinfo = dir.join("modules.builtin.modinfo");
        if modinfo.is_file() {
            let bytes = budget.read(&modinfo, INDEX_LIMIT, |cap| read_bounded(&modinfo, cap))?;
            tree.builtin_aliases = bytes
                .split(|b| *b == 0)
                .filter_map(|rec| {
                    let rec = std::str::from_utf8(rec).ok()?;
                    let (module, alias) = rec.split_once(".alias=")?;
                    Some((Alias::new(alias)?, normalise_name(module)))
                })
                .collect();
        }
        Ok(tree)
    }

    /// `modules.dep`: `kernel/a.ko: kernel/b.ko kernel/c.ko` per line.
    fn read_dep(&mut self, text: &str, path: &Path) -> Result<(), KmodError> {
        let malformed = |line: usize, problem: String| KmodError::Malformed {
            path: path.to_path_buf(),
            line,
            problem,
        };
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (module, deps) = line
                .split_once(':')
                .ok_or_else(|| malformed(line_no, "has no `:` after the module path".into()))?;
            let mut rels = vec![module.trim()];
            rels.extend(deps.split_whitespace());
            let mut names = Vec::with_capacity(rels.len());
            for rel in &rels {
                if !check_rel(rel) {
                    return Err(malformed(
                        line_no,
                        format!("names {rel:?}, which is not a path inside the tree"),
                    ));
                }
                let name = name_of(rel).ok_or_else(|| {
                    malformed(line_no, format!("names {rel:?}, which is not a .ko file"))
                })?;
                names.push(name);
            }
            lines.push((line_no, rels[0].to_string(), names));
        }
        // Dependencies may be listed before their own line: index every module first.
        let paths: HashMap<&str, &str> = lines
            .iter()
            .map(|(_, rel, names)| (names[0].as_str(), rel.as_str()))
            .collect();
        for (line_no, _, names) in &lines {
            if let Some(dep) = names[1..].iter().find(|d| !paths.contains_key(d.as_str())) {
                return Err(malformed(
                    *line_no,
                    format!("lists the dependency {dep}, which has no line of its own"),
                ));
            }
        }
        for (_, rel, mut names) in lines {
            let name = names.remove(0);
            self.modules.insert(name, Indexed { rel, deps: names });
        }
        Ok(())
    }

    /// `modules.softdep`: `softdep NAME pre: A B post: C`; only `pre:` names are kept (what must
    /// be loaded before NAME). Words before any `pre:`/`post:` are ignored, as modprobe does.
    fn read_softdep(&mut self, text: &str) {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let mut pre = false;
            for w in words {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    _ if pre => self
                        .softdeps
                        .entry(normalise_name(module))
                        .or_default()
                        .push(w.to_string()),
                    _ => {}
                }
            }
        }
    }

    /// What `query` (a module name or alias) means in this tree.
    pub fn lookup(&self, query: &str) -> Lookup {
        let name = normalise_name(query);
        if self.modules.contains_key(&name) {
            return Lookup::Modules(vec![name]);
        }
        if self.builtin.contains(&name) {
            return Lookup::Builtin(name);
        }
        let alias = normalise_alias(query);
        let mut found: Vec<String> = Vec::new();
        for (a, m) in &self.aliases {
            if a.matches(&alias) && self.modules.contains_key(m) && !found.contains(m) {
                found.push(m.clone());
            }
        }
        if !found.is_empty() {
            found.sort();
            return Lookup::Modules(found);
        }
        match self.builtin_aliases.iter().find(|(a, _)| a.matches(&alias)) {
            Some((_, m)) => Lookup::Builtin(m.clone()),
            None => Lookup::Unknown,
        }
    }

    /// Up to three module or builtin names closest to `query`, closest first.
    pub fn closest(&self, query: &str) -> Vec<String> {
        let q = normalise_name(query);
        let mut scored: Vec<(usize, &String)> = self
            .modules
            .keys()
            .chain(&self.builtin)
            .map(|n| (strsim::levenshtein(&q, n), n))
            .collect();
        scored.sort();
        scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
    }
}

/// An index file as text (bounded).
fn text(path: &Path, budget: &mut Budget) -> Result<String, KmodError> {
    let bytes = budget.read(path, INDEX_LIMIT, |cap| read_bounded(path, cap))?;
    String::from_utf8(bytes).map_err(|_| KmodError::Malformed {
        path: path.to_path_buf(),
        line: 0,
        problem: "is not UTF-8 text".into(),
    })
}

/// An index file that may be absent.
fn optional(path: &Path, budget: &mut Budget) -> Result<Option<String>, KmodError> {
    if path.is_file() {
        text(path, budget).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_module_paths() {
        let cases = [
            ("kernel/drivers/net/virtio_net.ko", Some("virtio_net")),
            ("kernel/a/crc32c-intel.ko.zst", Some("crc32c_intel")),
            ("kernel/a/b.ko.xz", Some("b")),
            ("kernel/a/b.ko.gz", Some("b")),
            ("kernel/a/b.o", None),
            ("kernel/a/.ko", None),
        ];
        for (i, (rel, want)) in cases.iter().enumerate() {
            assert_eq!(name_of(rel).as_deref(), *want, "case {i}: {rel}");
        }
    }

    #[test]
    fn aliases_match_as_fnmatch_does() {
        for (pattern, text, want) in [
            (
                "pci:v00008086d*sv*sd*bc*sc*i*",
                "pci:v00008086d00001234sv0sd0bc02sc00i00",
                true,
            ),
            (
                "pci:v00008086d*sv*sd*bc*sc*i*",
                "pci:v00001af4d00001000sv0sd0bc02sc00i00",
                false,
            ),
            ("usb:v1_2[a-f]x*", "usb:v1_2cx9", true),
            ("usb:v1_2[a-f]x*", "usb:v1_2gx9", false),
            ("usb:v[!0-9]?", "usb:vab", true),
            ("usb:v[!0-9]?", "usb:v1b", false),
            ("a[]]b", "a]b", true),
            ("a[b", "a[b", true),
            ("*x*y*z", "axxbyyz", true),
            ("*x*y*z", "axxbyy", false),
            ("fs_*", "fs_", true),
        ] {
            assert_eq!(fnmatch(pattern, text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn alias_normalisation_keeps_ranges() {
        assert_eq!(normalise_alias("crypto-crc32c"), "crypto_crc32c");
        assert_eq!(normalise_alias("usb:v1-2[a-f]x-y"), "usb:v1_2[a-f]x_y");
    }

    #[test]
    fn relative_paths_only() {
        for bad in ["", "/abs.ko", "../up.ko", "kernel/../../x.ko", "./x.ko"] {
            assert!(!check_rel(bad), "{bad:?} accepted");
        }
        assert!(check_rel("kernel/x.ko"));
    }
}
