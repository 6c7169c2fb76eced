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
use fledge_qemu::vm::{Boot, Check, End, RUN_INIT};

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
