//! The examples under `examples/` stay valid: every example directory has a `fledge.toml` and a
//! `manifest.toml` that `fledge validate` accepts, and `examples/README.md` and
//! `examples/build.sh` know it. (The QEMU smoke runs in `qemu/` build and boot them.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The examples the smoke runs boot; a new example directory must be added here too.
const EXPECTED: [&str; 5] = [
    "agent-web",
    "custom-init",
    "default",
    "http-service",
    "none",
];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every directory of `examples/` holding a `fledge.toml`, sorted by name.
fn example_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(examples_dir())
        .expect("read examples/")
        .map(|e| e.expect("list examples/").path())
        .filter(|p| p.join("fledge.toml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Copies an example without its built programs (`bin/`, gitignored) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "bin" {
                copy_tree(&src, &dest);
            }
        } else {
            fs::copy(&src, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
    }
}

/// Puts a placeholder at each source the config maps from `bin/` (where `examples/build.sh`
/// copies the built programs), so validation does not depend on a build having run. Sources
/// anywhere else must exist in the repository.
fn stub_built_programs(dir: &Path) {
    let text = fs::read_to_string(dir.join("fledge.toml")).unwrap();
    let config: toml::Table = text.parse().unwrap();
    let mut sources: Vec<&str> = config
        .get("mappings")
        .and_then(|m| m.as_table())
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if let Some(path) = config.get("agent").and_then(|a| a.get("path")) {
        sources.push(path.as_str().expect("agent.path is a string"));
    }
    for source in sources {
        let rel = source.trim_start_matches("./");
        if rel.starts_with("bin/") {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"placeholder for a built program\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

#[test]
fn the_expected_examples_are_there_with_both_files() {
    let names = example_names();
    assert_eq!(names, EXPECTED, "example directories with a fledge.toml");
    for name in &names {
        let manifest = examples_dir().join(name).join("manifest.toml");
        assert!(manifest.is_file(), "{} is missing", manifest.display());
    }
}

#[test]
fn every_example_passes_fledge_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in example_names() {
        let dir = tmp.path().join(&name);
        copy_tree(&examples_dir().join(&name), &dir);
        stub_built_programs(&dir);
        let out = Command::new(env!("CARGO_BIN_EXE_fledge"))
            .args(["validate", "-c", "fledge.toml"])
            .current_dir(&dir)
            .env("FLEDGE_CACHE_DIR", tmp.path().join("cache"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let both_valid =
            stdout.contains("fledge.toml: valid") && stdout.contains("manifest.toml: valid");
        if !out.status.success() || !both_valid {
            failures.push(format!(
                "examples/{name}: fledge validate ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn readme_and_build_script_cover_every_example() {
    let readme = fs::read_to_string(examples_dir().join("README.md")).unwrap();
    let script = fs::read_to_string(examples_dir().join("build.sh")).unwrap();
    for name in example_names() {
        let command = format!("examples/build.sh {name}");
        assert!(
            readme.contains(&command),
            "examples/README.md does not show `{command}`"
        );
        assert!(
            script
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&name)),
            "examples/build.sh has no table row for {name}"
        );
    }
}
