//! The mount plan: which file systems PID 1 mounts, as a `const` table, and the one loop that
//! executes it through the small [`Sys`] trait (so tests can record the calls without root).

use core::ffi::CStr;

use crate::error::Error;
use crate::sys::{self, Errno};

/// One row of the mount plan.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: &'static CStr,
    pub target: &'static CStr,
    pub fstype: &'static CStr,
    pub flags: libc::c_ulong,
    pub data: Option<&'static CStr>,
    /// Mode for creating the mount point when it is missing.
    pub dir_mode: u32,
    /// An errno that means "already done" rather than failure.
    pub tolerate: i32,
    /// The boot goes on without it: a kernel without the file system (`ENODEV`) gets one info
    /// line, any other failure a warning.
    pub optional: bool,
}

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

/// What PID 1 mounts, parents first. EBUSY means the kernel (or an earlier stage) already
/// mounted it, which is fine. The first five are needed; the rest are what workloads expect
/// (ptys, POSIX shared memory and message queues, cgroup2) and optional.
pub const MOUNTS: &[Mount] = &[
    Mount {
        source: c"devtmpfs",
        target: c"/dev",
        fstype: c"devtmpfs",
        flags: NOSUID,
        data: Some(c"mode=0755"),
        dir_mode: 0o755,
        tolerate: libc::EBUSY,
        optional: false,
    },
    Mount {
        source: c"proc",
        target: c"/proc",
        fstype: c"proc",
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
        dir_mode: 0o555,
        tolerate: libc::EBUSY,
        optional: false,
    },
    Mount {
        source: c"sysfs",
        target: c"/sys",
        fstype: c"sysfs",
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
        dir_mode: 0o555,
        tolerate: libc::EBUSY,
        optional: false,
    },
    Mount {
        source: c"tmpfs",
        target: c"/tmp",
        fstype: c"tmpfs",
        flags: NOSUID | NODEV,
        data: Some(c"mode=1777"),
        dir_mode: 0o1777,
        tolerate: libc::EBUSY,
        optional: false,
    },
    Mount {
        source: c"tmpfs",
        target: c"/run",
        fstype: c"tmpfs",
        flags: NOSUID | NODEV,
        data: Some(c"mode=0755"),
        dir_mode: 0o755,
        tolerate: libc::EBUSY,
        optional: false,
    },
    Mount {
        source: c"devpts",
        target: c"/dev/pts",
        fstype: c"devpts",
        flags: NOSUID | NOEXEC,
        // gid 5 is `tty` on every common distribution.
        data: Some(c"ptmxmode=0666,mode=0620,gid=5"),
        dir_mode: 0o755,
        tolerate: libc::EBUSY,
        optional: true,
    },
    Mount {
        source: c"shm",
        target: c"/dev/shm",
        fstype: c"tmpfs",
        flags: NOSUID | NODEV,
        data: Some(c"mode=1777"),
        dir_mode: 0o1777,
        tolerate: libc::EBUSY,
        optional: true,
    },
    Mount {
        source: c"mqueue",
        target: c"/dev/mqueue",
        fstype: c"mqueue",
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
        dir_mode: 0o755,
        tolerate: libc::EBUSY,
        optional: true,
    },
    Mount {
        source: c"cgroup2",
        target: c"/sys/fs/cgroup",
        fstype: c"cgroup2",
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
        dir_mode: 0o555,
        tolerate: libc::EBUSY,
        optional: true,
    },
];

/// The symlinks programs expect in `/dev` (made after the mounts; one that exists is left).
pub const LINKS: &[(&CStr, &CStr)] = &[
    (c"/proc/self/fd", c"/dev/fd"),
    (c"/proc/self/fd/0", c"/dev/stdin"),
    (c"/proc/self/fd/1", c"/dev/stdout"),
    (c"/proc/self/fd/2", c"/dev/stderr"),
];

/// The calls the mount loop makes; the real one is [`RealSys`].
pub trait Sys {
    fn mkdir(&mut self, path: &CStr, mode: u32) -> Result<(), Errno>;
    fn mount(&mut self, m: &Mount) -> Result<(), Errno>;
}

/// [`Sys`] on the running kernel.
pub struct RealSys;

impl Sys for RealSys {
    fn mkdir(&mut self, path: &CStr, mode: u32) -> Result<(), Errno> {
        sys::mkdir(path, mode)
    }
    fn mount(&mut self, m: &Mount) -> Result<(), Errno> {
        sys::mount(m.source, m.target, m.fstype, m.flags, m.data)
    }
}

/// Creates each mount point if missing and mounts it, in table order; stops at the first error
/// that the row does not tolerate, unless the row is optional (then it logs and goes on).
pub fn mount_all(sys: &mut impl Sys, plan: &[Mount]) -> Result<(), Error> {
    for m in plan {
        if let Err(e) = mount_one(sys, m) {
            if !m.optional {
                return Err(e);
            }
            match e {
                Error::Mount {
                    cause: Errno(libc::ENODEV),
                    ..
                } => log::info!("no {} in this kernel: {} skipped", p(m.fstype), p(m.target)),
                e => log::warn!("{e}; going on without it"),
            }
        }
    }
    Ok(())
}

fn p(c: &CStr) -> &str {
    c.to_str().unwrap_or("?")
}

fn mount_one(sys: &mut impl Sys, m: &Mount) -> Result<(), Error> {
    match sys.mkdir(m.target, m.dir_mode) {
        Ok(()) | Err(Errno(libc::EEXIST)) => {}
        Err(cause) => {
            return Err(Error::Mkdir {
                path: m.target,
                cause,
            })
        }
    }
    match sys.mount(m) {
        Ok(()) => Ok(()),
        Err(e) if e.0 == m.tolerate => Ok(()),
        Err(cause) => Err(Error::Mount {
            fstype: m.fstype,
            target: m.target,
            cause,
        }),
    }
}

/// Makes the [`LINKS`], and a `/dev/ptmx` that opens the devpts at `/dev/pts`: the node
/// devtmpfs made is left as it is, and only where there is none (a `/dev` that is not
/// devtmpfs) a symlink `pts/ptmx` is made. Since Linux 4.7 opening that node finds the devpts
/// mounted at `pts` beside it, the topmost one, so a devpts the workload mounts again later
/// (Volant's agent does, as PID 1) serves its ptys; a bind mount of `/dev/pts/ptmx` over the node
/// would keep pointing into the first, hidden instance. Every mount of devtmpfs is the same file
/// system - in a namespace test, the host's own `/dev` - so the init never deletes from it.
/// Failures are warnings: only some programs need these.
pub fn make_links() {
    for (target, link) in LINKS {
        match sys::symlink(target, link) {
            Ok(()) | Err(Errno(libc::EEXIST)) => {}
            Err(e) => log::warn!("failed to link {} to {}: {e}", p(link), p(target)),
        }
    }
    let (ptmx, pts_ptmx) = (c"/dev/ptmx", c"/dev/pts/ptmx");
    if sys::lstat_mode(pts_ptmx, false).is_none() {
        return; // no devpts
    }
    if sys::lstat_mode(ptmx, false).is_none() {
        if let Err(e) = sys::symlink(c"pts/ptmx", ptmx) {
            log::warn!("failed to link /dev/ptmx to pts/ptmx: {e}");
        }
    }
}

/// Detaches everything in the plan, children first; failures do not matter any more at that
/// point (the next step is power-off).
pub fn unmount_all(plan: &[Mount]) {
    for m in plan.iter().rev() {
        let _ = sys::unmount(m.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Call {
        Mkdir(String, u32),
        Mount(String, String, String, libc::c_ulong, Option<String>),
    }

    /// Records every call; `fail` makes the call on that path return that errno.
    #[derive(Default)]
    struct Fake {
        calls: Vec<Call>,
        fail_mkdir: Option<(&'static str, i32)>,
        fail_mount: Option<(&'static str, i32)>,
    }

    fn s(c: &CStr) -> String {
        c.to_str().unwrap().to_string()
    }

    impl Sys for Fake {
        fn mkdir(&mut self, path: &CStr, mode: u32) -> Result<(), Errno> {
            self.calls.push(Call::Mkdir(s(path), mode));
            match self.fail_mkdir {
                Some((p, e)) if p == s(path) => Err(Errno(e)),
                _ => Ok(()),
            }
        }
        fn mount(&mut self, m: &Mount) -> Result<(), Errno> {
            self.calls.push(Call::Mount(
                s(m.source),
                s(m.target),
                s(m.fstype),
                m.flags,
                m.data.map(s),
            ));
            match self.fail_mount {
                Some((p, e)) if p == s(m.target) => Err(Errno(e)),
                _ => Ok(()),
            }
        }
    }

    fn mount(src: &str, target: &str, fs: &str, flags: libc::c_ulong, data: Option<&str>) -> Call {
        Call::Mount(
            src.into(),
            target.into(),
            fs.into(),
            flags,
            data.map(Into::into),
        )
    }

    #[test]
    fn runs_the_exact_call_sequence() {
        let mut fake = Fake::default();
        mount_all(&mut fake, MOUNTS).unwrap();
        let nse = NOSUID | NODEV | NOEXEC;
        assert_eq!(
            fake.calls,
            vec![
                Call::Mkdir("/dev".into(), 0o755),
                mount("devtmpfs", "/dev", "devtmpfs", NOSUID, Some("mode=0755")),
                Call::Mkdir("/proc".into(), 0o555),
                mount("proc", "/proc", "proc", nse, None),
                Call::Mkdir("/sys".into(), 0o555),
                mount("sysfs", "/sys", "sysfs", nse, None),
                Call::Mkdir("/tmp".into(), 0o1777),
                mount("tmpfs", "/tmp", "tmpfs", NOSUID | NODEV, Some("mode=1777")),
                Call::Mkdir("/run".into(), 0o755),
                mount("tmpfs", "/run", "tmpfs", NOSUID | NODEV, Some("mode=0755")),
                Call::Mkdir("/dev/pts".into(), 0o755),
                mount(
                    "devpts",
                    "/dev/pts",
                    "devpts",
                    NOSUID | NOEXEC,
                    Some("ptmxmode=0666,mode=0620,gid=5"),
                ),
                Call::Mkdir("/dev/shm".into(), 0o1777),
                mount(
                    "shm",
                    "/dev/shm",
                    "tmpfs",
                    NOSUID | NODEV,
                    Some("mode=1777")
                ),
                Call::Mkdir("/dev/mqueue".into(), 0o755),
                mount("mqueue", "/dev/mqueue", "mqueue", nse, None),
                Call::Mkdir("/sys/fs/cgroup".into(), 0o555),
                mount("cgroup2", "/sys/fs/cgroup", "cgroup2", nse, None),
            ]
        );
    }

    #[test]
    fn existing_mount_points_and_busy_mounts_are_fine() {
        let mut fake = Fake {
            fail_mkdir: Some(("/proc", libc::EEXIST)),
            fail_mount: Some(("/dev", libc::EBUSY)),
            ..Fake::default()
        };
        mount_all(&mut fake, MOUNTS).unwrap();
        assert_eq!(fake.calls.len(), 2 * MOUNTS.len());
    }

    #[test]
    fn a_failed_mount_stops_the_plan_and_names_the_step() {
        let mut fake = Fake {
            fail_mount: Some(("/sys", libc::ENODEV)),
            ..Fake::default()
        };
        let err = mount_all(&mut fake, MOUNTS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to mount sysfs on /sys: No such device"
        );
        assert_eq!(fake.calls.len(), 6, "nothing after /sys: {:?}", fake.calls);
    }

    #[test]
    fn optional_file_systems_the_kernel_lacks_are_skipped() {
        for (target, errno) in [
            ("/dev/mqueue", libc::ENODEV),
            ("/sys/fs/cgroup", libc::EPERM),
        ] {
            let mut fake = Fake {
                fail_mount: Some((target, errno)),
                ..Fake::default()
            };
            mount_all(&mut fake, MOUNTS).unwrap_or_else(|e| panic!("{target}: {e}"));
            assert_eq!(
                fake.calls.len(),
                2 * MOUNTS.len(),
                "{target}: all rows tried"
            );
        }
        let mut fake = Fake {
            fail_mkdir: Some(("/sys/fs/cgroup", libc::ENOENT)),
            ..Fake::default()
        };
        mount_all(&mut fake, MOUNTS).unwrap();
        let required: Vec<_> = MOUNTS.iter().filter(|m| !m.optional).collect();
        assert_eq!(required.len(), 5, "dev, proc, sys, tmp, run stay required");
    }

    #[test]
    fn a_failed_mkdir_names_the_path() {
        let mut fake = Fake {
            fail_mkdir: Some(("/tmp", libc::EROFS)),
            ..Fake::default()
        };
        let err = mount_all(&mut fake, MOUNTS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to create /tmp: Read-only file system"
        );
    }

    #[test]
    fn table_is_absolute_unique_and_parents_first() {
        for (i, m) in MOUNTS.iter().enumerate() {
            let t = s(m.target);
            assert!(t.starts_with('/'), "row {i} ({t}): not absolute");
            for (j, other) in MOUNTS.iter().enumerate() {
                let o = s(other.target);
                if i != j {
                    assert_ne!(t, o, "rows {i} and {j}: duplicate target");
                }
                let parent_of_t = t.starts_with(&format!("{}/", o.trim_end_matches('/')));
                assert!(
                    !parent_of_t || j < i,
                    "row {i} ({t}) comes before its parent row {j} ({o})"
                );
            }
        }
    }
}
