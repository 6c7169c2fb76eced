//! Every system call the init makes that needs `unsafe`, behind safe wrappers - and the runtime
//! pieces that `std` would otherwise provide: the C entry point, the global allocator (the C
//! library's `malloc`) and the panic handler. Nothing outside this module uses `unsafe`.
//!
//! The code that runs in a forked child before `exec` (`spawn`) also lives here: between `fork`
//! and `exec` only async-signal-safe calls are allowed, and keeping them in one function makes
//! that easy to check.
#![allow(unsafe_code)]

use alloc::ffi::CString;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::{c_int, CStr};
use core::fmt;
use core::ptr;
use core::time::Duration;

// Without `std` nothing else asks the linker for the C library (the `libc` crate leaves that to
// `std` when its default `std` feature is on, as it is elsewhere in the workspace).
#[link(name = "c")]
extern "C" {}

/// The C entry point. The binary has no `std`: its panic machinery alone (the default panic
/// hook's backtrace symboliser) would be most of the binary. `std`'s `main` wrapper would also
/// open `/dev/null` onto closed fds 0-2 and abort when it cannot - at boot `/dev` may still be
/// empty, and an abort in PID 1 panics the kernel - and set SIGPIPE to ignored, which the target
/// would inherit.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const core::ffi::c_char) -> c_int {
    crate::run()
}

/// The allocator: the C library's `malloc`, which is linked in anyway.
#[cfg(not(test))]
struct Malloc;

#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: Malloc = Malloc;

/// What `malloc` aligns to on every Linux C library the init is built for.
#[cfg(not(test))]
const MALLOC_ALIGN: usize = 16;

// SAFETY: malloc/realloc/free and posix_memalign return memory of at least the requested size
// and alignment (or null), and free accepts what they returned.
#[cfg(not(test))]
unsafe impl core::alloc::GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: malloc has no preconditions.
            unsafe { libc::malloc(layout.size()).cast() }
        } else {
            let mut p = ptr::null_mut();
            // SAFETY: the alignment is a power of two and a multiple of the pointer size.
            let rc = unsafe { libc::posix_memalign(&mut p, layout.align(), layout.size()) };
            if rc == 0 {
                p.cast()
            } else {
                ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, _layout: core::alloc::Layout) {
        // SAFETY: `p` came from malloc or posix_memalign (the GlobalAlloc contract).
        unsafe { libc::free(p.cast()) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: core::alloc::Layout, size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: `p` came from malloc (small alignment) and `size` is non-zero.
            unsafe { libc::realloc(p.cast(), size).cast() }
        } else {
            // SAFETY: the GlobalAlloc contract holds for the default copy-and-free path.
            unsafe {
                let new_layout =
                    core::alloc::Layout::from_size_align_unchecked(size, layout.align());
                let q = self.alloc(new_layout);
                if !q.is_null() {
                    ptr::copy_nonoverlapping(p, q, layout.size().min(size));
                    self.dealloc(p, layout);
                }
                q
            }
        }
    }
}

// The precompiled `alloc` library is built for unwinding: its landing pads name the two symbols
// below. Panics here never unwind (the handler never returns), so neither is ever called.
/// Named by landing pads in precompiled library code; unreachable.
#[cfg(all(not(test), panic = "abort"))]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// Named by landing pads in precompiled library code; unreachable.
#[cfg(all(not(test), panic = "abort"))]
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
extern "C" fn _Unwind_Resume() -> ! {
    panic!("unwinding is not supported")
}

/// A panic is a bug; it ends PID 1 the way any fatal error does (one line, sync, exit action).
#[cfg(all(not(test), panic = "abort"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::panicked(info)
}

/// An `errno` value; prints as the C library's text for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    fn last() -> Errno {
        // SAFETY: __errno_location returns this thread's errno, valid for the whole thread.
        Errno(unsafe { *libc::__errno_location() })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 128];
        // SAFETY: the buffer is valid for its length; the XSI strerror_r (musl and, through the
        // libc crate, glibc's __xpg_strerror_r) always NUL-terminates within it.
        let rc = unsafe { libc::strerror_r(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        let text = CStr::from_bytes_until_nul(&buf)
            .ok()
            .and_then(|s| s.to_str().ok())
            .filter(|s| rc == 0 && !s.is_empty());
        match text {
            Some(s) => f.write_str(s),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// `s` as a C string; one with a NUL inside becomes the empty string, which no call accepts.
pub fn cstring(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn check(rc: c_int) -> Result<c_int, Errno> {
    if rc == -1 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

pub fn mkdir(path: &CStr, mode: u32) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string.
    check(unsafe { libc::mkdir(path.as_ptr(), mode) }).map(drop)
}

pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    let data = data.map_or(ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: all strings are valid and NUL-terminated; `data` is one of them or null.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data,
        )
    })
    .map(drop)
}

/// Lazily detaches the mount on `target`.
pub fn unmount(target: &CStr) -> Result<(), Errno> {
    // SAFETY: `target` is a valid NUL-terminated string.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

pub fn fd_is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; any fd number is allowed.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Opens `path` read-write (close-on-exec when `cloexec`), returning the fd.
pub fn open_rw(path: &CStr, cloexec: bool) -> Result<c_int, Errno> {
    let mut flags = libc::O_RDWR | libc::O_NOCTTY;
    if cloexec {
        flags |= libc::O_CLOEXEC;
    }
    // SAFETY: `path` is a valid NUL-terminated string.
    check(unsafe { libc::open(path.as_ptr(), flags) })
}

/// Opens `path` write-only and close-on-exec.
pub fn open_wo(path: &CStr) -> Result<c_int, Errno> {
    // SAFETY: `path` is a valid NUL-terminated string.
    check(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    })
}

pub fn dup2(from: c_int, to: c_int) -> Result<(), Errno> {
    // SAFETY: dup2 only manipulates the fd table.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

pub fn close(fd: c_int) {
    // SAFETY: the caller owns `fd` and does not use it afterwards.
    unsafe { libc::close(fd) };
}

/// Reads the whole of the file at `path` (at most `limit` bytes) as UTF-8 text; `EILSEQ` when
/// it is not UTF-8, `EFBIG` when it is longer.
pub fn read_to_string(path: &CStr, limit: usize) -> Result<String, Errno> {
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    let mut buf: Vec<u8> = Vec::new();
    let result = loop {
        if buf.len() == buf.capacity() {
            buf.reserve(256);
        }
        let spare = buf.capacity() - buf.len();
        // SAFETY: the pointer is to `spare` bytes of `buf`'s allocation past its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().add(buf.len()).cast(), spare) };
        match n {
            0 => break Ok(()),
            n if n > 0 => {
                // SAFETY: `read` initialised `n` more bytes, within the capacity.
                unsafe { buf.set_len(buf.len() + n as usize) };
                if buf.len() > limit {
                    break Err(Errno(libc::EFBIG));
                }
            }
            _ => match Errno::last() {
                Errno(libc::EINTR) => {}
                e => break Err(e),
            },
        }
    };
    close(fd);
    result?;
    String::from_utf8(buf).map_err(|_| Errno(libc::EILSEQ))
}

/// The monotonic clock.
pub fn now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Ends the process (not PID 1: see `crate::finish`).
pub fn exit(status: i32) -> ! {
    // SAFETY: _exit has no preconditions; nothing is buffered in user space.
    unsafe { libc::_exit(status) }
}

/// Writes all of `bytes` to `fd` in one `write` call (one kmsg record); errors are ignored
/// because there is nowhere left to report them.
pub fn write(fd: c_int, bytes: &[u8]) -> bool {
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    n == bytes.len() as isize
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

pub fn sync() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() }
}

/// `reboot(cmd)`. Only ever called through `power::finish`, which checks that this process is
/// PID 1 first: as root on a host, RB_POWER_OFF would power the machine off.
pub fn reboot(cmd: c_int) -> Errno {
    // SAFETY: reboot takes a plain integer command.
    unsafe { libc::reboot(cmd) };
    Errno::last()
}

/// Sleeps until a signal arrives; with every signal blocked, that is forever.
pub fn pause() {
    // SAFETY: pause has no preconditions.
    unsafe { libc::pause() };
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
        // SAFETY: sigset_t is plain data; sigfillset initialises it fully.
        let mut set: libc::sigset_t = unsafe { core::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t.
        unsafe { libc::sigfillset(&mut set) };
        for sig in FAULTS {
            // SAFETY: `set` is a valid sigset_t and `sig` a valid signal number.
            unsafe { libc::sigdelset(&mut set, sig) };
        }
        SigSet(set)
    }

    /// Blocks the signals in `self`; returns the mask that was in effect before.
    pub fn block(&self) -> Result<SigSet, Errno> {
        // SAFETY: sigset_t is plain data; sigprocmask overwrites it.
        let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
        // SAFETY: both pointers are valid sigset_t.
        let rc = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.0, &mut old) };
        if rc != 0 {
            return Err(Errno::last());
        }
        Ok(SigSet(old))
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

/// Asks the kernel to send SIGINT to PID 1 on Ctrl-Alt-Del instead of rebooting at once.
pub fn disable_ctrl_alt_del() {
    if getpid() == 1 {
        // SAFETY: RB_DISABLE_CAD only changes what Ctrl-Alt-Del does.
        unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
    }
}

pub fn kill(pid: i32, sig: c_int) -> Result<(), Errno> {
    // SAFETY: kill takes plain integers.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// One `waitpid(-1, WNOHANG)`: `Ok(Some((pid, status)))` for a reaped child, `Ok(None)` when
/// children remain but none has exited, `Err(ECHILD)` when there are none left.
pub fn reap_one() -> Result<Option<(i32, c_int)>, Errno> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let pid = check(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) })?;
    Ok((pid > 0).then_some((pid, status)))
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
    user: Option<(u32, u32)>,
    groups: Vec<libc::gid_t>,
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
            user,
            groups: groups.to_vec(),
        })
    }

    /// Runs the steps in this process: groups, gid, uid (with `user`), chdir (with a working
    /// directory), then `execve`. Returns only on failure, with the step and errno. Makes only
    /// async-signal-safe calls, so a forked child may use it.
    fn run(&self, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> (Step, Errno) {
        let fail = |step, rc: c_int| (rc != 0).then(|| (step, Errno::last()));
        if let Some((uid, gid)) = self.user {
            // Raw system calls: the C library's wrappers synchronise every thread, and this
            // process has one. SAFETY: the pointer and length describe `self.groups`.
            let rc = unsafe {
                libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr())
            };
            if let Some(e) = fail(Step::Groups, rc as c_int) {
                return e;
            }
            // SAFETY: setgid/setuid take plain integers.
            let rc = unsafe { libc::syscall(libc::SYS_setgid, gid) };
            if let Some(e) = fail(Step::Gid, rc as c_int) {
                return e;
            }
            // SAFETY: as above.
            let rc = unsafe { libc::syscall(libc::SYS_setuid, uid) };
            if let Some(e) = fail(Step::Uid, rc as c_int) {
                return e;
            }
        }
        if let Some(dir) = &self.cwd {
            // SAFETY: `dir` is a valid NUL-terminated string.
            if let Some(e) = fail(Step::Chdir, unsafe { libc::chdir(dir.as_ptr()) }) {
                return e;
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

/// Whether `path` is a regular file with an execute bit (for the `PATH` search).
pub fn is_executable(path: &CStr) -> bool {
    lstat_mode(path, true).is_some_and(|m| m & libc::S_IFMT == libc::S_IFREG && m & 0o111 != 0)
}

/// The `st_mode` of `path` (following a final symlink when `follow`).
pub fn lstat_mode(path: &CStr, follow: bool) -> Option<u32> {
    // SAFETY: stat is plain data that the call fills in.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a valid out-pointer.
    let rc = unsafe { libc::fstatat(libc::AT_FDCWD, path.as_ptr(), &mut st, flags) };
    (rc == 0).then_some(st.st_mode)
}

/// Whether fd 2 is the kernel console (`/dev/console`, char 5:1), which the kernel echoes
/// `/dev/kmsg` records to.
pub fn stderr_is_console() -> bool {
    // SAFETY: stat is plain data that fstat fills in.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; any fd number is allowed.
    let rc = unsafe { libc::fstat(2, &mut st) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(5, 1)
}

pub fn symlink(target: &CStr, link: &CStr) -> Result<(), Errno> {
    // SAFETY: both are valid NUL-terminated strings.
    check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop)
}

/// Creates (or truncates) `path` with mode 0644 and writes `bytes`.
pub fn write_file(path: &CStr, bytes: &[u8]) -> Result<(), Errno> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags, 0o644) })?;
    let ok = write(fd, bytes);
    let err = Errno::last();
    close(fd);
    if ok {
        Ok(())
    } else {
        Err(err)
    }
}

pub fn sethostname(name: &str) -> Result<(), Errno> {
    // SAFETY: the pointer and length describe `name`.
    let rc = unsafe { libc::syscall(libc::SYS_sethostname, name.as_ptr(), name.len()) };
    check(rc as c_int).map(drop)
}

/// Sets the soft and hard `RLIMIT_NOFILE` to `n`.
pub fn set_nofile(n: u64) -> Result<(), Errno> {
    let lim = libc::rlimit {
        rlim_cur: n as _,
        rlim_max: n as _,
    };
    // SAFETY: `lim` is a valid rlimit.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }).map(drop)
}

/// Loads the kernel module in the file `path` with `params`.
pub fn finit_module(path: &CStr, params: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` is open and `params` a valid NUL-terminated string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, fd, params.as_ptr(), 0) };
    let result = check(rc as c_int).map(drop);
    close(fd);
    result
}

// From <linux/sockios.h>; the libc crate has them for Android only.
const SIOCADDRT: libc::c_ulong = 0x890B;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891C;

/// An `AF_INET` datagram socket for the interface ioctls; closed on drop.
pub struct NetSocket(c_int);

impl Drop for NetSocket {
    fn drop(&mut self) {
        close(self.0);
    }
}

fn sockaddr_in(addr: [u8; 4]) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as sockaddr_in.
    unsafe { core::mem::transmute(sin) }
}

impl NetSocket {
    pub fn open() -> Result<NetSocket, Errno> {
        // SAFETY: socket takes plain integers.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(fd).map(NetSocket)
    }

    fn ifreq(name: &str) -> Result<libc::ifreq, Errno> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(Errno(libc::EINVAL));
        }
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        Ok(req)
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> Result<(), Errno> {
        // SAFETY: every request used here takes a pointer to the struct type passed with it.
        check(unsafe { libc::ioctl(self.0, request as _, arg as *mut T) }).map(drop)
    }

    /// The interface's flags (`IFF_*`).
    pub fn flags(&self, name: &str) -> Result<c_int, Errno> {
        let mut req = Self::ifreq(name)?;
        self.ioctl(SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS filled in the flags member.
        Ok(c_int::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff)
    }

    /// Sets `IFF_UP` on the interface.
    pub fn up(&self, name: &str) -> Result<(), Errno> {
        let flags = self.flags(name)?;
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_flags = (flags | libc::IFF_UP) as libc::c_short;
        self.ioctl(SIOCSIFFLAGS, &mut req)
    }

    /// Sets the interface's IPv4 address and netmask.
    pub fn set_address(&self, name: &str, addr: [u8; 4], mask: [u8; 4]) -> Result<(), Errno> {
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        self.ioctl(SIOCSIFADDR, &mut req)?;
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_netmask = sockaddr_in(mask);
        self.ioctl(SIOCSIFNETMASK, &mut req)
    }

    /// Adds the default route through `gateway`.
    pub fn default_route(&self, gateway: [u8; 4]) -> Result<(), Errno> {
        // SAFETY: rtentry is plain data; all zeroes (no device, metric 0) is a valid value.
        let mut rt: libc::rtentry = unsafe { core::mem::zeroed() };
        rt.rt_dst = sockaddr_in([0; 4]);
        rt.rt_genmask = sockaddr_in([0; 4]);
        rt.rt_gateway = sockaddr_in(gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        self.ioctl(SIOCADDRT, &mut rt)
    }
}

/// A generic netlink socket subscribed to the kernel's ACPI events (`fledge_init::acpi`), set
/// to raise `SIGIO` at PID 1 when one arrives, so the signal loop notices it.
pub struct AcpiEvents {
    fd: c_int,
    family: u16,
}

impl Drop for AcpiEvents {
    fn drop(&mut self) {
        close(self.fd);
    }
}

impl AcpiEvents {
    /// Opens and subscribes; `Err(ENOENT)` when the kernel has no ACPI event family (no ACPI).
    pub fn open() -> Result<AcpiEvents, Errno> {
        // SAFETY: socket takes plain integers.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        })?;
        let mut sock = AcpiEvents { fd, family: 0 };
        let request = fledge_init::acpi::family_request(1);
        // SAFETY: `request` is a valid buffer of that length; the kernel only reads it.
        check(unsafe { libc::send(fd, request.as_ptr().cast(), request.len(), 0) as c_int })?;
        // The kernel answers while `send` runs, so the reply is already queued: never block.
        let mut buf = vec![0u8; 8192];
        let n = sock.recv(&mut buf, libc::MSG_DONTWAIT)?;
        let (family, group) = fledge_init::acpi::family_reply(&buf[..n])
            .map_err(|e| Errno(if e < 0 { -e } else { libc::ENOENT }))?;
        sock.family = family;
        // SAFETY: the option value is a u32 of the size passed.
        check(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                (&group as *const u32).cast(),
                core::mem::size_of::<u32>() as libc::socklen_t,
            )
        })?;
        // SAFETY: fcntl on our own descriptor with integer arguments.
        check(unsafe { libc::fcntl(fd, libc::F_SETOWN, libc::getpid()) })?;
        // SAFETY: as above.
        check(unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_ASYNC | libc::O_NONBLOCK) })?;
        Ok(sock)
    }

    fn recv(&self, buf: &mut [u8], flags: c_int) -> Result<usize, Errno> {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n < 0 {
            Err(Errno::last())
        } else {
            Ok(n as usize)
        }
    }

    /// Reads every event waiting; true when one of them is the power button.
    pub fn power_button_pressed(&self) -> bool {
        let mut buf = vec![0u8; 8192];
        let mut pressed = false;
        while let Ok(n) = self.recv(&mut buf, libc::MSG_DONTWAIT) {
            if n == 0 {
                break;
            }
            let events = fledge_init::acpi::events(&buf[..n], self.family);
            pressed |= events.iter().any(fledge_init::acpi::Event::is_power_button);
        }
        pressed
    }
}

/// Whether a network interface of that name exists.
pub fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Sleeps for `d`.
pub fn sleep(d: Duration) {
    let ts = libc::timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    };
    // SAFETY: `ts` is a valid timespec; the remainder pointer may be null.
    unsafe { libc::nanosleep(&ts, ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_to_string_reads_whole_files_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            |name: &str| std::ffi::CString::new(dir.path().join(name).to_str().unwrap()).unwrap();
        let long = "x".repeat(1000);
        std::fs::write(dir.path().join("long"), &long).unwrap();
        std::fs::write(dir.path().join("bad"), b"\xff\xfe").unwrap();
        assert_eq!(
            read_to_string(&path("long"), 1000).as_deref(),
            Ok(long.as_str())
        );
        assert_eq!(read_to_string(&path("long"), 999), Err(Errno(libc::EFBIG)));
        assert_eq!(read_to_string(&path("bad"), 1000), Err(Errno(libc::EILSEQ)));
        assert_eq!(
            read_to_string(&path("missing"), 1000),
            Err(Errno(libc::ENOENT))
        );
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(now() >= a + Duration::from_millis(5));
    }

    #[test]
    fn errno_prints_the_c_library_text() {
        assert_eq!(Errno(libc::ENOENT).to_string(), "No such file or directory");
        assert_eq!(Errno(libc::EACCES).to_string(), "Permission denied");
    }
}
