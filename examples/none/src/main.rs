//! `none-init`: the whole userspace of the none-mode example. With `[init] none = true` nothing
//! of fledge runs at boot: the kernel execs this program as `/init`, PID 1, with no filesystem
//! mounted (the image's `/dev/console` node already gives it a console).
//!
//! It mounts `/proc`, prints a line with its pid and what `/proc` tells it, and powers the VM off
//! with `reboot(RB_POWER_OFF)` - PID 1 must never exit, or the kernel panics. Run anywhere but as
//! PID 1 (say, on the host), it touches no mount and no power: it prints its line and exits.

mod sys;

use std::fs;

fn main() {
    let pid = std::process::id();
    if pid != 1 {
        println!("none-init: pid {pid}, not PID 1: leaving mounts and power alone");
        return;
    }
    match sys::mount_proc() {
        Ok(()) => println!("none-init: pid {pid}, {}", describe_kernel()),
        Err(e) => println!("none-init: pid {pid}, cannot mount /proc: {e}"),
    }
    println!("none-init: done, powering off");
    let e = sys::power_off();
    // Returning from PID 1 would make the kernel panic; say why the power-off failed instead.
    eprintln!("none-init: reboot(RB_POWER_OFF) failed: {e}");
    loop {
        std::thread::park();
    }
}

/// The kernel release and uptime read from `/proc`.
fn describe_kernel() -> String {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease");
    let uptime = fs::read_to_string("/proc/uptime");
    match (release, uptime) {
        (Ok(r), Ok(u)) => format!("kernel {}, up {}", r.trim(), uptime_seconds(&u)),
        (Err(e), _) | (_, Err(e)) => format!("cannot read /proc: {e}"),
    }
}

/// The first field of `/proc/uptime` ("12.34 5.67") as "12.34s".
fn uptime_seconds(text: &str) -> String {
    let first = text.split_whitespace().next().unwrap_or("?");
    format!("{first}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_the_first_field_in_seconds() {
        assert_eq!(uptime_seconds("0.53 0.10\n"), "0.53s");
        assert_eq!(uptime_seconds(""), "?s");
    }
}
