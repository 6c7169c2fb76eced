//! What the fledge builder writes into an image and `fledge-init` reads back: in-image paths,
//! the `fledge.*` option names and the formats of the files the builder bakes.
//!
//! Both sides depend on this crate, so a rename here changes both at once. It is `no_std` and
//! has no dependencies so the PID 1 can use it in its smallest build.
#![no_std]

extern crate alloc;

pub mod modules;
pub mod workload;

/// In-image paths both sides agree on.
pub mod paths {
    /// `fledge-init` itself (the kernel runs `/init`).
    pub const INIT: &str = "/init";
    /// On a root file system disk: a link to [`INIT`], where an init that switched to the disk
    /// looks first.
    pub const SBIN_INIT: &str = "/sbin/init";
    /// One line: the in-image path of the custom init (custom mode).
    pub const VOLANT_INIT: &str = "/.volant_init";
    /// The Volant agent: the hand-off target when there is no custom init.
    pub const AGENT: &str = "/bin/kestrel";
    /// busybox.
    pub const BUSYBOX: &str = "/bin/busybox";
    /// Where a host-file custom init (`init.path = "./my-init"`) is installed.
    pub const CUSTOM_INIT: &str = "/sbin/custom-init";
    /// `fledge.*` options baked by the builder (kernel command-line syntax, `#` comments).
    pub const INIT_CONF: &str = "/etc/fledge-init.conf";
    /// The workload spec (argv, env, working directory, user, limits, hostname) `fledge-init`
    /// starts the target with.
    pub const WORKLOAD: &str = "/etc/fledge/workload";
    /// The kernel modules `fledge-init` loads, in order: one line per module, the in-image
    /// absolute path of an uncompressed `.ko`, then optionally a space and its parameters; a
    /// leading `!` marks a module the boot needs (see [`crate::modules`]).
    pub const MODULES_LOAD: &str = "/etc/fledge/modules.load";
}

/// Names of the `fledge.*` options (in [`paths::INIT_CONF`] and on the kernel command line).
pub mod options {
    /// Prefix every option of ours carries on the kernel command line.
    pub const PREFIX: &str = "fledge.";
    /// `1|0`: stay PID 1 and supervise the target.
    pub const SUPERVISE: &str = "fledge.supervise";
    /// `poweroff|reboot`: what PID 1 does at the end.
    pub const EXIT: &str = "fledge.exit";
    /// Milliseconds between SIGTERM and SIGKILL at shutdown.
    pub const GRACE_MS: &str = "fledge.grace_ms";
    /// `both|kmsg|console`: where log lines go.
    pub const LOG: &str = "fledge.log";
    /// Working directory of the workload (overrides the spec's `cwd`).
    pub const CWD: &str = "fledge.cwd";
    /// `UID:GID` (numeric) the workload runs as (overrides the spec's `user`).
    pub const USER: &str = "fledge.user";
    /// `RLIMIT_NOFILE` of the workload (overrides the spec's `nofile`).
    pub const NOFILE: &str = "fledge.nofile";
    /// The hostname (overrides the spec's and the `ip=` field).
    pub const HOSTNAME: &str = "fledge.hostname";
    /// `NAME=VALUE` added to the workload's environment (repeatable, after the spec's).
    pub const ENV: &str = "fledge.env";
    /// Milliseconds to wait for the device `ip=` names to appear.
    pub const NET_WAIT_MS: &str = "fledge.net_wait_ms";
}

/// The machine-readable line `fledge-init` prints on the console (and in the kernel log) at
/// the end, just before power-off: `fledge-init: exit-status=N`, N the supervised workload's
/// status (exit code, or 128 + signal; 126/127 when it could not be started) or 1 after a fatal
/// error of the init itself. A kernel timestamp may precede it on the console.
pub mod exit_status {
    /// What the init logs (its log lines carry the `fledge-init: ` prefix).
    pub const KEY: &str = "exit-status=";
    /// What precedes the number on the console line.
    pub const MARKER: &str = "fledge-init: exit-status=";

    /// The status if `line` is the exit-status line.
    pub fn parse(line: &str) -> Option<u8> {
        let at = line.find(MARKER)? + MARKER.len();
        line[at..].trim_end().parse().ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn finds_the_status_behind_a_kernel_timestamp() {
            assert_eq!(MARKER.strip_suffix(KEY), Some("fledge-init: "));
            let cases = [
                ("fledge-init: exit-status=0", Some(0)),
                ("[    1.234567] fledge-init: exit-status=143\r", Some(143)),
                ("fledge-init: exit-status=256", None),
                ("fledge-init: exit-status=", None),
                ("fledge-init: /bin/app exited with status 3", None),
            ];
            for (line, want) in cases {
                assert_eq!(parse(line), want, "{line:?}");
            }
        }
    }
}

/// Booting a root file system disk: the keys Volant puts on the kernel command line for one
/// (`root=/dev/vda rootfstype=squashfs overlay_size=1G`) and the marker that tells the init of a
/// boot initramfs to mount the disk and switch to it.
pub mod rootfs {
    /// Present only in a boot initramfs: fledge-init there switches to the disk.
    pub const BOOT_MARKER: &str = "/etc/fledge/boot-rootfs";
    /// Defaults when the command line names none.
    pub const DEFAULT_DEVICE: &str = "/dev/vda";
    pub const DEFAULT_FSTYPE: &str = "squashfs";
    pub const DEFAULT_OVERLAY_SIZE: &str = "1G";
    /// How long the init waits for the disk to appear (`fledge.root_wait_ms=`).
    pub const DEFAULT_WAIT_MS: u64 = 10_000;
    pub const WAIT_KEY: &str = "fledge.root_wait_ms";

    /// The disk to boot, from the kernel command line (the last of each key wins).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Args<'a> {
        pub device: &'a str,
        pub fstype: &'a str,
        pub overlay_size: &'a str,
        pub wait_ms: u64,
    }

    /// Reads `root=`, `rootfstype=`, `overlay_size=` and `fledge.root_wait_ms=` from the
    /// marker's text (what the build baked: `[filesystem] overlay_size`), then from the kernel
    /// command line, which wins.
    pub fn args<'a>(baked: &'a str, cmdline: &'a str) -> Args<'a> {
        let mut a = Args {
            device: DEFAULT_DEVICE,
            fstype: DEFAULT_FSTYPE,
            overlay_size: DEFAULT_OVERLAY_SIZE,
            wait_ms: DEFAULT_WAIT_MS,
        };
        let baked = baked.lines().filter(|l| !l.trim_start().starts_with('#'));
        let tokens = baked.flat_map(str::split_ascii_whitespace);
        for token in tokens.chain(cmdline.split_ascii_whitespace()) {
            let Some((k, v)) = token.split_once('=') else {
                continue;
            };
            match k {
                "root" if !v.is_empty() => a.device = v,
                "rootfstype" if !v.is_empty() => a.fstype = v,
                "overlay_size" if !v.is_empty() => a.overlay_size = v,
                WAIT_KEY => {
                    if let Ok(ms) = v.parse() {
                        a.wait_ms = ms;
                    }
                }
                _ => {}
            }
        }
        a
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn volant_keys_are_read_and_defaults_fill_the_rest() {
            let baked = "# a comment root=/dev/x\noverlay_size=2G\n";
            assert_eq!(args(baked, "").overlay_size, "2G");
            assert_eq!(
                args(baked, "").device,
                DEFAULT_DEVICE,
                "comments are not read"
            );
            let a = args(
                baked,
                "console=ttyS0 root=/dev/vdb rootfstype=squashfs overlay_size=512M quiet",
            );
            assert_eq!(
                a,
                Args {
                    device: "/dev/vdb",
                    fstype: "squashfs",
                    overlay_size: "512M",
                    wait_ms: DEFAULT_WAIT_MS
                }
            );
            let d = args(
                "",
                "console=ttyS0 root= fledge.root_wait_ms=250 fledge.root_wait_ms=x",
            );
            assert_eq!(d.device, DEFAULT_DEVICE);
            assert_eq!(d.overlay_size, DEFAULT_OVERLAY_SIZE);
            assert_eq!(d.wait_ms, 250);
        }
    }
}
