//! The init's options: `fledge.*` keys from the file the builder bakes into the image
//! ([`fledge_abi::paths::INIT_CONF`]) and from the kernel command line (`/proc/cmdline`), which wins.
//! This module parses the text; the init reads the two files.
//!
//! Both use the same syntax: whitespace-separated `key=value` tokens; in the file a line whose
//! first non-blank character is `#` is a comment. Keys without the `fledge.` prefix (but `ip=`,
//! which the network step reads) and unknown `fledge.` keys are ignored (the kernel command line carries plenty of both); a bad value for
//! a known key is reported and the earlier value kept.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use fledge_abi::{options, workload};

/// What PID 1 does once there is nothing left to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitAction {
    /// `fledge.exit=poweroff` (default): QEMU and Cloud Hypervisor exit on it.
    #[default]
    PowerOff,
    /// `fledge.exit=reboot`: for hypervisors that only exit on reboot (Firecracker, `reboot=k`).
    Reboot,
}

/// Where log lines go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogTarget {
    /// `fledge.log=both` (default): `/dev/kmsg`, and the console when the kernel will not echo
    /// the record there itself, so each line shows once.
    #[default]
    Both,
    /// `fledge.log=kmsg`: `/dev/kmsg` only (the console when kmsg cannot be opened).
    Kmsg,
    /// `fledge.log=console`: the console only.
    Console,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `fledge.supervise=1|0`: stay PID 1 and run the target as a child. Default off.
    pub supervise: bool,
    /// `fledge.exit=poweroff|reboot`.
    pub exit: ExitAction,
    /// `fledge.grace_ms=N`: how long the remaining processes get between SIGTERM and SIGKILL at
    /// shutdown. Default 3000.
    pub grace: Duration,
    /// `fledge.log=both|kmsg|console`.
    pub log: LogTarget,
    /// `fledge.cwd=/path`: the workload's working directory (over the spec's).
    pub cwd: Option<String>,
    /// `fledge.user=UID:GID`: who the workload runs as (over the spec's).
    pub user: Option<(u32, u32)>,
    /// `fledge.nofile=N`: the workload's `RLIMIT_NOFILE` (over the spec's).
    pub nofile: Option<u64>,
    /// `fledge.hostname=NAME` (over the spec's and `ip=`'s).
    pub hostname: Option<String>,
    /// `fledge.env=NAME=VALUE`, repeatable: added after the spec's environment.
    pub env: Vec<String>,
    /// `fledge.net_wait_ms=N`: how long to wait for the device `ip=` names. Default 5000.
    pub net_wait: Duration,
    /// The kernel's own `ip=` option, as given.
    pub ip: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            supervise: false,
            exit: ExitAction::PowerOff,
            grace: Duration::from_millis(3000),
            log: LogTarget::Both,
            cwd: None,
            user: None,
            nofile: None,
            hostname: None,
            env: Vec::new(),
            net_wait: Duration::from_millis(5000),
            ip: None,
        }
    }
}

impl Options {
    /// Applies every `fledge.*` token in `text`, later tokens overriding earlier ones.
    pub fn apply(&mut self, text: &str, warnings: &mut Vec<String>) {
        let tokens = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(str::split_whitespace);
        for token in tokens {
            let Some((key, value)) = token.split_once('=') else {
                continue;
            };
            let ok = match key {
                options::SUPERVISE => parse_bool(value).map(|v| self.supervise = v),
                options::EXIT => match value {
                    "poweroff" => Some(ExitAction::PowerOff),
                    "reboot" => Some(ExitAction::Reboot),
                    _ => None,
                }
                .map(|v| self.exit = v),
                options::GRACE_MS => value
                    .parse()
                    .ok()
                    .map(|ms| self.grace = Duration::from_millis(ms)),
                options::LOG => match value {
                    "both" => Some(LogTarget::Both),
                    "kmsg" => Some(LogTarget::Kmsg),
                    "console" => Some(LogTarget::Console),
                    _ => None,
                }
                .map(|v| self.log = v),
                options::CWD => value
                    .starts_with('/')
                    .then(|| self.cwd = Some(value.into())),
                options::USER => workload::parse_user(value).map(|u| self.user = Some(u)),
                options::NOFILE => value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .map(|n| self.nofile = Some(n)),
                options::HOSTNAME => {
                    workload::valid_hostname(value).then(|| self.hostname = Some(value.into()))
                }
                options::ENV => workload::valid_env(value).then(|| self.env.push(value.into())),
                options::NET_WAIT_MS => value
                    .parse()
                    .ok()
                    .map(|ms| self.net_wait = Duration::from_millis(ms)),
                "ip" => {
                    self.ip = Some(value.into());
                    Some(())
                }
                _ => Some(()),
            };
            if ok.is_none() {
                warnings.push(format!("ignoring {key}={value}: not a valid value"));
            }
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Options, Vec<String>) {
        let mut o = Options::default();
        let mut w = Vec::new();
        o.apply(text, &mut w);
        (o, w)
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let (o, w) = parse("console=ttyS0 root=/dev/vda quiet STANDIN=report");
        assert_eq!(o, Options::default());
        assert!(w.is_empty(), "{w:?}");
        assert!(!o.supervise);
        assert_eq!(o.exit, ExitAction::PowerOff);
        assert_eq!(o.grace, Duration::from_millis(3000));
    }

    #[test]
    fn every_key_and_value() {
        let cases: &[(&str, Options)] = &[
            (
                "fledge.supervise=1",
                Options {
                    supervise: true,
                    ..Options::default()
                },
            ),
            ("fledge.supervise=0", Options::default()),
            (
                "fledge.exit=reboot",
                Options {
                    exit: ExitAction::Reboot,
                    ..Options::default()
                },
            ),
            ("fledge.exit=poweroff", Options::default()),
            (
                "fledge.grace_ms=250",
                Options {
                    grace: Duration::from_millis(250),
                    ..Options::default()
                },
            ),
            (
                "fledge.log=console",
                Options {
                    log: LogTarget::Console,
                    ..Options::default()
                },
            ),
            (
                "fledge.log=kmsg",
                Options {
                    log: LogTarget::Kmsg,
                    ..Options::default()
                },
            ),
            ("fledge.unknown=1 fledge.supervise", Options::default()),
            (
                "fledge.cwd=/srv fledge.user=1000:100 fledge.nofile=4096 fledge.hostname=vm1 \
                 fledge.env=A=1 fledge.env=B=x=y fledge.net_wait_ms=10 \
                 ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off",
                Options {
                    cwd: Some("/srv".into()),
                    user: Some((1000, 100)),
                    nofile: Some(4096),
                    hostname: Some("vm1".into()),
                    env: vec!["A=1".into(), "B=x=y".into()],
                    net_wait: Duration::from_millis(10),
                    ip: Some("10.0.2.15::10.0.2.2:255.255.255.0::eth0:off".into()),
                    ..Options::default()
                },
            ),
        ];
        for (text, want) in cases {
            let (got, w) = parse(text);
            assert_eq!(&got, want, "case {text:?}");
            assert!(w.is_empty(), "case {text:?}: {w:?}");
        }
    }

    #[test]
    fn bad_values_are_reported_and_ignored() {
        let (o, w) = parse(
            "fledge.grace_ms=5 fledge.grace_ms=soon fledge.exit=halt fledge.cwd=rel \
             fledge.user=1000 fledge.nofile=0 fledge.hostname=a/b fledge.env=NOEQ",
        );
        assert_eq!(o.grace, Duration::from_millis(5));
        assert_eq!(o.exit, ExitAction::PowerOff);
        assert_eq!(
            (o.cwd, o.user, o.nofile, o.hostname),
            (None, None, None, None)
        );
        assert!(o.env.is_empty());
        let keys = [
            "fledge.grace_ms=soon",
            "fledge.exit=halt",
            "fledge.cwd=rel",
            "fledge.user=1000",
            "fledge.nofile=0",
            "fledge.hostname=a/b",
            "fledge.env=NOEQ",
        ];
        let want: Vec<String> = keys
            .iter()
            .map(|k| format!("ignoring {k}: not a valid value"))
            .collect();
        assert_eq!(w, want);
    }

    #[test]
    fn comment_lines_are_skipped() {
        let (o, _) = parse("# fledge.supervise=1\n  # fledge.exit=reboot\nfledge.grace_ms=1\n");
        assert!(!o.supervise);
        assert_eq!(o.exit, ExitAction::PowerOff);
        assert_eq!(o.grace, Duration::from_millis(1));
    }
}
