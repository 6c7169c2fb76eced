//! The closure of one program: its interpreter and every `DT_NEEDED`, transitively, found in a
//! [`Tree`] with the loader's [`Rules`], breadth first as the loader maps them. Nothing is run.
//! What cannot be found or cannot run is collected as [`Problem`]s, all of them, not just the
//! first, so one message can name everything that is missing.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;

use super::elf::{self, ElfFile, Exec, Target};
use super::search::{check_target, find_in, Flavor, Rules};
use crate::tree::{is_symlink_loop, parent, resolve, Node, Tree, Walk};

/// How an object was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The program itself, or a name with a `/`.
    Path,
    Interp,
    Rpath,
    Runpath,
    /// A directory of ld.so.conf (glibc) or of the musl path file.
    Conf,
    Default,
}

/// One object of a closure.
#[derive(Debug, Clone)]
pub struct Object {
    /// The name asked for (the `DT_NEEDED` entry, the interpreter or the program path).
    pub name: String,
    /// The path the loader opens.
    pub path: String,
    pub walk: Walk,
    pub elf: ElfFile,
    /// The object whose `DT_NEEDED` pulled this one in (an index into [`Closure::objects`]).
    pub by: Option<usize>,
    pub via: Via,
}

/// Why a program cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file is not something `execve` runs, or its headers are broken.
    NotExecutable { path: String, why: String },
    WrongTarget {
        path: String,
        found: Target,
        want: Target,
    },
    /// The interpreter (`PT_INTERP`, or a `#!` line) is absent or unusable.
    Interp {
        program: String,
        interp: String,
        why: String,
    },
    /// A `DT_NEEDED` name found nowhere the loader looks.
    Missing {
        name: String,
        by: String,
        searched: Vec<String>,
        rejected: Vec<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotExecutable { path, why } => write!(f, "{path} cannot be run: {why}"),
            Problem::WrongTarget { path, found, want } => {
                write!(
                    f,
                    "{path} is built for {found}, but the image is for {want}"
                )
            }
            Problem::Interp {
                program,
                interp,
                why,
            } => write!(f, "{program} needs the interpreter {interp}, which {why}"),
            Problem::Missing {
                name,
                by,
                searched,
                rejected,
            } => {
                write!(
                    f,
                    "{by} needs {name}, found in none of {}",
                    searched.join(" ")
                )?;
                if !rejected.is_empty() {
                    write!(f, " (passed over: {})", crate::util::listed(rejected, ", "))?;
                }
                Ok(())
            }
        }
    }
}

/// A program's objects (the program first) and what keeps it from starting.
#[derive(Debug, Clone, Default)]
pub struct Closure {
    pub objects: Vec<Object>,
    pub problems: Vec<Problem>,
    /// The rules used (absent for a static program or a broken one).
    pub rules: Option<Rules>,
}

impl Closure {
    /// The path of the object that pulled object `i` in, for `-v` output.
    pub fn pulled_by(&self, i: usize) -> &str {
        let by = self.objects[i].by.unwrap_or(0);
        &self.objects[by].path
    }
}

/// Reads an ELF file of the tree; `Err` says why it is not one.
pub fn read_elf(tree: &dyn Tree, real: &str) -> Result<ElfFile, String> {
    let file = tree.open(real).map_err(|e| e.to_string())?;
    match elf::read(file) {
        Ok(Exec::Elf(e)) if e.loadable => Ok(e),
        Ok(Exec::Elf(_)) => Err("an ELF object file, not a program or library".into()),
        Ok(_) => Err("not an ELF file".into()),
        Err(e) => Err(format!("a broken ELF file: {e}")),
    }
}

/// Reads a needed object; a file whose body the tree does not hold (an image read back keeps
/// only a few) is taken as a fine object of the image's target with nothing to follow.
fn read_needed(tree: &dyn Tree, real: &str, target: Target) -> Result<ElfFile, String> {
    if !tree.has_body(real) {
        return Ok(ElfFile {
            target,
            loadable: true,
            dynamic: elf::Dynamic::default(),
        });
    }
    let e = read_elf(tree, real)?;
    check_target(e.target, target)?;
    Ok(e)
}

/// The closure of the ELF file at `path` (a program, or a library given as a root). `use_conf`
/// is passed to [`Rules::read`].
pub fn closure(tree: &dyn Tree, path: &str, target: Target, use_conf: bool) -> io::Result<Closure> {
    let mut out = Closure::default();
    let w = resolve(tree, path)?;
    let elf = match w.node {
        Some(Node::File) => read_elf(tree, &w.real),
        _ => Err("it does not exist".into()),
    };
    let elf = match elf {
        Ok(e) => e,
        Err(why) => {
            out.problems.push(Problem::NotExecutable {
                path: path.into(),
                why,
            });
            return Ok(out);
        }
    };
    if let Err(_why) = check_target(elf.target, target) {
        out.problems.push(Problem::WrongTarget {
            path: path.into(),
            found: elf.target,
            want: target,
        });
        return Ok(out);
    }
    let flavor = match &elf.dynamic.interp {
        Some(i) => Flavor::of_interp(i),
        None if elf
            .dynamic
            .needed
            .iter()
            .any(|n| n.starts_with("libc.musl-")) =>
        {
            Flavor::Musl {
                arch: "x86_64".into(),
            }
        }
        None => Flavor::Glibc,
    };
    let interp = elf.dynamic.interp.clone();
    let dynamic = interp.is_some() || !elf.dynamic.needed.is_empty();
    out.objects.push(Object {
        name: path.into(),
        path: path.into(),
        walk: w,
        elf,
        by: None,
        via: Via::Path,
    });
    if !dynamic {
        return Ok(out); // static: nothing to load
    }
    let rules = Rules::read(tree, flavor, use_conf, target)?;
    let mut s = Search {
        tree,
        target,
        rules: &rules,
        out: &mut out,
        loaded: HashMap::new(),
    };
    if let Some(i) = interp {
        s.interp(&i)?;
    }
    s.needed()?;
    out.rules = Some(rules);
    Ok(out)
}

struct Search<'a> {
    tree: &'a dyn Tree,
    target: Target,
    rules: &'a Rules,
    out: &'a mut Closure,
    /// Names and real paths already mapped, to the object's index.
    loaded: HashMap<String, usize>,
}

impl Search<'_> {
    fn interp(&mut self, interp: &str) -> io::Result<()> {
        let found = match resolve(self.tree, interp) {
            Ok(w) => Ok(w),
            // The kernel's exec fails with ELOOP: the program cannot start.
            Err(e) if is_symlink_loop(&e) => Err("is a symlink loop".to_string()),
            Err(e) => return Err(e),
        };
        let elf = found.and_then(|w| match w.node {
            Some(Node::File) => read_needed(self.tree, &w.real, self.target).map(|elf| (w, elf)),
            _ => Err("is not in the image".into()),
        });
        match elf {
            Ok((w, elf)) => self.add(interp, interp.to_string(), w, elf, None, Via::Interp),
            Err(why) => self.out.problems.push(Problem::Interp {
                program: self.out.objects[0].path.clone(),
                interp: interp.into(),
                why: if why.starts_with("is ") {
                    why
                } else {
                    format!("is {why}")
                },
            }),
        }
        Ok(())
    }

    fn add(
        &mut self,
        name: &str,
        path: String,
        walk: Walk,
        elf: ElfFile,
        by: Option<usize>,
        via: Via,
    ) {
        let i = self.out.objects.len();
        self.loaded.insert(name.to_string(), i);
        self.loaded.insert(walk.real.clone(), i);
        if let Some(so) = &elf.dynamic.soname {
            self.loaded.entry(so.clone()).or_insert(i);
        }
        let base = crate::tree::name(&path);
        self.loaded.entry(base.to_string()).or_insert(i);
        self.out.objects.push(Object {
            name: name.into(),
            path,
            walk,
            elf,
            by,
            via,
        });
    }

    /// Resolves every `DT_NEEDED` of every object, breadth first.
    fn needed(&mut self) -> io::Result<()> {
        let mut queue: VecDeque<usize> = VecDeque::from([0]);
        while let Some(i) = queue.pop_front() {
            for name in self.out.objects[i].elf.dynamic.needed.clone() {
                if self.loaded.contains_key(&name) || self.rules.flavor.is_builtin(&name) {
                    continue;
                }
                if let Some(j) = self.find(&name, i)? {
                    queue.push_back(j);
                }
            }
        }
        Ok(())
    }

    /// The origin (`$ORIGIN`) of object `i`: the program's real directory, a library's
    /// directory as opened.
    fn origin(&self, i: usize) -> String {
        let o = &self.out.objects[i];
        let p = if i == 0 { &o.walk.real } else { &o.path };
        parent(p).to_string()
    }

    /// The search list for a name needed by object `i`, each directory with how it got there.
    fn dirs(&self, i: usize) -> Vec<(String, Via)> {
        let objs = &self.out.objects;
        let chain: Vec<usize> = std::iter::successors(Some(i), |&j| objs[j].by).collect();
        let mut dirs = Vec::new();
        let mut push = |v: Vec<String>, via| dirs.extend(v.into_iter().map(|d| (d, via)));
        let d = |j: usize| &objs[j].elf.dynamic;
        match self.rules.flavor {
            Flavor::Glibc => {
                if d(i).runpath.is_none() {
                    for &j in &chain {
                        if let (None, Some(rp)) = (&d(j).runpath, &d(j).rpath) {
                            push(self.rules.expand(rp, &self.origin(j)), Via::Rpath);
                        }
                    }
                }
                if let Some(rp) = &d(i).runpath {
                    push(self.rules.expand(rp, &self.origin(i)), Via::Runpath);
                }
                if !d(i).nodeflib {
                    push(self.rules.configured.clone(), Via::Conf);
                    push(self.rules.defaults.clone(), Via::Default);
                }
            }
            Flavor::Musl { .. } => {
                for &j in &chain {
                    if let Some(rp) = d(j).runpath.as_ref().or(d(j).rpath.as_ref()) {
                        push(self.rules.expand(rp, &self.origin(j)), Via::Runpath);
                    }
                }
                push(self.rules.configured.clone(), Via::Conf);
            }
        }
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|(d, _)| seen.insert(d.clone()));
        dirs
    }

    /// Finds `name` for object `i`; returns the new object's index, or records a problem.
    fn find(&mut self, name: &str, i: usize) -> io::Result<Option<usize>> {
        let dirs: Vec<(String, Via)> = if name.contains('/') {
            vec![(String::from("/"), Via::Path)]
        } else {
            self.dirs(i)
        };
        let list: Vec<String> = dirs.iter().map(|(d, _)| d.clone()).collect();
        let mut rejected = Vec::new();
        let mut parsed = None;
        let (tree, target) = (self.tree, self.target);
        let found = find_in(
            tree,
            name,
            &list,
            |c| {
                parsed = Some(read_needed(tree, &c.walk.real, target)?);
                Ok(())
            },
            &mut rejected,
        )?;
        let (Some(c), Some(elf)) = (found, parsed) else {
            self.out.problems.push(Problem::Missing {
                name: name.into(),
                by: self.out.objects[i].path.clone(),
                searched: list,
                rejected,
            });
            return Ok(None);
        };
        if let Some(&j) = self.loaded.get(&c.walk.real) {
            self.loaded.insert(name.to_string(), j); // the same file under another name
            return Ok(None);
        }
        let via = dirs
            .iter()
            .find(|(d, _)| d == parent(&c.path))
            .map_or(Via::Path, |(_, v)| *v);
        self.add(name, c.path, c.walk, elf, Some(i), via);
        Ok(Some(self.out.objects.len() - 1))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::libs::elf::X86_64;
    use crate::tree::HostTree;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Compiles C `src` with `cc` and `args` into `out`; `None` (with the reason printed) when
    /// the compiler is not installed.
    pub(crate) fn cc(cc: &str, src: &str, out: &Path, args: &[&str]) -> Option<()> {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("x.c");
        std::fs::write(&c, src).unwrap();
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let run = Command::new(cc)
            .arg(&c)
            .arg("-o")
            .arg(out)
            .args(args)
            .output();
        match run {
            Ok(o) if o.status.success() => Some(()),
            Ok(o) => panic!("{cc} failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => {
                eprintln!("skipped: {cc} is not installed ({e}); apt-get install gcc musl-tools");
                None
            }
        }
    }

    /// A shared library `soname` needing `needs` (linked from `libdir`).
    fn lib(root: &Path, at: &str, soname: &str, needs: &[&str], libdir: &Path) -> Option<()> {
        let mut args = vec!["-shared".to_string(), "-fPIC".into()];
        args.push(format!("-Wl,-soname,{soname}"));
        args.push(format!("-L{}", libdir.display()));
        args.push("-Wl,--no-as-needed".into());
        args.extend(needs.iter().map(|n| format!("-l:{n}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let sym = soname.replace(['.', '-'], "_");
        cc(
            "gcc",
            &format!("int {sym}(void) {{ return 1; }}\n"),
            &root.join(at),
            &args,
        )
    }

    /// Copies the host's loader and libc into `root` the Debian way (`/lib64` link).
    fn base_sysroot(root: &Path) {
        let multi = root.join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&multi).unwrap();
        for f in ["ld-linux-x86-64.so.2", "libc.so.6"] {
            std::fs::copy(Path::new("/lib/x86_64-linux-gnu").join(f), multi.join(f)).unwrap();
        }
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::create_dir_all(root.join("lib64")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            root.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
    }

    fn names(c: &Closure) -> Vec<(String, String, Via)> {
        c.objects
            .iter()
            .skip(1)
            .map(|o| (o.name.clone(), o.path.clone(), o.via))
            .collect()
    }

    fn host() -> HostTree {
        HostTree { root: "/".into() }
    }

    #[test]
    fn an_interpreter_that_is_a_symlink_loop_is_the_programs_problem() {
        let ls = std::fs::read("/usr/bin/ls").unwrap();
        let mut t = crate::tree::MemTree::default();
        t.put("/bin/prog", Node::File, &ls);
        t.put(
            "/lib64/ld-linux-x86-64.so.2",
            Node::Symlink("ld-linux-x86-64.so.2".into()),
            b"",
        );
        let c = closure(&t, "/bin/prog", X86_64, true).unwrap();
        assert!(
            matches!(&c.problems[..], [Problem::Interp { interp, why, .. }, ..]
                if interp == "/lib64/ld-linux-x86-64.so.2" && why == "is a symlink loop"),
            "{:?}",
            c.problems
        );
    }

    #[test]
    fn glibc_program_from_this_machine() {
        let c = closure(&host(), "/usr/bin/ls", X86_64, true).unwrap();
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let n = names(&c);
        assert_eq!(n[0].0, "/lib64/ld-linux-x86-64.so.2");
        assert_eq!(n[0].2, Via::Interp);
        let libc = n.iter().find(|o| o.0 == "libc.so.6").expect("libc");
        assert_eq!(libc.1, "/lib/x86_64-linux-gnu/libc.so.6");
        // libc needs the loader by its soname: found as the interpreter, not twice
        assert_eq!(
            n.iter().filter(|o| o.1.contains("ld-linux")).count(),
            1,
            "{n:?}"
        );
    }

    #[test]
    fn musl_program_needs_only_its_loader() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("hello-musl");
        let Some(()) = cc("musl-gcc", "int main(void){return 0;}", &exe, &[]) else {
            return;
        };
        let root = HostTree {
            root: dir.path().into(),
        };
        let host_musl = closure(&host(), exe.to_str().unwrap(), X86_64, true).unwrap();
        assert!(host_musl.problems.is_empty(), "{:?}", host_musl.problems);
        let n = names(&host_musl);
        assert_eq!(n.len(), 1, "libc.so is the loader itself: {n:?}");
        assert_eq!(n[0].0, "/lib/ld-musl-x86_64.so.1");
        assert_eq!(
            host_musl.rules.unwrap().files,
            ["/etc/ld-musl-x86_64.path"],
            "Debian's musl has a path file"
        );
        // in a tree without the loader the interpreter is the problem
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::copy(&exe, dir.path().join("bin/hello")).unwrap();
        let c = closure(&root, "/bin/hello", X86_64, true).unwrap();
        assert!(
            matches!(&c.problems[..], [Problem::Interp { interp, .. }] if interp == "/lib/ld-musl-x86_64.so.1"),
            "{:?}",
            c.problems
        );
    }

    /// A sysroot with an `$ORIGIN` program and libraries in each place the loader looks.
    fn search_sysroot(root: &Path, dtags: &str) -> Option<()> {
        base_sysroot(root);
        let applib = root.join("opt/app/lib");
        let stub = root.join("stubs");
        // link-time stubs, so the program and libraries record the names
        for so in [
            "libfoo.so.1",
            "libbar.so.1",
            "libbaz.so.1",
            "libdeep.so.1",
            "libqux.so.1",
        ] {
            lib(&stub, so, so, &[], &stub)?;
        }
        lib(
            root,
            "opt/app/lib/libfoo.so.1",
            "libfoo.so.1",
            &["libdeep.so.1"],
            &stub,
        )?;
        lib(root, "usr/lib/libfoo.so.1", "libfoo.so.1", &[], &stub)?; // shadowed by $ORIGIN
        lib(root, "opt/conf/libbar.so.1", "libbar.so.1", &[], &stub)?;
        lib(
            root,
            "usr/lib/x86_64-linux-gnu/libbaz.so.1.2",
            "libbaz.so.1",
            &["libqux.so.1"],
            &stub,
        )?;
        std::os::unix::fs::symlink(
            "libbaz.so.1.2",
            root.join("usr/lib/x86_64-linux-gnu/libbaz.so.1"),
        )
        .unwrap();
        lib(root, "usr/lib/libqux.so.1", "libqux.so.1", &[], &stub)?;
        lib(root, "opt/app/lib/libdeep.so.1", "libdeep.so.1", &[], &stub)?;
        // a wrong-machine libbar first in the search order: passed over
        let mut arm = std::fs::read(root.join("opt/conf/libbar.so.1")).unwrap();
        arm[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine = EM_AARCH64
        std::fs::write(applib.join("libbar.so.1"), arm).unwrap();
        std::fs::create_dir_all(root.join("etc/ld.so.conf.d")).unwrap();
        std::fs::write(
            root.join("etc/ld.so.conf"),
            "include /etc/ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/ld.so.conf.d/app.conf"), "/opt/conf\n").unwrap();
        let rpath = format!("-Wl,{dtags},-rpath,$ORIGIN/../lib");
        let main = "int libfoo_so_1(void); int libbar_so_1(void); int libbaz_so_1(void);\n\
                    int main(void){return libfoo_so_1()+libbar_so_1()+libbaz_so_1();}";
        let l = format!("-L{}", stub.display());
        cc(
            "gcc",
            main,
            &root.join("opt/app/bin/app"),
            &[
                &rpath,
                &l,
                "-Wl,--no-as-needed",
                "-l:libfoo.so.1",
                "-l:libbar.so.1",
                "-l:libbaz.so.1",
            ],
        )?;
        std::fs::remove_dir_all(&stub).unwrap();
        Some(())
    }

    #[test]
    fn search_order_in_a_fixture_sysroot() {
        let dir = tempfile::tempdir().unwrap();
        let Some(()) = search_sysroot(dir.path(), "--enable-new-dtags") else {
            return;
        };
        let tree = HostTree {
            root: dir.path().into(),
        };
        let app = read_elf(&tree, "/opt/app/bin/app").unwrap();
        assert_eq!(app.dynamic.runpath.as_deref(), Some("$ORIGIN/../lib"));
        let c = closure(&tree, "/opt/app/bin/app", X86_64, true).unwrap();
        let n = names(&c);
        let found: Vec<(&str, &str, Via)> = n
            .iter()
            .map(|(n, p, v)| (n.as_str(), p.as_str(), *v))
            .collect();
        let want = [
            (
                "/lib64/ld-linux-x86-64.so.2",
                "/lib64/ld-linux-x86-64.so.2",
                Via::Interp,
            ),
            ("libfoo.so.1", "/opt/app/lib/libfoo.so.1", Via::Runpath),
            ("libbar.so.1", "/opt/conf/libbar.so.1", Via::Conf),
            (
                "libbaz.so.1",
                "/lib/x86_64-linux-gnu/libbaz.so.1",
                Via::Default,
            ),
            ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", Via::Default),
            ("libqux.so.1", "/lib/libqux.so.1", Via::Default),
        ];
        assert_eq!(found, want);
        // RUNPATH is not inherited: libfoo's libdeep is only in the program's $ORIGIN/../lib
        assert!(
            matches!(&c.problems[..], [Problem::Missing { name, by, .. }] if name == "libdeep.so.1" && by == "/opt/app/lib/libfoo.so.1"),
            "{:?}",
            c.problems
        );
        let msg = c.problems[0].to_string();
        assert!(msg.contains("/opt/conf /lib/x86_64-linux-gnu"), "{msg}");
        let baz = c.objects.iter().find(|o| o.name == "libbaz.so.1").unwrap();
        assert_eq!(baz.walk.real, "/usr/lib/x86_64-linux-gnu/libbaz.so.1.2");
        let at: Vec<&str> = baz.walk.links.iter().map(|l| l.at.as_str()).collect();
        assert_eq!(at, ["/lib", "/usr/lib/x86_64-linux-gnu/libbaz.so.1"]);
    }

    #[test]
    fn rpath_is_inherited_and_wrong_machine_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let Some(()) = search_sysroot(dir.path(), "--disable-new-dtags") else {
            return;
        };
        let tree = HostTree {
            root: dir.path().into(),
        };
        let c = closure(&tree, "/opt/app/bin/app", X86_64, true).unwrap();
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let deep = c.objects.iter().find(|o| o.name == "libdeep.so.1").unwrap();
        assert_eq!(
            (deep.path.as_str(), deep.via),
            ("/opt/app/lib/libdeep.so.1", Via::Rpath)
        );
        // without the good libbar, the wrong-machine one is named in the message
        std::fs::remove_file(dir.path().join("opt/conf/libbar.so.1")).unwrap();
        let c = closure(&tree, "/opt/app/bin/app", X86_64, true).unwrap();
        let msg = c
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            msg.contains("/opt/app/lib/libbar.so.1 (built for aarch64 (64-bit), the image is x86_64 (64-bit))"),
            "{msg}"
        );
        let arm: PathBuf = dir.path().join("opt/app/lib/libbar.so.1");
        std::fs::copy(&arm, dir.path().join("opt/app/bin/app")).unwrap();
        let c = closure(&tree, "/opt/app/bin/app", X86_64, true).unwrap();
        assert!(
            matches!(&c.problems[..], [Problem::WrongTarget { .. }]),
            "{:?}",
            c.problems
        );
    }
}
