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
use core::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::options::LogTarget;
use crate::sys;

struct Klog {
    kmsg: AtomicI32,
    target: AtomicU8,
    /// The kernel's console log level; 0 while unknown (then nothing counts as echoed).
    console_level: AtomicU8,
}

static LOGGER: Klog = Klog {
    kmsg: AtomicI32::new(-1),
    target: AtomicU8::new(0),
    console_level: AtomicU8::new(0),
};

/// Installs the logger (console only until [`open_kmsg`]).
pub fn install() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

/// Opens `/dev/kmsg` (close-on-exec) once `/dev` is mounted; silently stays on the console if it
/// cannot.
pub fn open_kmsg() {
    if let Ok(fd) = sys::open_wo(c"/dev/kmsg") {
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

/// Whether the console still needs the line after a successful `/dev/kmsg` write.
fn console_needs(target: LogTarget, level: u8, console_level: u8) -> bool {
    match target {
        LogTarget::Console => true,
        LogTarget::Kmsg => false,
        LogTarget::Both => level >= console_level,
    }
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

impl Log for Klog {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let (kmsg_line, console_line) = render(record.level(), record.args());
        let target = match self.target.load(Ordering::Relaxed) {
            x if x == LogTarget::Kmsg as u8 => LogTarget::Kmsg,
            x if x == LogTarget::Console as u8 => LogTarget::Console,
            _ => LogTarget::Both,
        };
        let kmsg = self.kmsg.load(Ordering::Relaxed);
        let mut written = false;
        if kmsg >= 0 && target != LogTarget::Console {
            written = sys::write(kmsg, kmsg_line.as_bytes());
        }
        let level = kernel_level(record.level());
        let console_level = self.console_level.load(Ordering::Relaxed);
        if !written || console_needs(target, level, console_level) {
            sys::write(2, console_line.as_bytes());
        }
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
        // (target, record level, console level) -> write to the console ourselves?
        let cases = [
            (LogTarget::Both, 3, 7, false), // the kernel echoes an error at the default level
            (LogTarget::Both, 6, 4, true),  // `quiet`: info is not echoed
            (LogTarget::Both, 3, 4, false), // `quiet`: errors still are
            (LogTarget::Both, 6, 0, true),  // level unknown
            (LogTarget::Kmsg, 6, 4, false),
            (LogTarget::Console, 3, 7, true),
        ];
        for (i, (target, level, console, want)) in cases.into_iter().enumerate() {
            assert_eq!(console_needs(target, level, console), want, "case {i}");
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
