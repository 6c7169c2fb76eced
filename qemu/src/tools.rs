//! The programs the smoke images are made with, built once per process: the `fledge` binary
//! under test (host target) and the stand-in program `fledge-standins` builds (static musl, the
//! target and profile of `targets/x86_64.toml`), and the command runner they share.
//!
//! Both come from the end-to-end test support (`fledge_tests`): the `fledge` of this test build,
//! and the stand-in built once for the guest in `target/fledge-init`, shared with the PID 1 tests.
//! `FLEDGE_BIN` and `FLEDGE_STANDIN` name prebuilt binaries instead.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::{vm::describe, Error};

/// The built programs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The `fledge` CLI.
    pub fledge: PathBuf,
    /// The static stand-in (agent, custom init, user program), driven by `STANDIN=<action>`.
    pub standin: PathBuf,
}

impl Tools {
    /// Builds both programs on first use; later calls return the same result.
    pub fn get() -> Result<&'static Tools, String> {
        static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
        TOOLS
            .get_or_init(|| Self::build().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn build() -> Result<Tools, Error> {
        let fledge = match std::env::var_os("FLEDGE_BIN") {
            Some(p) => PathBuf::from(p),
            None => fledge_tests::fledge_bin(),
        };
        let standin = match std::env::var_os("FLEDGE_STANDIN") {
            Some(p) => PathBuf::from(p),
            None => fledge_tests::guest_bins().standin.clone(),
        };
        Ok(Tools { fledge, standin })
    }
}

/// File name suffix for an image with this compression.
pub fn suffix(compression: &str) -> &'static str {
    match compression {
        "gzip" => ".gz",
        "zstd" => ".zst",
        "xz" => ".xz",
        "lz4" => ".lz4",
        _ => "",
    }
}

/// Runs a command to completion; returns its stdout, or an error with everything it printed.
pub fn run(mut cmd: Command) -> Result<String, Error> {
    let command = describe(&cmd);
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: command.clone(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    Err(Error::Command {
        command,
        status: out.status,
        output: format!("{}{}", String::from_utf8_lossy(&out.stderr), stdout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_follow_compression() {
        let cases = [
            ("gzip", ".gz"),
            ("zstd", ".zst"),
            ("xz", ".xz"),
            ("lz4", ".lz4"),
            ("none", ""),
        ];
        for (i, (c, s)) in cases.iter().enumerate() {
            assert_eq!(suffix(c), *s, "case {i}: {c}");
        }
    }

    #[test]
    fn run_reports_failure_with_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let e = run(cmd).unwrap_err().to_string();
        assert!(
            e.starts_with("sh -c 'echo out; echo err >&2; exit 3' failed"),
            "{e}"
        );
        assert!(e.contains("err\nout"), "{e}");
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo fine"]);
        assert_eq!(run(ok).unwrap(), "fine\n");
    }
}
