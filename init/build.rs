//! Link flags of the PID 1 binary, which every image carries (sizes are for x86_64; see
//! "Binary size" in `qemu/README.md`):
//!
//! - `-z noseparate-code` lets code and read-only data share pages instead of each starting on
//!   a page of its own: about 8 KiB of padding less.
//! - For static musl builds, `-z norelro`: nothing in a static musl program applies RELRO (the
//!   kernel ignores `PT_GNU_RELRO`, and only musl's dynamic linker `mprotect`s it), but ld still
//!   pads the file so that the RELRO part ends on a page. With `-z common-page-size=16` ld then
//!   also stops moving the data segment to the start of a page. Up to 4 KiB of padding less
//!   (about 0.7 KiB today).
//! - For the `init` profile on musl, `--no-eh-frame-hdr`: the `.eh_frame_hdr` lookup table is
//!   only read by an unwinder, and a `panic = "abort"` `no_std` binary has none (about 2 KiB).
//!   Builds that unwind (other profiles) keep it.
//!
//! A C compiler driver takes them as `-Wl,...`; a bare lld (the aarch64 target's linker, see
//! `.cargo/config.toml`) takes them as is. The code model comes from `.cargo/config.toml` too:
//! x86_64 builds a static executable there, not a static-PIE.
use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let linker = env::var("RUSTC_LINKER").unwrap_or_default();
    let bare_ld = Path::new(&linker)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("lld") || n.ends_with("ld"));
    let mut args = vec!["-z", "noseparate-code"];
    // The musl targets link statically (`crt-static`) unless told otherwise.
    let musl = env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "musl")
        && env::var("CARGO_CFG_TARGET_OS").is_ok_and(|o| o == "linux");
    if musl {
        args.extend(["-z", "norelro"]);
        if !bare_ld {
            // GNU ld's data segment placement; lld does not pad there.
            args.extend(["-z", "common-page-size=16"]);
        }
        if profile_dir().as_deref() == Some("init") {
            args.push("--no-eh-frame-hdr");
        }
    }
    if bare_ld {
        for a in args {
            println!("cargo:rustc-link-arg-bins={a}");
        }
    } else {
        println!("cargo:rustc-link-arg-bins=-Wl,{}", args.join(","));
    }
}

/// The name of the profile's output directory (`init` for the `init` profile): OUT_DIR is
/// `<target>[/<triple>]/<profile>/build/<package>-<hash>/out`. Cargo tells a build script the
/// profile's `opt-level` but not its `panic` strategy, so the `init` profile is told by name.
fn profile_dir() -> Option<String> {
    let out_dir = env::var_os("OUT_DIR")?;
    let build = Path::new(&out_dir)
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))?;
    Some(build.parent()?.file_name()?.to_str()?.to_string())
}
