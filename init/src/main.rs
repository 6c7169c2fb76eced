//! `fledge-init`: the PID 1 of fledge images.
//!
//! Mounts the kernel file systems, makes sure stdio is the console, reads its options, then
//! either hands off to the target with `exec` (the default: the target becomes PID 1) or
//! supervises it as a child. It never returns: returning from PID 1 panics the kernel. It ends
//! in `exec` or in the exit action (power-off or reboot); fatal errors are one line on the
//! console and in the kernel log, then the exit action.
//!
//! Built with `panic = "abort"` (the `init` profile the images get) the binary is `no_std`,
//! with `alloc`: see `sys` for the runtime pieces that replace `std`. A `no_std` binary cannot
//! unwind, so builds that do (dev and release profiles, unit tests) link `std` - for its panic
//! runtime only; the code uses `core` and `alloc` either way.
#![deny(unsafe_code)]
#![cfg_attr(all(not(test), panic = "abort"), no_std)]
#![cfg_attr(not(test), no_main)]

extern crate alloc;

mod error;
mod klog;
mod modules;
mod mounts;
mod net;
mod options;
mod power;
mod rootfs;
mod status;
mod supervise;
mod sys;
mod workload;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, Ordering};

use error::Error;
use fledge_abi::paths;
use options::{ExitAction, Options};

/// The longest `/.volant_init` read (a path and a newline, with room to spare).
const MAX_CUSTOM_INIT_FILE: usize = 64 * 1024;
/// The Volant agent: the target when there is no custom init.
const DEFAULT_TARGET: &str = paths::AGENT;

/// The whole life of PID 1 (called from `sys::main`).
pub fn run() -> ! {
    klog::install();
    let pid = sys::getpid();
    if pid != 1 {
        // Mounting tmpfs over /tmp and devtmpfs over /dev would hide the host's own.
        log::error!("must run as PID 1 (this is pid {pid}); doing nothing");
        sys::exit(2);
    }
    let status = match boot() {
        Ok(status) => status,
        Err(e) => {
            log::error!("{e}");
            1
        }
    };
    finish(status)
}

/// `fledge.exit=reboot` is in effect (read by [`finish`], also on the panic path).
static REBOOT: AtomicBool = AtomicBool::new(false);

/// The panic handler's body (a panic is a bug): one line, then the same end as a fatal error.
/// A panic while reporting one skips the line.
#[cfg(all(not(test), panic = "abort"))]
pub fn panicked(info: &core::panic::PanicInfo<'_>) -> ! {
    static PANICKING: AtomicBool = AtomicBool::new(false);
    if !PANICKING.swap(true, Ordering::Relaxed) {
        log::error!("internal error: {}", info.message());
    }
    finish(1)
}

/// With the `step-times` feature, the monotonic clock at each step of [`boot`], kept until one
/// write just before the handoff (a write per step would slow the boot it measures).
#[cfg(feature = "step-times")]
mod steps {
    use core::sync::atomic::{AtomicU64, Ordering};

    pub const NAMES: [&str; 10] = [
        "start", "mounts", "console", "kmsg", "options", "spec", "modules", "net", "plan", "limits",
    ];
    static AT: [AtomicU64; NAMES.len()] = [const { AtomicU64::new(0) }; NAMES.len()];

    pub fn mark(step: &str) {
        if let Some(i) = NAMES.iter().position(|n| *n == step) {
            AT[i].store(crate::sys::now().as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// `fledge-init: step NAME NS` per step reached, on fd 2.
    pub fn print() {
        let mut text = alloc::string::String::new();
        for (name, at) in NAMES.iter().zip(&AT) {
            let ns = at.load(Ordering::Relaxed);
            if ns != 0 {
                text += &alloc::format!("fledge-init: step {name} {ns}\n");
            }
        }
        crate::sys::write(2, text.as_bytes());
    }
}

/// Marks a step for the `step-times` feature; nothing without it.
macro_rules! step {
    ($name:literal) => {
        #[cfg(feature = "step-times")]
        steps::mark($name);
    };
}

/// The steps; returns the supervised target's status, or the error that ends the boot.
fn boot() -> Result<i32, Error> {
    step!("start");
    mount_filesystems()?;
    step!("mounts");
    console()?;
    step!("console");
    klog::open_kmsg();
    step!("kmsg");
    let opts = options();
    step!("options");
    REBOOT.store(opts.exit == ExitAction::Reboot, Ordering::Relaxed);
    if rootfs::wanted() {
        // A boot initramfs: its modules are the disk's drivers.
        modules::load_all(&sys::cstring(paths::MODULES_LOAD))?;
        let cmdline = sys::read_to_string(options::CMDLINE_PATH, 64 << 10).unwrap_or_default();
        return Err(rootfs::switch(&cmdline));
    }
    let spec = workload::load(&sys::cstring(paths::WORKLOAD))?;
    step!("spec");
    modules::load_all(&sys::cstring(paths::MODULES_LOAD))?;
    step!("modules");
    let ip_hostname = net::setup(&opts);
    step!("net");
    let plan = workload::plan(
        spec,
        &opts,
        || handoff_target(&sys::cstring(paths::VOLANT_INIT)),
        sys::environment(),
        |p| sys::is_executable(&sys::cstring(p)),
    );
    step!("plan");
    hostname(
        opts.hostname
            .clone()
            .or(ip_hostname)
            .or(plan.hostname.clone()),
    );
    limits(&plan)?;
    step!("limits");
    #[cfg(feature = "step-times")]
    steps::print();
    if opts.supervise {
        let status = supervise::supervise(&plan, opts.grace)?;
        mounts::unmount_all(mounts::MOUNTS);
        Ok(status)
    } else {
        Err(exec(&plan))
    }
}

fn mount_filesystems() -> Result<(), Error> {
    mounts::mount_all(&mut mounts::RealSys, mounts::MOUNTS)?;
    mounts::make_links();
    Ok(())
}

/// Sets the hostname: `fledge.hostname`, else `ip=`'s, else the spec's; a failure is a warning.
fn hostname(name: Option<String>) {
    if let Some(name) = name {
        if let Err(e) = sys::sethostname(&name) {
            log::warn!("failed to set the hostname to {name}: {e}");
        }
    }
}

/// `RLIMIT_NOFILE` for the target (and PID 1): fatal when asked for, a warning for the default.
fn limits(plan: &workload::Plan) -> Result<(), Error> {
    match sys::set_nofile(plan.nofile) {
        Ok(()) => Ok(()),
        Err(cause) if plan.nofile_set => Err(Error::Nofile {
            limit: plan.nofile,
            cause,
        }),
        Err(e) => {
            log::warn!("failed to raise RLIMIT_NOFILE to {}: {e}", plan.nofile);
            Ok(())
        }
    }
}

/// The kernel opens `/dev/console` as fds 0-2 when the archive has that node; only fill in
/// what is missing (a test may also run the init with pipes as stdio).
fn console() -> Result<(), Error> {
    let missing: Vec<i32> = (0..3).filter(|&fd| !sys::fd_is_open(fd)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    sys::fill_stdio(c"/dev/console", &missing).map_err(|cause| Error::Console { cause })?;
    Ok(())
}

fn options() -> Options {
    let (opts, warnings) = options::load(&sys::cstring(paths::INIT_CONF), options::CMDLINE_PATH);
    klog::set_target(opts.log);
    for w in warnings {
        log::warn!("{w}");
    }
    opts
}

/// The first line of `file` (trimmed) if it names something, else the agent.
fn handoff_target(file: &CStr) -> String {
    match sys::read_to_string(file, MAX_CUSTOM_INIT_FILE) {
        Ok(text) => match text.lines().next().map(str::trim) {
            Some(line) if !line.is_empty() => return line.to_string(),
            _ => {}
        },
        Err(sys::Errno(libc::ENOENT)) => {}
        Err(e) => log::warn!(
            "cannot read {}: {e}; using {DEFAULT_TARGET}",
            file.to_str().unwrap_or("?")
        ),
    }
    DEFAULT_TARGET.to_string()
}

/// Replaces this process with the target; returns only the error.
fn exec(plan: &workload::Plan) -> Error {
    match plan.command() {
        Ok(cmd) => {
            let (step, cause) = cmd.exec();
            Error::Start {
                what: plan.failed(step),
                cause,
            }
        }
        Err(e) => e,
    }
}

/// The end of PID 1: sync, then power off or reboot (`fledge.exit`). Only PID 1 may do that:
/// the check is repeated here, next to the reboot call, so that no change elsewhere can make a
/// run on a host power the host off; anywhere else it exits with `status`.
fn finish(status: i32) -> ! {
    klog::exit_status(status);
    sys::sync();
    if sys::getpid() != 1 {
        sys::exit(status);
    }
    let cause = sys::reboot(REBOOT.load(Ordering::Relaxed));
    // Still here: the reboot was refused. Exiting would panic the kernel; wait instead.
    log::error!("reboot failed: {cause}");
    loop {
        sys::pause();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_target_reads_the_first_line_or_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".volant_init");
        let cases = [
            (Some("/sbin/custom-init\n"), "/sbin/custom-init"),
            (Some("  /usr/bin/app  \n/ignored\n"), "/usr/bin/app"),
            (Some("\n/second-line\n"), DEFAULT_TARGET),
            (Some(""), DEFAULT_TARGET),
            (None, DEFAULT_TARGET),
        ];
        for (i, (content, want)) in cases.into_iter().enumerate() {
            let _ = std::fs::remove_file(&file);
            if let Some(c) = content {
                std::fs::write(&file, c).unwrap();
            }
            let path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
            assert_eq!(handoff_target(&path), want, "case {i}: {content:?}");
        }
    }
}
