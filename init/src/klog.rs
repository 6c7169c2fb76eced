//! Logging: a tiny `log::Log` that writes `<level>fledge-init: message` records to `/dev/kmsg`
//! (so they land in the kernel log with the right priority) and `fledge-init: message` lines to
//! the console (fd 2), as `fledge.log` says. Until `/dev/kmsg` is open, the console is the only
//! place. With `both` (the default) a record goes to the console directly only when the kernel
//! will not echo it there itself - its level is not below the console log level
//! (`/proc/sys/kernel/printk`, lowered by `quiet`) - so every line shows once.
//!
//! Each record is one `write` call, because `/dev/kmsg` turns each write into one record. The
//! kernel rate-limits writes to `/dev/kmsg` (`printk.devkmsg=ratelimit`, the default: a burst of
//! about ten lines, then a pause); the init logs a handful of lines, so that is only a concern for
//! debug output.

use alloc::format;
use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::options::LogTarget;
use crate::sys;

struct Klog {
    kmsg: AtomicI32,
    target: AtomicU8,
    /// The kernel's console log level; 0 while unknown (then nothing counts as echoed).
    console_level: AtomicU8,
    /// fd 2 is the kernel console, which the kernel echoes records to.
    stderr_console: AtomicBool,
}

static LOGGER: Klog = Klog {
    kmsg: AtomicI32::new(-1),
    target: AtomicU8::new(0),
    console_level: AtomicU8::new(0),
    stderr_console: AtomicBool::new(false),
};

/// Installs the logger (console only until [`open_kmsg`]).
pub fn install() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

/// Opens `/dev/kmsg` (close-on-exec) once `/dev` is mounted and fds 0-2 are set up; silently
/// stays on the console if it cannot.
pub fn open_kmsg() {
    LOGGER
        .stderr_console
        .store(sys::stderr_is_console(), Ordering::Relaxed);
    if let Ok(fd) = sys::open_forever(c"/dev/kmsg") {
        LOGGER.kmsg.store(fd, Ordering::Relaxed);
    }
    if let Ok(text) = sys::read_to_string(c"/proc/sys/kernel/printk", 64) {
        LOGGER
            .console_level
            .store(console_level(&text), Ordering::Relaxed);
    }
}

/// The first field of `/proc/sys/kernel/printk`: records below it reach the console.
fn console_level(printk: &str) -> u8 {
    printk
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// Whether fd 2 still needs the line after a successful `/dev/kmsg` write. When fd 2 is not
/// the kernel console (pipes in a namespace test), the kernel's echo does not reach it: then
/// `both` writes every line there and `kmsg` the errors.
fn console_needs(target: LogTarget, level: u8, console_level: u8, stderr_console: bool) -> bool {
    match target {
        LogTarget::Console => true,
        LogTarget::Kmsg => !stderr_console && level <= 3,
        LogTarget::Both => !stderr_console || level >= console_level,
    }
}

/// Logs the [`fledge_abi::exit_status`] line: it reaches the console whatever `fledge.log`
/// says, because the host reads it there.
pub fn exit_status(code: i32) {
    let target = match LOGGER.target() {
        LogTarget::Kmsg => LogTarget::Both,
        t => t,
    };
    let args = format_args!("{}{code}", fledge_abi::exit_status::KEY);
    LOGGER.emit(Level::Info, &args, target);
}

/// Applies `fledge.log`.
pub fn set_target(target: LogTarget) {
    LOGGER.target.store(target as u8, Ordering::Relaxed);
}

/// The kernel's priority for a `log` level (KERN_ERR, KERN_WARNING, KERN_INFO, KERN_DEBUG).
fn kernel_level(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// The two renderings of one record: for `/dev/kmsg` and for the console.
fn render(level: Level, args: &core::fmt::Arguments<'_>) -> (String, String) {
    let mut console = String::with_capacity(96);
    let _ = writeln!(console, "fledge-init: {args}");
    let kmsg = format!("<{}>{console}", kernel_level(level));
    (kmsg, console)
}

impl Klog {
    fn target(&self) -> LogTarget {
        match self.target.load(Ordering::Relaxed) {
            x if x == LogTarget::Kmsg as u8 => LogTarget::Kmsg,
            x if x == LogTarget::Console as u8 => LogTarget::Console,
            _ => LogTarget::Both,
        }
    }

    fn emit(&self, level: Level, args: &core::fmt::Arguments<'_>, target: LogTarget) {
        let (kmsg_line, console_line) = render(level, args);
        let kmsg = self.kmsg.load(Ordering::Relaxed);
        let mut written = false;
        if kmsg >= 0 && target != LogTarget::Console {
            written = sys::write(kmsg, kmsg_line.as_bytes());
        }
        let level = kernel_level(level);
        let console_level = self.console_level.load(Ordering::Relaxed);
        let stderr_console = self.stderr_console.load(Ordering::Relaxed);
        if !written || console_needs(target, level, console_level, stderr_console) {
            sys::write(2, console_line.as_bytes());
        }
    }
}

impl Log for Klog {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        self.emit(record.level(), record.args(), self.target());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_reaches_the_console_once() {
        assert_eq!(console_level("7\t4\t1\t7\n"), 7);
        assert_eq!(console_level("4 4 1 7"), 4);
        assert_eq!(console_level("junk"), 0);
        // (target, record level, console level, fd 2 is the console) -> write to fd 2 ourselves?
        let cases = [
            (LogTarget::Both, 3, 7, true, false), // the kernel echoes an error at the default level
            (LogTarget::Both, 6, 4, true, true),  // `quiet`: info is not echoed
            (LogTarget::Both, 3, 4, true, false), // `quiet`: errors still are
            (LogTarget::Both, 6, 0, true, true),  // level unknown
            (LogTarget::Both, 3, 7, false, true), // fd 2 is a pipe: the echo does not reach it
            (LogTarget::Kmsg, 6, 4, true, false),
            (LogTarget::Kmsg, 6, 4, false, false),
            (LogTarget::Kmsg, 3, 4, false, true), // fatal lines reach a pipe
            (LogTarget::Console, 3, 7, true, true),
        ];
        for (i, (target, level, console, on_console, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                console_needs(target, level, console, on_console),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn records_carry_the_kernel_level_and_prefix() {
        let cases = [
            (Level::Error, "<3>fledge-init: boom\n"),
            (Level::Warn, "<4>fledge-init: boom\n"),
            (Level::Info, "<6>fledge-init: boom\n"),
            (Level::Debug, "<7>fledge-init: boom\n"),
        ];
        for (level, want) in cases {
            let (kmsg, console) = render(level, &format_args!("boom"));
            assert_eq!(kmsg, want, "level {level}");
            assert_eq!(console, "fledge-init: boom\n", "level {level}");
        }
    }
}
