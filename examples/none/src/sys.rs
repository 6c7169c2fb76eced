//! The system calls the none-mode init makes through `libc`: mounting `/proc` and powering off.

use std::io;

/// Mounts procfs on `/proc` (creating the directory when missing); already mounted is fine.
pub fn mount_proc() -> io::Result<()> {
    std::fs::create_dir_all("/proc")?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: every pointer is a NUL-terminated literal that outlives the call; data may be null.
    let rc = unsafe {
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EBUSY) {
        return Ok(());
    }
    Err(e)
}

/// Flushes filesystems and powers the machine off; returns only on failure, with the error.
pub fn power_off() -> io::Error {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // SAFETY: reboot takes a plain integer command; RB_POWER_OFF does not return on success.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    io::Error::last_os_error()
}
