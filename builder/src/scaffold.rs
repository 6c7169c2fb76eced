//! `fledge new`: writes a commented starting project (fledge.toml, manifest.toml and, for the
//! custom and none init modes, a placeholder init script) that validates as written.
//!
//! This module owns the starter files' text; it never overwrites a file that exists.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::output::{self, Pending};

/// First line of every generated fledge.toml: points editors (taplo, Even Better TOML) to the
/// schema.
pub const SCHEMA_LINE: &str =
    "#:schema https://raw.githubusercontent.com/volantvm/volant/main/docs/schemas/fledge-toml-v1.json";

/// Which init the new project uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// fledge-init as PID 1 starting the kestrel agent (downloaded from Volant's latest release).
    Default,
    /// fledge-init as PID 1 handing over to your own init script.
    Custom,
    /// Your own program is /init; fledge adds only busybox.
    None,
}

/// `fledge new` cannot write the project.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{} already exists: fledge new does not overwrite files; choose a new directory or remove it", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

const MANIFEST: &str = r#"# Volant plugin manifest template. `fledge build` turns it into <name>.manifest.json beside
# the image, adding initramfs.url and initramfs.checksum. Schema: plugin-manifest-v1.json.
schema_version = "1.0"
name = "NAME"
version = "0.1.0"

[resources]
cpu_cores = 1
memory_mb = 256

[workload]
# The program Volant talks to; it must be in the image (see [mappings] in fledge.toml).
entrypoint = "ENTRYPOINT"
"#;

/// The files of a new project in `mode`, relative to its directory: (name, text, mode bits).
pub fn files(mode: Mode, name: &str) -> Vec<(&'static str, String, u32)> {
    let head = format!(
        "{SCHEMA_LINE}\n# fledge build reads this file and writes plugin.cpio.gz (see `fledge build --help`).\n\
         version = \"1\"\nstrategy = \"initramfs\"\n\n"
    );
    let busybox = "\
# busybox (shell and applets). Left out, fledge downloads a pinned static build.
# For offline builds point it at a local static busybox (Debian: apt-get install busybox-static):
# [source]
# busybox_url = \"/bin/busybox\"
";
    let mappings = "\
# Host files and directories to copy into the image: \"host path\" = \"absolute image path\".
# Host paths are relative to this file. Files under */bin and */sbin get mode 0755.
[mappings]
";
    let manifest = |entry: &str| MANIFEST.replace("NAME", name).replace("ENTRYPOINT", entry);
    match mode {
        Mode::Default => vec![
            (
                "fledge.toml",
                format!(
                    "{head}# Default init mode: fledge-init is PID 1 and starts the kestrel agent at /bin/kestrel.\n\
                     # \"release\" downloads it from Volant's GitHub releases (needs the network at build time);\n\
                     # use source_strategy = \"local\" with path = \"./kestrel\" to build offline.\n\
                     [agent]\nsource_strategy = \"release\"\nversion = \"latest\"\n\n{busybox}\n{mappings}\
                     # \"./target/x86_64-unknown-linux-musl/release/myapp\" = \"/usr/bin/myapp\"\n"
                ),
                0o644,
            ),
            ("manifest.toml", manifest("/bin/kestrel"), 0o644),
        ],
        Mode::Custom => vec![
            (
                "fledge.toml",
                format!(
                    "{head}# Custom init mode: fledge-init mounts /dev /proc /sys /tmp /run, then runs init.sh\n\
                     # (installed as /sbin/custom-init). No agent.\n\
                     [init]\npath = \"./init.sh\"\n\n{busybox}\n{mappings}\
                     # \"./www\" = \"/srv/www\"\n"
                ),
                0o644,
            ),
            ("manifest.toml", manifest("/sbin/custom-init"), 0o644),
            (
                "init.sh",
                "#!/bin/sh\n# Runs as PID 1 after fledge-init has mounted the pseudo-filesystems.\n\
                 # Start your service here; put its files in the image with [mappings] in fledge.toml.\n\
                 echo \"hello from $(uname -r)\"\n\
                 exec /bin/sh\n"
                    .to_string(),
                0o755,
            ),
        ],
        Mode::None => vec![
            (
                "fledge.toml",
                format!(
                    "{head}# No init mode: the kernel runs your /init directly; nothing is mounted for you.\n\
                     [init]\nnone = true\n\n{busybox}\n{mappings}\
                     # Your PID 1 (replace init with your own program, e.g. a static Rust binary).\n\
                     \"./init\" = \"/init\"\n"
                ),
                0o644,
            ),
            ("manifest.toml", manifest("/init"), 0o644),
            (
                "init",
                "#!/bin/sh\n# Placeholder PID 1: mount what you need, start your service, never exit.\n\
                 mount -t proc proc /proc\nmount -t sysfs sysfs /sys\n\
                 echo \"hello from $(uname -r)\"\n\
                 exec /bin/sh\n"
                    .to_string(),
                0o755,
            ),
        ],
    }
}

/// Writes a new project into `dir` (created if missing); fails before writing anything if any
/// of its files exists. Returns the paths written.
pub fn create(dir: &Path, mode: Mode) -> Result<Vec<PathBuf>, ScaffoldError> {
    let name = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "plugin".into());
    let files = files(mode, &name);
    for (f, _, _) in &files {
        let path = dir.join(f);
        if path.symlink_metadata().is_ok() {
            return Err(ScaffoldError::Exists { path });
        }
    }
    fs::create_dir_all(dir).map_err(|source| ScaffoldError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut pending = Vec::new();
    for (f, text, bits) in files {
        let path = dir.join(f);
        let w = |source| ScaffoldError::Write {
            path: path.clone(),
            source,
        };
        let mut p = Pending::create(&path).map_err(w)?;
        io::Write::write_all(p.file(), text.as_bytes()).map_err(w)?;
        pending.push(p.with_mode(bits).without_replacing());
    }
    let written = pending.iter().map(|p| p.path().to_path_buf()).collect();
    output::commit(pending).map_err(|(path, source)| match source.kind() {
        io::ErrorKind::AlreadyExists => ScaffoldError::Exists { path },
        _ => ScaffoldError::Write { path, source },
    })?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_parses_and_starts_with_the_schema_line() {
        for mode in [Mode::Default, Mode::Custom, Mode::None] {
            for (name, text, _) in files(mode, "demo") {
                if name.ends_with(".toml") {
                    toml::from_str::<toml::Table>(&text)
                        .unwrap_or_else(|e| panic!("{mode:?} {name}: {e}"));
                }
                if name == "fledge.toml" {
                    assert_eq!(text.lines().next(), Some(SCHEMA_LINE));
                }
            }
        }
    }

    #[test]
    fn refuses_to_overwrite() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("manifest.toml"), "mine").unwrap();
        let e = create(d.path(), Mode::Custom).unwrap_err().to_string();
        assert!(e.contains("manifest.toml already exists"), "{e}");
        assert!(!d.path().join("fledge.toml").exists(), "nothing written");
        assert_eq!(
            fs::read_to_string(d.path().join("manifest.toml")).unwrap(),
            "mine"
        );
    }
}
