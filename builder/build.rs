//! Builds `fledge-init` for every guest architecture and hands its bytes to the `fledge` binary,
//! so one installed binary can build images for any of them with no compiler at hand.
//!
//! The inits are built by one nested `cargo build` in a target directory of its own (so it never
//! waits on the lock of the build that runs this script), for the target and profile named in
//! each `targets/<arch>.toml`. `FLEDGE_INIT_BIN_X86_64=/path/to/fledge-init` (or the older
//! `FLEDGE_INIT_BIN`) and `FLEDGE_INIT_BIN_AARCH64=...` skip that for their architecture and
//! embed a prebuilt binary instead (for packagers).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest architectures, as named by `targets/<arch>.toml` and `builder/src/embedded.rs`.
const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

fn main() {
    codec_versions();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("builder/ sits in the workspace")
        .to_path_buf();
    for p in [
        "init/src",
        "init/Cargo.toml",
        "init/build.rs",
        "abi/src",
        "abi/Cargo.toml",
        "Cargo.lock",
        "Cargo.toml",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    // (triple, where the nested build leaves it, where it is embedded from)
    let mut to_build: Vec<(String, String, PathBuf)> = Vec::new();
    let mut profiles: Vec<String> = Vec::new();
    for arch in ARCHES {
        let dest = out_dir.join(format!("fledge-init-{arch}"));
        let var = format!("FLEDGE_INIT_BIN_{}", arch.to_uppercase());
        println!("cargo:rerun-if-env-changed={var}");
        let mut prebuilt = env::var_os(&var).map(|p| (var.clone(), p));
        if arch == "x86_64" {
            println!("cargo:rerun-if-env-changed=FLEDGE_INIT_BIN");
            prebuilt = prebuilt
                .or_else(|| env::var_os("FLEDGE_INIT_BIN").map(|p| ("FLEDGE_INIT_BIN".into(), p)));
        }
        if let Some((var, prebuilt)) = prebuilt {
            println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
            fs::copy(&prebuilt, &dest).unwrap_or_else(|e| {
                panic!("{var}={}: cannot copy: {e}", Path::new(&prebuilt).display())
            });
            continue;
        }
        let target_file = root.join(format!("targets/{arch}.toml"));
        println!("cargo:rerun-if-changed={}", target_file.display());
        let target: toml::Table = fs::read_to_string(&target_file)
            .unwrap_or_else(|e| panic!("{}: {e}", target_file.display()))
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", target_file.display()));
        let key = |k: &str| {
            target
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_else(|| panic!("{}: missing string key `{k}`", target_file.display()))
                .to_string()
        };
        let (triple, profile) = (key("rust_target"), key("profile"));
        require_target(&triple, &var);
        if !profiles.contains(&profile) {
            profiles.push(profile.clone());
        }
        to_build.push((triple, profile, dest));
    }
    if to_build.is_empty() {
        return;
    }
    assert!(
        profiles.len() == 1,
        "targets/*.toml name different profiles ({profiles:?}); one nested build takes one"
    );

    let target_dir = cargo_target_dir(&out_dir).join("fledge-init");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--package",
        "fledge-init",
        "--profile",
        &profiles[0],
    ]);
    for (triple, _, _) in &to_build {
        cmd.args(["--target", triple]);
    }
    cmd.arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The nested build must not inherit this build's per-crate settings or wrappers (clippy's
    // driver, coverage flags): it is a plain release build of another crate.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let keep = matches!(k.as_str(), "CARGO_HOME" | "CARGO_NET_OFFLINE")
            || k.starts_with("CARGO_REGISTRIES_")
            || k.starts_with("CARGO_HTTP_");
        let drop = (k.starts_with("CARGO_") && !keep)
            || matches!(
                k.as_str(),
                "RUSTC"
                    | "RUSTDOC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTFLAGS"
                    | "MAKEFLAGS"
                    | "MFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC_LINKER"
            );
        if drop {
            cmd.env_remove(&k);
        }
    }
    let status = cmd.status().expect("cannot run cargo to build fledge-init");
    let triples: Vec<&str> = to_build.iter().map(|t| t.0.as_str()).collect();
    if !status.success() {
        panic!(
            "building fledge-init for {} failed (see above)",
            triples.join(" and ")
        );
    }
    for (triple, profile, dest) in &to_build {
        let built = target_dir.join(triple).join(profile).join("fledge-init");
        fs::copy(&built, dest).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
    }
}

/// Fails the build with the command that fixes it when the Rust target for a guest is not
/// installed: the nested build would otherwise stop on a missing `core` crate.
fn require_target(triple: &str, var: &str) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", triple])
        .output();
    let installed = match &out {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&dir).join("libcore").exists()
                || fs::read_dir(&dir).is_ok_and(|mut d| {
                    d.any(|e| {
                        e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
                    })
                })
        }
        _ => false,
    };
    if !installed {
        panic!(
            "the Rust target {triple} is not installed, and the fledge binary embeds fledge-init \
             built for it: run `rustup target add {triple}` (or set {var} to a prebuilt fledge-init)"
        );
    }
}

/// The outer build's target directory, so the nested build's output is shared by every profile
/// of the outer build: OUT_DIR is `<target>[/<triple>]/<profile>/build/<crate>-<hash>/out`.
fn cargo_target_dir(out_dir: &Path) -> PathBuf {
    let triple = env::var("TARGET").unwrap_or_default();
    let profile_dir = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent);
    match profile_dir.and_then(Path::parent) {
        Some(d) if d.file_name().is_some_and(|n| n == triple.as_str()) => {
            d.parent().unwrap_or(d).to_path_buf()
        }
        Some(d) => d.to_path_buf(),
        // An unusual layout: keep the nested build beside this script's output.
        None => out_dir.join("nested"),
    }
}

/// `FLEDGE_CODEC_VERSIONS`: the locked versions of the crates that make compressed bytes, so a
/// cached segment from another build of fledge is never taken for this one's.
fn codec_versions() {
    const CODECS: [&str; 8] = [
        "crc32fast",
        "flate2",
        "libdeflate-sys",
        "lz4_flex",
        "lzma-sys",
        "zlib-rs",
        "zstd-safe",
        "zstd-sys",
    ];
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let lock = root.join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = fs::read_to_string(&lock).unwrap_or_default();
    let lock: toml::Table = text.parse().unwrap_or_default();
    let mut found: Vec<String> = lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let version = p.get("version")?.as_str()?;
            CODECS.contains(&name).then(|| format!("{name}={version}"))
        })
        .collect();
    found.sort();
    println!("cargo:rustc-env=FLEDGE_CODEC_VERSIONS={}", found.join(","));
}
