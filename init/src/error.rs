//! The one error type of the init: a variant per step that can fail, each naming what it
//! touched and the errno it got. Printed as `fledge-init: <what>: <cause>` by the caller.

use alloc::string::String;
use core::ffi::CStr;
use core::fmt;

use crate::sys::Errno;

#[derive(Debug)]
pub enum Error {
    Mkdir {
        path: &'static CStr,
        cause: Errno,
    },
    Mount {
        fstype: &'static CStr,
        target: &'static CStr,
        cause: Errno,
    },
    Console {
        cause: Errno,
    },
    /// The hand-off target could not be executed (exec path).
    Exec {
        target: String,
        cause: Errno,
    },
    /// Blocking signals before supervising failed.
    Signals {
        cause: Errno,
    },
    Fork {
        target: String,
        cause: Errno,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |c: &'static CStr| c.to_str().unwrap_or("?");
        match self {
            Error::Mkdir { path, cause } => write!(f, "failed to create {}: {cause}", p(path)),
            Error::Mount {
                fstype,
                target,
                cause,
            } => write!(f, "failed to mount {} on {}: {cause}", p(fstype), p(target)),
            Error::Console { cause } => write!(f, "failed to open /dev/console: {cause}"),
            Error::Exec { target, cause } => write!(f, "failed to execute {target}: {cause}"),
            Error::Signals { cause } => write!(f, "failed to block signals: {cause}"),
            Error::Fork { target, cause } => write!(f, "failed to start {target}: {cause}"),
        }
    }
}
