//! Where the dynamic loader looks for a library, for glibc's `ld-linux` and musl's `ld-musl`.
//!
//! glibc (`elf/dl-load.c`): a name with a `/` is a path; otherwise `DT_RPATH` of the requesting
//! object and of each object that loaded it up to the program (only while the requester has no
//! `DT_RUNPATH`, and skipping objects that have one), then the requester's `DT_RUNPATH`, then
//! `ld.so.cache` (here: the directories of the tree's `/etc/ld.so.conf` and its includes, which
//! is what the cache is built from), then the default directories, unless `DF_1_NODEFLIB`.
//! `$ORIGIN`, `$LIB` and `$PLATFORM` are expanded; an entry with another `$` token is dropped.
//!
//! musl (`ldso/dynlink.c`): `DT_RUNPATH` (or `DT_RPATH`) of the requester and of each object
//! that loaded it, with `$ORIGIN` only; then the lines of `/etc/ld-musl-<arch>.path`, or
//! `/lib:/usr/local/lib:/usr/lib` without it. The names musl's libc provides itself
//! (`libc.so`, `libm.so`, `libpthread.so`, ...) are the loader.
//!
//! Both loaders pass over a candidate of another ELF class or machine and keep searching.

use std::io;

use super::elf::Target;
use crate::tree::{is_symlink_loop, join, parent, resolve, Node, Tree, Walk};

/// glibc's default directories after the multiarch pair of the machine
/// ([`glibc_default_dirs`]): the lib64 pair, then the plain one.
const GLIBC_SYSTEM_DIRS: &[&str] = &["/lib64", "/usr/lib64", "/lib", "/usr/lib"];
/// musl's search path when there is no path file.
pub const MUSL_DEFAULT_DIRS: &[&str] = &["/lib", "/usr/local/lib", "/usr/lib"];
/// glibc's default directories for `target`, multiarch first (Debian's loader order), then the
/// lib64 pair and the plain one.
pub fn glibc_default_dirs(target: Target) -> Vec<String> {
    let multiarch = target.multiarch().into_iter();
    multiarch
        .flat_map(|m| [format!("/lib/{m}"), format!("/usr/lib/{m}")])
        .chain(GLIBC_SYSTEM_DIRS.iter().map(|d| d.to_string()))
        .collect()
}
/// The glibc loader's configuration, read from the tree.
pub const LD_SO_CONF: &str = "/etc/ld.so.conf";
/// Bounds on what configuration files may make us read.
const CONF_MAX_BYTES: u64 = 1 << 20;
const CONF_MAX_FILES: usize = 256;
const CONF_MAX_DEPTH: usize = 8;

/// Which dynamic loader runs a program, from its `PT_INTERP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavor {
    Glibc,
    /// musl, with the architecture part of `ld-musl-<arch>.so.1`.
    Musl {
        arch: String,
    },
}

impl Flavor {
    /// The loader named by an interpreter path.
    pub fn of_interp(interp: &str) -> Flavor {
        let base = crate::tree::name(interp);
        match base
            .strip_prefix("ld-musl-")
            .and_then(|r| r.strip_suffix(".so.1"))
        {
            Some(arch) => Flavor::Musl {
                arch: arch.to_string(),
            },
            None => Flavor::Glibc,
        }
    }

    /// True for the names musl's loader answers with itself.
    pub fn is_builtin(&self, name: &str) -> bool {
        if !matches!(self, Flavor::Musl { .. }) {
            return false;
        }
        let Some(rest) = name.strip_prefix("lib") else {
            return false;
        };
        ["c", "pthread", "rt", "m", "dl", "util", "xnet"]
            .iter()
            .any(
                |l| match rest.strip_prefix(l).and_then(|r| r.strip_prefix(".so")) {
                    Some(tail) => tail.is_empty() || tail.starts_with('.'),
                    None => false,
                },
            )
    }
}

/// How one tree is searched: the loader's rules plus what its configuration files say.
#[derive(Debug, Clone)]
pub struct Rules {
    pub flavor: Flavor,
    /// Searched after the object's own paths: the ld.so.conf directories (glibc) or the musl
    /// path file's lines (musl, replacing the defaults).
    pub configured: Vec<String>,
    /// glibc's default directories (empty for musl: its path is all in `configured`).
    pub defaults: Vec<String>,
    /// What `$LIB` expands to.
    pub lib: String,
    /// What `$PLATFORM` expands to (`AT_PLATFORM` of the guest).
    pub platform: &'static str,
    /// Configuration files read (shown in messages and placed for musl).
    pub files: Vec<String>,
}

impl Rules {
    /// The rules for programs run by `flavor`, read from `tree`. `use_conf`: read
    /// `/etc/ld.so.conf` (the sysroot, where it stands for `ld.so.cache`) or not (the image,
    /// which has no cache).
    pub fn read(
        tree: &dyn Tree,
        flavor: Flavor,
        use_conf: bool,
        target: Target,
    ) -> io::Result<Rules> {
        let multiarch = match target.multiarch() {
            Some(m) => resolve(tree, &format!("/lib/{m}"))?.node == Some(Node::Dir),
            None => false,
        };
        let lib = match target.multiarch() {
            Some(m) if multiarch => format!("lib/{m}"),
            _ => "lib64".to_string(),
        };
        let mut files = Vec::new();
        let (configured, defaults) = match &flavor {
            Flavor::Glibc => {
                let mut dirs = Vec::new();
                if use_conf {
                    read_conf(tree, LD_SO_CONF, 0, &mut dirs, &mut files)?;
                }
                let defaults = glibc_default_dirs(target);
                (dirs, defaults)
            }
            Flavor::Musl { arch } => {
                let file = format!("/etc/ld-musl-{arch}.path");
                let dirs = match read_small(tree, &file)? {
                    Some(text) => {
                        files.push(file);
                        text.split(['\n', ':'])
                            .map(str::trim)
                            .filter(|d| d.starts_with('/'))
                            .map(str::to_string)
                            .collect()
                    }
                    None => MUSL_DEFAULT_DIRS.iter().map(|d| d.to_string()).collect(),
                };
                (dirs, Vec::new())
            }
        };
        Ok(Rules {
            flavor,
            configured,
            defaults,
            lib,
            platform: target.platform(),
            files,
        })
    }

    /// Expands one `DT_RPATH`/`DT_RUNPATH` value for an object whose `$ORIGIN` is `origin`.
    pub fn expand(&self, value: &str, origin: &str) -> Vec<String> {
        let musl = matches!(self.flavor, Flavor::Musl { .. });
        let mut out = Vec::new();
        'entry: for entry in value.split(':').filter(|e| !e.is_empty()) {
            let mut s = String::new();
            let mut rest = entry;
            while let Some(i) = rest.find('$') {
                s.push_str(&rest[..i]);
                rest = &rest[i + 1..];
                let (token, after) = match rest.strip_prefix('{') {
                    Some(r) => match r.split_once('}') {
                        Some((t, a)) => (t, a),
                        None => continue 'entry,
                    },
                    None => {
                        let end = rest
                            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                            .unwrap_or(rest.len());
                        (&rest[..end], &rest[end..])
                    }
                };
                match token {
                    "ORIGIN" => s.push_str(origin),
                    "LIB" if !musl => s.push_str(&self.lib),
                    "PLATFORM" if !musl => s.push_str(self.platform),
                    _ => continue 'entry, // an unknown token drops the entry, as glibc does
                }
                rest = after;
            }
            s.push_str(rest);
            if s.starts_with('/') {
                out.push(join("/", &s));
            }
        }
        out
    }
}

/// Reads a small configuration file, `None` when it is absent.
pub fn read_small(tree: &dyn Tree, path: &str) -> io::Result<Option<String>> {
    let w = resolve(tree, path)?;
    if w.node != Some(Node::File) {
        return Ok(None);
    }
    let mut text = String::new();
    io::Read::read_to_string(
        &mut io::Read::take(tree.open(&w.real)?, CONF_MAX_BYTES),
        &mut text,
    )
    .map_err(|e| io::Error::other(format!("{path}: {e}")))?;
    Ok(Some(text))
}

/// Adds the directories of an `ld.so.conf`-format file, following `include` lines.
fn read_conf(
    tree: &dyn Tree,
    path: &str,
    depth: usize,
    dirs: &mut Vec<String>,
    files: &mut Vec<String>,
) -> io::Result<()> {
    if depth > CONF_MAX_DEPTH || files.len() >= CONF_MAX_FILES {
        return Err(io::Error::other(format!(
            "{path}: ld.so.conf includes nest too deep or too many files"
        )));
    }
    let Some(text) = read_small(tree, path)? else {
        return Ok(());
    };
    files.push(path.to_string());
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(pattern) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            for p in pattern.split_whitespace() {
                for inc in glob(tree, &join(parent(path), p))? {
                    read_conf(tree, &inc, depth + 1, dirs, files)?;
                }
            }
        } else if line.starts_with("hwcap") {
            continue; // obsolete, ignored by current ldconfig
        } else {
            for d in line
                .split([' ', '\t', ',', ':'])
                .filter(|d| d.starts_with('/'))
            {
                let d = join("/", d.split('=').next().unwrap_or(d));
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
    }
    Ok(())
}

/// The files matching `pattern`, sorted; wildcards (`*`, `?`) in the last component only.
fn glob(tree: &dyn Tree, pattern: &str) -> io::Result<Vec<String>> {
    let (dir, name) = (parent(pattern), crate::tree::name(pattern));
    if !name.contains(['*', '?']) {
        return Ok(vec![pattern.to_string()]);
    }
    let w = resolve(tree, dir)?;
    if w.node != Some(Node::Dir) {
        return Ok(Vec::new());
    }
    let mut out: Vec<String> = tree
        .list(&w.real)?
        .into_iter()
        .filter(|n| !n.starts_with('.') && wildcard(name.as_bytes(), n.as_bytes()))
        .map(|n| join(dir, &n))
        .collect();
    out.sort();
    Ok(out)
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

/// A candidate file for a name, resolved in the tree.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The path the loader opens (directory + name).
    pub path: String,
    pub walk: Walk,
}

/// Looks for `name` in `dirs` in order; `accept` reads a candidate and says why it is refused.
pub fn find_in(
    tree: &dyn Tree,
    name: &str,
    dirs: &[String],
    mut accept: impl FnMut(&Candidate) -> Result<(), String>,
    rejected: &mut Vec<String>,
) -> io::Result<Option<Candidate>> {
    for d in dirs {
        let path = join(d, name);
        let w = match resolve(tree, &path) {
            Ok(w) => w,
            // open() fails with ELOOP and the loader tries the next directory.
            Err(e) if is_symlink_loop(&e) => {
                rejected.push(format!("{path} ({e})"));
                continue;
            }
            Err(e) => return Err(e),
        };
        if w.node != Some(Node::File) {
            continue;
        }
        let c = Candidate { path, walk: w };
        match accept(&c) {
            Ok(()) => return Ok(Some(c)),
            Err(why) => rejected.push(format!("{} ({why})", c.path)),
        }
    }
    Ok(None)
}

/// Whether an ELF target is what the image runs; the message names both when not.
pub fn check_target(found: Target, want: Target) -> Result<(), String> {
    if found == want {
        Ok(())
    } else {
        Err(format!("built for {found}, the image is {want}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libs::elf::{AARCH64, X86_64};
    use crate::tree::MemTree;

    fn rules(flavor: Flavor) -> Rules {
        Rules {
            flavor,
            configured: Vec::new(),
            defaults: Vec::new(),
            lib: "lib64".into(),
            platform: "x86_64",
            files: Vec::new(),
        }
    }

    #[test]
    fn expands_tokens_like_the_loader() {
        let g = rules(Flavor::Glibc);
        let cases: &[(&str, &[&str])] = &[
            ("$ORIGIN/../lib", &["/opt/app/lib"]),
            ("${ORIGIN}/x:/usr/$LIB", &["/opt/app/bin/x", "/usr/lib64"]),
            ("/p/$PLATFORM", &["/p/x86_64"]),
            ("$FOO/x:/ok", &["/ok"]),
            ("relative:${ORIGIN", &[]),
            ("", &[]),
        ];
        for (i, (v, want)) in cases.iter().enumerate() {
            assert_eq!(g.expand(v, "/opt/app/bin"), *want, "case {i}: {v}");
        }
        let m = rules(Flavor::Musl {
            arch: "x86_64".into(),
        });
        assert_eq!(m.expand("$LIB:$ORIGIN", "/a"), ["/a"]);
    }

    #[test]
    fn an_include_cycle_in_ld_so_conf_is_an_error_naming_the_file() {
        let mut t = MemTree::default();
        t.put(
            "/etc/ld.so.conf",
            Node::File,
            b"include /etc/ld.so.conf.d/*.conf\n/opt/lib\n",
        );
        t.put(
            "/etc/ld.so.conf.d/x.conf",
            Node::File,
            b"/srv/lib\ninclude /etc/ld.so.conf\n",
        );
        let err = Rules::read(&t, Flavor::Glibc, true, X86_64)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(": ld.so.conf includes nest too deep or too many files"),
            "{err}"
        );
        assert!(err.starts_with("/etc/ld.so.conf"), "{err}");
        t.put("/etc/ld.so.conf.d/x.conf", Node::File, b"/srv/lib\n");
        let ok = Rules::read(&t, Flavor::Glibc, true, X86_64).unwrap();
        assert_eq!(ok.configured[..2], ["/srv/lib", "/opt/lib"]);
    }

    #[test]
    fn a_directory_in_a_symlink_loop_is_passed_over_as_the_loader_does() {
        let mut t = MemTree::default();
        t.put("/usr/lib/ping", Node::Symlink("pong".into()), b"");
        t.put("/usr/lib/pong", Node::Symlink("/usr/lib/ping".into()), b"");
        t.put("/usr/lib/x86_64-linux-gnu/libz.so.1", Node::File, b"z");
        let dirs = [
            "/usr/lib/ping".to_string(),
            "/usr/lib/x86_64-linux-gnu".to_string(),
        ];
        let mut rejected = Vec::new();
        let found = find_in(&t, "libz.so.1", &dirs, |_| Ok(()), &mut rejected).unwrap();
        assert_eq!(found.unwrap().path, "/usr/lib/x86_64-linux-gnu/libz.so.1");
        assert_eq!(
            rejected,
            ["/usr/lib/ping/libz.so.1 (more than 40 symlinks resolving /usr/lib/ping/libz.so.1)"]
        );
    }

    #[test]
    fn flavors_and_musl_builtins() {
        let musl = Flavor::of_interp("/lib/ld-musl-x86_64.so.1");
        assert_eq!(
            musl,
            Flavor::Musl {
                arch: "x86_64".into()
            }
        );
        assert_eq!(
            Flavor::of_interp("/lib64/ld-linux-x86-64.so.2"),
            Flavor::Glibc
        );
        for (name, builtin) in [
            ("libc.so", true),
            ("libm.so.6", true),
            ("libpthread.so.0", true),
            ("libcrypto.so.3", false),
            ("libcx.so", false),
            ("libc.musl-x86_64.so.1", false),
        ] {
            assert_eq!(musl.is_builtin(name), builtin, "{name}");
            assert!(!Flavor::Glibc.is_builtin(name), "{name}");
        }
    }

    #[test]
    fn ld_so_conf_with_includes_in_order() {
        let mut t = MemTree::default();
        t.put(
            "/etc/ld.so.conf",
            Node::File,
            b"# comment\n/opt/first\ninclude ld.so.conf.d/*.conf\n/opt/last # trailing\n",
        );
        t.put(
            "/etc/ld.so.conf.d/b.conf",
            Node::File,
            b"/opt/b\n/opt/first\n",
        );
        t.put("/etc/ld.so.conf.d/a.conf", Node::File, b"/opt/a:/opt/a2\n");
        t.put(
            "/etc/ld.so.conf.d/.hidden.conf",
            Node::File,
            b"/opt/hidden\n",
        );
        t.put("/etc/ld.so.conf.d/c.txt", Node::File, b"/opt/c\n");
        let r = Rules::read(&t, Flavor::Glibc, true, X86_64).unwrap();
        assert_eq!(
            r.configured,
            ["/opt/first", "/opt/a", "/opt/a2", "/opt/b", "/opt/last"]
        );
        let r = Rules::read(&t, Flavor::Glibc, false, X86_64).unwrap();
        assert!(r.configured.is_empty());
    }

    #[test]
    fn glibc_rules_follow_the_machine() {
        let mut t = MemTree::default();
        t.put("/lib/aarch64-linux-gnu", Node::Dir, b"");
        let x = Rules::read(&t, Flavor::Glibc, false, X86_64).unwrap();
        assert_eq!(
            x.defaults[..2],
            ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"]
        );
        assert_eq!((x.lib.as_str(), x.platform), ("lib64", "x86_64"));
        let a = Rules::read(&t, Flavor::Glibc, false, AARCH64).unwrap();
        assert_eq!(
            a.defaults,
            [
                "/lib/aarch64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu",
                "/lib64",
                "/usr/lib64",
                "/lib",
                "/usr/lib"
            ]
        );
        assert_eq!(a.lib, "lib/aarch64-linux-gnu");
        assert_eq!(
            a.expand("/p/$PLATFORM/$LIB", "/"),
            ["/p/aarch64/lib/aarch64-linux-gnu"]
        );
        let musl = Flavor::of_interp("/lib/ld-musl-aarch64.so.1");
        assert_eq!(
            musl,
            Flavor::Musl {
                arch: "aarch64".into()
            }
        );
    }

    #[test]
    fn recursive_include_is_bounded() {
        let mut t = MemTree::default();
        t.put("/etc/ld.so.conf", Node::File, b"include /etc/ld.so.conf\n");
        assert!(Rules::read(&t, Flavor::Glibc, true, X86_64).is_err());
    }

    #[test]
    fn musl_path_file_replaces_defaults() {
        let musl = Flavor::Musl {
            arch: "x86_64".into(),
        };
        let mut t = MemTree::default();
        let r = Rules::read(&t, musl.clone(), true, X86_64).unwrap();
        assert_eq!(r.configured, MUSL_DEFAULT_DIRS);
        t.put(
            "/etc/ld-musl-x86_64.path",
            Node::File,
            b"/usr/lib/x86_64-linux-musl\n/lib:/opt/m\n",
        );
        let r = Rules::read(&t, musl, true, X86_64).unwrap();
        assert_eq!(
            r.configured,
            ["/usr/lib/x86_64-linux-musl", "/lib", "/opt/m"]
        );
        assert_eq!(r.files, ["/etc/ld-musl-x86_64.path"]);
    }

    #[test]
    fn wildcards() {
        for (p, s, m) in [
            ("*.conf", "x.conf", true),
            ("*.conf", "x.conf.bak", false),
            ("a?c", "abc", true),
            ("*", "", true),
            ("a*b*c", "aXbYc", true),
        ] {
            assert_eq!(wildcard(p.as_bytes(), s.as_bytes()), m, "{p} {s}");
        }
    }
}
