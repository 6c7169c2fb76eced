//! Kernel modules for the guest's kernel: `[kernel]` in `fledge.toml`.
//!
//! This module owns turning `modules = [...]` into files of the image. [`Settings`] says which
//! tree (`version` and/or `modules_dir`, never the build host's running kernel by default);
//! [`tree`] reads its depmod index files, [`resolve`] computes the closure in load order, and
//! [`prepare`] reads each module (decompressing `.ko.xz`/`.ko.zst`/`.ko.gz` at build time, so
//! fledge-init's `finit_module` needs no decompressor), checks its vermagic against the release,
//! finds the firmware its `.modinfo` names, and writes the load list
//! ([`fledge_abi::paths::MODULES_LOAD`]) fledge-init reads.

pub mod modinfo;
pub mod resolve;
mod settings;
pub mod tree;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::util::shown;
use resolve::Resolution;
use settings::check_release;
pub use settings::{settings, RawKernel, Request, Settings, HOST_MODULES};
use tree::ModuleTree;

/// The largest index file (`modules.dep`, `modules.alias`, ...) read (Debian's are below 2 MiB).
pub const INDEX_LIMIT: u64 = 16 << 20;
/// The variable bounding every byte the stage reads and decompresses, all files together.
pub const BUDGET_VAR: &str = "FLEDGE_MODULES_MAX_SIZE";
/// Its default.
pub const DEFAULT_BUDGET: u64 = 512 << 20;

/// One bound on every byte `[kernel]` reads and holds (index files, modules decompressed,
/// firmware), so many small compressed files cannot add up to more memory than it allows.
#[derive(Debug, Clone)]
pub struct Budget {
    left: u64,
    limit: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(DEFAULT_BUDGET)
    }
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget { left: limit, limit }
    }

    /// [`BUDGET_VAR`] (`512M`, `2G`, bytes) or the default; a bad value names the variable.
    pub fn from_env() -> Result<Budget, KmodError> {
        match std::env::var(BUDGET_VAR) {
            Ok(v) if !v.trim().is_empty() => crate::compress::parse_size(&v)
                .filter(|n| *n > 0)
                .map(Budget::new)
                .ok_or(KmodError::BadBudget { value: v }),
            _ => Ok(Budget::default()),
        }
    }

    /// Reads `path` with `read(cap)`, `cap` the smaller of `per_file` and what is left, and
    /// charges what it gave; a file over what is left is an error naming the total bound.
    pub fn read(
        &mut self,
        path: &Path,
        per_file: u64,
        read: impl FnOnce(u64) -> Result<Vec<u8>, KmodError>,
    ) -> Result<Vec<u8>, KmodError> {
        let cap = per_file.min(self.left);
        match read(cap) {
            Ok(bytes) => {
                self.left -= (bytes.len() as u64).min(self.left);
                Ok(bytes)
            }
            Err(KmodError::TooLarge { .. }) if cap < per_file => Err(KmodError::OverBudget {
                path: path.to_path_buf(),
                limit: self.limit,
            }),
            Err(e) => Err(e),
        }
    }
}

/// Kernel modules that cannot be put in the image.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("kernel.modules_dir: {} is not a directory: point it at the guest kernel's lib/modules/<release> tree", shown(dir))]
    NoTree { dir: PathBuf },
    #[error("kernel.modules: {}/modules.dep is missing: generate it with `depmod -b ROOT RELEASE` for the tree ROOT/lib/modules/RELEASE", shown(dir))]
    NoDepFile { dir: PathBuf },
    #[error("kernel.modules: cannot read {}: {source}", shown(path))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel.modules: {}{}: {problem}", shown(path), if *line > 0 { format!(":{line}") } else { String::new() })]
    Malformed {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("kernel.modules: no module or alias {name} in {} (modules.dep, modules.alias, modules.builtin); closest: {}", shown(dir), closest.join(", "))]
    Unknown {
        name: String,
        dir: PathBuf,
        closest: Vec<String>,
    },
    #[error("kernel.modules: {} is listed in modules.dep (needed for {module}) but is missing: reinstall or re-extract the tree", shown(path))]
    MissingFile { module: String, path: PathBuf },
    #[error(
        "kernel.modules: {} is outside the tree {}: refusing to follow it",
        shown(path),
        shown(root)
    )]
    Escapes { path: PathBuf, root: PathBuf },
    #[error("kernel.modules: {} was built for kernel {found}, not {release}: use the module tree of the guest's kernel (or fix `kernel.version`)", shown(path))]
    Vermagic {
        path: PathBuf,
        found: String,
        release: String,
    },
    #[error("kernel.modules: {} is built for {found}, and the guest is {arch}: use the module tree of the guest's kernel (or fix `build.arch`)", shown(path))]
    WrongArch {
        path: PathBuf,
        found: String,
        arch: crate::arch::Arch,
    },
    #[error("kernel.modules_dir: {} is named {name:?}, which is not a kernel release: set `kernel.version`", shown(dir))]
    Release { dir: PathBuf, name: String },
    #[error("kernel.modules: {} {problem}", shown(path))]
    NotModule { path: PathBuf, problem: String },
    #[error("kernel.modules: {} needs {dep} (its .modinfo says so) but modules.dep does not list it: the index is stale; run depmod for the tree again", shown(path))]
    Stale { path: PathBuf, dep: String },
    #[error("kernel.modules: {} is larger than {limit} bytes", shown(path))]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("kernel.modules: {} takes the modules, firmware and index files over {limit} bytes in all ({BUDGET_VAR}): load fewer modules or raise the bound", shown(path))]
    OverBudget { path: PathBuf, limit: u64 },
    #[error(
        "{BUDGET_VAR}={value:?} is not a size (e.g. 512M, 2G, bytes); unset it for the default"
    )]
    BadBudget { value: String },
    #[error("kernel.modules: cannot decompress {}: {source}", shown(path))]
    Decompress {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel.modules: modules.dep of {} has a dependency cycle: {}", shown(dir), cycle.join(" -> "))]
    Cycle { dir: PathBuf, cycle: Vec<String> },
}

/// Reads at most `limit` bytes of `path`; more is an error.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, KmodError> {
    let read = |source| KmodError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut out = Vec::new();
    file.take(limit + 1).read_to_end(&mut out).map_err(read)?;
    if out.len() as u64 > limit {
        return Err(KmodError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(out)
}

/// One file for the image.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Absolute in-image path.
    pub path: String,
    pub bytes: Arc<[u8]>,
    /// The host file it was read from.
    pub from: PathBuf,
}

/// Everything `[kernel]` puts in the image.
#[derive(Debug, Clone)]
pub struct Modules {
    pub release: String,
    /// The tree the modules came from.
    pub dir: PathBuf,
    pub resolution: Resolution,
    /// The modules, in load order (as `resolution.modules`).
    pub files: Vec<Placed>,
    /// Firmware the modules name, found in the tree's `lib/firmware`.
    pub firmware: Vec<Placed>,
    /// The text of [`fledge_abi::paths::MODULES_LOAD`].
    pub load_list: String,
    /// Missing firmware and soft dependencies.
    pub warnings: Vec<String>,
}

/// In-image path of a module: `/lib/modules/<release>/<rel>`, without a compression suffix.
pub fn image_path(release: &str, rel: &str) -> String {
    let rel = [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|s| rel.strip_suffix(s).filter(|r| r.ends_with(".ko")))
        .unwrap_or(rel);
    format!("/lib/modules/{release}/{rel}")
}

/// The load list ([`fledge_abi::modules`]): one line per module in load order, `!` before the
/// required ones, then the path and the parameters.
pub fn load_list(release: &str, modules: &[resolve::Resolved]) -> String {
    let mut out = String::new();
    for m in modules {
        let path = image_path(release, &m.rel);
        let line = fledge_abi::modules::Module {
            path: &path,
            params: m.params.as_deref().unwrap_or(""),
            required: m.required,
        };
        debug_assert!(line.is_valid(), "{line:?}");
        out.push_str(&line.to_string());
    }
    out
}

/// Resolves, reads and checks the modules `settings` asks for.
pub fn prepare(settings: &Settings, arch: crate::arch::Arch) -> Result<Modules, KmodError> {
    let mut budget = Budget::from_env()?;
    let tree = ModuleTree::open_within(&settings.dir, &mut budget)?;
    let resolution = resolve::resolve(&tree, &settings.modules)?;
    let root = canonical(&settings.dir)?;
    let release = match &settings.version {
        Some(v) => v.clone(),
        None => {
            let name = root.file_name().and_then(|n| n.to_str()).unwrap_or("");
            check_release(name).map_err(|_| KmodError::Release {
                dir: settings.dir.clone(),
                name: name.to_string(),
            })?;
            name.to_string()
        }
    };
    let mut reader = Reader {
        tree: &tree,
        release: &release,
        arch,
        root: &root,
        fw_root: root
            .parent()
            .and_then(Path::parent)
            .map(|l| l.join("firmware")),
        loaded: BTreeSet::new(),
        firmware: Vec::new(),
        warnings: resolution.warnings.clone(),
        budget,
    };
    let files = resolution
        .modules
        .iter()
        .map(|m| reader.module(m))
        .collect::<Result<Vec<_>, _>>()?;
    let (firmware, warnings) = (reader.firmware, reader.warnings);
    Ok(Modules {
        load_list: load_list(&release, &resolution.modules),
        release,
        dir: settings.dir.clone(),
        resolution,
        files,
        firmware,
        warnings,
    })
}

/// Reads the resolved modules one by one, in load order.
struct Reader<'a> {
    tree: &'a ModuleTree,
    release: &'a str,
    /// The guest: every module must be built for its machine.
    arch: crate::arch::Arch,
    /// The tree, canonical: nothing is read from outside it.
    root: &'a Path,
    /// `lib/firmware` beside `lib/modules`.
    fw_root: Option<PathBuf>,
    /// Modules read so far.
    loaded: BTreeSet<String>,
    firmware: Vec<Placed>,
    warnings: Vec<String>,
    /// What is left to read.
    budget: Budget,
}

impl Reader<'_> {
    /// One module: present, inside the tree, an ELF module for this release whose
    /// `depends=` are loaded before it; its firmware found.
    fn module(&mut self, m: &resolve::Resolved) -> Result<Placed, KmodError> {
        let path = self.tree.dir.join(&m.rel);
        if !path.exists() {
            return Err(KmodError::MissingFile {
                module: m.name.clone(),
                path,
            });
        }
        inside(self.root, &path)?;
        let bytes = self.budget.read(&path, modinfo::MODULE_LIMIT, |cap| {
            modinfo::read_module(&path, cap)
        })?;
        let info = modinfo::parse(&bytes, &path)?;
        let found = info.release.clone().ok_or_else(|| KmodError::NotModule {
            path: path.clone(),
            problem: "has no vermagic in its .modinfo".into(),
        })?;
        if let Some(t) = info.target.filter(|t| *t != self.arch.target()) {
            return Err(KmodError::WrongArch {
                path,
                found: t.to_string(),
                arch: self.arch,
            });
        }
        if found != self.release {
            return Err(KmodError::Vermagic {
                path,
                found,
                release: self.release.to_string(),
            });
        }
        let missing = |d: &&String| !self.loaded.contains(*d) && !self.tree.builtin.contains(*d);
        if let Some(dep) = info.depends.iter().find(missing) {
            return Err(KmodError::Stale {
                path,
                dep: dep.clone(),
            });
        }
        self.loaded.insert(m.name.clone());
        for fw in &info.firmware {
            match find_firmware(self.fw_root.as_deref(), fw, &mut self.budget)? {
                Some(p) if !self.firmware.iter().any(|f| f.path == p.path) => self.firmware.push(p),
                Some(_) => {}
                None => {
                    self.warnings.push(format!(
                    "{}: firmware {fw} is not in {}; the driver may fail to load it in the guest",
                    m.name,
                    self.fw_root.as_deref().unwrap_or(Path::new("lib/firmware")).display()
                ))
                }
            }
        }
        Ok(Placed {
            path: image_path(self.release, &m.rel),
            bytes: Arc::from(bytes),
            from: path,
        })
    }
}

fn canonical(path: &Path) -> Result<PathBuf, KmodError> {
    path.canonicalize().map_err(|source| KmodError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Fails unless `path`, with its symlinks followed, is inside `root` (canonical).
fn inside(root: &Path, path: &Path) -> Result<PathBuf, KmodError> {
    let real = canonical(path)?;
    if real.starts_with(root) && real.is_file() {
        Ok(real)
    } else {
        Err(KmodError::Escapes {
            path: path.to_path_buf(),
            root: root.to_path_buf(),
        })
    }
}

/// Firmware `name` from `fw_root` (plain, `.zst` or `.xz`), decompressed, for `/lib/firmware`.
fn find_firmware(
    fw_root: Option<&Path>,
    name: &str,
    budget: &mut Budget,
) -> Result<Option<Placed>, KmodError> {
    let Some(fw_root) = fw_root.filter(|r| r.is_dir()) else {
        return Ok(None);
    };
    let plain = !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Ok(None);
    }
    let root = canonical(fw_root)?;
    for suffix in ["", ".zst", ".xz"] {
        let path = fw_root.join(format!("{name}{suffix}"));
        if !path.exists() {
            continue;
        }
        let real = inside(&root, &path)?;
        let bytes = budget.read(&real, modinfo::MODULE_LIMIT, |cap| match suffix {
            "" => read_bounded(&real, cap),
            _ => modinfo::decompress(&real, suffix, cap),
        })?;
        return Ok(Some(Placed {
            path: format!("/lib/firmware/{name}"),
            bytes: Arc::from(bytes),
            from: path,
        }));
    }
    Ok(None)
}

/// The `--dry-run` account: each module in load order with why it is there, builtins, firmware.
pub fn explain(m: &Modules) -> String {
    let mut out = format!(
        "kernel modules for {} from {} (load order):\n",
        m.release,
        m.dir.display()
    );
    for r in &m.resolution.modules {
        let params = r
            .params
            .as_deref()
            .map(|p| format!(" [{p}]"))
            .unwrap_or_default();
        out.push_str(&format!("  {:<24} {}{params}\n", r.name, r.reason));
    }
    for b in &m.resolution.builtin {
        out.push_str(&format!(
            "  {:<24} built in ({}), nothing to load\n",
            b.name, b.reason
        ));
    }
    for f in &m.firmware {
        out.push_str(&format!(
            "  firmware {} from {}\n",
            f.path,
            f.from.display()
        ));
    }
    out
}

#[cfg(test)]
mod tests;
