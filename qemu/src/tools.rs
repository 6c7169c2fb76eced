//! The programs the smoke images are made with, built once per process: the `fledge` binary
//! under test (host target) and the stand-in program `fledge-standins` builds (static musl, the
//! target and profile of `targets/x86_64.toml`), and the command runner they share.
//!
//! The builds are nested `cargo build`s with their own target directory, `<repo>/target/qemu-cargo`:
//! the `cargo test` running this code holds the lock on the workspace's target directory, and a
//! nested cargo waiting for it would deadlock. A second run is an up-to-date check, so the images
//! always come from the current sources. `FLEDGE_BIN` and `FLEDGE_STANDIN` name prebuilt binaries
//! instead (no build).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::host::GuestTarget;
use crate::{repo_root, vm::describe, Error};

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
            None => one_executable(cargo_build(&["--package", "fledge", "--bin", "fledge"])?)?,
        };
        let standin = match std::env::var_os("FLEDGE_STANDIN") {
            Some(p) => PathBuf::from(p),
            None => {
                let t = GuestTarget::load()?;
                one_executable(cargo_build(&[
                    "--package",
                    "fledge-standins",
                    "--target",
                    &t.rust_target,
                    "--profile",
                    &t.profile,
                ])?)?
            }
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

/// `cargo build <args> --message-format=json` in the harness's own target directory; returns
/// the executables it reports.
fn cargo_build(args: &[&str]) -> Result<Vec<PathBuf>, Error> {
    let root = repo_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .args(args)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target/qemu-cargo"))
        .arg("--message-format=json-render-diagnostics");
    // Cargo passes per-crate settings to the tests it runs; they do not belong to another build.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let keep = matches!(k.as_ref(), "CARGO_HOME" | "CARGO_NET_OFFLINE")
            || k.starts_with("CARGO_REGISTRIES_")
            || k.starts_with("CARGO_HTTP_");
        if (k.starts_with("CARGO_") && !keep) || k.starts_with("RUSTC_") {
            cmd.env_remove(k.as_ref());
        }
    }
    let stdout = run(cmd)?;
    Ok(stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .collect())
}

fn one_executable(mut found: Vec<PathBuf>) -> Result<PathBuf, Error> {
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(Error::Build(format!(
            "expected one executable from the nested cargo build, got {n}: {found:?}"
        ))),
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
