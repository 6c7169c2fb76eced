//! Guest architectures end to end: `[build] arch = "aarch64"` (or `--arch`) builds an image
//! around the aarch64 fledge-init, and a program of the other machine is refused by name.

use fledge::arch::Arch;

use crate::common::{hex, Project, AGENT, BUSYBOX, DEFAULT_MODE};

/// `bytes` (a stand-in from `common`) retagged as an aarch64 program: e_machine EM_AARCH64.
fn arm64(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[18..20].copy_from_slice(&183u16.to_le_bytes());
    b
}

/// A project whose busybox and agent are aarch64 stand-ins.
fn arm64_project(extra: &str) -> Project {
    let p = Project::new();
    let (bb, agent) = (arm64(BUSYBOX), arm64(AGENT));
    p.file("tools/busybox-arm64", &bb, 0o755);
    p.file("tools/kestrel", &agent, 0o755);
    let text = format!(
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"tools/busybox-arm64\"\n\
         busybox_sha256 = \"{}\"\n{DEFAULT_MODE}{extra}",
        hex(&bb)
    );
    p.file("fledge.toml", text.as_bytes(), 0o644);
    p
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn aarch64_image_carries_the_aarch64_init() {
    let p = arm64_project("[build]\narch = \"aarch64\"\n");
    let image = p.build("a.cpio", &[]);
    assert!(
        contains(&image, Arch::Aarch64.init()),
        "no aarch64 init in the image"
    );
    assert!(
        !contains(&image, Arch::X86_64.init()),
        "the x86_64 init is in an aarch64 image"
    );
    p.ok(&["inspect", "--check", "a.cpio"]);

    // --arch on the command line does the same for a config that does not say
    let q = arm64_project("");
    let o = q.fledge(&[
        "build",
        "--arch",
        "arm64",
        "-o",
        "b.cpio",
        "--compression",
        "none",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(q.path("b.cpio")).unwrap(), image);
}

#[test]
fn a_program_of_the_other_machine_is_refused_by_name() {
    // x86_64 busybox in an aarch64 image
    let p = Project::new();
    p.config(DEFAULT_MODE);
    let o = p.fledge(&["build", "--arch", "aarch64", "-o", "x.cpio"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/bin/busybox")
            && err.contains("built for x86_64 (64-bit), but the image is for aarch64 (64-bit)")
            && err.contains("use the program built for aarch64"),
        "{err}"
    );
    assert!(
        !p.path("x.cpio").exists(),
        "a refused build left its output"
    );

    // an aarch64 agent in an x86_64 image
    let q = Project::new();
    q.file("tools/kestrel", &arm64(AGENT), 0o755);
    q.config(DEFAULT_MODE);
    let o = q.fledge(&["build", "-o", "y.cpio"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/bin/kestrel")
            && err.contains("built for aarch64 (64-bit), but the image is for x86_64"),
        "{err}"
    );
}

#[test]
fn an_unknown_arch_is_refused() {
    let p = Project::new();
    p.config("[build]\narch = \"mips\"\n");
    let o = p.fledge(&["build", "-o", "z.cpio"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("`build.arch` is \"mips\""), "{err}");
    let o = p.fledge(&["build", "--arch", "sparc", "-o", "z.cpio"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("sparc") && err.contains("aarch64"), "{err}");
}

#[test]
fn run_refuses_a_kernel_of_the_other_machine() {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    p.ok(&["-q", "build", "-o", "x.cpio.gz"]);
    let mut kernel = vec![0u8; 4096];
    kernel[0x38..0x3c].copy_from_slice(b"ARM\x64");
    p.file("Image", &kernel, 0o644);
    let o = p.fledge(&["run", "--kernel", "Image", "x.cpio.gz"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is for aarch64, but the image")
            && err.contains("/init is built for x86_64: pass --kernel with a x86_64 kernel"),
        "{err}"
    );
}
