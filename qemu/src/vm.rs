//! Booting one image: the QEMU command line, a hard timeout, the captured serial log, and checks
//! on that log whose failure message carries the whole log (a smoke run that fails without
//! showing what the guest printed is useless).
//!
//! QEMU runs with `-nographic`, so the guest's serial console (`ttyS0`) is QEMU's stdout, read to
//! the end by a thread; `-no-reboot` turns a guest reboot into a QEMU exit, and `panic=-1` turns a
//! kernel panic into an immediate reboot, so every boot ends on its own - poweroff, panic or
//! reboot all exit QEMU. The timeout is for hangs only. At most `FLEDGE_QEMU_JOBS` (default 2)
//! boots run at once in a process: TCG is CPU-bound.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::host::Host;
use crate::Error;

/// Printed by the kernel (at `KERN_INFO`, hence no `quiet`) just before it execs `/init`.
pub const RUN_INIT: &str = "Run /init as init process";
/// Printed by the kernel when the machine powers off (`reboot(RB_POWER_OFF)`).
pub const POWER_DOWN: &str = "reboot: Power down";
/// Printed by the kernel on any panic, e.g. "Attempted to kill init!".
pub const KERNEL_PANIC: &str = "Kernel panic";

/// One boot to run: which image, what extra kernel parameters, how long at most.
#[derive(Debug, Clone)]
pub struct Boot {
    name: String,
    initrd: PathBuf,
    params: Vec<String>,
    qemu_args: Vec<String>,
    timeout: Duration,
    memory_mb: u32,
}

impl Boot {
    /// A boot of `initrd`, named `name` in messages. Default timeout: `$FLEDGE_QEMU_TIMEOUT`
    /// seconds, else 180 (TCG boots take a few seconds alone, much longer on a loaded machine).
    pub fn new(name: &str, initrd: &Path) -> Self {
        let secs = std::env::var("FLEDGE_QEMU_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180);
        Self {
            name: name.to_owned(),
            initrd: initrd.to_path_buf(),
            params: Vec::new(),
            qemu_args: Vec::new(),
            timeout: Duration::from_secs(secs),
            memory_mb: 256,
        }
    }

    /// Appends a kernel command-line parameter (e.g. `STANDIN=report`, `fledge.supervise=1`).
    pub fn param(mut self, p: &str) -> Self {
        self.params.push(p.to_owned());
        self
    }

    /// Appends QEMU arguments (e.g. `-device virtio-net-pci`).
    pub fn qemu_args(mut self, args: &[&str]) -> Self {
        self.qemu_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Attaches `disk` read-only as the first virtio disk (`/dev/vda`).
    pub fn disk(self, disk: &Path) -> Self {
        let drive = format!("file={},format=raw,if=virtio,readonly=on", disk.display());
        self.qemu_args(&["-drive", &drive])
    }

    /// Sets the guest's memory (default 256 MiB); a large initramfs is unpacked into it.
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Sets the hard timeout after which QEMU is killed.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The full kernel command line.
    pub fn cmdline(&self, host: &Host) -> String {
        let mut parts = vec![
            format!("console={}", host.target.console),
            "panic=-1".to_owned(),
            "printk.time=1".to_owned(),
        ];
        parts.extend(self.params.iter().cloned());
        parts.join(" ")
    }

    /// The QEMU command for this boot.
    pub fn command(&self, host: &Host) -> Command {
        let mut cmd = Command::new(&host.qemu);
        if host.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args(["-accel", "tcg"]);
        }
        cmd.args(["-m", &self.memory_mb.to_string(), "-smp", "1"])
            .args(["-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&host.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(self.cmdline(host))
            .args(&self.qemu_args);
        cmd
    }

    /// Boots and waits for QEMU to exit or the timeout to pass; returns everything captured.
    /// An error here means QEMU could not be run at all, not that the guest misbehaved.
    pub fn run(&self, host: &Host) -> Result<BootLog, Error> {
        let _slot = Slot::take();
        let mut cmd = self.command(host);
        let command = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: command.clone(),
            source,
        })?;
        let out = drain(child.stdout.take().expect("piped"));
        let err = drain(child.stderr.take().expect("piped"));
        let deadline = start + self.timeout;
        let end = loop {
            match child.try_wait() {
                Ok(Some(status)) => break End::Exited(status),
                Ok(None) if Instant::now() >= deadline => {
                    // Kill and reap; the pipes close and the readers finish.
                    let _ = child.kill();
                    let _ = child.wait();
                    break End::TimedOut(self.timeout);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(source) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Spawn {
                        program: command,
                        source,
                    });
                }
            }
        };
        let elapsed = start.elapsed();
        let text = |h: std::thread::JoinHandle<Vec<u8>>| {
            let bytes = h.join().unwrap_or_default();
            // The serial line discipline adds CRs; drop them so lines compare plainly.
            String::from_utf8_lossy(&bytes).replace('\r', "")
        };
        Ok(BootLog {
            name: self.name.clone(),
            command,
            serial: text(out),
            stderr: text(err),
            end,
            elapsed,
        })
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// A command line as a shell would show it, for failure messages.
pub fn describe(cmd: &Command) -> String {
    let quote = |s: &std::ffi::OsStr| {
        let s = s.to_string_lossy();
        if s.contains([' ', '"', '\'']) {
            format!("'{s}'")
        } else {
            s.into_owned()
        }
    };
    std::iter::once(quote(cmd.get_program()))
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Caps concurrent boots in this process (a held slot is released on drop).
struct Slot;

static SLOTS: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

impl Slot {
    fn take() -> Self {
        let max = std::env::var("FLEDGE_QEMU_JOBS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(2);
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= max {
            used = FREED.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOTS.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        FREED.notify_one();
    }
}

/// How a boot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// QEMU exited by itself (guest poweroff, or a reboot/panic turned into an exit).
    Exited(ExitStatus),
    /// QEMU was killed after this long.
    TimedOut(Duration),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Exited(s) => write!(f, "QEMU exited ({s})"),
            End::TimedOut(t) => write!(f, "QEMU killed after the {}s timeout", t.as_secs()),
        }
    }
}

/// What a boot left behind.
#[derive(Debug, Clone)]
pub struct BootLog {
    /// The boot's name.
    pub name: String,
    /// The QEMU command line.
    pub command: String,
    /// Everything the guest printed on the serial console (CRs removed).
    pub serial: String,
    /// What QEMU itself printed on stderr.
    pub stderr: String,
    /// How it ended.
    pub end: End,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

/// A check on a boot's serial log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Some line contains this text.
    Contains(String),
    /// No line contains this text.
    Absent(String),
    /// No kernel panic was printed.
    NoPanic,
    /// The guest powered off (rather than rebooting, panicking or hanging).
    PowerOff,
}

impl Check {
    /// [`Check::Contains`].
    pub fn contains(s: &str) -> Self {
        Check::Contains(s.to_owned())
    }

    /// [`Check::Absent`].
    pub fn absent(s: &str) -> Self {
        Check::Absent(s.to_owned())
    }
}

impl BootLog {
    /// The text from the first occurrence of `marker` to the end of its line, or to a kernel
    /// message that lands in it. Kernel messages reach the console between the guest's writes,
    /// so they can come in front of the guest's line or cut into it (`argv0=/init[    2.26]
    /// tsc: ...`).
    pub fn line(&self, marker: &str) -> Option<&str> {
        self.serial.lines().find_map(|l| {
            let from = &l[l.find(marker)?..];
            Some(&from[..printk_stamp(from).unwrap_or(from.len())])
        })
    }

    /// The `printk.time` timestamp in seconds of the first kernel message containing `message`.
    pub fn kernel_time(&self, message: &str) -> Option<f64> {
        self.serial
            .lines()
            .find(|l| l.contains(message))
            .and_then(|l| {
                let l = l.trim_start();
                let inner = l.strip_prefix('[')?.split(']').next()?;
                inner.trim().parse().ok()
            })
    }

    /// Descriptions of the checks that do not hold (empty when all do).
    pub fn problems(&self, checks: &[Check]) -> Vec<String> {
        let mut out = Vec::new();
        if let End::TimedOut(_) = self.end {
            out.push(self.end.to_string());
        }
        for c in checks {
            match c {
                Check::Contains(s) if !self.serial.contains(s.as_str()) => {
                    out.push(format!("expected `{s}` on the console, not found"))
                }
                Check::Absent(s) if self.serial.contains(s.as_str()) => {
                    out.push(format!("unexpected `{s}` on the console"))
                }
                Check::NoPanic if self.serial.contains(KERNEL_PANIC) => out.push(format!(
                    "the kernel panicked: {}",
                    self.line(KERNEL_PANIC).unwrap_or("")
                )),
                Check::PowerOff if !self.serial.contains(POWER_DOWN) => out.push(format!(
                    "the guest did not power off (no `{POWER_DOWN}`; {})",
                    self.end
                )),
                _ => {}
            }
        }
        out
    }

    /// `Ok` when every check holds, else a failure that displays the whole log.
    pub fn verify(&self, checks: &[Check]) -> Result<(), BootFailure> {
        self.fail_if(self.problems(checks))
    }

    /// `Ok` when `problems` is empty, else a failure carrying them and the whole log.
    pub fn fail_if(&self, problems: Vec<String>) -> Result<(), BootFailure> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BootFailure {
                log: Box::new(self.clone()),
                problems,
            })
        }
    }

    /// Panics with the whole log when a check does not hold.
    #[track_caller]
    pub fn assert(&self, checks: &[Check]) {
        if let Err(f) = self.verify(checks) {
            panic!("{f}");
        }
    }
}

/// Failed checks on a boot, displayed with the QEMU command and the full serial log.
#[derive(Debug)]
pub struct BootFailure {
    /// The boot.
    pub log: Box<BootLog>,
    /// What did not hold.
    pub problems: Vec<String>,
}

impl fmt::Display for BootFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.log;
        writeln!(f, "boot `{}` failed:", l.name)?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        writeln!(f, "command: {}", l.command)?;
        writeln!(f, "ended: {} after {:.1}s", l.end, l.elapsed.as_secs_f64())?;
        if !l.stderr.trim().is_empty() {
            writeln!(f, "----- QEMU stderr -----\n{}", l.stderr.trim_end())?;
        }
        writeln!(f, "----- serial log -----\n{}", l.serial.trim_end())?;
        write!(f, "----- end of serial log -----")
    }
}

impl std::error::Error for BootFailure {}

/// Where the first `printk.time` stamp (`[    2.265154]`) starts in `text`.
fn printk_stamp(text: &str) -> Option<usize> {
    text.match_indices('[').map(|(i, _)| i).find(|&i| {
        let Some((inner, _)) = text[i + 1..].split_once(']') else {
            return false;
        };
        let (secs, frac) = inner.trim_start().split_once('.').unwrap_or(("", ""));
        !secs.is_empty()
            && !frac.is_empty()
            && secs.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    })
}

/// The `key=value` tokens of a marker line (`STANDIN-REPORT pid=1 mounts=/dev,/proc ...`).
pub fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|t| t.split_once('='))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn log(serial: &str, end: End) -> BootLog {
        BootLog {
            name: "t".into(),
            command: "qemu".into(),
            serial: serial.into(),
            stderr: String::new(),
            end,
            elapsed: Duration::from_secs(1),
        }
    }

    const GOOD: &str = "[    0.000000] Linux version 6.1\n\
        [    1.820124] Run /init as init process\n\
        [    1.9] random: crng init done\nSTANDIN-REPORT pid=1 mounts=/dev,/proc argv0=/init\n\
        [    2.5] reboot: Power down\n";

    #[test]
    fn line_and_fields_find_markers_mid_line() {
        let l = log(GOOD, End::Exited(ExitStatus::from_raw(0)));
        let line = l.line("STANDIN-REPORT").unwrap();
        let f = fields(line);
        assert_eq!(f["pid"], "1");
        assert_eq!(f["mounts"], "/dev,/proc");
        assert_eq!(f.get("boottime_ns"), None);
        let mixed = log(
            "[ 1.0] x: yzSTANDIN-REPORT pid=3\n",
            End::TimedOut(Duration::ZERO),
        );
        assert_eq!(mixed.line("STANDIN-REPORT"), Some("STANDIN-REPORT pid=3"));
        let cut = log(
            "STANDIN-REPORT pid=1 argv0=/bin/kestrel[    2.265154] tsc: Refined TSC\n",
            End::TimedOut(Duration::ZERO),
        );
        let line = cut.line("STANDIN-REPORT").unwrap();
        assert_eq!(line, "STANDIN-REPORT pid=1 argv0=/bin/kestrel");
        assert_eq!(fields(line)["argv0"], "/bin/kestrel");
        let bracket = log(
            "STANDIN-REPORT a=[x] b=[1.] c=2\n",
            End::TimedOut(Duration::ZERO),
        );
        assert_eq!(
            bracket.line("STANDIN-REPORT"),
            Some("STANDIN-REPORT a=[x] b=[1.] c=2"),
            "only a stamp cuts the line"
        );
    }

    #[test]
    fn kernel_time_parses_printk_stamp() {
        let l = log(GOOD, End::Exited(ExitStatus::from_raw(0)));
        assert_eq!(l.kernel_time(RUN_INIT), Some(1.820124));
        assert_eq!(l.kernel_time("no such message"), None);
    }

    #[test]
    fn checks_report_each_problem() {
        let ok = log(GOOD, End::Exited(ExitStatus::from_raw(0)));
        let all = [
            Check::contains("pid=1"),
            Check::absent("fledge-init:"),
            Check::NoPanic,
            Check::PowerOff,
        ];
        assert!(ok.verify(&all).is_ok());

        let panicked = log(
            "Run /init as init process\nKernel panic - not syncing: Attempted to kill init!\n",
            End::Exited(ExitStatus::from_raw(0)),
        );
        let p = panicked.problems(&all);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("pid=1"), "{p:?}");
        assert!(p[1].contains("Attempted to kill init"), "{p:?}");
        assert!(p[2].contains("did not power off"), "{p:?}");

        let hung = log(GOOD, End::TimedOut(Duration::from_secs(5)));
        let msg = hung.verify(&[]).unwrap_err().to_string();
        assert!(msg.contains("killed after the 5s timeout"), "{msg}");
        assert!(
            msg.contains("----- serial log -----\n[    0.000000] Linux"),
            "{msg}"
        );
    }

    #[test]
    fn cmdline_starts_with_console_and_panic_settings() {
        let host = Host {
            target: crate::host::GuestTarget {
                qemu: "q".into(),
                console: "ttyS0".into(),
                rust_target: "x".into(),
                profile: "p".into(),
            },
            qemu: "q".into(),
            kernel: "/k".into(),
            busybox: "/bb".into(),
            kvm: false,
        };
        let b = Boot::new("t", Path::new("/i")).param("STANDIN=report");
        assert_eq!(
            b.cmdline(&host),
            "console=ttyS0 panic=-1 printk.time=1 STANDIN=report"
        );
        let cmd = describe(&b.command(&host));
        assert!(cmd.starts_with("q -accel tcg -m 256"), "{cmd}");
        assert!(
            cmd.contains("-no-reboot -kernel /k -initrd /i -append '"),
            "{cmd}"
        );
    }
}
