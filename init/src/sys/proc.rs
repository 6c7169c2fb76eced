//! Processes and signals, time, limits, the host name and the end of the machine.
//!
//! The code that runs in a forked child before `exec` ([`spawn`]) lives here: between `fork`
//! and `exec` only async-signal-safe calls are allowed, and keeping them in one function makes
//! that easy to check.

use alloc::ffi::CString;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{c_int, CStr};
use core::ptr;
use core::time::Duration;

use rustix::process::{Gid, Resource, Rlimit, Uid, WaitOptions};
use rustix::system::RebootCommand;
use rustix::thread::Timespec;

use super::{check, r, Errno};

/// The monotonic clock. (The C library's call, through the vDSO it has found already:
/// rustix's own would first have to find the vDSO through the auxiliary vector, which at boot
/// means `prctl` or a `/proc` that is not mounted yet.)
pub fn now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sleeps for `d`.
pub fn sleep(d: Duration) {
    let ts = Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    };
    let _ = rustix::thread::nanosleep(&ts);
}

/// Ends the process (not PID 1: see `crate::finish`).
pub fn exit(status: i32) -> ! {
    // SAFETY: _exit has no preconditions; nothing is buffered in user space.
    unsafe { libc::_exit(status) }
}

pub fn getpid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// Powers the machine off, or restarts it when `restart`. Only ever called through
/// `crate::finish`, which checks that this process is PID 1 first: as root on a host, a power
/// off would power the host off. Returns only the reason it was refused.
pub fn reboot(restart: bool) -> Errno {
    let cmd = if restart {
        RebootCommand::Restart
    } else {
        RebootCommand::PowerOff
    };
    match rustix::system::reboot(cmd) {
        Ok(()) => Errno(0),
        Err(e) => e.into(),
    }
}

/// Asks the kernel to send SIGINT to PID 1 on Ctrl-Alt-Del instead of rebooting at once.
pub fn disable_ctrl_alt_del() {
    if getpid() == 1 {
        let _ = rustix::system::reboot(RebootCommand::CadOff);
    }
}

/// Sleeps until a signal arrives; with every signal blocked, that is forever.
pub fn pause() {
    rustix::event::pause();
}

pub fn sethostname(name: &str) -> Result<(), Errno> {
    r(rustix::system::sethostname(name.as_bytes()))
}

/// Sets the soft and hard `RLIMIT_NOFILE` to `n`.
pub fn set_nofile(n: u64) -> Result<(), Errno> {
    let limit = Rlimit {
        current: Some(n),
        maximum: Some(n),
    };
    r(rustix::process::setrlimit(Resource::Nofile, limit))
}

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

/// Signals raised by faults in the init itself: blocking them would turn a crash into a hang.
pub const FAULTS: [c_int; 7] = [
    libc::SIGSEGV,
    libc::SIGTRAP,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGSYS,
];

impl SigSet {
    /// Every signal except the fault signals.
    pub fn all_but_faults() -> SigSet {
        // SAFETY: sigset_t is plain data, which sigfillset initialises fully; sigdelset gets a
        // valid set and valid signal numbers.
        unsafe {
            let mut set: libc::sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in FAULTS {
                libc::sigdelset(&mut set, sig);
            }
            SigSet(set)
        }
    }

    /// Blocks the signals in `self`; returns the mask that was in effect before.
    pub fn block(&self) -> Result<SigSet, Errno> {
        // SAFETY: sigset_t is plain data that sigprocmask overwrites; both pointers are valid.
        let (rc, old) = unsafe {
            let mut old: libc::sigset_t = core::mem::zeroed();
            let rc = libc::sigprocmask(libc::SIG_SETMASK, &self.0, &mut old);
            (rc, old)
        };
        check(rc).map(|_| SigSet(old))
    }

    /// Waits for one of the (blocked) signals in `self`, at most `timeout` (forever if `None`).
    /// `None` on timeout or interruption.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<c_int> {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i32::MAX as u64) as _,
            tv_nsec: t.subsec_nanos() as _,
        });
        let tsp = ts
            .as_ref()
            .map_or(ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `self.0` is a valid sigset_t; the siginfo pointer may be null; `tsp` is null or
        // points at `ts`, which outlives the call.
        let sig = unsafe { libc::sigtimedwait(&self.0, ptr::null_mut(), tsp) };
        (sig > 0).then_some(sig)
    }
}

/// Sends `sig` (any signal number, real-time ones too) to `pid` (`-1`: every process).
pub fn kill(pid: i32, sig: c_int) -> Result<(), Errno> {
    // SAFETY: kill takes plain integers.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// One `waitpid(-1, WNOHANG)`: `Ok(Some((pid, status)))` for a reaped child, `Ok(None)` when
/// children remain but none has exited, `Err(ECHILD)` when there are none left.
pub fn reap_one() -> Result<Option<(i32, c_int)>, Errno> {
    let reaped = r(rustix::process::wait(WaitOptions::NOHANG))?;
    Ok(reaped.map(|(pid, status)| (pid.as_raw_nonzero().get(), status.as_raw())))
}

/// A step of starting the target that can fail, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Groups,
    Gid,
    Uid,
    Chdir,
    Exec,
}

/// Everything starting the target needs, as C strings made before `fork` (the child may not
/// allocate).
pub struct Command {
    pub path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    user: Option<(Uid, Gid)>,
    groups: Vec<Gid>,
}

impl Command {
    /// `None` when a string contains a NUL (the workload spec refuses those already).
    pub fn new(
        path: &str,
        argv: &[String],
        env: &[String],
        cwd: Option<&str>,
        user: Option<(u32, u32)>,
        groups: &[u32],
    ) -> Option<Command> {
        let c = |s: &str| CString::new(s).ok();
        let all = |v: &[String]| v.iter().map(|s| c(s)).collect::<Option<Vec<_>>>();
        Some(Command {
            path: c(path)?,
            argv: all(argv)?,
            envp: all(env)?,
            cwd: match cwd {
                Some(d) => Some(c(d)?),
                None => None,
            },
            user: user.map(|(u, g)| (Uid::from_raw(u), Gid::from_raw(g))),
            groups: groups.iter().map(|&g| Gid::from_raw(g)).collect(),
        })
    }

    /// Runs the steps in this process: groups, gid, uid (with `user`), chdir (with a working
    /// directory), then `execve`. Returns only on failure, with the step and errno. Makes only
    /// async-signal-safe calls, so a forked child may use it: the ids are set with raw system
    /// calls for this thread alone (the C library's wrappers synchronise every thread, and
    /// this process has one).
    fn run(&self, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> (Step, Errno) {
        if let Some((uid, gid)) = self.user {
            if let Err(e) = rustix::thread::set_thread_groups(&self.groups) {
                return (Step::Groups, e.into());
            }
            if let Err(e) = rustix::thread::set_thread_gid(gid) {
                return (Step::Gid, e.into());
            }
            if let Err(e) = rustix::thread::set_thread_uid(uid) {
                return (Step::Uid, e.into());
            }
        }
        if let Some(dir) = &self.cwd {
            if let Err(e) = rustix::process::chdir(dir.as_c_str()) {
                return (Step::Chdir, e.into());
            }
        }
        // SAFETY: `path` is valid; `argv` and `envp` are NULL-terminated arrays of pointers into
        // `self`, which outlives the call.
        unsafe { libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        (Step::Exec, Errno::last())
    }

    fn pointers(v: &[CString]) -> Vec<*const libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(core::iter::once(ptr::null()))
            .collect()
    }

    /// Becomes the target in this process (exec mode). Returns only the failure.
    pub fn exec(&self) -> (Step, Errno) {
        self.run(&Self::pointers(&self.argv), &Self::pointers(&self.envp))
    }
}

/// Forks a child that runs `cmd` with a clean slate: the signal mask `original`, SIGPIPE at
/// its default, a session of its own with the console (if fd 0 is a terminal) as controlling
/// tty, and no fd above 2. If a step fails, the child writes `messages[step]` plus the errno
/// text to fd 2 and exits with 127 (exec: not found) or 126 (anything else).
pub fn spawn(cmd: &Command, original: &SigSet, messages: &[Vec<u8>; 5]) -> Result<i32, Errno> {
    let (argv, envp) = (Command::pointers(&cmd.argv), Command::pointers(&cmd.envp));
    // SAFETY: the init is single-threaded, so the child's copy of memory is consistent; the
    // child below only makes async-signal-safe calls and never returns.
    let pid = check(unsafe { libc::fork() })?;
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY: async-signal-safe calls on values prepared before fork; the child
    // ends in execve or _exit.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &original.0, ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::setsid();
        if libc::isatty(0) == 1 {
            // Failure is fine: the console may belong to another session, or not be a tty.
            libc::ioctl(0, libc::TIOCSCTTY as _, 0);
        }
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            // Kernels before 5.9 lack close_range.
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
        let (step, Errno(err)) = cmd.run(&argv, &envp);
        let msg = &messages[step as usize];
        libc::write(2, msg.as_ptr().cast(), msg.len());
        let text = libc::strerror(err);
        libc::write(2, text.cast(), libc::strlen(text));
        libc::write(2, b"\n".as_ptr().cast(), 1);
        let not_found = step == Step::Exec && (err == libc::ENOENT || err == libc::ENOTDIR);
        libc::_exit(if not_found { 127 } else { 126 })
    }
}

/// The process's environment (`NAME=VALUE` entries the kernel gave PID 1), skipping entries
/// that are not UTF-8.
pub fn environment() -> Vec<String> {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut out = Vec::new();
    // SAFETY: the C runtime keeps `environ` a NULL-terminated array of valid C strings, and
    // nothing in this single-threaded program changes it.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            if let Ok(s) = CStr::from_ptr(*p).to_str() {
                out.push(String::from(s));
            }
            p = p.add(1);
        }
    }
    out
}
