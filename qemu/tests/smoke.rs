//! QEMU smoke runs: boot images on Debian's stock kernel under TCG and check the serial console.
//!
//! Needs `bash qemu/fetch-kernel.sh` first (kernel + qemu) and Debian's busybox-static; without
//! them every test prints `SKIP <test>: <reason>` and passes, except under `CI=true`, where it
//! fails. A failing check prints the QEMU command and the whole serial log.
//!
//! The first group proves the harness with images written by hand (independent of the builder);
//! the rest boot images made by `fledge build`, one boot per mode, each compression used once.

use std::path::Path;
use std::time::Duration;

use fledge_qemu::host::Host;
use fledge_qemu::newc::{Archive, Entry};
use fledge_qemu::project::Project;
use fledge_qemu::tools::Tools;
use fledge_qemu::vm::{fields, Boot, BootLog, Check, End, RUN_INIT};

/// An image with busybox and `/init` = a busybox shell script with `body`.
fn hand_made_image(host: &Host, dir: &Path, body: &str) -> std::path::PathBuf {
    let busybox = std::fs::read(&host.busybox).expect("busybox readable (checked by probe)");
    let image = Archive {
        entries: vec![
            Entry::dir("bin", 0o755),
            Entry::file("bin/busybox", 0o755, busybox),
            Entry::dir("dev", 0o755),
            Entry::char_dev("dev/console", 0o600, 5, 1),
            Entry::file("init", 0o755, format!("#!/bin/busybox sh\n{body}\n")),
            Entry::dir("proc", 0o755),
        ],
    };
    let path = dir.join("hand.cpio");
    image.write(&path).expect("write image");
    path
}

#[test]
fn harness_boots_a_hand_made_image() {
    let Some(host) = Host::for_test("harness_boots_a_hand_made_image") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = hand_made_image(
        &host,
        dir.path(),
        "/bin/busybox echo HAND-MADE pid=$$\n/bin/busybox poweroff -f",
    );
    let log = Boot::new("hand-made", &image).run(&host).unwrap();
    log.assert(&[
        Check::contains("HAND-MADE pid=1"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
    assert!(
        log.kernel_time(RUN_INIT).is_some(),
        "printk timestamps on `{RUN_INIT}`:\n{}",
        log.serial
    );
    eprintln!(
        "hand-made image: {:.1}s wall under TCG",
        log.elapsed.as_secs_f64()
    );
}

#[test]
fn harness_catches_a_panic_when_init_exits() {
    let Some(host) = Host::for_test("harness_catches_a_panic_when_init_exits") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = hand_made_image(&host, dir.path(), "/bin/busybox echo INIT-EXITS\nexit 0");
    let log = Boot::new("init-exits", &image).run(&host).unwrap();
    log.assert(&[Check::contains("INIT-EXITS")]);
    let failure = log
        .verify(&[Check::NoPanic, Check::PowerOff])
        .expect_err("an init that exits must make the kernel panic and the checks fail");
    let shown = failure.to_string();
    assert_eq!(failure.problems.len(), 2, "{shown}");
    assert!(shown.contains("Attempted to kill init"), "{shown}");
    assert!(shown.contains("----- serial log -----"), "{shown}");
    assert!(
        shown.contains("INIT-EXITS"),
        "the log is shown in full: {shown}"
    );
}

#[test]
fn harness_kills_a_hung_guest_and_keeps_its_log() {
    let Some(host) = Host::for_test("harness_kills_a_hung_guest_and_keeps_its_log") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = hand_made_image(
        &host,
        dir.path(),
        "/bin/busybox echo HUNG-GUEST\nexec /bin/busybox sleep 100000",
    );
    let timeout = Duration::from_secs(45);
    let log = Boot::new("hung", &image)
        .timeout(timeout)
        .run(&host)
        .unwrap();
    assert_eq!(log.end, End::TimedOut(timeout), "{}", log.serial);
    assert!(
        log.elapsed < timeout + Duration::from_secs(10),
        "killed promptly, took {:?}",
        log.elapsed
    );
    assert!(
        log.serial.contains("HUNG-GUEST"),
        "log kept: {}",
        log.serial
    );
    let shown = log.verify(&[]).unwrap_err().to_string();
    assert!(shown.contains("killed after the 45s timeout"), "{shown}");
}

// ----- images made by `fledge build` -----

/// The host and the built programs, or `None` when the test skips (see [`Host::for_test`]). A
/// failed build of `fledge` or the stand-in is a test failure, never a skip.
fn setup(test: &str) -> Option<(Host, &'static Tools)> {
    let host = Host::for_test(test)?;
    let tools = Tools::get().unwrap_or_else(|e| panic!("{test}: {e}"));
    Some((host, tools))
}

/// Checks a `STANDIN-REPORT` line: the pid, argv[0], and that every filesystem fledge-init
/// mounts is seen.
fn check_report(log: &BootLog, pid: &str, argv0: &str, mounts: &[&str]) {
    let Some(line) = log.line("STANDIN-REPORT") else {
        log.assert(&[Check::contains("STANDIN-REPORT")]);
        unreachable!("assert fails without the line");
    };
    let f = fields(line);
    let mut problems = Vec::new();
    if f.get("pid") != Some(&pid) {
        problems.push(format!("expected pid={pid} in `{line}`"));
    }
    if f.get("argv0") != Some(&argv0) {
        problems.push(format!("expected argv0={argv0} in `{line}`"));
    }
    let seen: Vec<&str> = f.get("mounts").map_or(vec![], |m| m.split(',').collect());
    for m in mounts {
        if !seen.contains(m) {
            problems.push(format!("{m} is not mounted according to `{line}`"));
        }
    }
    if let Err(e) = log.fail_if(problems) {
        panic!("{e}");
    }
}

const MOUNTS: [&str; 5] = ["/dev", "/proc", "/sys", "/tmp", "/run"];

/// Builds `p` with `compression`, boots it with `STANDIN=report`, and checks that the stand-in
/// ran as PID 1 under `argv0` seeing `mounts`, that `extra` holds, and a clean power-off.
fn boot_and_report(
    host: &Host,
    tools: &Tools,
    p: &Project,
    compression: &str,
    argv0: &str,
    mounts: &[&str],
    extra: &[Check],
) {
    let image = p.build(tools, compression, &[]).unwrap();
    let log = Boot::new(&format!("{argv0}/{compression}"), &image)
        .param("STANDIN=report")
        .run(host)
        .unwrap();
    let mut checks = vec![
        Check::absent("STANDIN-ERROR"),
        Check::NoPanic,
        Check::PowerOff,
    ];
    checks.extend_from_slice(extra);
    log.assert(&checks);
    check_report(&log, "1", argv0, mounts);
}

#[test]
fn default_mode_agent_is_pid1_with_filesystems_mounted_gzip() {
    let Some((host, tools)) = setup("default_mode_agent_is_pid1_with_filesystems_mounted_gzip")
    else {
        return;
    };
    let p = Project::default_mode(&host, tools, "").unwrap();
    boot_and_report(&host, tools, &p, "gzip", "/bin/kestrel", &MOUNTS, &[]);
}

#[test]
fn custom_mode_in_image_path_is_pid1_with_filesystems_mounted_zstd() {
    let Some((host, tools)) =
        setup("custom_mode_in_image_path_is_pid1_with_filesystems_mounted_zstd")
    else {
        return;
    };
    let p = Project::custom_in_image(&host, tools, "/usr/local/bin/my-init").unwrap();
    boot_and_report(
        &host,
        tools,
        &p,
        "zstd",
        "/usr/local/bin/my-init",
        &MOUNTS,
        &[],
    );
}

#[test]
fn custom_mode_host_file_is_pid1_with_filesystems_mounted_xz() {
    let Some((host, tools)) = setup("custom_mode_host_file_is_pid1_with_filesystems_mounted_xz")
    else {
        return;
    };
    let p = Project::custom_host_file(&host, tools).unwrap();
    boot_and_report(&host, tools, &p, "xz", "/sbin/custom-init", &MOUNTS, &[]);
}

#[test]
fn none_mode_user_binary_is_init_lz4() {
    let Some((host, tools)) = setup("none_mode_user_binary_is_init_lz4") else {
        return;
    };
    let p = Project::none_mode(&host, tools).unwrap();
    // Nothing of fledge runs: no fledge-init line; the kernel mounts only devtmpfs (when
    // CONFIG_DEVTMPFS_MOUNT) or nothing, so no mounts are required.
    boot_and_report(
        &host,
        tools,
        &p,
        "lz4",
        "/init",
        &[],
        &[Check::absent("fledge-init")],
    );
}

#[test]
fn supervise_mode_reaps_orphans_reports_status_and_powers_off_uncompressed() {
    let Some((host, tools)) =
        setup("supervise_mode_reaps_orphans_reports_status_and_powers_off_uncompressed")
    else {
        return;
    };
    let p = Project::default_mode(&host, tools, "supervise = true").unwrap();
    let image = p.build(tools, "none", &[]).unwrap();
    // The agent leaves 1000 orphans behind (re-parented to fledge-init), waits until no zombie
    // is left in /proc - only PID 1 can reap them - then exits with status 7.
    let log = Boot::new("supervise/none", &image)
        .param("STANDIN=report,orphans:1000,zombies,exit:7")
        .run(&host)
        .unwrap();
    log.assert(&[
        Check::absent("STANDIN-ERROR"),
        Check::contains("STANDIN-ORPHANS spawned=1000"),
        Check::contains("STANDIN-ZOMBIES count=0"),
        Check::contains("/bin/kestrel exited with status 7"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
    let line = log.line("STANDIN-REPORT").unwrap_or_default();
    let pid = fields(line).get("pid").copied().unwrap_or_default();
    if pid == "1" || pid.is_empty() {
        panic!(
            "{}",
            log.fail_if(vec![format!(
                "the supervised agent must not be PID 1: `{line}`"
            )])
            .unwrap_err()
        );
    }
    check_report(&log, pid, "/bin/kestrel", &MOUNTS);
}

#[test]
fn fatal_missing_agent_prints_the_error_and_powers_off() {
    let Some((host, tools)) = setup("fatal_missing_agent_prints_the_error_and_powers_off") else {
        return;
    };
    // The builder always puts the agent in a default-mode image, so take it out afterwards.
    let p = Project::default_mode(&host, tools, "").unwrap();
    let built = p.build(tools, "none", &["--no-dedup"]).unwrap();
    let mut archive = Archive::read(&built).unwrap();
    assert!(
        archive.remove("bin/kestrel"),
        "default-mode image has /bin/kestrel"
    );
    let image = p.path().join("no-agent.cpio");
    archive.write(&image).unwrap();
    let log = Boot::new("fatal/no-agent", &image)
        .param("STANDIN=report")
        .run(&host)
        .unwrap();
    log.assert(&[
        Check::contains("fledge-init: failed to execute /bin/kestrel: "),
        Check::absent("STANDIN-REPORT"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
}

// ----- the examples under examples/, built as `examples/build.sh` would -----

/// Copies `examples/<name>` with `programs` put where its `fledge.toml` maps them from, builds
/// it with gzip (the default) and boots it without extra kernel parameters.
fn boot_example(host: &Host, tools: &Tools, name: &str, programs: &[(&Path, &str)]) -> BootLog {
    let p = Project::example(host, name, programs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let image = p
        .build(tools, "gzip", &[])
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Boot::new(&format!("example {name}"), &image)
        .run(host)
        .unwrap()
}

#[test]
fn example_custom_init_runs_its_script_as_pid1() {
    let Some((host, tools)) = setup("example_custom_init_runs_its_script_as_pid1") else {
        return;
    };
    let log = boot_example(&host, tools, "custom-init", &[]);
    log.assert(&[
        Check::contains("custom-init: pid 1, kernel "),
        Check::contains("/dev /proc /sys /tmp /run"),
        Check::contains("<h1>hello from a fledge image</h1>"),
        Check::contains("custom-init: done, powering off"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
}

#[test]
fn example_default_runs_its_agent_as_pid1_with_filesystems_mounted() {
    let Some((host, tools)) =
        setup("example_default_runs_its_agent_as_pid1_with_filesystems_mounted")
    else {
        return;
    };
    let agent = &fledge_tests::guest_bins().example_agent;
    let log = boot_example(&host, tools, "default", &[(agent, "bin/example-agent")]);
    log.assert(&[
        Check::contains(
            "example-agent: pid 1, argv0 /bin/kestrel, mounted /dev,/proc,/sys,/tmp,/run",
        ),
        Check::contains("example-agent: done, powering off"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
}

#[test]
fn example_none_runs_its_own_pid1_without_fledge_init() {
    let Some((host, tools)) = setup("example_none_runs_its_own_pid1_without_fledge_init") else {
        return;
    };
    let init = &fledge_tests::guest_bins().none_init;
    let log = boot_example(&host, tools, "none", &[(init, "bin/none-init")]);
    log.assert(&[
        Check::contains("none-init: pid 1, kernel "),
        Check::contains("none-init: done, powering off"),
        Check::absent("cannot mount /proc"),
        Check::absent("fledge-init"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
}

#[test]
fn example_http_service_answers_wget_inside_the_guest() {
    let Some((host, tools)) = setup("example_http_service_answers_wget_inside_the_guest") else {
        return;
    };
    let server = &fledge_tests::guest_bins().http_service;
    let p = Project::example(&host, "http-service", &[(server, "bin/http-service")]).unwrap();
    let image = p.build(tools, "gzip", &[]).unwrap();
    // The manifest template's [[network.expose]] port becomes the default base_url.
    let manifest = image.with_file_name("example-http-service.manifest.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("manifest written")).unwrap();
    assert_eq!(
        json["workload"]["base_url"], "http://127.0.0.1:8080",
        "{json:#}"
    );
    assert_eq!(
        json["workload"]["entrypoint"],
        serde_json::json!(["/usr/bin/http-service", "0.0.0.0:8080"]),
        "{json:#}"
    );
    let log = Boot::new("example http-service", &image)
        .run(&host)
        .unwrap();
    log.assert(&[
        Check::contains("http-service: listening on 0.0.0.0:8080"),
        Check::contains(
            "http-service example: GET / answered: hello from the fledge http-service example",
        ),
        Check::NoPanic,
        Check::PowerOff,
    ]);
}

// ----- what the compressor does at scale, read back by the kernel -----

/// Deterministic pseudo-random bytes (incompressible enough to make real compressed pieces).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn md5(path: &Path) -> String {
    let out = std::process::Command::new("md5sum")
        .arg(path)
        .output()
        .expect("md5sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// An image several compression segments long, with a file bigger than a segment and a
/// deduplicated (hardlinked) pair, booted once per compression: the kernel must unpack every
/// member (no "junk at the end of compressed archive"), every byte, and the link.
#[test]
fn multi_segment_images_with_hardlinks_unpack_whole_in_the_kernel() {
    let Some((host, tools)) =
        setup("multi_segment_images_with_hardlinks_unpack_whole_in_the_kernel")
    else {
        return;
    };
    let init = "#!/bin/sh\nfor f in /data/big /data/a/dup /data/m/mid /data/z/dup; do\n  \
                echo \"SUM $f $(md5sum < $f | cut -d' ' -f1) links=$(stat -c %h $f)\"\ndone\n\
                echo SUMS-DONE\npoweroff -f\n";
    let p = Project::new(
        &host,
        "[init]\npath = \"./init.sh\"\n[mappings]\n\"./data\" = \"/data\"\n",
    )
    .unwrap();
    let files = [
        ("data/big", noise(9 << 20, 1)),
        ("data/a/dup", noise(1 << 20, 2)),
        ("data/m/mid", noise(5 << 20, 3)),
        ("data/z/dup", noise(1 << 20, 2)),
    ];
    for (rel, body) in &files {
        let path = p.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
    }
    let script = p.path().join("init.sh");
    std::fs::write(&script, init).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let expected: Vec<String> = files
        .iter()
        .map(|(rel, _)| {
            let links = if rel.ends_with("dup") { 2 } else { 1 };
            format!("SUM /{rel} {} links={links}", md5(&p.path().join(rel)))
        })
        .collect();

    let handles: Vec<_> = ["gzip", "zstd", "xz", "lz4", "none"]
        .into_iter()
        .map(|c| {
            let image = p
                .build(tools, c, &[])
                .unwrap_or_else(|e| panic!("{c}: {e}"));
            let host = host.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                let log = Boot::new(&format!("multi-segment/{c}"), &image)
                    .run(&host)
                    .unwrap();
                let mut checks: Vec<Check> = expected.iter().map(|e| Check::contains(e)).collect();
                checks.extend([
                    Check::contains("SUMS-DONE"),
                    Check::absent("junk"),
                    Check::absent("Initramfs unpacking failed"),
                    Check::NoPanic,
                    Check::PowerOff,
                ]);
                log.assert(&checks);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("boot check");
    }
}
