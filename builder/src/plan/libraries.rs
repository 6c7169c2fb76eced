//! The shared-library layer: for every ELF file placed so far, its interpreter and `DT_NEEDED`
//! closure from `[build] sysroot` (plus `extra_libraries`), placed where the sysroot has them with
//! every symlink on the way; and [`runnable`], the check that what PID 1 starts can start.
//!
//! Lookups see the plan over the sysroot: a path the plan has (a mapped library, a mapped
//! `$ORIGIN` tree) is taken from the plan and a path it lacks from the sysroot, so the closure is
//! what the guest will see once the layer has added its entries. Symlinks of the sysroot on the
//! way (`/lib -> usr/lib`, `libz.so.1 -> libz.so.1.3`) are reproduced, which keeps a merged-/usr
//! layout merged. The image gets no `ld.so.cache`: glibc's loader then searches only its default
//! directories, so a library found through an ld.so.conf directory also gets a link in the
//! loader's own directory (and musl programs get the sysroot's `/etc/ld-musl-<arch>.path`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;

use fledge_abi::paths;

use super::{Inputs, Layer, Origin, Plan, PlanError, Planned, Stack};
use crate::archive::{Content, Kind};
use crate::config::{Config, CustomInit, InitMode};
use crate::libs::closure::{closure, Closure, Problem, Via};
use crate::libs::elf::{self, Exec};
use crate::libs::search::{find_in, Flavor, Rules};
use crate::tree::{join, parent, resolve, HostTree, Node as TNode, ReadSeek, Tree};
use crate::util::shown;

pub(super) const LAYER: Layer = Layer {
    name: "shared libraries",
    check,
    add,
};

/// How deep `#!` interpreters may nest (the kernel allows a few levels).
const SCRIPT_DEPTH: usize = 4;

/// The sysroot is a directory.
fn check(cfg: &Config) -> Result<(), PlanError> {
    let lib = &cfg.libraries;
    if lib.auto && !lib.sysroot.is_dir() {
        return Err(super::invalid(
            cfg,
            None,
            "build.sysroot",
            format!(
                "names {}, which is not a directory: give the root of the tree libraries come from",
                shown(&lib.sysroot)
            ),
        ));
    }
    Ok(())
}

fn add(inputs: &Inputs, stack: &mut Stack) -> Result<(), PlanError> {
    let cfg = inputs.config;
    if !cfg.libraries.auto {
        return Ok(());
    }
    let sysroot = HostTree {
        root: cfg.libraries.sysroot.clone(),
    };
    let mut adds = Adds::default();
    {
        let view = Overlay {
            plan: stack.plan(),
            sysroot: &sysroot,
        };
        let read = |e: io::Error| PlanError::Read {
            path: cfg.libraries.sysroot.clone(),
            source: e,
        };
        for path in elf_files(stack.plan()) {
            let c = closure(&view, &path, cfg.arch.target(), true).map_err(read)?;
            adds.closure(&view, &sysroot, &path, &c).map_err(read)?;
        }
        for name in &cfg.libraries.extra {
            let c = extra(cfg, &view, name)?;
            adds.closure(&view, &sysroot, name, &c).map_err(read)?;
        }
    }
    for (path, (node, note)) in adds.nodes {
        stack.note(note);
        stack.put(&path, node)?;
    }
    for w in adds.warnings {
        stack.warn(w);
    }
    Ok(())
}

/// The closure of one `extra_libraries` entry: an absolute path, or a soname searched in the
/// ld.so.conf and default directories.
fn extra(cfg: &Config, view: &Overlay, name: &str) -> Result<Closure, PlanError> {
    let read = |e: io::Error| PlanError::Read {
        path: cfg.libraries.sysroot.clone(),
        source: e,
    };
    let path = if name.starts_with('/') {
        name.to_string()
    } else {
        let rules = Rules::read(view, Flavor::Glibc, true, cfg.arch.target()).map_err(read)?;
        let dirs: Vec<String> = rules
            .configured
            .iter()
            .chain(&rules.defaults)
            .cloned()
            .collect();
        let found = find_in(view, name, &dirs, |_| Ok(()), &mut Vec::new()).map_err(read)?;
        match found {
            Some(c) => c.path,
            None => {
                return Err(super::invalid(cfg, None, "build.extra_libraries", format!(
                    "names {name}, found in none of {} in the sysroot {}: give its absolute path, or point `build.sysroot` at the tree that has it",
                    dirs.join(" "), shown(&cfg.libraries.sysroot))))
            }
        }
    };
    let c = closure(view, &path, cfg.arch.target(), true).map_err(read)?;
    if let Some(p @ (Problem::NotExecutable { .. } | Problem::WrongTarget { .. })) =
        c.problems.first()
    {
        return Err(super::invalid(
            cfg,
            None,
            "build.extra_libraries",
            format!("names {name}: {p}"),
        ));
    }
    Ok(c)
}

/// Regular files of the plan that are dynamically linked ELF files, in path order.
fn elf_files(plan: &Plan) -> Vec<String> {
    let tree = PlanTree { plan };
    plan.nodes
        .iter()
        .filter(|(_, n)| matches!(n.kind, Kind::File(_)))
        .filter(|(p, _)| match tree.open(p).map(elf::read) {
            Ok(Ok(Exec::Elf(e))) => {
                e.loadable && (e.dynamic.interp.is_some() || !e.dynamic.needed.is_empty())
            }
            _ => false,
        })
        .map(|(p, _)| p.to_string())
        .collect()
}

/// What the layer adds, by path, with the `-v` note for each.
#[derive(Default)]
struct Adds {
    nodes: BTreeMap<String, (Planned, String)>,
    warnings: Vec<String>,
}

impl Adds {
    /// Adds the sysroot objects of `c` (a closure of `root`); the plan's own are left alone.
    fn closure(
        &mut self,
        view: &Overlay,
        sysroot: &HostTree,
        root: &str,
        c: &Closure,
    ) -> io::Result<()> {
        let origin = Origin::Library {
            program: root.to_string(),
        };
        for (i, o) in c.objects.iter().enumerate().skip(1) {
            let why = format!("{} for {root} (needed by {})", o.path, c.pulled_by(i));
            for l in &o.walk.links {
                if !view.plan.nodes.contains_key(l.at.as_str()) {
                    let node = Planned::new(Kind::Symlink(l.target.clone()), 0o777, origin.clone());
                    self.nodes
                        .entry(l.at.clone())
                        .or_insert((node, why.clone()));
                }
            }
            if !view.plan.nodes.contains_key(o.walk.real.as_str()) {
                let node = self.host_file(sysroot, &o.walk.real, origin.clone())?;
                self.nodes
                    .entry(o.walk.real.clone())
                    .or_insert((node, format!("library {why}")));
            }
        }
        self.loader_view(view, sysroot, c, &origin)
    }

    fn host_file(&self, sysroot: &HostTree, path: &str, origin: Origin) -> io::Result<Planned> {
        let host = sysroot
            .host_path(path)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let meta = fs::metadata(&host)?;
        let perm = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let kind = Kind::File(Content::Path {
            path: host,
            size: meta.len(),
        });
        Ok(Planned::new(kind, perm, origin))
    }

    /// What the guest's loader needs besides the files: musl's path file, and for glibc (which
    /// has no cache in the image) a link in the loader's directory to each library found
    /// through ld.so.conf.
    fn loader_view(
        &mut self,
        view: &Overlay,
        sysroot: &HostTree,
        c: &Closure,
        origin: &Origin,
    ) -> io::Result<()> {
        let Some(rules) = &c.rules else {
            return Ok(());
        };
        if let Flavor::Musl { .. } = rules.flavor {
            for f in &rules.files {
                let w = resolve(view, f)?;
                if !view.plan.nodes.contains_key(w.real.as_str()) && w.node == Some(TNode::File) {
                    let node = self.host_file(sysroot, &w.real, origin.clone())?;
                    self.nodes
                        .entry(w.real)
                        .or_insert((node, format!("{f}: the musl loader's search path")));
                }
            }
            return Ok(());
        }
        let Some(interp) = c.objects.iter().find(|o| o.via == Via::Interp) else {
            return Ok(());
        };
        let dir = parent(&interp.walk.real);
        for o in c.objects.iter().filter(|o| o.via == Via::Conf) {
            let at = join(dir, &o.name);
            if at != o.walk.real && !view.plan.nodes.contains_key(at.as_str()) {
                let node = Planned::new(Kind::Symlink(o.path.clone()), 0o777, origin.clone());
                let note = format!(
                    "{at} -> {}: found through ld.so.conf, which the guest has no cache of",
                    o.path
                );
                self.nodes.entry(at).or_insert((node, note));
            }
        }
        Ok(())
    }
}

/// The plan as a [`Tree`].
pub struct PlanTree<'a> {
    pub plan: &'a Plan,
}

impl Tree for PlanTree<'_> {
    fn node(&self, path: &str) -> io::Result<Option<TNode>> {
        if path == "/" {
            return Ok(Some(TNode::Dir));
        }
        Ok(self.plan.nodes.get(path).map(|n| match &n.kind {
            Kind::Dir => TNode::Dir,
            Kind::File(_) => TNode::File,
            Kind::Symlink(t) => TNode::Symlink(t.clone()),
            Kind::CharDev { .. } | Kind::BlockDev { .. } | Kind::Fifo => TNode::Other,
        }))
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek + '_>> {
        match self.plan.nodes.get(path).map(|n| &n.kind) {
            Some(Kind::File(c)) => Ok(Box::new(c.open()?)),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        Ok(self
            .plan
            .nodes
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| Some(k[prefix.len()..].to_string()).filter(|n| !n.contains('/')))
            .collect())
    }
}

/// The plan over the sysroot: what the plan has wins, path by path.
struct Overlay<'a> {
    plan: &'a Plan,
    sysroot: &'a HostTree,
}

impl Tree for Overlay<'_> {
    fn node(&self, path: &str) -> io::Result<Option<TNode>> {
        match (PlanTree { plan: self.plan }).node(path)? {
            Some(n) => Ok(Some(n)),
            None => self.sysroot.node(path),
        }
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek + '_>> {
        match self.plan.nodes.get(path).map(|n| &n.kind) {
            Some(Kind::File(Content::Path { path, .. })) => Ok(Box::new(fs::File::open(path)?)),
            Some(Kind::File(Content::Bytes(b))) => Ok(Box::new(io::Cursor::new(b.clone()))),
            Some(_) => Ok(Box::new(io::Cursor::new(Vec::new()))),
            None => self.sysroot.open(path),
        }
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let mut names = (PlanTree { plan: self.plan }).list(path)?;
        if let Ok(more) = self.sysroot.list(path) {
            names.extend(more);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// The programs the image cannot boot without: `/init`, busybox and the hand-off target.
fn must_run(cfg: &Config) -> Vec<&str> {
    let mut out = vec![paths::BUSYBOX, paths::INIT];
    match &cfg.init {
        InitMode::Default { .. } => out.push(paths::AGENT),
        InitMode::Custom {
            init: CustomInit::InImage(p),
        } => out.push(p),
        InitMode::Custom {
            init: CustomInit::Host(_),
        } => out.push(paths::CUSTOM_INIT),
        // The workload spec's program: found in the image's PATH by the workload layer, its
        // libraries placed like any other ELF file's; not a fixed path to check here.
        InitMode::Custom {
            init: CustomInit::Command | CustomInit::FromImage,
        }
        | InitMode::None => {}
    }
    out
}

/// Why the program at `path` cannot start in `tree` (empty when it can). A `#!` script's
/// interpreter is checked the same way, to a bounded depth; paths in `unknown` (downloads not
/// made) are taken as fine. A file that cannot be read is a problem, not an error. ELF files
/// must be built for `target`, the guest's machine.
pub fn problems(
    tree: &dyn Tree,
    path: &str,
    unknown: &[&str],
    target: elf::Target,
) -> Vec<Problem> {
    let mut path = path.to_string();
    for _ in 0..SCRIPT_DEPTH {
        if unknown.contains(&path.as_str()) {
            return Vec::new();
        }
        let not = |why: String| {
            vec![Problem::NotExecutable {
                path: path.clone(),
                why,
            }]
        };
        let w = match resolve(tree, &path) {
            Ok(w) if w.node == Some(TNode::File) => w,
            Ok(_) => return not("it is not in the image".into()),
            Err(e) => return not(e.to_string()),
        };
        if !tree.has_body(&w.real) {
            return Vec::new(); // present; what it is cannot be told
        }
        let read = tree.open(&w.real).map(elf::read);
        let interp = match read {
            Ok(Ok(Exec::Elf(_))) => {
                return closure(tree, &path, target, false)
                    .map_or_else(|e| not(format!("it cannot be read: {e}")), |c| c.problems)
            }
            Ok(Ok(Exec::Script { interp, .. })) => interp,
            Ok(Ok(Exec::Other)) => {
                let head = head_of(tree, &w.real);
                return not(format!(
                    "it is neither an ELF program nor a #! script (it starts with {head:?})"
                ));
            }
            Ok(Err(e)) => return not(format!("a broken ELF file: {e}")),
            Err(e) => return not(format!("it cannot be read: {e}")),
        };
        let found = resolve(tree, &interp).is_ok_and(|w| w.node == Some(TNode::File));
        if !found && !unknown.contains(&interp.as_str()) {
            return vec![Problem::Interp {
                program: path,
                interp,
                why: "is not in the image".into(),
            }];
        }
        path = interp;
    }
    vec![Problem::NotExecutable {
        path,
        why: format!("#! interpreters nest more than {SCRIPT_DEPTH} deep"),
    }]
}

fn head_of(tree: &dyn Tree, path: &str) -> String {
    let mut buf = [0u8; 24];
    let n = tree
        .open(path)
        .and_then(|mut f| io::Read::read(&mut f, &mut buf))
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// How the runnable check treats what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// A build: a program the image must start that cannot is an error.
    Build,
    /// `validate`, an offline `--dry-run`: everything found is a warning, and the downloads
    /// that were not made (`unfetched` paths) are not looked at.
    Preview,
}

/// The runnable check of a planned image: busybox, `/init` and the hand-off target must start
/// (with [`Strictness::Build`], an error naming the config key that placed them); every other
/// ELF program or `#!` script that cannot is returned as a warning.
pub fn runnable(
    cfg: &Config,
    plan: &Plan,
    strictness: Strictness,
    unfetched: &[&str],
) -> Result<Vec<String>, PlanError> {
    let tree = PlanTree { plan };
    let must = must_run(cfg);
    let mut warnings = Vec::new();
    for p in must.iter().filter(|p| !unfetched.contains(p)) {
        let found = problems(&tree, p, unfetched, cfg.arch.target());
        let Some(first) = found.first() else { continue };
        let origin = plan
            .nodes
            .get(*p)
            .map(|n| n.origin.clone())
            .unwrap_or(Origin::Base);
        let (line, key) = origin.key();
        let list: Vec<String> = found.iter().map(ToString::to_string).collect();
        let fix = fix_for(cfg, first);
        let e = super::invalid(
            cfg,
            line,
            &key,
            format!(
                "places {p}, which cannot start in the guest: {}{fix}",
                crate::util::listed(&list, "; ")
            ),
        );
        match strictness {
            Strictness::Build => return Err(e),
            Strictness::Preview => warnings.push(e.to_string()),
        }
    }
    for (path, node) in &plan.nodes {
        let runs = matches!(node.kind, Kind::File(_)) && node.perm & 0o111 != 0;
        if !runs || must.contains(&&**path) || matches!(node.origin, Origin::Library { .. }) {
            continue;
        }
        let is_program = match tree.open(path).map(elf::read) {
            Ok(Ok(Exec::Elf(e))) => e.loadable,
            Ok(Ok(Exec::Script { .. })) => true,
            _ => false,
        };
        if !is_program {
            continue;
        }
        for p in problems(&tree, path, unfetched, cfg.arch.target()) {
            warnings.push(format!(
                "{path} ({}) will not start in the guest: {p}",
                node.origin
            ));
        }
    }
    Ok(warnings)
}

/// What to do about a problem, as a sentence starting with ": ".
fn fix_for(cfg: &Config, p: &Problem) -> String {
    let sysroot = shown(&cfg.libraries.sysroot);
    match p {
        Problem::Missing { .. } | Problem::Interp { .. } if !cfg.libraries.auto => {
            ": `build.libraries` is \"off\": set it to \"auto\" or map what is missing under [mappings]".into()
        }
        Problem::Missing { .. } | Problem::Interp { .. } => format!(
            ": add it with a [mappings] entry, point `build.sysroot` (now {sysroot}) at the tree the program comes from, or list a library it loads at run time in `build.extra_libraries`"
        ),
        Problem::WrongTarget { .. } => format!(
            ": use the program built for {} (`build.arch` is \"{}\")",
            cfg.arch,
            cfg.arch
        ),
        Problem::NotExecutable { .. } => ": check that the file is the program you meant (a download that returned a web page, a truncated file)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::Fetched;
    use crate::libs::closure::tests::cc;
    use std::path::Path;

    /// A static x86_64 ELF header and nothing else: what busybox needs to pass the check.
    fn elf_stub() -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        h[16] = 2; // ET_EXEC
        h[18] = 62; // EM_X86_64
        h[20] = 1;
        h[52] = 64;
        h
    }

    struct Fx {
        dir: tempfile::TempDir,
    }

    impl Fx {
        fn new(busybox: &[u8]) -> Fx {
            let fx = Fx {
                dir: tempfile::tempdir().unwrap(),
            };
            fx.write("busybox", busybox, 0o755);
            fx
        }

        fn write(&self, rel: &str, body: &[u8], mode: u32) {
            let p = self.dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, body).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }

        fn plan(&self, body: &str) -> (Config, Result<Plan, PlanError>) {
            let text = format!("version = \"1\"\nstrategy = \"initramfs\"\n{body}");
            let cfg = Config::from_str(&text, &self.dir.path().join("fledge.toml")).unwrap();
            let bb = self.dir.path().join("busybox");
            let busybox = Fetched {
                size: fs::metadata(&bb).unwrap().len(),
                path: bb,
                sha256: String::new(),
                origin: String::new(),
                cached: false,
            };
            let plan = super::super::plan(&Inputs {
                config: &cfg,
                busybox: &busybox,
                agent: None,
                init: &elf_stub(),
                modules: None,
                outputs: &[],
                image: None,
            });
            (cfg, plan)
        }
    }

    const LS_INIT: &str =
        "[init]\npath = \"/usr/bin/ls\"\n[mappings]\n\"/usr/bin/ls\" = \"/usr/bin/ls\"\n";

    #[test]
    fn a_dynamic_init_gets_its_closure_and_runs() {
        let fx = Fx::new(&elf_stub());
        let (cfg, plan) = fx.plan(LS_INIT);
        let plan = plan.unwrap();
        let tree = PlanTree { plan: &plan };
        let ld = resolve(&tree, "/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(ld.node, Some(TNode::File), "{ld:?}");
        assert!(
            matches!(plan.nodes[ld.real.as_str()].origin, Origin::Library { ref program } if program == "/usr/bin/ls")
        );
        assert!(problems(&tree, "/usr/bin/ls", &[], elf::X86_64).is_empty());
        assert_eq!(
            runnable(&cfg, &plan, Strictness::Build, &[]).unwrap(),
            Vec::<String>::new()
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("libc.so.6 for /usr/bin/ls")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn with_libraries_off_a_dynamic_init_fails_the_build() {
        let fx = Fx::new(&elf_stub());
        let (cfg, plan) = fx.plan(&format!("[build]\nlibraries = \"off\"\n{LS_INIT}"));
        let plan = plan.unwrap();
        assert!(!plan.nodes.contains_key("/lib64"));
        let e = runnable(&cfg, &plan, Strictness::Build, &[])
            .unwrap_err()
            .to_string();
        for want in [
            "`mappings.\"/usr/bin/ls\"`",
            "/lib64/ld-linux-x86-64.so.2",
            "`build.libraries` is \"off\"",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
    }

    #[test]
    fn a_web_page_as_busybox_is_refused() {
        let fx = Fx::new(b"<!DOCTYPE html><html><body>Not found</body></html>");
        fx.write("init", b"#!/bin/sh\necho hi\n", 0o755);
        let (cfg, plan) = fx.plan("[init]\nnone = true\n[mappings]\n\"init\" = \"/init\"\n");
        let plan = plan.unwrap();
        let e = runnable(&cfg, &plan, Strictness::Build, &[])
            .unwrap_err()
            .to_string();
        for want in ["`source.busybox_url`", "/bin/busybox", "<!DOCTYPE html>"] {
            assert!(e.contains(want), "{want} in {e}");
        }
    }

    #[test]
    fn script_inits_need_their_interpreter() {
        let fx = Fx::new(&elf_stub());
        fx.write("init", b"#!/bin/sh\necho hi\n", 0o755);
        fx.write("perl-init", b"#!/usr/bin/perl\nprint 1;\n", 0o755);
        let (cfg, plan) = fx.plan("[init]\nnone = true\n[mappings]\n\"init\" = \"/init\"\n");
        assert!(
            runnable(&cfg, &plan.unwrap(), Strictness::Build, &[]).is_ok(),
            "/bin/sh is busybox"
        );
        let (cfg, plan) = fx.plan("[init]\nnone = true\n[mappings]\n\"perl-init\" = \"/init\"\n");
        let e = runnable(&cfg, &plan.unwrap(), Strictness::Build, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/init needs the interpreter /usr/bin/perl, which is not in the image"),
            "{e}"
        );
        // mapped, perl brings its own libraries
        let (cfg, plan) = fx.plan(
            "[init]\nnone = true\n[mappings]\n\"perl-init\" = \"/init\"\n\"/usr/bin/perl\" = \"/usr/bin/perl\"\n",
        );
        assert!(runnable(&cfg, &plan.unwrap(), Strictness::Build, &[]).is_ok());
    }

    #[test]
    fn an_ld_so_conf_library_is_linked_where_the_guest_loader_looks() {
        let fx = Fx::new(&elf_stub());
        let root = fx.dir.path().join("root");
        let multi = root.join("usr/lib/x86_64-linux-gnu");
        fs::create_dir_all(&multi).unwrap();
        for f in ["ld-linux-x86-64.so.2", "libc.so.6"] {
            fs::copy(Path::new("/lib/x86_64-linux-gnu").join(f), multi.join(f)).unwrap();
        }
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        fs::create_dir_all(root.join("lib64")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            root.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/ld.so.conf"), "/opt/vendor/lib\n").unwrap();
        let lib = root.join("opt/vendor/lib/libvendor.so.1");
        let Some(()) = cc(
            "gcc",
            "int vendor(void){return 0;}",
            &lib,
            &["-shared", "-fPIC", "-Wl,-soname,libvendor.so.1"],
        ) else {
            return;
        };
        let exe = fx.dir.path().join("app");
        let main = "int vendor(void); int main(void){return vendor();}";
        cc("gcc", main, &exe, &[lib.to_str().unwrap()]).unwrap();
        let (cfg, plan) = fx.plan("[init]\npath = \"/usr/bin/app\"\n[build]\nsysroot = \"root\"\n[mappings]\n\"app\" = \"/usr/bin/app\"\n");
        let plan = plan.unwrap();
        assert!(plan.nodes.contains_key("/opt/vendor/lib/libvendor.so.1"));
        assert_eq!(
            plan.nodes["/usr/lib/x86_64-linux-gnu/libvendor.so.1"].kind,
            Kind::Symlink("/opt/vendor/lib/libvendor.so.1".into())
        );
        // the image's own view (no ld.so.conf, no cache) finds everything
        assert!(
            runnable(&cfg, &plan, Strictness::Build, &[]).is_ok(),
            "{:?}",
            runnable(&cfg, &plan, Strictness::Build, &[])
        );
        let Kind::File(Content::Path { path, .. }) =
            &plan.nodes["/usr/lib/x86_64-linux-gnu/libc.so.6"].kind
        else {
            panic!("libc is a file");
        };
        assert!(path.starts_with(&root), "taken from the sysroot: {path:?}");
    }
}
