//! Builds `fledge-init` for the guest and hands its bytes to the `fledge` binary, so one installed
//! binary can build images with no compiler at hand.
//!
//! The init is built by a nested `cargo build` in a target directory of its own (so it never waits
//! on the lock of the build that runs this script), for the target and profile named in
//! `targets/x86_64.toml`. `FLEDGE_INIT_BIN=/path/to/fledge-init` skips that and embeds a prebuilt
//! binary instead (for packagers).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    codec_versions();
    println!("cargo:rerun-if-env-changed=FLEDGE_INIT_BIN");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("fledge-init");
    if let Some(prebuilt) = env::var_os("FLEDGE_INIT_BIN") {
        println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
        fs::copy(&prebuilt, &dest).unwrap_or_else(|e| {
            panic!(
                "FLEDGE_INIT_BIN={}: cannot copy: {e}",
                Path::new(&prebuilt).display()
            )
        });
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("builder/ sits in the workspace")
        .to_path_buf();
    let target_file = root.join("targets/x86_64.toml");
    for p in [
        "init/src",
        "init/Cargo.toml",
        "init/build.rs",
        "abi/src",
        "abi/Cargo.toml",
        "Cargo.lock",
        "Cargo.toml",
        "targets/x86_64.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
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

    let target_dir = cargo_target_dir(&out_dir).join("fledge-init");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--package",
        "fledge-init",
        "--profile",
        &profile,
        "--target",
        &triple,
    ])
    .arg("--manifest-path")
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
    if !status.success() {
        panic!(
            "building fledge-init for {triple} failed (see above); if the target is missing, run \
             `rustup target add {triple}`"
        );
    }
    let built = target_dir.join(&triple).join(&profile).join("fledge-init");
    fs::copy(&built, &dest).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
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
