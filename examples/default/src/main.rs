//! `example-agent`: stands in for Volant's agent `kestrel` in the default-mode example (the real
//! agent is downloaded from GitHub releases; this example builds offline).
//!
//! In a default-mode image fledge-init is `/init`: it mounts `/dev /proc /sys /tmp /run` and
//! execs `/bin/kestrel` - this program - as PID 1. It prints one line saying who it is and which
//! of those filesystems it finds mounted, then powers the VM off. A real agent would serve
//! Volant's API here instead. Run anywhere but as PID 1, it prints the line and exits.

mod sys;

/// The filesystems fledge-init mounts before it hands over to the agent.
const EXPECTED_MOUNTS: [&str; 5] = ["/dev", "/proc", "/sys", "/tmp", "/run"];

fn main() {
    let pid = std::process::id();
    let argv0 = std::env::args().next().unwrap_or_default();
    let mounted = match std::fs::read_to_string("/proc/mounts") {
        Ok(table) => mounted(&table, &EXPECTED_MOUNTS).join(","),
        Err(e) => format!("(none: cannot read /proc/mounts: {e})"),
    };
    println!("example-agent: pid {pid}, argv0 {argv0}, mounted {mounted}");
    if pid != 1 {
        return;
    }
    println!("example-agent: done, powering off");
    let e = sys::power_off();
    // Returning from PID 1 would make the kernel panic; say why the power-off failed instead.
    eprintln!("example-agent: reboot(RB_POWER_OFF) failed: {e}");
    loop {
        std::thread::park();
    }
}

/// Those of `wanted` that are mount points in `table` (the text of `/proc/mounts`), in the
/// order of `wanted`.
fn mounted<'a>(table: &str, wanted: &[&'a str]) -> Vec<&'a str> {
    let points: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    wanted
        .iter()
        .copied()
        .filter(|w| points.contains(w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_lists_the_wanted_mount_points_present_in_the_table() {
        let table = "devtmpfs /dev devtmpfs rw 0 0\n\
                     proc /proc proc rw 0 0\n\
                     tmpfs /tmp tmpfs rw 0 0\n\
                     tmpfs /run/user tmpfs rw 0 0\n";
        assert_eq!(mounted(table, &EXPECTED_MOUNTS), ["/dev", "/proc", "/tmp"]);
        assert!(mounted("", &EXPECTED_MOUNTS).is_empty());
    }
}
