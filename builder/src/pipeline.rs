//! One build, start to finish: config -> sources -> plan -> normalise -> archive -> manifest, and the atomic
//! output.
//!
//! This module owns the order of the stages and the rule that a failed build leaves nothing
//! behind: the artifact and the manifest are written to temporary files beside their final names
//! and renamed into place only when both are complete and valid.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::archive::Entry;
use crate::compress::{self, Compression};
use crate::config::{self, AgentSource, Config, CustomInit, InitMode};
use crate::fetch::{Fetched, Fetcher};
use crate::hashing::Hashing;
use crate::manifest;
use crate::output::Pending;
use crate::plan::{self, Plan};
use crate::Error;

/// mtime of every entry when `SOURCE_DATE_EPOCH` is not set (2024-01-01, the original's epoch).
pub const DEFAULT_EPOCH: u32 = 1_704_067_200;

/// What to build and how.
#[derive(Debug, Clone)]
pub struct Request {
    /// The `fledge.toml`.
    pub config: PathBuf,
    /// `manifest.toml`: `Some` when given explicitly (then it must exist); `None` looks for
    /// `manifest.toml` beside the config.
    pub manifest: Option<PathBuf>,
    /// The artifact to write.
    pub output: PathBuf,
    /// Overrides `[build] compression`.
    pub compression: Option<Compression>,
    /// Overrides `[build] compression_level`.
    pub level: Option<i32>,
    /// Compression threads (0 = all cores).
    pub threads: usize,
    pub cache_dir: PathBuf,
    /// Entry mtime; `None` reads `SOURCE_DATE_EPOCH`, else [`DEFAULT_EPOCH`].
    pub epoch: Option<u32>,
    /// Published URL of the artifact for the manifest.
    pub url: Option<String>,
    /// Base URL the artifact's file name is appended to, for the manifest.
    pub base_url: Option<String>,
    /// Store identical files once, as hardlinks.
    pub dedup: bool,
    /// Overrides `[build] arch` (`--arch`).
    pub arch: Option<crate::arch::Arch>,
}

impl Request {
    /// A request with the defaults of `fledge build`.
    pub fn new(config: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        Request {
            config: config.into(),
            manifest: None,
            output: output.into(),
            compression: None,
            level: None,
            threads: 0,
            cache_dir: Fetcher::default_cache_dir(),
            epoch: None,
            url: None,
            base_url: None,
            dedup: true,
            arch: None,
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub artifact: PathBuf,
    pub size: u64,
    /// sha256 of the artifact, hex.
    pub sha256: String,
    pub manifest: PathBuf,
    /// The SBOM written, unless `[build] sbom = false`.
    pub sbom: Option<PathBuf>,
    /// The boot initramfs of a root file system disk.
    pub boot: Option<PathBuf>,
    pub provenance: PathBuf,
    /// The manifest was made from defaults: there was no `manifest.toml`.
    pub manifest_defaulted: bool,
    pub entries: usize,
    pub compression: Compression,
}

/// Whether [`prepare`] downloads what the config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetching {
    /// Fetch every input (`build`, `--dry-run`).
    Download,
    /// Read local inputs only; a download stands in as an empty file (`validate`). Identical
    /// files are not looked for, so no file is read twice.
    Offline,
}

/// Everything decided before bytes are written: used by `build`, `--dry-run` and `validate`.
pub struct Prepared {
    pub config: Config,
    /// Compression settings, checked.
    pub options: compress::Options,
    /// The manifest template and where it was looked for.
    pub manifest: (PathBuf, manifest::Template),
    pub plan: Plan,
    pub entries: Vec<Entry>,
    /// The kernel modules of `[kernel]`, for `--dry-run`'s account of why each is there.
    pub modules: Option<crate::kmod::Modules>,
    /// The container image's workload, for the manifest.
    pub image: Option<manifest::ImageFacts>,
    /// The inputs as resolved, for the SBOM and the provenance.
    pub sources: crate::sbom::Sources,
    /// The entries' mtime.
    pub epoch: u32,
    /// Extended attributes of the image's files still in the plan (path without the leading
    /// `/`), for a squashfs disk.
    pub xattrs: crate::squashfs::Xattrs,
}

/// Reads the config and manifest template; reports their warnings.
fn load(req: &Request) -> Result<(Config, (PathBuf, manifest::Template)), Error> {
    let config = config::load_for(&req.config, req.arch)?;
    for w in &config.warnings {
        log::warn!("{w}");
    }
    // An explicit -m must exist; without one, manifest.toml beside the config is used when
    // present, else a default template named after the output file.
    let (path, explicit) = match &req.manifest {
        Some(p) => (p.clone(), true),
        None => (config.base_dir.join("manifest.toml"), false),
    };
    let name = manifest::default_name(&req.output);
    let entrypoint = started_program(&config).unwrap_or(manifest::DEFAULT_ENTRYPOINT);
    let template = manifest::load_or_default(&path, explicit, &name, entrypoint)?;
    manifest::check_mode(&template, default_mode(&config))?;
    Ok((config, (path, template)))
}

/// Everything a build checks and decides before writing: the config and manifest template,
/// every host file (local busybox and agent are hashed against their digests), the
/// compression settings and the layout. `validate`, `--dry-run` and `build` all start here;
/// `fetching` says whether downloads happen.
pub fn prepare(req: &Request, fetching: Fetching) -> Result<Prepared, Error> {
    let (config, manifest) = load(req)?;
    plan::check_sources(&config)?;
    let options = settings(req, &config, &manifest.1)?;
    let mtime = epoch(req)?;
    let modules = kernel_modules(&config)?;
    let outputs = output_paths(req, &config, &manifest.1);
    if fetching == Fetching::Download {
        check_outputs(&outputs, &config, &manifest.0, modules.as_ref(), None)?;
    }
    let (busybox, agent) = fetch_inputs(req, &config, fetching)?;
    // Offline the image is not pulled, but what the cache holds of it is checked as a build
    // checks it.
    let image = match (&config.image, fetching) {
        (Some(spec), Fetching::Download) => Some(crate::image::load(spec, &req.cache_dir)?),
        (Some(spec), Fetching::Offline) => match crate::image::load_cached(spec, &req.cache_dir) {
            Ok(image) => Some(image),
            Err(crate::image::ImageError {
                problem: crate::image::Problem::Offline { url },
                ..
            }) => {
                log::info!(
                    "image {}: {url} is not in the cache; a build pulls and checks it",
                    spec.text
                );
                None
            }
            Err(e) => return Err(e.into()),
        },
        _ => None,
    };
    let plan = plan::plan(&plan::Inputs {
        config: &config,
        busybox: &busybox,
        agent: agent.as_ref(),
        init: config.arch.init(),
        modules: modules.as_ref(),
        outputs: &outputs.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        image: image.as_ref(),
    })?;
    if fetching == Fetching::Download {
        check_outputs(
            &outputs,
            &config,
            &manifest.0,
            modules.as_ref(),
            Some(&plan),
        )?;
    }
    let sources = crate::sbom::Sources {
        busybox: busybox.clone(),
        agent: agent.clone().map(|a| {
            let tag = match &config.init {
                InitMode::Default {
                    agent: AgentSource::Release { version },
                } => Some(version.clone()),
                _ => None,
            };
            (a, tag)
        }),
        image: image.as_ref().map(|i| crate::sbom::ImageSource {
            reference: i.text.clone(),
            digest: i.digest.to_string(),
            diff_ids: i.layers.iter().map(|l| l.diff_id.to_string()).collect(),
        }),
        kernel: modules.as_ref().map(|m| (m.release.clone(), m.dir.clone())),
    };
    let xattrs = image
        .as_ref()
        .map(|i| {
            i.tree
                .xattrs
                .iter()
                .filter(|(p, _)| {
                    plan.nodes
                        .get(format!("/{p}").as_str())
                        .is_some_and(|n| matches!(n.origin, crate::plan::Origin::Image { .. }))
                })
                .map(|(p, a)| (p.clone(), a.clone()))
                .collect()
        })
        .unwrap_or_default();
    let image = image.map(|i| manifest::ImageFacts {
        argv: i.config.argv(),
        env: i.config.env.clone(),
        workdir: i.config.working_dir.clone(),
        port: i.config.ports.first().copied(),
    });
    let dedup = req.dedup && fetching == Fetching::Download;
    // What will run in the guest is checked beside the normaliser (both only read the plan);
    // the checks' error comes first, as it would one after the other.
    let (runnable, entries) = std::thread::scope(|s| {
        let checks = s.spawn(|| runnable(&config, &plan, (&busybox, agent.as_ref()), fetching));
        let entries = crate::normalise::normalise(&plan, mtime, dedup);
        let checked = checks
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (checked, entries)
    });
    let runnable = runnable?;
    for w in plan.warnings.iter().chain(&runnable) {
        log::warn!("{w}");
    }
    for n in &plan.notes {
        log::debug!("{n}");
    }
    crate::preview::log_placed(&plan);
    let entries = entries?;
    Ok(Prepared {
        config,
        options,
        manifest,
        plan,
        entries,
        modules,
        image,
        sources,
        epoch: mtime,
        xattrs,
    })
}

/// Reads and checks the modules `[kernel]` asks for (all local: before any download).
fn kernel_modules(config: &Config) -> Result<Option<crate::kmod::Modules>, Error> {
    let Some(k) = &config.kernel else {
        return Ok(None);
    };
    let m = crate::kmod::prepare(k, config.arch)?;
    for w in &m.warnings {
        log::warn!("{w}");
    }
    for b in &m.resolution.builtin {
        log::debug!(
            "kernel module {} is built into {} ({}): nothing to load",
            b.name,
            m.release,
            b.reason
        );
    }
    Ok(Some(m))
}

/// The files a build writes: the image, its manifest, its provenance and (unless
/// `[build] sbom = false`) its SBOM, with what they are for messages.
fn output_paths(
    req: &Request,
    config: &Config,
    template: &manifest::Template,
) -> Vec<(PathBuf, &'static str)> {
    let artifact = std::path::absolute(&req.output).unwrap_or_else(|_| req.output.clone());
    let name = template.name();
    let mut out = vec![
        (artifact.clone(), "-o/--output"),
        (
            manifest::manifest_path(&artifact, name),
            "the manifest path",
        ),
        (
            crate::provenance::provenance_path(&artifact, name),
            "the provenance path",
        ),
    ];
    if config.sbom {
        out.push((crate::sbom::sbom_path(&artifact, name), "the SBOM path"));
    }
    if config.rootfs.is_some() {
        out.push((
            crate::boot::boot_path(&artifact, name),
            "the boot initramfs path",
        ));
    }
    out
}

/// Refuses outputs that would destroy something: an existing path that is not a regular file,
/// or a file the build reads ([`inputs_of`]).
fn check_outputs(
    outputs: &[(PathBuf, &'static str)],
    config: &Config,
    template: &Path,
    modules: Option<&crate::kmod::Modules>,
    plan: Option<&Plan>,
) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    // The outputs that exist, by file identity and size; the inputs are looked at only when
    // one does, and then each input once.
    let mut existing = Vec::new();
    for (out, what) in outputs {
        let Ok(meta) = std::fs::symlink_metadata(out) else {
            continue;
        };
        if !meta.is_file() {
            let kind = crate::util::file_kind(&meta);
            return Err(Error::Request {
                what,
                problem: format!(
                    "is {}, which is {kind}: fledge replaces only regular files; choose another name",
                    out.display()
                ),
            });
        }
        existing.push(((meta.dev(), meta.ino()), meta.len(), out, *what));
    }
    if existing.is_empty() {
        return Ok(());
    }
    // A planned file is an output only if it had the output's size when it was planned (were
    // it to change since, writing it into the image fails on its size).
    let sized = |size| existing.iter().any(|(_, len, ..)| *len == size);
    let inputs: Vec<_> = inputs_of(config, template, modules, plan, &sized)
        .into_iter()
        .filter_map(|(name, path)| {
            let meta = std::fs::metadata(&path).ok()?;
            Some(((meta.dev(), meta.ino()), name))
        })
        .collect();
    for (id, _, out, what) in &existing {
        if let Some((_, name)) = inputs.iter().find(|(input, _)| input == id) {
            return Err(Error::Request {
                what,
                problem: format!(
                    "is {}, which is {name}: a build never overwrites its inputs; choose another name",
                    out.display()
                ),
            });
        }
    }
    Ok(())
}

/// Every host file the build reads, with what it is for messages: the one list the `-o` guard
/// checks (of the planned files, those whose planned size `sized` takes). A new kind of input
/// is added here.
fn inputs_of(
    config: &Config,
    template: &Path,
    modules: Option<&crate::kmod::Modules>,
    plan: Option<&Plan>,
    sized: &dyn Fn(u64) -> bool,
) -> Vec<(String, PathBuf)> {
    let mut inputs: Vec<(String, PathBuf)> = vec![
        ("the build's config".into(), config.path.clone()),
        ("the manifest template".into(), template.to_path_buf()),
    ];
    if let Some(b) = local_busybox(config) {
        inputs.push(("busybox (source.busybox_url)".into(), b));
    }
    match &config.init {
        InitMode::Default {
            agent: AgentSource::Local { path, .. },
        } => inputs.push(("the kestrel agent ([agent] path)".into(), path.clone())),
        InitMode::Custom {
            init: CustomInit::Host(path),
        } => inputs.push(("the custom init (init.path)".into(), path.clone())),
        _ => {}
    }
    for m in &config.mappings {
        inputs.push((
            format!("the source of mappings.\"{}\"", m.key),
            m.source.clone(),
        ));
    }
    use crate::image::ImageRef;
    match config.image.as_ref().map(|i| &i.reference) {
        Some(ImageRef::OciArchive { file, .. } | ImageRef::DockerArchive { file, .. }) => {
            inputs.push(("the image archive (source.image)".into(), file.clone()));
        }
        Some(ImageRef::OciDir { dir, .. }) => {
            for name in ["index.json", "oci-layout"] {
                inputs.push((
                    format!("the OCI layout's {name} (source.image)"),
                    dir.join(name),
                ));
            }
            let blobs = dir.join("blobs/sha256");
            for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
                inputs.push(("a blob of the OCI layout (source.image)".into(), e.path()));
            }
        }
        _ => {}
    }
    if let Some(m) = modules {
        for name in [
            "modules.dep",
            "modules.alias",
            "modules.softdep",
            "modules.builtin",
            "modules.builtin.modinfo",
        ] {
            inputs.push((
                format!("the module tree's {name} (kernel.modules_dir)"),
                m.dir.join(name),
            ));
        }
        for f in m.files.iter().chain(&m.firmware) {
            inputs.push((
                format!("the source of {} ([kernel])", f.path),
                f.from.clone(),
            ));
        }
    }
    for (path, node) in plan.iter().flat_map(|p| &p.nodes) {
        if let crate::archive::Kind::File(crate::archive::Content::Path { path: host, size }) =
            &node.kind
        {
            if !sized(*size) {
                continue;
            }
            inputs.push((
                format!("the source of {path} ({})", node.origin),
                host.clone(),
            ));
        }
    }
    inputs
}

/// The host file busybox is read from, when it is one.
fn local_busybox(config: &Config) -> Option<PathBuf> {
    let l = &config.busybox.location;
    match l.strip_prefix("file://") {
        Some(p) => Some(PathBuf::from(p.strip_prefix("localhost").unwrap_or(p))),
        None if !l.contains("://") => Some(config.base_dir.join(l)),
        None => None,
    }
}

/// The runnable check of the plan (errors for a build, warnings for a preview); offline,
/// busybox and the agent may be stand-ins for downloads not made, which are not looked at.
fn runnable(
    config: &Config,
    plan: &plan::Plan,
    (busybox, agent): (&Fetched, Option<&Fetched>),
    fetching: Fetching,
) -> Result<Vec<String>, Error> {
    let unfetched: Vec<&str> = [
        (fledge_abi::paths::BUSYBOX, Some(busybox)),
        (fledge_abi::paths::AGENT, agent),
    ]
    .into_iter()
    .filter(|(_, f)| f.is_some_and(|f| f.sha256.is_empty()))
    .map(|(p, _)| p)
    .collect();
    let strictness = match fetching {
        Fetching::Download => plan::Strictness::Build,
        Fetching::Offline => plan::Strictness::Preview,
    };
    Ok(plan::runnable(config, plan, strictness, &unfetched)?)
}

/// busybox and (in default mode) the agent, fetched or, offline, read when local.
fn fetch_inputs(
    req: &Request,
    config: &Config,
    fetching: Fetching,
) -> Result<(Fetched, Option<Fetched>), Error> {
    let fetcher = Fetcher::new(req.cache_dir.clone()).for_arch(config.arch);
    // Offline, a download stands in as an empty file: its bytes do not change the layout.
    let stand_in = |what: &str, location: &str| Fetched {
        path: PathBuf::from(location),
        sha256: String::new(),
        size: 0,
        origin: what.to_string(),
        cached: false,
    };
    let offline = fetching == Fetching::Offline;
    let busybox = if offline && crate::fetch::is_remote(&config.busybox.location) {
        stand_in("busybox", &config.busybox.location)
    } else {
        let b = fetcher.fetch(
            "busybox",
            &config.busybox.location,
            config.busybox.sha256.as_deref(),
            &config.base_dir,
        )?;
        log_fetched("busybox", &b);
        b
    };
    let local_agent = |a: &AgentSource| match a {
        AgentSource::Local { .. } => true,
        AgentSource::Http { url, .. } => !crate::fetch::is_remote(url),
        AgentSource::Release { .. } => false,
    };
    let agent = match &config.init {
        InitMode::Default { agent } if offline && local_agent(agent) => {
            Some(fetcher.agent(agent, &config.base_dir)?)
        }
        InitMode::Default { .. } if offline => Some(stand_in("kestrel agent", "agent")),
        InitMode::Default { agent } => {
            let a = fetcher.agent(agent, &config.base_dir)?;
            log_fetched("kestrel agent", &a);
            Some(a)
        }
        _ => None,
    };
    Ok((busybox, agent))
}

/// The compression settings of this build, checked, and the command-line values that only
/// the manifest uses, so a mistake fails before any work.
fn settings(
    req: &Request,
    config: &Config,
    template: &manifest::Template,
) -> Result<compress::Options, Error> {
    let compression = req.compression.or(config.compression).unwrap_or_default();
    let level = req.level.or(config.compression_level);
    compress::check_level(compression, level)?;
    for (flag, url) in [("--url", &req.url), ("--base-url", &req.base_url)] {
        if let Some(u) = url.as_deref().filter(|u| !u.trim().is_empty()) {
            if !manifest::volant::is_volant_url(u) {
                return Err(Error::Request {
                    what: flag,
                    problem: format!(
                        "is \"{u}\": use an http://, https:// or file:// URL, or an absolute path"
                    ),
                });
            }
        }
    }
    let artifact = std::path::absolute(&req.output).unwrap_or_else(|_| req.output.clone());
    if manifest::manifest_path(&artifact, template.name()) == artifact {
        return Err(Error::Request {
            what: "-o/--output",
            problem: format!(
                "is {}, where the manifest of \"{}\" goes: give the image another name, e.g. {}.cpio.gz",
                req.output.display(),
                template.name(),
                template.name()
            ),
        });
    }
    Ok(compress::Options {
        compression,
        level,
        threads: if req.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            req.threads
        },
        cache: Some(compress::SegmentCache::from_env(&req.cache_dir)?),
        body_sha1: config.sbom,
    })
}

fn log_fetched(what: &str, f: &Fetched) {
    let how = if f.cached { " (cached)" } else { "" };
    log::debug!(
        "{what}: {} -> {}{how}, sha256 {}",
        f.origin,
        f.path.display(),
        f.sha256
    );
}

/// `-o`'s default: `plugin.cpio.gz`, or `plugin.squashfs` when the config at `config` says
/// `strategy = "oci_rootfs"` (a config that cannot be read gets the first; its build says why).
pub fn default_output(config: &Path) -> PathBuf {
    // Read as the load reads it: bounded, a regular file only (the load says why not).
    let rootfs = crate::util::read_bounded(config, crate::util::MAX_TEXT_FILE)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.get("strategy").and_then(|s| s.as_str()) == Some("oci_rootfs"));
    PathBuf::from(if rootfs {
        "plugin.squashfs"
    } else {
        "plugin.cpio.gz"
    })
}

/// The entry mtime for this request.
pub fn epoch(req: &Request) -> Result<u32, Error> {
    if let Some(e) = req.epoch {
        return Ok(e);
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<u32>().map_err(|_| {
            Error::Config(config::ConfigError::Invalid {
                at: config::Location {
                    file: "environment".into(),
                    line: None,
                },
                key: "SOURCE_DATE_EPOCH".into(),
                problem: format!(
                    "is \"{v}\": it must be whole seconds since 1970 (0 to 4294967295)"
                ),
            })
        }),
        _ => Ok(DEFAULT_EPOCH),
    }
}

/// Builds the image (and its manifest) as `req` says.
pub fn build(req: &Request) -> Result<Report, Error> {
    let prepared = prepare(req, Fetching::Download)?;
    let out = &req.output;
    let out_err = |source| Error::Output {
        path: out.clone(),
        source,
    };
    let artifact = std::path::absolute(out).map_err(out_err)?;
    let image_name = file_name(&artifact);
    let provenance_of = |known: &crate::sbom::Known| {
        crate::provenance::render(&crate::provenance::Facts {
            req,
            prepared: &prepared,
            name: &image_name,
            known,
        })
    };
    // The provenance needs the bodies' digests, not the image's: it is rendered as soon as the
    // last segment is digested, while the last segments are still being compressed.
    let mut early = None;
    let (image, sha256, size, bodies) = write_image(&prepared, out, &mut |bodies| {
        let known = crate::sbom::Known::new(&prepared.entries, bodies);
        let provenance = provenance_of(&known);
        early = Some((known, provenance));
    })?;
    // A squashfs disk hands no digests on: its provenance is made here.
    let (known, provenance_text) = early.unwrap_or_else(|| {
        let known = crate::sbom::Known::new(&prepared.entries, &bodies);
        let provenance = provenance_of(&known);
        (known, provenance)
    });
    // The manifest is rendered (so validated) and written before either file takes its place;
    // then both are renamed together.
    let (manifest, memory_mb) = render_manifest(req, &prepared, &artifact, &sha256)?;
    if prepared.config.rootfs.is_none() {
        warn_if_large(&prepared.entries, memory_mb);
    }
    let manifest_path = manifest.path().to_path_buf();
    let mut files = vec![image, manifest];
    let name = prepared.manifest.1.name();
    let sbom = if prepared.config.sbom {
        let started = std::time::Instant::now();
        let path = crate::sbom::sbom_path(&artifact, name);
        let err = |source| Error::Output {
            path: path.clone(),
            source,
        };
        let mut pending = Pending::create(&path).map_err(err)?;
        let mut out = io::BufWriter::new(pending.file());
        crate::sbom::render_to(
            &crate::sbom::Facts {
                config: &prepared.config,
                plan: &prepared.plan,
                sources: &prepared.sources,
                name: &image_name,
                sha256: &sha256,
                epoch: prepared.epoch,
                threads: prepared.options.threads,
                known: &known,
            },
            &mut out,
        )?
        .and_then(|()| out.flush())
        .map_err(err)?;
        drop(out);
        pending.sync_ahead().map_err(err)?;
        log::debug!("SBOM written in {} ms", started.elapsed().as_millis());
        files.push(pending);
        Some(path)
    } else {
        None
    };
    let boot = match &prepared.config.rootfs {
        Some(_) => {
            let path = crate::boot::boot_path(&artifact, name);
            files.push(write_boot(&prepared, &path)?);
            Some(path)
        }
        None => None,
    };
    let provenance = crate::provenance::provenance_path(&artifact, name);
    let text = provenance_text?.finish(&sha256);
    files.push(pending_text(&provenance, &text)?);
    crate::output::commit(files).map_err(|(path, source)| Error::Output { path, source })?;
    // Keeping the cache (segments and image layers) within its bound is housekeeping, done
    // once every output is written: the SBOM still reads file bodies from cached layers.
    if let Some(c) = &prepared.options.cache {
        if let Err(e) = c.prune() {
            log::warn!("cannot prune the cache {}: {e}", c.dir().display());
        }
    }
    Ok(Report {
        manifest_defaulted: prepared.manifest.1.origin().is_none(),
        artifact,
        size,
        sha256,
        manifest: manifest_path,
        sbom,
        provenance,
        boot,
        entries: prepared.entries.len(),
        compression: prepared.options.compression,
    })
}

/// Writes the boot initramfs of a disk build (gzip) into a pending file at `path`.
fn write_boot(prepared: &Prepared, path: &Path) -> Result<Pending, Error> {
    let out_err = |source| Error::Output {
        path: path.to_path_buf(),
        source,
    };
    let overlay = prepared
        .config
        .rootfs
        .as_ref()
        .map_or(fledge_abi::rootfs::DEFAULT_OVERLAY_SIZE, |r| {
            &r.overlay_size
        });
    let entries = crate::boot::entries(
        prepared.config.arch.init(),
        prepared.modules.as_ref(),
        overlay,
        prepared.epoch,
    );
    let opts = compress::Options {
        compression: compress::Compression::Gzip,
        level: None,
        threads: prepared.options.threads,
        cache: None,
        body_sha1: false,
    };
    let mut pending = Pending::create(path).map_err(out_err)?;
    let mut w = BufWriter::new(pending.file());
    compress::write_image(&entries, &opts, &mut w)?;
    w.flush().map_err(out_err)?;
    drop(w);
    pending.sync_ahead().map_err(out_err)?;
    Ok(pending)
}

/// What [`write_image`] made: the pending file, its sha256 and size, and the digests of the
/// bodies it wrote (by entry index; none for a squashfs disk).
type Written = (Pending, String, u64, Vec<Option<compress::BodyDigest>>);

/// Compresses the entries into a pending file at `out`; `digested` gets the bodies' digests
/// as soon as they are all known (an initramfs only).
fn write_image(
    prepared: &Prepared,
    out: &Path,
    digested: &mut dyn FnMut(&[Option<compress::BodyDigest>]),
) -> Result<Written, Error> {
    let out_err = |source| Error::Output {
        path: out.to_path_buf(),
        source,
    };
    let mut pending = Pending::create(out).map_err(out_err)?;
    if let Some(rootfs) = &prepared.config.rootfs {
        let opts = crate::squashfs::Options {
            compression: prepared.options.compression,
            level: rootfs.compression_level.or(prepared.options.level),
            threads: prepared.options.threads,
            mtime: prepared.epoch,
        };
        log::info!(
            "writing {} entries as a squashfs disk ({}) to {}",
            prepared.entries.len(),
            opts.compression.name(),
            out.display()
        );
        let mut w = BufWriter::with_capacity(1 << 20, pending.flushing());
        let stats = crate::squashfs::write(&prepared.entries, &opts, &prepared.xattrs, &mut w)
            .map_err(|e| match (&e, rootfs.compression_level) {
                (compress::CompressError::Level { .. }, Some(l)) => Error::Request {
                    what: "[filesystem] compression_level",
                    problem: format!("is {l}: {e}"),
                },
                _ => e.into(),
            })?;
        w.flush().map_err(out_err)?;
        drop(w);
        log::debug!(
            "squashfs: {} inodes, {} bytes used",
            stats.inodes,
            stats.bytes_used
        );
        // The superblock is written last, at the start: hash the disk as written.
        let f = pending.file();
        std::io::Seek::seek(f, std::io::SeekFrom::Start(0)).map_err(out_err)?;
        let (digest, len) = crate::hashing::sha256_reader(&mut *f).map_err(out_err)?;
        let sha256 = hex::encode(digest);
        pending.sync_ahead().map_err(out_err)?;
        return Ok((pending, sha256, len, Vec::new()));
    }
    let kind = prepared.options.compression.name();
    let bar = crate::progress::Bar::bytes(&format!("compressing ({kind})"), None);
    if !bar.is_drawn() {
        log::info!(
            "writing {} entries ({kind}) to {}",
            prepared.entries.len(),
            out.display()
        );
    }
    let (sha256, len, bodies) = {
        let mut w = Hashing::new(BufWriter::with_capacity(1 << 20, pending.flushing()));
        let mut counting = crate::progress::Counting {
            inner: &mut w,
            bar: &bar,
        };
        let stats = compress::write_image_then(
            &prepared.entries,
            &prepared.options,
            &mut counting,
            digested,
        )?;
        w.flush().map_err(out_err)?;
        let len = w.passed();
        (hex::encode(w.digest()), len, stats.bodies)
    };
    bar.finish();
    pending.sync_ahead().map_err(out_err)?;
    Ok((pending, sha256, len, bodies))
}

/// Default mode: the image starts Volant's agent, which listens on port 8080.
fn default_mode(config: &Config) -> bool {
    matches!(config.init, InitMode::Default { .. })
}

/// The program the image starts when it is not the agent: the custom init, or `/init`.
fn started_program(config: &Config) -> Option<&str> {
    match &config.init {
        InitMode::Default { .. } => None,
        InitMode::Custom {
            init: CustomInit::InImage(path),
        } => Some(path.as_str()),
        InitMode::Custom {
            init: CustomInit::Host(_),
        } => Some(fledge_abi::paths::CUSTOM_INIT),
        InitMode::Custom {
            init: CustomInit::Command,
        } => config.workload.command.first().map(String::as_str),
        // The image's Entrypoint + Cmd (from the facts' `image`).
        InitMode::Custom {
            init: CustomInit::FromImage,
        } => None,
        InitMode::None => Some(fledge_abi::paths::INIT),
    }
}

/// Renders the manifest for the artifact into a pending file beside it.
fn render_manifest(
    req: &Request,
    prepared: &Prepared,
    artifact: &Path,
    sha256: &str,
) -> Result<(Pending, i64), Error> {
    let template = &prepared.manifest.1;
    let program = started_program(&prepared.config);
    let facts = manifest::BuildFacts {
        artifact,
        sha256,
        url: req.url.as_deref(),
        base_url: req.base_url.as_deref(),
        program,
        image: prepared.image.as_ref(),
        agent: default_mode(&prepared.config),
        rootfs: prepared.config.rootfs.is_some(),
    };
    let json = manifest::render(template, &facts)?;
    let path = manifest::manifest_path(artifact, template.name());
    let text = serde_json::to_string_pretty(&json).expect("JSON values serialise") + "\n";
    if text.len() as u64 > manifest::MAX_LEN {
        return Err(manifest::ManifestError::Invalid {
            location: path.display().to_string(),
            field: "the manifest".into(),
            problem: format!(
                "would be {} bytes, over the {} bytes `fledge run` reads",
                text.len(),
                manifest::MAX_LEN
            ),
            fix: "shorten workload.env (an image's Env comes into it) or the other fields".into(),
        }
        .into());
    }
    Ok((
        pending_text(&path, &text)?,
        json["resources"]["memory_mb"].as_i64().unwrap_or(0),
    ))
}

/// An initramfs lives in the guest's memory: one that takes more than half of `memory_mb`
/// unpacked leaves the workload little, and a root file system disk would not.
fn warn_if_large(entries: &[crate::archive::Entry], memory_mb: i64) {
    let unpacked = crate::archive::archive_len(entries);
    let memory = u64::try_from(memory_mb).unwrap_or(0) << 20;
    if memory > 0 && unpacked > memory / 2 {
        log::warn!(
            "the image unpacks to {} MiB, more than half of resources.memory_mb = {memory_mb}: the guest holds all of it in RAM before the workload starts; a root file system disk (strategy = \"oci_rootfs\") is read from disk instead",
            unpacked >> 20
        );
    }
}

/// The image's file name, as the SBOM and provenance name it.
fn file_name(artifact: &Path) -> String {
    artifact
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// `text` in a pending file at `path`.
fn pending_text(path: &Path, text: &str) -> Result<Pending, Error> {
    let err = |source| Error::Output {
        path: path.to_path_buf(),
        source,
    };
    let mut pending = Pending::create(path).map_err(err)?;
    pending.file().write_all(text.as_bytes()).map_err(err)?;
    pending.sync_ahead().map_err(err)?;
    Ok(pending)
}
