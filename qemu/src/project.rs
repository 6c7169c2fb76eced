//! A `fledge build` project in a temporary directory: `fledge.toml`, the host files it maps, and
//! the image built from it. The constructors write the configs the smoke runs and the boot
//! benchmark share (every mode uses the stand-in as its program and the host's busybox).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::host::Host;
use crate::tools::{suffix, Tools};
use crate::Error;

/// A directory holding `fledge.toml` and what it refers to; removed on drop.
#[derive(Debug)]
pub struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// A project whose `fledge.toml` is `version`/`strategy` plus `[source] busybox_url` pointing
    /// at the host's busybox, followed by `rest`.
    pub fn new(host: &Host, rest: &str) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("fledge-qemu.")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "cannot create a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let p = Self { dir };
        let toml = format!(
            "version = \"1\"\nstrategy = \"initramfs\"\n\n[source]\nbusybox_url = {}\n\n{rest}",
            toml_str(&host.busybox)
        );
        crate::write(&p.path().join("fledge.toml"), toml)?;
        Ok(p)
    }

    /// Default mode: fledge-init is `/init`, the stand-in is the agent (`[agent]` local).
    /// `init` is the body of an `[init]` table (empty for none).
    pub fn default_mode(host: &Host, tools: &Tools, init: &str) -> Result<Self, Error> {
        let init = if init.is_empty() {
            String::new()
        } else {
            format!("[init]\n{init}\n\n")
        };
        Self::new(
            host,
            &format!(
                "{init}[agent]\nsource_strategy = \"local\"\npath = {}\n",
                toml_str(&tools.standin)
            ),
        )
    }

    /// Custom mode, `init.path` an absolute in-image path that a mapping of the stand-in fills.
    pub fn custom_in_image(host: &Host, tools: &Tools, image_path: &str) -> Result<Self, Error> {
        let p = Self::new(
            host,
            &format!(
                "[init]\npath = \"{image_path}\"\n\n[mappings]\n\"my-init\" = \"{image_path}\"\n"
            ),
        )?;
        p.copy_executable(&tools.standin, "my-init")?;
        Ok(p)
    }

    /// Custom mode, `init.path = "./my-init"`: a host file the builder installs itself.
    pub fn custom_host_file(host: &Host, tools: &Tools) -> Result<Self, Error> {
        let p = Self::new(host, "[init]\npath = \"./my-init\"\n")?;
        p.copy_executable(&tools.standin, "my-init")?;
        Ok(p)
    }

    /// None mode: the stand-in is mapped to `/init` and nothing of fledge's runs.
    pub fn none_mode(host: &Host, tools: &Tools) -> Result<Self, Error> {
        let p = Self::new(
            host,
            "[init]\nnone = true\n\n[mappings]\n\"app\" = \"/init\"\n",
        )?;
        p.copy_executable(&tools.standin, "app")?;
        Ok(p)
    }

    /// The project directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `src` into the project as `name`, mode 0755.
    pub fn copy_executable(&self, src: &Path, name: &str) -> Result<PathBuf, Error> {
        let dest = self.path().join(name);
        crate::write(&dest, crate::read(src)?)?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).map_err(
            |source| Error::Io {
                what: "cannot chmod",
                path: dest.clone(),
                source,
            },
        )?;
        Ok(dest)
    }

    /// Runs `fledge build` with `compression` (and `extra` arguments); returns the image path.
    pub fn build(
        &self,
        tools: &Tools,
        compression: &str,
        extra: &[&str],
    ) -> Result<PathBuf, Error> {
        let out = self
            .path()
            .join(format!("image.cpio{}", suffix(compression)));
        let mut cmd = std::process::Command::new(&tools.fledge);
        cmd.arg("build")
            .arg("-c")
            .arg(self.path().join("fledge.toml"))
            .arg("-o")
            .arg(&out)
            .args(["--compression", compression])
            .args(extra)
            .current_dir(self.path())
            // Keep tests off the user's download cache; every source here is a local file.
            .env("FLEDGE_CACHE_DIR", self.path().join("cache"));
        crate::tools::run(cmd)?;
        Ok(out)
    }
}

/// A path as a TOML basic string.
fn toml_str(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_valid_toml_with_the_expected_keys() {
        let host = Host {
            target: crate::host::GuestTarget::load().unwrap(),
            qemu: "q".into(),
            kernel: "/k".into(),
            busybox: "/opt/bb \"x\"/busybox".into(),
            kvm: false,
        };
        let tools = Tools {
            fledge: "/f".into(),
            standin: std::env::current_exe().unwrap(),
        };
        let cases: [(&str, Project, &str); 4] = [
            (
                "default",
                Project::default_mode(&host, &tools, "supervise = true").unwrap(),
                "agent",
            ),
            (
                "custom",
                Project::custom_host_file(&host, &tools).unwrap(),
                "init",
            ),
            (
                "none",
                Project::none_mode(&host, &tools).unwrap(),
                "mappings",
            ),
            (
                "in-image",
                Project::custom_in_image(&host, &tools, "/usr/local/bin/x").unwrap(),
                "mappings",
            ),
        ];
        for (name, p, table) in cases {
            let text = std::fs::read_to_string(p.path().join("fledge.toml")).unwrap();
            let t: toml::Table = text
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            assert_eq!(
                t["source"]["busybox_url"].as_str(),
                Some("/opt/bb \"x\"/busybox"),
                "{name}"
            );
            assert!(t.contains_key(table), "{name}: [{table}] in\n{text}");
            if name == "default" {
                assert_eq!(t["init"]["supervise"].as_bool(), Some(true), "{name}");
            } else {
                assert!(
                    p.path()
                        .join(if name == "none" { "app" } else { "my-init" })
                        .is_file(),
                    "{name}"
                );
            }
        }
    }
}
