//! aarch64 guests under TCG: `fledge build` of one image per mode for arm64 on this (x86_64)
//! machine, booted by `fledge run` on `qemu-system-aarch64 -M virt -cpu max` and Debian's arm64
//! kernel: custom, default and none mode, a dynamic glibc program with its closure, a linux/arm64
//! container image from an OCI layout (made with umoci), and the power key on `virt`. Each test
//! is one boot; the test harness runs them two at a time on two cores (about 50 s in all).
//!
//! Needs `FLEDGE_QEMU_ARCH=arm64 bash qemu/fetch-kernel.sh` (kernel, arm64 busybox, arm64 glibc
//! tree in `target/qemu-kernel-arm64`; `FLEDGE_QEMU_ARM64_DIR` names another directory) and
//! `qemu-system-aarch64`; skips with the reason otherwise, except under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use fledge_qemu::host::ci;
use fledge_qemu::repo_root;

/// What an arm64 boot needs, or why it cannot happen here.
struct Arm64 {
    dir: PathBuf,
    fledge: PathBuf,
}

fn setup(test: &str) -> Option<Arm64> {
    let dir = std::env::var_os("FLEDGE_QEMU_ARM64_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/qemu-kernel-arm64"));
    let missing = [
        "vmlinuz",
        "busybox",
        "modules/modules.dep",
        "sysroot/usr/bin/getconf",
    ]
    .into_iter()
    .find(|f| !dir.join(f).exists());
    let why = match missing {
        Some(f) => Some(format!(
            "no {} (run `FLEDGE_QEMU_ARCH=arm64 bash qemu/fetch-kernel.sh`)",
            dir.join(f).display()
        )),
        None if Command::new("qemu-system-aarch64")
            .arg("--version")
            .output()
            .is_err() =>
        {
            Some("qemu-system-aarch64 not found on PATH (apt-get install qemu-system-arm)".into())
        }
        None => None,
    };
    if let Some(why) = why {
        assert!(!ci(), "{test}: {why}");
        eprintln!("skipping {test}: {why}");
        return None;
    }
    Some(Arm64 {
        dir,
        fledge: fledge_tests::fledge_bin(),
    })
}

impl Arm64 {
    /// Writes `fledge.toml` (the common head with `build` added to its `[build]` table, then
    /// `body`) and `files` into a new project.
    fn project(&self, build: &str, body: &str, files: &[(&str, &str, u32)]) -> tempfile::TempDir {
        let p = tempfile::tempdir().unwrap();
        let text = format!(
            "version = \"1\"\nstrategy = \"initramfs\"\n[build]\narch = \"aarch64\"\n{build}\
             [source]\nbusybox_url = \"{}\"\n{body}",
            self.dir.join("busybox").display()
        );
        std::fs::write(p.path().join("fledge.toml"), text).unwrap();
        for (name, body, mode) in files {
            let path = p.path().join(name);
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                .unwrap();
        }
        p
    }

    /// Builds the project and boots it; returns `fledge run`'s output and the seconds it took.
    fn build_and_run(&self, dir: &Path) -> (Output, String, f64) {
        self.build_and_run_with(dir, &[])
    }

    /// [`Arm64::build_and_run`] with more `fledge run` flags.
    fn build_and_run_with(&self, dir: &Path, flags: &[&str]) -> (Output, String, f64) {
        let build = Command::new(&self.fledge)
            .args(["-q", "build", "-o", "arm64.cpio.gz"])
            .current_dir(dir)
            .env("FLEDGE_CACHE_DIR", dir.join("cache"))
            .output()
            .unwrap();
        assert!(
            build.status.success(),
            "build: {}",
            String::from_utf8_lossy(&build.stderr)
        );
        let start = Instant::now();
        let out = Command::new("timeout")
            .arg("240")
            .arg(&self.fledge)
            .args(["run", "--accel", "tcg"])
            .args(flags)
            .arg("--kernel")
            .arg(self.dir.join("vmlinuz"))
            .arg("arm64.cpio.gz")
            .current_dir(dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text, start.elapsed().as_secs_f64())
    }
}

/// The status fledge-init reported on the console.
fn reported(console: &str) -> Option<i32> {
    let line = console
        .lines()
        .find(|l| l.contains("fledge-init: exit-status="))?;
    line.rsplit('=').next()?.trim().parse().ok()
}

#[test]
fn arm64_custom_mode_runs_its_command_and_reports_its_status() {
    let Some(a) = setup("arm64_custom_mode_runs_its_command_and_reports_its_status") else {
        return;
    };
    let modules = a.dir.join("modules");
    let p = a.project(
        "",
        &format!(
            "[init]\nsupervise = true\ncommand = [\"/bin/sh\", \"-c\", \"echo custom on $(uname -m); ip -o -4 addr show eth0\"]\n\
             [kernel]\nmodules_dir = \"{}\"\nmodules = [\"virtio_pci\", \"virtio_net\"]\n",
            modules.display()
        ),
        &[],
    );
    let (out, text, secs) = a.build_and_run(p.path());
    eprintln!("arm64 custom mode: {secs:.1} s from fledge run to the end");
    assert!(text.contains("-M virt"), "{text}");
    assert!(text.contains("custom on aarch64"), "{text}");
    assert!(
        text.contains("inet 10.0.2.15/24"),
        "virtio-net-pci came up: {text}"
    );
    let status = reported(&text).unwrap_or_else(|| panic!("no exit-status line: {text}"));
    assert_eq!(out.status.code(), Some(status), "{text}");
}

#[test]
fn arm64_default_mode_hands_off_to_the_agent() {
    let Some(a) = setup("arm64_default_mode_hands_off_to_the_agent") else {
        return;
    };
    // The agent: a script busybox runs, so the image needs no second arm64 program.
    let p = a.project(
        "",
        "[init]\nsupervise = true\n[agent]\nsource_strategy = \"local\"\npath = \"kestrel\"\n",
        &[(
            "kestrel",
            "#!/bin/sh\necho agent on $(uname -m) as pid $$\n",
            0o755,
        )],
    );
    let (out, text, _) = a.build_and_run(p.path());
    assert!(text.contains("agent on aarch64"), "{text}");
    let status = reported(&text).unwrap_or_else(|| panic!("no exit-status line: {text}"));
    assert_eq!(out.status.code(), Some(status), "{text}");
}

#[test]
fn arm64_none_mode_runs_its_own_init() {
    let Some(a) = setup("arm64_none_mode_runs_its_own_init") else {
        return;
    };
    let p = a.project(
        "",
        "[init]\nnone = true\n[mappings]\n\"my-init\" = \"/init\"\n",
        &[(
            "my-init",
            "#!/bin/sh\n/bin/busybox mount -t proc proc /proc\necho none on $(uname -m)\n/bin/busybox poweroff -f\n",
            0o755,
        )],
    );
    let (out, text, _) = a.build_and_run(p.path());
    assert!(text.contains("none on aarch64"), "{text}");
    // no fledge-init: no status line, so fledge run says so
    assert_eq!(reported(&text), None, "{text}");
    assert_eq!(out.status.code(), Some(121), "{text}");
}

#[test]
fn arm64_dynamic_glibc_program_starts_with_its_closure() {
    let Some(a) = setup("arm64_dynamic_glibc_program_starts_with_its_closure") else {
        return;
    };
    let sysroot = a.dir.join("sysroot");
    let p = a.project(
        &format!("sysroot = \"{}\"\n", sysroot.display()),
        &format!(
            "[init]\nsupervise = true\ncommand = [\"/usr/bin/getconf\", \"LONG_BIT\"]\n\
             [mappings]\n\"{}/usr/bin/getconf\" = \"/usr/bin/getconf\"\n",
            sysroot.display()
        ),
        &[],
    );
    let (out, text, _) = a.build_and_run(p.path());
    assert!(
        text.lines().any(|l| l.trim() == "64"),
        "getconf LONG_BIT printed 64: {text}"
    );
    let status = reported(&text).unwrap_or_else(|| panic!("no exit-status line: {text}"));
    assert_eq!((status, out.status.code()), (0, Some(0)), "{text}");
}

#[test]
fn arm64_power_down_reaches_fledge_init_as_the_power_key() {
    let Some(a) = setup("arm64_power_down_reaches_fledge_init_as_the_power_key") else {
        return;
    };
    let p = a.project(
        "",
        &format!(
            "[init]\nsupervise = true\ncommand = [\"/bin/sh\", \"-c\", \"echo waiting; exec sleep 600\"]\n\
             [kernel]\nmodules_dir = \"{}\"\nmodules = [\"gpio_keys\", \"evdev\"]\n",
            a.dir.join("modules").display()
        ),
        &[],
    );
    // --timeout asks QEMU for system_powerdown, as Ctrl-C does: on virt that is KEY_POWER of
    // the gpio-keys device.
    let (out, text, secs) = a.build_and_run_with(p.path(), &["--timeout", "15"]);
    assert!(text.contains("waiting"), "{text}");
    assert!(
        text.contains("fledge-init: power button pressed: shutting down"),
        "{text}"
    );
    assert!(reported(&text).is_some(), "an orderly end: {text}");
    assert_eq!(out.status.code(), Some(124), "{text}");
    // well before QEMU would be killed (30 s after the request)
    assert!(secs < 40.0, "took {secs:.1} s: {text}");
}

#[test]
fn arm64_container_image_from_an_oci_layout_runs_its_entrypoint() {
    let test = "arm64_container_image_from_an_oci_layout_runs_its_entrypoint";
    let Some(a) = setup(test) else {
        return;
    };
    if Command::new("umoci").arg("--version").output().is_err() {
        assert!(!ci(), "{test}: umoci not found (apt-get install umoci)");
        eprintln!("skipping {test}: umoci not found (apt-get install umoci)");
        return;
    }
    let p = a.project(
        "",
        "image = \"oci:img:arm64\"\n[init]\nfrom_image = true\nsupervise = true\n",
        &[],
    );
    // A linux/arm64 image: Debian's arm64 glibc tree, getconf as its entrypoint.
    let script = format!(
        "umoci init --layout img && umoci new --image img:arm64 \
         && umoci unpack --image img:arm64 b >/dev/null && cp -a {}/. b/rootfs/ \
         && umoci repack --image img:arm64 b && rm -rf b \
         && umoci config --image img:arm64 --architecture arm64 \
            --config.entrypoint /usr/bin/getconf --config.cmd LONG_BIT",
        a.dir.join("sysroot").display()
    );
    let made = Command::new("sh")
        .args(["-c", &script])
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (out, text, _) = a.build_and_run(p.path());
    assert!(text.lines().any(|l| l.trim() == "64"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
}
