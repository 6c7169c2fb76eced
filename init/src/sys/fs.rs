//! Files, mounts, the console descriptors and kernel modules.

use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{c_int, CStr};

use rustix::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use rustix::mount::{MountFlags, UnmountFlags};

use super::{r, Errno};

pub fn mkdir(path: &CStr, mode: u32) -> Result<(), Errno> {
    r(rustix::fs::mkdir(path, Mode::from_raw_mode(mode)))
}

/// `mount(2)` with the `MS_*` flags as the kernel defines them.
pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    let flags = MountFlags::from_bits_retain(flags as _);
    r(rustix::mount::mount(source, target, fstype, flags, data))
}

pub fn chdir(path: &CStr) -> Result<(), Errno> {
    r(rustix::process::chdir(path))
}

pub fn chroot(path: &CStr) -> Result<(), Errno> {
    r(rustix::process::chroot(path))
}

/// Lazily detaches the mount on `target`.
pub fn unmount(target: &CStr) -> Result<(), Errno> {
    r(rustix::mount::unmount(target, UnmountFlags::DETACH))
}

pub fn fd_is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; any fd number is allowed.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Opens `path` for reading without blocking (an input device).
#[cfg(target_arch = "aarch64")]
pub fn open_input(path: &CStr) -> Result<OwnedFd, Errno> {
    open(path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC, 0)
}

/// Reads what is there without waiting: `Err(EAGAIN)` when nothing is.
#[cfg(target_arch = "aarch64")]
pub fn read_some(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, Errno> {
    r(rustix::io::read(fd, buf))
}

fn open(path: &CStr, flags: OFlags, mode: u32) -> Result<OwnedFd, Errno> {
    r(rustix::fs::open(
        path,
        flags | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::from_raw_mode(mode),
    ))
}

/// Opens `path` (the console) read-write and puts it on each of the standard descriptors in
/// `missing` (a subset of 0-2). The opened descriptor itself stays only when it is one of them.
pub fn fill_stdio(path: &CStr, missing: &[c_int]) -> Result<(), Errno> {
    let fd = r(rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NOCTTY,
        Mode::empty(),
    ))?;
    let own = fd.as_raw_fd();
    for &m in missing {
        match m {
            _ if m == own => {}
            0 => r(rustix::stdio::dup2_stdin(&fd))?,
            1 => r(rustix::stdio::dup2_stdout(&fd))?,
            _ => r(rustix::stdio::dup2_stderr(&fd))?,
        }
    }
    if missing.contains(&own) {
        // It is a standard descriptor now: keep it open for the life of the process.
        let _ = fd.into_raw_fd();
    }
    Ok(())
}

/// Opens `path` write-only for the life of the process (the kernel log) and returns its
/// number, for [`write`].
pub fn open_forever(path: &CStr) -> Result<RawFd, Errno> {
    open(path, OFlags::WRONLY, 0).map(IntoRawFd::into_raw_fd)
}

/// Writes all of `bytes` to `fd` - standard error or a descriptor from [`open_forever`] - in
/// one `write` call (one kmsg record); errors are ignored because there is nowhere left to
/// report them.
pub fn write(fd: RawFd, bytes: &[u8]) -> bool {
    // SAFETY: the descriptors written to are fd 2 (opened onto the console first thing) and
    // those of `open_forever`, which are never closed.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::write(fd, bytes) == Ok(bytes.len())
}

/// Reads the whole of the file at `path` (at most `limit` bytes) as UTF-8 text; `EILSEQ` when
/// it is not UTF-8, `EFBIG` when it is longer.
pub fn read_to_string(path: &CStr, limit: usize) -> Result<String, Errno> {
    let fd = open(path, OFlags::RDONLY, 0)?;
    let mut text: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match rustix::io::read(&fd, &mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                text.extend_from_slice(&chunk[..n]);
                if text.len() > limit {
                    return Err(Errno(libc::EFBIG));
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    String::from_utf8(text).map_err(|_| Errno(libc::EILSEQ))
}

/// Whether `path` is a regular file with an execute bit (for the `PATH` search).
pub fn is_executable(path: &CStr) -> bool {
    lstat_mode(path, true).is_some_and(|m| m & libc::S_IFMT == libc::S_IFREG && m & 0o111 != 0)
}

/// The `st_mode` of `path` (following a final symlink when `follow`).
pub fn lstat_mode(path: &CStr, follow: bool) -> Option<u32> {
    let flags = if follow {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    rustix::fs::statat(CWD, path, flags)
        .ok()
        .map(|st| st.st_mode)
}

/// Whether fd 2 is the kernel console (`/dev/console`, char 5:1), which the kernel echoes
/// `/dev/kmsg` records to.
pub fn stderr_is_console() -> bool {
    // SAFETY: fd 2 is opened onto the console first thing and never closed.
    let stderr = unsafe { BorrowedFd::borrow_raw(2) };
    rustix::fs::fstat(stderr).is_ok_and(|st| {
        FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
            && st.st_rdev == rustix::fs::makedev(5, 1)
    })
}

pub fn symlink(target: &CStr, link: &CStr) -> Result<(), Errno> {
    r(rustix::fs::symlink(target, link))
}

/// Creates (or truncates) `path` with mode 0644 and writes `bytes`.
pub fn write_file(path: &CStr, bytes: &[u8]) -> Result<(), Errno> {
    let fd = open(path, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC, 0o644)?;
    let mut rest = bytes;
    while !rest.is_empty() {
        match rustix::io::write(&fd, rest) {
            Ok(0) => return Err(Errno(libc::EIO)),
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Loads the kernel module in the file `path` with `params`.
pub fn finit_module(path: &CStr, params: &CStr) -> Result<(), Errno> {
    let fd = open(path, OFlags::RDONLY, 0)?;
    r(rustix::system::finit_module(&fd, params, 0))
}

pub fn sync() {
    rustix::fs::sync()
}
