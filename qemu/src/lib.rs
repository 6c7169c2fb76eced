//! QEMU smoke runs for fledge images: boot an initramfs on a stock Linux kernel under
//! `qemu-system-x86_64` and check what the guest prints on its serial console.
//!
//! The pieces, in the order a smoke test uses them:
//! - [`host`] finds what a boot needs on this machine (emulator, kernel, busybox) and decides
//!   whether a missing piece skips the test or, with `CI=true`, fails it;
//! - [`tools`] builds (once per process) the `fledge` binary and the static stand-in program the
//!   images carry;
//! - [`project`] writes a `fledge.toml` for each init mode (or copies an example from
//!   `examples/`) and runs `fledge build` on it;
//! - [`newc`] writes and edits newc archives by hand, independently of the builder under test, for
//!   the harness's own tests and for images the builder refuses to make (a missing agent);
//! - [`vm`] boots one image with a hard timeout and returns the whole serial log, with checks that
//!   print that log when they fail.
//!
//! Setup: `bash qemu/fetch-kernel.sh` (Debian's kernel, extracted, not installed; installs
//! `qemu-system-x86` when missing). Then `cargo test -p fledge-qemu`; see `qemu/README.md`.

pub mod host;
pub mod newc;
pub mod project;
pub mod tools;
pub mod vm;

use std::path::{Path, PathBuf};

/// An error from the harness itself (not a failed check on a guest: see [`vm::BootFailure`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "cannot read".
        what: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{command} failed ({status}):\n{output}")]
    Command {
        /// The command line, for reproducing it by hand.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (and stdout).
        output: String,
    },
    /// `targets/x86_64.toml` is missing a key or is not TOML.
    #[error("{}: {message}", path.display())]
    Target {
        /// The target file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A nested build did not produce what was expected.
    #[error("{0}")]
    Build(String),
    /// A newc archive could not be parsed.
    #[error("{}: not a newc archive: {message}", path.display())]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong at which offset.
        message: String,
    },
}

/// The workspace root (the directory holding `Cargo.lock`, `targets/` and `qemu/`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu/ sits in the workspace")
}

/// Reads a file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        what: "cannot read",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file, naming it in the error.
pub(crate) fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    })
}
