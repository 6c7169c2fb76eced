//! Logging: a tiny `log::Log` that writes `<level>fledge-init: message` records to `/dev/kmsg`
//! (so they land in the kernel log with the right priority) and `fledge-init: message` lines to
//! the console (fd 2), as `fledge.log` says. Until `/dev/kmsg` is open, the console is the only
//! place.
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
}

static LOGGER: Klog = Klog {
    kmsg: AtomicI32::new(-1),
    target: AtomicU8::new(0),
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
        if target != LogTarget::Kmsg || !written {
            sys::write(2, console_line.as_bytes());
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

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
