//! A `fledge build` project in a temporary directory: `fledge.toml`, the host files it maps, and
//! the image built from it. The constructors write the configs the smoke runs and the boot
//! benchmark share (every mode uses the stand-in as its program and the host's busybox), or copy
//! one of the examples under `examples/` with its built programs put in place.

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
        Self::with_strategy(host, "initramfs", rest)
    }

    /// [`Project::new`] for a root file system disk (`strategy = "oci_rootfs"`).
    pub fn rootfs(host: &Host, rest: &str) -> Result<Self, Error> {
        Self::with_strategy(host, "oci_rootfs", rest)
    }

    fn with_strategy(host: &Host, strategy: &str, rest: &str) -> Result<Self, Error> {
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
            "version = \"1\"\nstrategy = \"{strategy}\"\n\n[source]\nbusybox_url = {}\n\n{rest}",
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

    /// A copy of `examples/<name>` (without its `bin/` and `target/`), with each `(program,
    /// dest)` of `programs` copied to `dest` (relative to the example, mode 0755) and
    /// `[source] busybox_url` set to the host's busybox. `fledge.toml` keeps its meaning
    /// otherwise (its comments are lost), and `manifest.toml` is used as it is.
    pub fn example(host: &Host, name: &str, programs: &[(&Path, &str)]) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("fledge-example-{name}."))
            .tempdir()
            .map_err(|source| Error::Io {
                what: "cannot create a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let p = Self { dir };
        let src = crate::repo_root().join("examples").join(name);
        copy_tree(&src, p.path(), &["bin", "target"])?;
        for (program, dest) in programs {
            if let Some(parent) = p.path().join(dest).parent() {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                    what: "cannot create",
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            p.copy_executable(program, dest)?;
        }
        let config = p.path().join("fledge.toml");
        let text = String::from_utf8_lossy(&crate::read(&config)?).into_owned();
        let mut table: toml::Table = text.parse().map_err(|e| Error::Target {
            path: config.clone(),
            message: format!("not TOML: {e}"),
        })?;
        let source = table
            .entry("source")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(source) = source.as_table_mut() else {
            return Err(Error::Target {
                path: config,
                message: "`source` is not a table".into(),
            });
        };
        source.insert(
            "busybox_url".into(),
            toml::Value::String(host.busybox.display().to_string()),
        );
        crate::write(&config, table.to_string())?;
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

    /// Runs `fledge build` of a disk project with `compression`; returns the disk and its boot
    /// initramfs.
    pub fn build_disk(
        &self,
        tools: &Tools,
        compression: &str,
    ) -> Result<(PathBuf, PathBuf), Error> {
        let out = self.path().join("disk.squashfs");
        self.build_to(tools, &out, compression, &[])?;
        // The manifest name, and so the boot initramfs name, defaults to the disk's.
        Ok((out, self.path().join("disk.boot.cpio.gz")))
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
        self.build_to(tools, &out, compression, extra)?;
        Ok(out)
    }

    /// `fledge build -o out --compression compression extra...` in the project.
    fn build_to(
        &self,
        tools: &Tools,
        out: &Path,
        compression: &str,
        extra: &[&str],
    ) -> Result<(), Error> {
        let mut cmd = std::process::Command::new(&tools.fledge);
        cmd.arg("build")
            .arg("-c")
            .arg(self.path().join("fledge.toml"))
            .arg("-o")
            .arg(out)
            .args(["--compression", compression])
            .args(extra)
            .current_dir(self.path())
            // Keep tests off the user's download cache; every source here is a local file.
            .env("FLEDGE_CACHE_DIR", self.path().join("cache"));
        crate::tools::run(cmd)?;
        Ok(())
    }
}

/// Copies the directory tree `from` into the existing directory `to`, keeping file modes and
/// leaving out the top-level entries named in `skip`. Symlinks and special files are errors:
/// the examples hold none.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> Result<(), Error> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    for entry in std::fs::read_dir(from).map_err(io("cannot list", from))? {
        let entry = entry.map_err(io("cannot list", from))?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (src, dest) = (entry.path(), to.join(&name));
        let kind = entry.file_type().map_err(io("cannot stat", &src))?;
        if kind.is_dir() {
            std::fs::create_dir(&dest).map_err(io("cannot create", &dest))?;
            copy_tree(&src, &dest, &[])?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dest).map_err(io("cannot copy to", &dest))?;
        } else {
            return Err(Error::Build(format!(
                "{}: only files and directories can be copied from an example",
                src.display()
            )));
        }
    }
    Ok(())
}

/// A path as a TOML basic string.
/// `p` as a TOML string.
pub fn toml_str(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host description for config tests: nothing here is run.
    fn fake_host(busybox: &str) -> Host {
        Host {
            target: crate::host::GuestTarget::load().unwrap(),
            qemu: "q".into(),
            kernel: "/k".into(),
            busybox: busybox.into(),
            kvm: false,
        }
    }

    #[test]
    fn example_copy_puts_programs_in_place_and_points_at_the_hosts_busybox() {
        let host = fake_host("/opt/bb/busybox");
        let exe = std::env::current_exe().unwrap();
        let p = Project::example(&host, "http-service", &[(&exe, "bin/http-service")]).unwrap();
        let t: toml::Table = std::fs::read_to_string(p.path().join("fledge.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(t["source"]["busybox_url"].as_str(), Some("/opt/bb/busybox"));
        assert_eq!(t["init"]["path"].as_str(), Some("./init.sh"));
        let mode = |rel: &str| {
            std::fs::metadata(p.path().join(rel))
                .unwrap_or_else(|e| panic!("{rel}: {e}"))
                .permissions()
                .mode()
        };
        assert_eq!(mode("bin/http-service") & 0o777, 0o755);
        assert_ne!(mode("init.sh") & 0o111, 0, "init.sh stays executable");
        assert!(p.path().join("manifest.toml").is_file());
        assert!(!p.path().join("target").exists());
    }

    #[test]
    fn configs_are_valid_toml_with_the_expected_keys() {
        let host = fake_host("/opt/bb \"x\"/busybox");
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
