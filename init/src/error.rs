//! The one error type of the init: a variant per step that can fail, each naming what it
//! touched and the errno it got. Printed as `fledge-init: <what>: <cause>` by the caller.

use alloc::string::String;
use core::ffi::CStr;
use core::fmt;

use fledge_abi::paths;
use fledge_abi::workload::SpecError;

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
    /// A step of becoming the target failed (exec path); `what` says which, with its value.
    Start {
        what: String,
        cause: Errno,
    },
    /// The workload spec is malformed.
    Spec {
        cause: SpecError,
    },
    /// The workload spec exists but cannot be read.
    SpecRead {
        cause: Errno,
    },
    /// A module marked required did not load.
    Module {
        path: String,
        cause: Errno,
    },
    /// The `RLIMIT_NOFILE` the spec or command line asks for cannot be set.
    Nofile {
        limit: u64,
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
    /// A step of switching to the root file system disk failed; `what` names it.
    Root {
        what: String,
        cause: Errno,
    },
    /// The root file system disk did not appear in time.
    RootMissing {
        device: String,
        waited_ms: u64,
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
            Error::Start { what, cause } => write!(f, "{what}: {cause}"),
            Error::Spec { cause } => write!(f, "bad {}: {cause}", paths::WORKLOAD),
            Error::SpecRead { cause } => write!(f, "failed to read {}: {cause}", paths::WORKLOAD),
            Error::Module { path, cause } => {
                write!(f, "failed to load required module {path}: {cause}")
            }
            Error::Nofile { limit, cause } => {
                write!(f, "failed to set RLIMIT_NOFILE to {limit}: {cause}")
            }
            Error::Signals { cause } => write!(f, "failed to block signals: {cause}"),
            Error::Fork { target, cause } => write!(f, "failed to start {target}: {cause}"),
            Error::Root { what, cause } => write!(f, "{what}: {cause}"),
            Error::RootMissing { device, waited_ms } => write!(
                f,
                "the root file system disk {device} did not appear within {waited_ms} ms: attach the disk (root=) and make sure its driver is built in or in the boot initramfs"
            ),
        }
    }
}
