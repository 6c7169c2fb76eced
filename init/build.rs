//! Link flags of the PID 1 binary. `-z noseparate-code` lets code and read-only data share
//! pages instead of each starting on a page of its own: about 8 KiB of padding less in a binary
//! of about 90 KiB, which every image carries.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,noseparate-code");
}
