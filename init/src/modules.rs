//! Kernel modules: loads what the builder listed in [`fledge_abi::paths::MODULES_LOAD`], in
//! order, with `finit_module`, before the network step (a NIC driver may be among them).
//!
//! A module the kernel already has (`EEXIST`) is fine. Any other failure is one line naming the
//! module and the errno, and the next module is loaded - unless the entry is marked required
//! (`!`), which ends the boot. A malformed line is reported and skipped.

use core::ffi::CStr;

use fledge_abi::modules::{self, Module};
use fledge_abi::paths;

use crate::error::Error;
use crate::sys::{self, Errno};

/// Loads every module in the list at `path`; a missing list loads nothing.
pub fn load_all(path: &CStr) -> Result<(), Error> {
    let text = match sys::read_to_string(path, modules::MAX_LEN) {
        Ok(t) => t,
        Err(Errno(libc::ENOENT)) => return Ok(()),
        Err(e) => {
            log::warn!(
                "cannot read {}: {e}; no modules loaded",
                paths::MODULES_LOAD
            );
            return Ok(());
        }
    };
    for entry in modules::parse(&text) {
        match entry {
            Ok(m) => load(&m)?,
            Err(e) => log::warn!("{} {e}; skipped", paths::MODULES_LOAD),
        }
    }
    Ok(())
}

fn load(m: &Module<'_>) -> Result<(), Error> {
    match sys::finit_module(&sys::cstring(m.path), &sys::cstring(m.params)) {
        Ok(()) | Err(Errno(libc::EEXIST)) => Ok(()),
        Err(cause) if m.required => Err(Error::Module {
            path: m.path.into(),
            cause,
        }),
        Err(cause) => {
            log::warn!("failed to load module {}: {cause}; going on", m.path);
            Ok(())
        }
    }
}
