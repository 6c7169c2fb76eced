//! `fledge run`: boot a plugin image locally the way Volant would, and report on it.
//!
//! One run, in order: find QEMU and the kernel ([`kernel`]); decide KVM or TCG with a bounded
//! probe and the machine type from what the guest can drive ([`machine`]); forward the workload's
//! port from a free host port on QEMU's user-mode network; start QEMU ([`vm`]) with the serial
//! console streamed to stdout ([`console`]); poll the manifest's health check ([`health`]); turn
//! Ctrl-C into an ACPI power-down over QMP ([`qmp`]); and end with the workload's exit status as
//! fledge-init reports it on the console (`fledge-init: exit-status=N`).
//!
//! A default-mode image (fledge-init hands off to Volant's agent) is booted as Volant's
//! orchestrator boots it ([`volant`]): the `volant.*` parameters with the manifest, a manifest
//! API on the host's loopback, the agent's port 8080 forwarded too, and "healthy" meaning the
//! agent's `/healthz` and the manifest's health endpoint through the agent's `/v1` proxy.
//!
//! Exit status of `fledge run` ([`Ended::code`]): the workload's status (0-255) when fledge-init
//! reported one; otherwise [`EXIT_TIMEOUT`], [`EXIT_UNHEALTHY`], [`EXIT_PANIC`] or
//! [`EXIT_NO_STATUS`]; 1 when the run could not start (no kernel, no QEMU, a failed build).

pub mod console;
pub mod health;
pub mod kernel;
pub mod machine;
pub mod plugin;
pub mod qmp;
pub mod start;
pub mod vm;
pub mod volant;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::arch::Arch;
use machine::{AccelChoice, Machine};

/// `--timeout` passed: the guest was powered down.
pub const EXIT_TIMEOUT: i32 = 124;
/// The health check did not pass within its window.
pub const EXIT_UNHEALTHY: i32 = 123;
/// The guest kernel panicked before fledge-init reported a status.
pub const EXIT_PANIC: i32 = 122;
/// QEMU ended without fledge-init's status line (a guest without fledge-init supervising, a
/// reboot, or QEMU killed after a second Ctrl-C).
pub const EXIT_NO_STATUS: i32 = 121;

/// How long the guest gets to shut down after the power-down request before QEMU is killed.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(30);
/// How often the power button is pressed again while the guest is shutting down.
const REPRESS: Duration = Duration::from_secs(3);

/// A failure before or while starting the guest.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no kernel to boot: looked at {tried}; {}", kernel::HOW_TO_GET)]
    NoKernel { tried: String },
    #[error("the kernel named by {from} does not exist: {}", path.display())]
    KernelMissing { path: PathBuf, from: &'static str },
    #[error("{program} not found on PATH (Debian: apt-get install {package})")]
    NoQemu {
        program: String,
        package: &'static str,
    },
    #[error("the kernel {} is for {kernel_arch}, but the image {}'s /init is built for {init_arch}: pass --kernel with a {init_arch} kernel", kernel.display(), image.display())]
    Arch {
        kernel: PathBuf,
        kernel_arch: Arch,
        image: PathBuf,
        init_arch: Arch,
    },
    #[error("cannot read the manifest {}: {problem}", path.display())]
    Manifest { path: PathBuf, problem: String },
    #[error("cannot read the image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        source: crate::inspect::InspectError,
    },
    #[error("bad --publish `{0}`: expected HOST:GUEST, two TCP ports (HOST 0 picks a free one)")]
    Publish(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// What to run and how (the CLI's flags, checked).
#[derive(Debug)]
pub struct Options {
    pub image: PathBuf,
    pub plugin: plugin::Plugin,
    /// The kernel, found by [`kernel::locate`].
    pub kernel: PathBuf,
    pub append: String,
    /// `--publish HOST:GUEST` forwards beyond the workload's port.
    pub publish: Vec<(u16, u16)>,
    pub accel: AccelChoice,
    /// `--timeout`: power the guest down after this long.
    pub timeout: Option<Duration>,
    /// Where JSON events go, when asked.
    pub events: Option<Box<dyn EventSink>>,
    /// Copy the console to stdout.
    pub stream: bool,
}

/// Where `--json` events are written, one JSON object a line.
pub trait EventSink: std::fmt::Debug + Send {
    fn emit(&mut self, event: serde_json::Value);
}

/// Events to any writer (stderr or a file).
#[derive(Debug)]
pub struct JsonLines<W: Write + std::fmt::Debug + Send>(pub W);

impl<W: Write + std::fmt::Debug + Send> EventSink for JsonLines<W> {
    fn emit(&mut self, event: serde_json::Value) {
        let _ = writeln!(self.0, "{event}");
        let _ = self.0.flush();
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// fledge-init reported the workload's status.
    Status(i32),
    TimedOut,
    Unhealthy,
    Panicked(String),
    NoStatus,
}

impl Ended {
    /// The exit status of `fledge run`.
    pub fn code(&self) -> i32 {
        match self {
            Ended::Status(s) => *s,
            Ended::TimedOut => EXIT_TIMEOUT,
            Ended::Unhealthy => EXIT_UNHEALTHY,
            Ended::Panicked(_) => EXIT_PANIC,
            Ended::NoStatus => EXIT_NO_STATUS,
        }
    }
}

/// Counts SIGINT/SIGTERM/SIGHUP deliveries from now on (a thread of signal-hook's iterator).
pub fn interrupts() -> Result<Arc<AtomicUsize>, RunError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let count = Arc::new(AtomicUsize::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(io("cannot handle signals"))?;
    let counter = Arc::clone(&count);
    std::thread::spawn(move || {
        for _ in signals.forever() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(count)
}

/// Everything decided before QEMU starts.
struct Setup {
    qemu: PathBuf,
    guest: vm::Guest,
    /// The URLs that must answer 2xx, in order, and the window.
    health: Option<(Vec<String>, Duration)>,
    /// What each forward reaches: `workload`, `agent` or `published`.
    forward_names: Vec<&'static str>,
    /// Default mode without supervision: Volant's agent is PID 1 and has no orderly shutdown,
    /// so Ctrl-C kills QEMU at once.
    hard_stop: bool,
    /// The manifest API, serving while the guest runs.
    api: Option<volant::Api>,
    _dir: crate::output::ScratchDir,
}

fn setup(o: &Options) -> Result<Setup, RunError> {
    let kernel = o.kernel.clone();
    let boot = boot_initramfs(o)?;
    let (drivers, agent, arch) = guest_drivers(&kernel, &o.image)?;
    let (program, package) = match arch {
        Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
        Arch::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
    };
    let qemu = which(program).ok_or_else(|| RunError::NoQemu {
        program: program.into(),
        package,
    })?;
    let (accel, note) = match (arch, o.accel) {
        // The probe boots an x86 machine; an arm64 guest uses KVM only when told to.
        (Arch::Aarch64, AccelChoice::Auto) => (
            machine::Accel::Tcg,
            Some("KVM not used for an aarch64 guest unless --accel kvm; using TCG".to_string()),
        ),
        _ => machine::accel(o.accel, &qemu, &kernel),
    };
    if let Some(n) = note {
        log::info!("{n}");
    }
    // The kernel command line's fledge.supervise= wins over the image's, as in fledge-init.
    let supervised =
        agent.map(|a| crate::inspect::check::supervise_option(&o.append).unwrap_or(a.supervised));
    // The manifest names the agent itself as its workload: see the warning below.
    let self_start = o.plugin.program.as_deref() == Some(fledge_abi::paths::AGENT);
    let mut forwards = o.publish.clone();
    // `--publish 0:GUEST`: a free host port, picked before the health check's URLs use it.
    for f in forwards.iter_mut().filter(|f| f.0 == 0) {
        f.0 = vm::free_port().map_err(io("cannot find a free TCP port"))?;
    }
    let host_port = |forwards: &mut Vec<(u16, u16)>, guest: u16| match forwards
        .iter()
        .find(|(_, g)| *g == guest)
    {
        Some((h, _)) => Ok(*h),
        None => {
            let h = vm::free_port().map_err(io("cannot find a free TCP port"))?;
            forwards.push((h, guest));
            Ok::<u16, RunError>(h)
        }
    };
    let workload_host = o
        .plugin
        .port
        .map(|port| host_port(&mut forwards, port))
        .transpose()?;
    let health = match (supervised, workload_host) {
        // Default mode: what Volant sees, through the agent.
        (Some(_), _) => {
            let agent_host = host_port(&mut forwards, volant::AGENT_PORT)?;
            let mut urls = vec![health::url(agent_host, "/healthz")];
            if let (Some((endpoint, _)), false) = (&o.plugin.health, self_start) {
                let path = format!("/v1/{}", endpoint.trim().trim_start_matches('/'));
                urls.push(health::url(agent_host, &path));
            }
            let ms = o.plugin.health.as_ref().map_or(0, |h| h.1);
            Some((urls, health::window(ms)))
        }
        (None, Some(host)) => o
            .plugin
            .health
            .as_ref()
            .map(|(endpoint, ms)| (vec![health::url(host, endpoint)], health::window(*ms))),
        (None, None) => None,
    };

    let wanted = !forwards.is_empty();
    let (machine, why) = match arch {
        Arch::Aarch64 => (Machine::Virt, None),
        Arch::X86_64 => machine::choose(machine::qemu_has_microvm(&qemu), &drivers, wanted),
    };
    match (why, machine) {
        (Some(why), Machine::Microvm) => log::warn!("using -M microvm: {why}"),
        (Some(why), _) => log::info!("using -M {}: {why}", machine.name()),
        (None, _) => {}
    }
    let network = wanted && {
        let missing = machine::missing_nic_drivers(machine, &drivers);
        if !missing.is_empty() {
            log::warn!(
                "no network: the guest cannot drive its virtio network card ({} neither built \
                 into the kernel nor loaded by the image; add `[kernel] modules = [\"{}\"]` to \
                 fledge.toml)",
                missing.join(", "),
                missing.join("\", \"")
            );
        }
        missing.is_empty()
    };
    if !network {
        forwards.clear();
    }
    let health = health.filter(|_| network);
    let forward_names = forwards
        .iter()
        .map(|&(_, g)| match g {
            volant::AGENT_PORT if supervised.is_some() => "agent",
            g if Some(g) == o.plugin.port => "workload",
            _ => "published",
        })
        .collect();
    let hostname = machine::hostname(&o.plugin.name);
    let tsc = machine::host_tsc_khz();
    // A disk is booted as Volant boots one (its overlay size from the boot initramfs).
    let disk_keys = if boot.is_some() {
        format!(
            "root={} rootfstype={} volant.rootfs_device=vda ",
            fledge_abi::rootfs::DEFAULT_DEVICE,
            fledge_abi::rootfs::DEFAULT_FSTYPE
        )
    } else {
        String::new()
    };
    let line = |extra: &str| {
        let append = format!("{disk_keys}{extra} {}", o.append.trim());
        machine::cmdline(machine, accel, &hostname, network, tsc, &append)
    };
    let mut api = None;
    let cmdline = if supervised.is_some() {
        // A manifest naming the agent as its workload (the default manifest of a default-mode
        // build without a manifest.toml) would make the agent start itself, which would start
        // itself again, and so on.
        let mut json = o.plugin.json.clone();
        if self_start {
            log::warn!(
                "the manifest's workload.entrypoint is the agent itself ({}): given it, the agent \
                 would start itself again and again, so it gets no manifest and starts no \
                 workload (name your program in manifest.toml's workload.entrypoint)",
                fledge_abi::paths::AGENT
            );
            json = None;
        } else if o.plugin.json.is_none() {
            log::warn!(
                "no manifest for this default-mode image: Volant's agent gets none and starts no \
                 workload (give one with -m)"
            );
        }
        if network {
            let a = volant::Api::start(&o.plugin.name, json.clone())
                .map_err(io("cannot start the manifest API on 127.0.0.1"))?;
            api = Some(a);
        }
        let params = volant::Params {
            name: o.plugin.name.clone(),
            runtime: o.plugin.runtime.clone(),
            api_port: api.as_ref().map(|a| a.port),
            manifest: json,
        };
        let (cmdline, note) = volant::fit(&params, line);
        if let Some(n) = note {
            log::info!("{n}");
        }
        cmdline
    } else {
        line("")
    };
    if cmdline.len() > volant::CMDLINE_MAX {
        log::warn!(
            "the kernel command line is {} bytes: x86 kernels keep only the first {}",
            cmdline.len(),
            volant::CMDLINE_MAX
        );
    }
    let dir = crate::output::ScratchDir::new("fledge-run")
        .map_err(io("cannot create a temporary directory"))?;
    let guest = vm::Guest {
        machine,
        accel,
        memory_mb: o.plugin.memory_mb,
        cpus: o.plugin.cpus,
        kernel,
        initrd: boot.clone().unwrap_or_else(|| o.image.clone()),
        disk: boot.is_some().then(|| o.image.clone()),
        cmdline,
        forwards,
        network,
        qmp: dir.path().join("qmp.sock"),
    };
    Ok(Setup {
        qemu,
        guest,
        health,
        forward_names,
        hard_stop: supervised == Some(false),
        api,
        _dir: dir,
    })
}

/// For a root file system disk, the boot initramfs `fledge build` wrote beside it
/// (`NAME.boot.cpio.gz`, NAME the manifest's name, else the disk's file stem); `None` for an
/// initramfs.
fn boot_initramfs(o: &Options) -> Result<Option<PathBuf>, RunError> {
    let mut f =
        std::fs::File::open(&o.image).map_err(io(format!("cannot read {}", o.image.display())))?;
    if !crate::inspect::is_squashfs(&mut f)
        .map_err(io(format!("cannot read {}", o.image.display())))?
    {
        return Ok(None);
    }
    let abs = std::path::absolute(&o.image).unwrap_or_else(|_| o.image.clone());
    let stem = abs
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let found = [o.plugin.name.as_str(), stem.as_str()]
        .iter()
        .map(|n| crate::boot::boot_path(&abs, n))
        .find(|p| p.is_file());
    match found {
        Some(p) => {
            log::info!(
                "{} is a root file system disk: booting it as /dev/vda from {}",
                o.image.display(),
                p.display()
            );
            Ok(Some(p))
        }
        None => Err(RunError::Image {
            path: o.image.clone(),
            source: crate::inspect::InspectError::Format {
                path: o.image.clone(),
                problem: format!(
                    "is a root file system disk, and no boot initramfs is beside it ({}): build it with `fledge build`, which writes one",
                    crate::boot::boot_path(&abs, &o.plugin.name).display()
                ),
            },
        }),
    }
}

/// The kernel's built-ins and the modules the image loads (by name), whether the image
/// starts Volant's agent (default mode), and the architecture of its `/init` (x86_64 when it
/// is not an ELF program of one fledge builds for).
fn guest_drivers(
    kernel: &std::path::Path,
    image: &std::path::Path,
) -> Result<
    (
        machine::GuestDrivers,
        Option<crate::inspect::check::AgentStart>,
        Arch,
    ),
    RunError,
> {
    let bytes = std::fs::read(kernel).map_err(io(format!("cannot read {}", kernel.display())))?;
    let builtin = kernel::release(&bytes).and_then(|r| kernel::builtins(kernel, &r));
    if let Some((p, _)) = &builtin {
        log::debug!("kernel built-ins from {}", p.display());
    }
    // The modules fledge-init loads at boot: the image's load list.
    let report = crate::inspect::run(image, crate::inspect::View::Check, &mut std::io::sink())
        .map_err(|source| RunError::Image {
            path: image.to_path_buf(),
            source,
        })?;
    let agent = report.agent;
    // The kernel decides the machine; an /init of another one could not start on it.
    let arch = match (kernel::arch(&bytes), report.arch) {
        (Some(k), Some(i)) if k != i => {
            return Err(RunError::Arch {
                kernel: kernel.to_path_buf(),
                kernel_arch: k,
                image: image.to_path_buf(),
                init_arch: i,
            })
        }
        (Some(k), _) => k,
        (None, i) => i.unwrap_or_default(),
    };
    let image = report
        .modules
        .unwrap_or_default()
        .iter()
        .filter_map(|line| kernel::module_name(line.split_whitespace().next().unwrap_or("")))
        .collect();
    Ok((
        machine::GuestDrivers {
            builtin: builtin.map(|(_, b)| b),
            image,
        },
        agent,
        arch,
    ))
}

/// Boots the guest and follows it to the end. `interrupted` counts Ctrl-Cs (see
/// [`interrupts`]).
pub fn run(mut o: Options, interrupted: &AtomicUsize) -> Result<Ended, RunError> {
    let s = setup(&o)?;
    let mut cmd = s.guest.command(&s.qemu);
    log::debug!("{}", vm::describe(&cmd));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(io(format!("cannot start {}", s.qemu.display())))?;
    let mut child = vm::Guarded(child);
    let out: Box<dyn Write + Send> = if o.stream {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::io::sink())
    };
    let console = console::Console::start(child.0.stdout.take().expect("piped"), out);
    log::info!(
        "booting {} under {} on -M {} ({} MiB, {} CPU{}){}{}",
        o.image.display(),
        s.guest.accel.name(),
        s.guest.machine.name(),
        s.guest.memory_mb,
        s.guest.cpus,
        if s.guest.cpus == 1 { "" } else { "s" },
        forwards_note(&s.guest.forwards, &s.forward_names),
        s.api.as_ref().map_or(String::new(), |a| format!(
            ", manifest API on 127.0.0.1:{} (guest: {}:{})",
            a.port,
            volant::API_HOST,
            a.port
        ))
    );
    let mut qmp = qmp::Qmp::connect(&s.guest.qmp, Duration::from_secs(10))
        .map_err(|e| log::warn!("no QMP connection to QEMU ({e}): Ctrl-C will kill the guest"))
        .ok();
    if s.hard_stop {
        log::info!(
            "Volant's agent is PID 1 in this image and has no orderly shutdown: Ctrl-C stops the \
             VM hard, at once, with no exit status (`[init] supervise = true` gives an orderly \
             shutdown and the status)"
        );
    }
    let poller = s
        .health
        .as_ref()
        .map(|(urls, w)| health::Poller::start_all(urls.clone(), *w));
    let mut w = Watch::new(start, o.events.take());
    let forwards: Vec<serde_json::Value> = s
        .guest
        .forwards
        .iter()
        .zip(&s.forward_names)
        .map(|((h, g), to)| serde_json::json!({"host": h, "guest": g, "to": to}))
        .collect();
    w.emit(serde_json::json!({"event": "started", "machine": s.guest.machine.name(), "accel": s.guest.accel.name(), "forwards": forwards}));
    loop {
        if child
            .0
            .try_wait()
            .map_err(io("cannot wait for QEMU"))?
            .is_some()
        {
            break;
        }
        w.step(
            &o,
            &s,
            &console,
            poller.as_ref(),
            interrupted,
            qmp.as_mut(),
            &mut child,
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(poller);
    let seen = console.finish();
    let ended = w.verdict(&seen);
    report(&mut w, &ended, &seen);
    Ok(ended)
}

fn forwards_note(f: &[(u16, u16)], names: &[&str]) -> String {
    if f.is_empty() {
        return String::new();
    }
    let list: Vec<String> = f
        .iter()
        .zip(names)
        .map(|((h, g), to)| format!("127.0.0.1:{h} -> guest:{g} ({to})"))
        .collect();
    format!(", forwarding {}", list.join(", "))
}

/// The run's state between polls.
struct Watch {
    start: Instant,
    events: Option<Box<dyn EventSink>>,
    booted: bool,
    healthy: bool,
    unhealthy: bool,
    timed_out: bool,
    /// When the power-down was asked for; QEMU is killed [`SHUTDOWN_BOUND`] later.
    stopping: Option<Instant>,
    /// When the power button was last pressed: it is pressed again every [`REPRESS`] until the
    /// guest is down, for a guest that was still booting (nothing listened yet) the first time.
    pressed: Option<Instant>,
    interrupts_handled: usize,
    /// QEMU was killed at Ctrl-C, as asked ([`Setup::hard_stop`]).
    killed: bool,
}

impl Watch {
    fn new(start: Instant, events: Option<Box<dyn EventSink>>) -> Self {
        Watch {
            start,
            events,
            booted: false,
            healthy: false,
            unhealthy: false,
            timed_out: false,
            stopping: None,
            pressed: None,
            interrupts_handled: 0,
            killed: false,
        }
    }

    fn ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    fn emit(&mut self, mut event: serde_json::Value) {
        let ms = self.ms();
        if let Some(e) = self.events.as_mut() {
            event["ms"] = serde_json::json!(ms);
            e.emit(event);
        }
    }

    /// One poll: console, health check, signals, deadlines.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        o: &Options,
        s: &Setup,
        console: &console::Console,
        poller: Option<&health::Poller>,
        interrupted: &AtomicUsize,
        qmp: Option<&mut qmp::Qmp>,
        child: &mut vm::Guarded,
    ) {
        if !self.booted && console.seen().any_output {
            self.booted = true;
            self.emit(serde_json::json!({"event": "booted"}));
        }
        match poller.and_then(health::Poller::outcome) {
            Some(health::Health::Healthy(_)) => {
                self.healthy = true;
                let ms = self.ms();
                let urls = s.health.as_ref().map(|h| h.0.clone()).unwrap_or_default();
                let (list, verb) = (
                    urls.join(" and "),
                    if urls.len() == 1 { "answers" } else { "answer" },
                );
                log::info!("healthy after {ms} ms: {list} {verb}");
                self.emit(
                    serde_json::json!({"event": "healthy", "url": urls.last(), "urls": urls}),
                );
            }
            Some(health::Health::Failed(why)) if self.stopping.is_none() => {
                self.unhealthy = true;
                let window = s.health.as_ref().map_or(0, |h| h.1.as_secs());
                log::error!(
                    "the health check did not pass within {window} s ({why}); the console's last lines:\n{}",
                    console.seen().tail()
                );
                self.end(s, qmp, child);
                return;
            }
            _ => {}
        }
        let n = interrupted.load(Ordering::Relaxed);
        if n > self.interrupts_handled {
            self.interrupts_handled = n;
            if self.stopping.is_some() {
                log::warn!("second interrupt: killing QEMU");
                let _ = child.0.kill();
                self.pressed = None;
                return;
            }
            if s.hard_stop {
                log::info!("interrupted: stopping the VM hard (killing QEMU)");
            } else {
                log::info!("interrupted: asking the guest to power down (Ctrl-C again kills it)");
            }
            self.end(s, qmp, child);
            return;
        }
        if let Some(t) = o
            .timeout
            .filter(|t| self.stopping.is_none() && self.start.elapsed() >= *t)
        {
            self.timed_out = true;
            log::error!(
                "--timeout {} s reached: {}",
                t.as_secs(),
                if s.hard_stop {
                    "stopping the VM hard (killing QEMU)"
                } else {
                    "asking the guest to power down"
                }
            );
            self.end(s, qmp, child);
            return;
        }
        if self.stopping.is_some() && self.pressed.is_some_and(|t| t.elapsed() >= REPRESS) {
            self.press(qmp);
        }
        if self.stopping.is_some_and(|t| t.elapsed() >= SHUTDOWN_BOUND) {
            log::warn!(
                "the guest did not power down within {} s: killing QEMU",
                SHUTDOWN_BOUND.as_secs()
            );
            let _ = child.0.kill();
            self.stopping = Some(Instant::now() + Duration::from_secs(3600));
            self.pressed = None;
        }
    }

    /// Ends the run: [`Watch::stop`], or with [`Setup::hard_stop`] QEMU killed at once (Volant's
    /// agent as PID 1 has no orderly shutdown to wait for).
    fn end(&mut self, s: &Setup, qmp: Option<&mut qmp::Qmp>, child: &mut vm::Guarded) {
        if !s.hard_stop {
            return self.stop(qmp, s.guest.machine);
        }
        let _ = child.0.kill();
        self.killed = true;
        self.stopping = Some(Instant::now() + Duration::from_secs(3600));
    }

    /// Asks the guest to power down: the ACPI power button, and on q35 also Ctrl-Alt-Del, which
    /// the kernel's built-in keyboard driver turns into SIGINT to PID 1 (fledge-init's orderly
    /// shutdown in supervise mode).
    fn stop(&mut self, mut qmp: Option<&mut qmp::Qmp>, machine: Machine) {
        self.stopping = Some(Instant::now());
        self.press(qmp.as_deref_mut());
        let Some(q) = qmp else {
            return;
        };
        if machine == Machine::Q35 {
            if let Err(e) = q.ctrl_alt_delete() {
                log::warn!("QMP send-key ctrl-alt-delete failed: {e}");
            }
        }
    }

    /// Presses the ACPI power button.
    fn press(&mut self, qmp: Option<&mut qmp::Qmp>) {
        let Some(q) = qmp else {
            return;
        };
        self.pressed = Some(Instant::now());
        if let Err(e) = q.system_powerdown() {
            log::warn!("QMP system_powerdown failed: {e}");
        }
    }

    fn verdict(&self, seen: &console::Seen) -> Ended {
        if self.timed_out {
            Ended::TimedOut
        } else if self.unhealthy {
            Ended::Unhealthy
        } else if let Some(s) = seen.status {
            Ended::Status(s)
        } else if let Some(p) = &seen.panic {
            Ended::Panicked(p.clone())
        } else {
            Ended::NoStatus
        }
    }
}

/// The closing message and event.
fn report(w: &mut Watch, ended: &Ended, seen: &console::Seen) {
    if !w.booted && seen.any_output {
        w.emit(serde_json::json!({"event": "booted"}));
    }
    let ms = w.ms();
    match ended {
        Ended::Status(s) => log::info!("the workload exited with status {s} ({ms} ms after boot)"),
        Ended::Panicked(p) => log::error!("the guest kernel panicked: {p}"),
        // An orderly power-off: the image's /init (not a supervising fledge-init) ended it.
        Ended::NoStatus if w.killed => {
            log::info!("the VM was stopped hard: Volant's agent as PID 1 reports no exit status")
        }
        Ended::NoStatus if seen.shut_down => log::warn!(
            "the guest powered off without fledge-init's exit-status line, so its status is \
             unknown: only a supervising fledge-init (`[init] supervise = true`) reports one"
        ),
        Ended::NoStatus => log::error!(
            "QEMU ended without fledge-init's exit-status line; the console's last lines:\n{}",
            seen.tail()
        ),
        Ended::TimedOut | Ended::Unhealthy => {}
    }
    let status = match ended {
        Ended::Status(s) => Some(*s),
        _ => None,
    };
    w.emit(serde_json::json!({"event": "exited", "status": status, "code": ended.code(), "healthy": w.healthy}));
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
