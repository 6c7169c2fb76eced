//! The system calls the example agent makes through `libc`: powering the machine off.

use std::io;

/// Flushes filesystems and powers the machine off; returns only on failure, with the error.
pub fn power_off() -> io::Error {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // SAFETY: reboot takes a plain integer command; RB_POWER_OFF does not return on success.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    io::Error::last_os_error()
}
