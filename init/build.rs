//! Link flags of the PID 1 binary. `-z noseparate-code` lets code and read-only data share
//! pages instead of each starting on a page of its own: about 8 KiB of padding less in a binary
//! of about 90 KiB, which every image carries. A C compiler driver takes it as `-Wl,...`; a bare
//! lld (the aarch64 target's linker, see `.cargo/config.toml`) takes it as is.
fn main() {
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_default();
    let bare_ld = std::path::Path::new(&linker)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("lld") || n.ends_with("ld"));
    if bare_ld {
        println!("cargo:rustc-link-arg-bins=-znoseparate-code");
    } else {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,noseparate-code");
    }
}
