//! The `fledge` command line: argument parsing, logging to stderr, and one thin function per
//! subcommand over the library.
//!
//! Exit status: 0 success, 1 the build/validation/inspection failed (the reason is on stderr,
//! one sentence first), 2 the command line itself was wrong.

use std::io::Write;
use std::path::PathBuf;

mod push;
mod run;

use clap::{Args, CommandFactory, Parser, Subcommand};

use fledge::compress::Compression;
use fledge::pipeline::{self, Request};
use fledge::{inspect, preview, progress, scaffold};

pub(crate) type Result<T> = anyhow::Result<T>;

/// Build minimal, reproducible initramfs images for Volant microVM plugins.
#[derive(Debug, Parser)]
#[command(name = "fledge", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Explain each step (fetches, cache hits, files placed).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an initramfs (and its Volant manifest) from fledge.toml.
    Build(BuildArgs),
    /// List what an initramfs image holds (any newc image: plain, gzip, zstd, xz or lz4).
    Inspect(InspectArgs),
    /// Check fledge.toml and manifest.toml without building anything.
    Validate(ValidateArgs),
    /// Boot an image (or build fledge.toml and boot it) under QEMU the way Volant would: the
    /// console streamed, the workload's port forwarded, the health check polled; exits with the
    /// workload's status.
    Run(run::RunArgs),
    /// Check an image against its SBOM, manifest checksum and provenance (and, with --rebuild,
    /// rebuild it and compare the bytes).
    Verify(VerifyArgs),
    /// Push an image, its manifest JSON and other outputs to a registry (or an OCI layout) as
    /// one OCI artifact; prints the pushed manifest's digest.
    Push(push::PushArgs),
    /// Pull an artifact pushed by `fledge push` into a directory, checking every digest.
    Pull(push::PullArgs),
    /// Start a new plugin project: a commented fledge.toml and manifest.toml (and an init script).
    New(NewArgs),
    /// Show, prune or clear the cache of compressed segments that makes rebuilds fast.
    Cache(CacheArgs),
    /// Print a shell completion script to stdout (e.g. `fledge completions bash`).
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout (e.g. `fledge man | man -l -`).
    Man,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Init mode of the new project.
    #[arg(long, value_enum, default_value = "default")]
    pub mode: ModeArg,
    /// Directory to create the project in (created if missing; existing files are never
    /// overwritten).
    pub dir: PathBuf,
}

/// `--mode` of `fledge new` ([`scaffold::Mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// fledge-init as PID 1 starting the kestrel agent (downloaded from Volant's latest release).
    Default,
    /// fledge-init as PID 1 handing over to your own init script.
    Custom,
    /// Your own program is /init; fledge adds only busybox.
    None,
}

impl From<ModeArg> for scaffold::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Default => scaffold::Mode::Default,
            ModeArg::Custom => scaffold::Mode::Custom,
            ModeArg::None => scaffold::Mode::None,
        }
    }
}

/// `--compression`: one of [`Compression::ALL`] by name.
fn compression_parser() -> impl clap::builder::TypedValueParser<Value = Compression> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Compression::ALL.map(Compression::name))
        .map(|name| Compression::from_name(&name).expect("a listed name"))
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The cache [default: $XDG_CACHE_HOME/fledge or ~/.cache/fledge].
    #[arg(long, value_name = "DIR", env = "FLEDGE_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Option<CacheAction>,
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Print where the cache is and what it holds (the default).
    Show,
    /// Remove the least recently used compressed segments until at most the limit is held.
    Prune {
        /// Size to keep, e.g. 256M or 2G [default: $FLEDGE_CACHE_MAX_SIZE, else 512M].
        #[arg(long, value_name = "SIZE", value_parser = size_arg)]
        max_size: Option<u64>,
    },
    /// Remove every compressed segment (downloads stay, so builds stay offline).
    Clear,
}

pub(crate) fn size_arg(s: &str) -> std::result::Result<u64, String> {
    fledge::compress::parse_size(s).ok_or_else(|| "use bytes, or a size like 512M or 2G".into())
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build configuration.
    #[arg(short, long, default_value = "fledge.toml", value_name = "FILE")]
    pub config: PathBuf,
    /// The manifest template [default: manifest.toml beside the config; built-in defaults when
    /// there is none].
    #[arg(short, long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Where to write the image [default: plugin.cpio.gz; plugin.squashfs for strategy =
    /// "oci_rootfs"].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Compression [default: [build] compression in the config, else gzip].
    #[arg(long, value_name = "KIND", value_parser = compression_parser())]
    pub compression: Option<Compression>,
    /// Compression level [default: the format's best fit for initramfs].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub level: Option<i32>,
    /// Guest architecture: x86_64 or aarch64 (amd64, arm64) [default: [build] arch in the
    /// config, else x86_64].
    #[arg(long, value_name = "ARCH", value_parser = parse_arch)]
    pub arch: Option<fledge::arch::Arch>,
    /// Compression threads; the output is identical for any number [default: all cores].
    #[arg(
        short = 'j',
        long,
        default_value_t = 0,
        value_name = "N",
        hide_default_value = true
    )]
    pub threads: usize,
    /// URL where the image will be published, written as initramfs.url in the manifest
    /// [default: the image's absolute path].
    #[arg(long, value_name = "URL", conflicts_with = "base_url")]
    pub url: Option<String>,
    /// Base URL the image's file name is appended to for initramfs.url.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Download cache [default: $XDG_CACHE_HOME/fledge or ~/.cache/fledge].
    #[arg(long, value_name = "DIR", env = "FLEDGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Store every file's content even when identical files could share it as hardlinks.
    #[arg(long)]
    pub no_dedup: bool,
    /// Fill the local cache from this registry cache first (docker://HOST/REPO:TAG or
    /// oci:DIR:TAG): entries are checked by digest, and a missing or bad cache is skipped.
    #[arg(long, value_name = "REF")]
    pub cache_from: Option<String>,
    /// After the build, push the cache entries it used (segments, image layers) to this
    /// registry cache, replacing the tag.
    #[arg(long, value_name = "REF")]
    pub cache_to: Option<String>,
    /// Allow plain HTTP to a --cache-from/--cache-to registry that is not on this machine.
    #[arg(long)]
    pub plain_http: bool,
    /// Print the planned image (mode, owner, size, path, source) and write nothing.
    #[arg(short = 'n', long, conflicts_with_all = ["cache_from", "cache_to"])]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image to read.
    pub image: PathBuf,
    /// Print JSON instead of a listing (with the boot check's problems).
    #[arg(long, conflicts_with = "tree")]
    pub json: bool,
    /// Print an indented tree with each directory's summed size.
    #[arg(long)]
    pub tree: bool,
    /// Only run the boot check: exit 1 if anything would break a boot (no /init, /init not
    /// executable, no /dev/console, dangling links into /bin, a missing custom init).
    #[arg(long, conflicts_with_all = ["tree", "json"])]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image to check.
    pub image: PathBuf,
    /// The SBOM [default: <name>.spdx.json beside the image].
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
    /// The Volant manifest [default: <name>.manifest.json beside the image].
    #[arg(short, long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// The provenance [default: the *.provenance.json beside the image naming it].
    #[arg(long, value_name = "FILE")]
    pub provenance: Option<PathBuf>,
    /// Also rebuild the image from the provenance's parameters (inputs from the cache) and
    /// check the bytes are identical.
    #[arg(long)]
    pub rebuild: bool,
    /// Download cache a rebuild reads [default: $XDG_CACHE_HOME/fledge or ~/.cache/fledge].
    #[arg(long, value_name = "DIR", env = "FLEDGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The build configuration [default: fledge.toml; with -m and no fledge.toml here, only the
    /// manifest template is checked].
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The manifest template [default: manifest.toml beside the config; built-in defaults when
    /// there is none].
    #[arg(short, long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// Runs the command line; returns the exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let level = if cli.quiet {
        log::LevelFilter::Error
    } else if cli.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    log::set_logger(&StderrLogger).expect("the logger is set once");
    log::set_max_level(level);
    progress::allow(!cli.quiet);
    let command = match cli.command {
        // `fledge run` handles its own signals: a Ctrl-C powers the guest down.
        Command::Run(a) => return fledge::run::start::main(a.into(), cli.quiet),
        c => c,
    };
    if let Err(e) = fledge::output::clean_up_on_signals() {
        log::debug!("cannot watch for signals: {e}");
    }
    let result = match command {
        Command::Build(a) => build(a, cli.quiet),
        Command::Inspect(a) => inspect_cmd(a, cli.quiet),
        Command::Validate(a) => validate(a, cli.quiet),
        Command::Verify(a) => verify(a, cli.quiet),
        Command::New(a) => new(a, cli.quiet),
        Command::Cache(a) => cache(a, cli.quiet),
        Command::Push(a) => push::push(a, cli.quiet),
        Command::Pull(a) => push::pull(a, cli.quiet),
        Command::Completions(a) => {
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(a.shell, &mut cmd, "fledge", &mut script);
            std::io::stdout()
                .write_all(&script)
                .map_err(|e| Stdout(e).into())
        }
        Command::Run(_) => unreachable!("handled above"),
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| anyhow::anyhow!("cannot write the man page to stdout: {e}")),
    };
    match result {
        Ok(()) => 0,
        // The reader of our output went away (`fledge inspect img | head`): nothing to say.
        Err(e) if broken_pipe(&e) => 0,
        Err(e) => {
            if !e.is::<Reported>() {
                log::error!("{e}");
            }
            1
        }
    }
}

/// `--arch`: a name [`fledge::arch::Arch::parse`] takes.
fn parse_arch(text: &str) -> std::result::Result<fledge::arch::Arch, String> {
    fledge::arch::Arch::parse(text).map_err(|e| e.trim_start_matches("is ").to_string())
}

fn request(config: PathBuf, manifest: Option<PathBuf>, output: PathBuf) -> Request {
    let mut r = Request::new(config, output);
    r.manifest = manifest;
    r
}

fn build(a: BuildArgs, quiet: bool) -> Result<()> {
    let output = a
        .output
        .unwrap_or_else(|| pipeline::default_output(&a.config));
    let mut req = request(a.config, a.manifest, output);
    req.compression = a.compression;
    req.level = a.level;
    req.arch = a.arch;
    req.threads = a.threads;
    req.url = a.url;
    req.base_url = a.base_url;
    req.dedup = !a.no_dedup;
    if let Some(d) = a.cache_dir {
        req.cache_dir = d;
    }
    if a.dry_run {
        let prepared = pipeline::prepare(&req, pipeline::Fetching::Download)?;
        let mut out = std::io::stdout().lock();
        out.write_all(preview::format_plan(&prepared.plan).as_bytes())
            .map_err(Stdout)?;
        if let Some(m) = &prepared.modules {
            out.write_all(fledge::kmod::explain(m).as_bytes())
                .map_err(Stdout)?;
        }
        drop(out);
        if !quiet {
            say!(
                "dry run: {} entries planned, nothing written (would write {})",
                prepared.entries.len(),
                req.output.display()
            );
        }
        return Ok(());
    }
    let shared = SharedCache::open(&a.cache_from, &a.cache_to, &req.cache_dir, a.plain_http)?;
    shared.fetch();
    let since = std::time::SystemTime::now();
    let r = pipeline::build(&req)?;
    shared.store(since)?;
    if !quiet {
        say!(
            "built {} ({} bytes, {} entries, {})",
            r.artifact.display(),
            r.size,
            r.entries,
            r.compression.name()
        );
        say!("sha256 {}", r.sha256);
        let note = if r.manifest_defaulted {
            " (defaults: add a manifest.toml beside fledge.toml to set name, resources and workload)"
        } else {
            ""
        };
        say!("manifest {}{note}", r.manifest.display());
        if let Some(s) = &r.sbom {
            say!("sbom {}", s.display());
        }
        say!("provenance {}", r.provenance.display());
        if let Some(b) = &r.boot {
            say!("boot initramfs {}", b.display());
        }
    }
    Ok(())
}

/// `--cache-from` and `--cache-to`: a registry cache around the local one.
struct SharedCache {
    from: Option<fledge::push::Target>,
    to: Option<fledge::push::Target>,
    local: fledge::compress::SegmentCache,
    plain_http: bool,
}

impl SharedCache {
    fn open(
        from: &Option<String>,
        to: &Option<String>,
        dir: &std::path::Path,
        plain_http: bool,
    ) -> Result<SharedCache> {
        let parse = |r: &Option<String>, flag: &str| -> Result<Option<fledge::push::Target>> {
            r.as_deref()
                .map(|r| fledge::push::Target::parse(r).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
                .transpose()
        };
        Ok(SharedCache {
            from: parse(from, "--cache-from")?,
            to: parse(to, "--cache-to")?,
            local: fledge::compress::SegmentCache::from_env(dir)?,
            plain_http,
        })
    }

    /// Never fails: what could not be used is a warning.
    fn fetch(&self) {
        let Some(t) = &self.from else { return };
        let f = fledge::push::cache::fetch(t, &self.local, self.plain_http);
        for n in &f.notes {
            log::warn!("{n}");
        }
        log::info!(
            "cache from {t}: {} entries fetched ({} bytes), {} already here, {} skipped",
            f.fetched,
            f.bytes,
            f.present,
            f.notes.len()
        );
    }

    fn store(&self, since: std::time::SystemTime) -> Result<()> {
        let Some(t) = &self.to else { return Ok(()) };
        let s =
            fledge::push::cache::store(t, &self.local, since, self.plain_http).map_err(|e| {
                anyhow::anyhow!("the image is written, but the cache was not pushed: {e}")
            })?;
        match &s.digest {
            Some(d) => log::info!(
                "cache to {t}: {} entries, {} blobs uploaded, {} already there ({d})",
                s.entries,
                s.uploaded,
                s.present
            ),
            None => log::warn!(
                "--cache-to {t}: the build used no cache entry (is the cache off?): nothing pushed"
            ),
        }
        Ok(())
    }
}

fn inspect_cmd(a: InspectArgs, quiet: bool) -> Result<()> {
    let view = match (a.check, a.json, a.tree) {
        (true, _, _) => inspect::View::Check,
        (_, true, _) => inspect::View::Json,
        (_, _, true) => inspect::View::Tree,
        _ => inspect::View::List,
    };
    let mut out = std::io::stdout().lock();
    let report = inspect::run(&a.image, view, &mut out)?;
    let problems = &report.problems;
    if a.check {
        if problems.is_empty() {
            if !quiet {
                writeln!(
                    out,
                    "{}: boot check passed ({} entries)",
                    a.image.display(),
                    report.summary.entries
                )
                .map_err(Stdout)?;
            }
            return Ok(());
        }
        log::error!("{}: boot check failed: {}", a.image.display(), problems[0]);
        for p in &problems[1..] {
            log::error!("{p}");
        }
        return Err(Reported.into());
    }
    if !a.json {
        for p in problems {
            log::warn!("boot check: {p}");
        }
    }
    Ok(())
}

fn verify(a: VerifyArgs, quiet: bool) -> Result<()> {
    let r = fledge::verify::verify(&fledge::verify::Request {
        image: a.image.clone(),
        manifest: a.manifest,
        sbom: a.sbom,
        provenance: a.provenance,
        rebuild: a.rebuild,
        cache_dir: a.cache_dir,
    })
    .map_err(fledge::Error::from)?;
    if !quiet {
        let mut checked = Vec::new();
        if let Some(s) = &r.sbom {
            checked.push(format!("{} files match {}", r.files, s.display()));
        }
        if let Some(m) = &r.manifest {
            checked.push(format!("checksum matches {}", m.display()));
        }
        if let Some(p) = &r.provenance {
            checked.push(format!("subject of {}", p.display()));
        }
        if r.rebuilt {
            checked.push("a rebuild gives identical bytes".into());
        }
        say!(
            "{}: verified (sha256 {}): {}",
            a.image.display(),
            r.sha256,
            checked.join("; ")
        );
    }
    Ok(())
}

fn cache(a: CacheArgs, quiet: bool) -> Result<()> {
    use fledge::compress::SegmentCache;
    use indicatif::HumanBytes;
    let root = a
        .cache_dir
        .unwrap_or_else(fledge::fetch::Fetcher::default_cache_dir);
    let configured = SegmentCache::from_env(&root)?;
    let dir = configured.dir().display().to_string();
    let err = |e: std::io::Error| anyhow::anyhow!("cannot read the segment cache {dir}: {e}");
    let (verb, removed, cache) = match a.action.unwrap_or(CacheAction::Show) {
        CacheAction::Show => {
            let (u, l) = configured.usage_by_kind().map_err(err)?;
            println!("cache {}", root.display());
            println!(
                "compressed segments: {} in {}, {} (limit {}, with the layers)",
                u.entries,
                dir,
                HumanBytes(u.bytes),
                HumanBytes(configured.limit())
            );
            println!(
                "image layers: {} in {}, {}",
                l.entries,
                configured.layer_dir().display(),
                HumanBytes(l.bytes)
            );
            return Ok(());
        }
        CacheAction::Prune { max_size } => {
            let c = max_size.map_or(configured, |m| SegmentCache::new(&root, m));
            ("pruned", c.prune().map_err(err)?, c)
        }
        CacheAction::Clear => ("cleared", configured.clear().map_err(err)?, configured),
    };
    if !quiet {
        let left = cache.usage().map_err(err)?;
        println!(
            "{verb} {dir} and the image layers: removed {} entries ({}), {} left ({})",
            removed.entries,
            HumanBytes(removed.bytes),
            left.entries,
            HumanBytes(left.bytes)
        );
    }
    Ok(())
}

fn new(a: NewArgs, quiet: bool) -> Result<()> {
    let written = scaffold::create(&a.dir, a.mode.into())?;
    if !quiet {
        for p in &written {
            say!("created {}", p.display());
        }
        say!(
            "next: edit {}, then `fledge build -c {}`",
            a.dir.join("fledge.toml").display(),
            a.dir.join("fledge.toml").display()
        );
    }
    Ok(())
}

fn validate(a: ValidateArgs, quiet: bool) -> Result<()> {
    let default_config = PathBuf::from("fledge.toml");
    if let (None, Some(m)) = (&a.config, &a.manifest) {
        if !default_config.exists() {
            fledge::manifest::load_template(m)?;
            if !quiet {
                say!("{}: valid", m.display());
            }
            return Ok(());
        }
    }
    let config = a.config.unwrap_or(default_config);
    let req = request(config, a.manifest, PathBuf::from("plugin.cpio.gz"));
    let prepared = pipeline::prepare(&req, pipeline::Fetching::Offline)?;
    if !quiet {
        say!("{}: valid", prepared.config.path.display());
        match &prepared.manifest {
            (p, t) if t.origin().is_some() => say!("{}: valid", p.display()),
            _ => say!("no manifest.toml: a build writes a default manifest"),
        }
    }
    Ok(())
}

/// `println!` that returns [`Stdout`] from the function instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(Stdout)?
    };
}
pub(crate) use say;

/// stdout could not be written (a full disk, a closed pipe).
#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout: {0}")]
pub(crate) struct Stdout(#[source] std::io::Error);

/// Whether `e` comes from writing to a pipe whose reader has gone.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A failure whose messages are already on stderr.
#[derive(Debug, thiserror::Error)]
#[error("the failure was reported above")]
struct Reported;

/// `error: ...` / `warning: ...` on stderr; info lines plain.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // fledge's own messages; the libraries' (ureq's request traces, rustls) stay out of
        // `-v` unless they are warnings or errors.
        let ours = m.target().starts_with("fledge");
        m.level() <= log::max_level() && (ours || m.level() <= log::Level::Warn)
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let prefix = match r.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "",
            log::Level::Debug | log::Level::Trace => "  ",
        };
        let _ = writeln!(std::io::stderr().lock(), "{prefix}{}", r.args());
    }

    fn flush(&self) {}
}
