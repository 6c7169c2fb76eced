//! `fledge-init` as PID 1 of a PID + mount namespace chrooted into a throw-away image, with
//! `fledge-standin` as the agent or supervised target. Each test asserts on what the programs
//! print. Needs root; skips (or fails under CI=true) without it.

use std::time::Duration;

use fledge_tests::{require_pid1, run_standin, Launch, Pid1, Root};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);
const SUPERVISE: &str = "fledge.log=console fledge.supervise=1 fledge.grace_ms=2000\n";

pub(crate) fn exec_root() -> Root {
    let root = Root::new();
    root.conf("fledge.log=console\n");
    root
}

pub(crate) fn supervise_root() -> Root {
    let root = Root::new();
    root.conf(SUPERVISE);
    root
}

/// Fails with the whole output unless the run printed `needle`.
pub(crate) fn assert_printed(run: &fledge_tests::Finished, needle: &str) {
    assert!(
        run.output.contains(needle),
        "expected {needle:?} in:\n{}",
        run.output
    );
}

/// The first line of the run's output starting with `prefix`; fails with the whole output.
pub(crate) fn line_starting<'a>(run: &'a fledge_tests::Finished, prefix: &str) -> &'a str {
    run.output
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{}", run.output))
}

pub(crate) fn report_field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn exec_path_mounts_and_hands_off_keeping_pid_1() {
    require_pid1!();
    let run = run_standin(&exec_root(), "report", TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    let line = line_starting(&run, "STANDIN-REPORT");
    assert_eq!(report_field(line, "pid"), "1", "{line}");
    assert_eq!(report_field(line, "argv0"), "/bin/kestrel", "{line}");
    let mounts: Vec<&str> = report_field(line, "mounts").split(',').collect();
    let expected = [
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/run",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys/fs/cgroup",
    ];
    for m in expected {
        assert!(mounts.contains(&m), "{m} not mounted: {line}");
    }
}

#[test]
fn exec_path_honours_volant_init() {
    require_pid1!();
    let root = exec_root();
    root.copy_exe(&fledge_tests::guest_bins().standin, "sbin/custom-init")
        .write(".volant_init", "/sbin/custom-init\n")
        .remove("bin/kestrel");
    let run = run_standin(&root, "report", TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    assert!(
        run.output.contains("pid=1 ") && run.output.contains("argv0=/sbin/custom-init"),
        "custom init not run as PID 1:\n{}",
        run.output
    );
}

#[test]
fn missing_agent_prints_the_fatal_line_and_ends_the_namespace() {
    require_pid1!();
    let root = exec_root();
    root.remove("bin/kestrel");
    let run = run_standin(&root, "report", TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    assert_printed(
        &run,
        "fledge-init: failed to execute /bin/kestrel: No such file or directory",
    );
    assert!(
        !run.status.success(),
        "a fatal error must not look like success"
    );
}

#[test]
fn supervise_reports_exit_statuses() {
    require_pid1!();
    let root = supervise_root();
    let cases = [
        ("exit:0", "exited with status 0"),
        ("exit:1", "exited with status 1"),
        ("exit:7", "exited with status 7"),
        ("exit:127", "exited with status 127"),
        ("exit:255", "exited with status 255"),
        ("kill:TERM", "killed by signal 15 (status 143)"),
        ("kill:KILL", "killed by signal 9 (status 137)"),
        ("kill:USR1", "killed by signal 10 (status 138)"),
    ];
    for (script, want) in cases {
        let run = run_standin(&root, script, TIMEOUT);
        assert!(run.ended_by_itself, "case {script}: hung:\n{}", run.output);
        let want = format!("fledge-init: /bin/kestrel {want}");
        assert!(
            run.output.lines().any(|l| l == want),
            "case {script}: want {want:?} in:\n{}",
            run.output
        );
    }
}

#[test]
fn supervise_reports_exec_failures_as_127_and_126() {
    require_pid1!();
    let cases = [
        ("missing", "/bin/nothing-here", 127),
        ("not executable", "/etc/fledge-init.conf", 126),
    ];
    for (name, target, code) in cases {
        let root = supervise_root();
        root.write(".volant_init", target);
        let run = run_standin(&root, "", TIMEOUT);
        assert!(run.ended_by_itself, "case {name}: hung:\n{}", run.output);
        let want = format!("fledge-init: {target} exited with status {code}");
        assert!(
            run.output.lines().any(|l| l == want),
            "case {name}: want {want:?} in:\n{}",
            run.output
        );
        assert!(
            run.output
                .contains(&format!("fledge-init: failed to execute {target}: ")),
            "case {name}: no exec error line:\n{}",
            run.output
        );
    }
}

#[test]
fn supervise_reaps_a_thousand_orphans() {
    require_pid1!();
    let run = run_standin(&supervise_root(), "orphans:1000,sleep:200,zombies", TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    assert_printed(&run, "STANDIN-ORPHANS spawned=1000");
    assert_printed(&run, "STANDIN-ZOMBIES count=0");
    assert_printed(&run, "fledge-init: /bin/kestrel exited with status 0");
}

#[test]
fn supervise_keeps_the_main_status_when_children_die_together() {
    require_pid1!();
    let root = supervise_root();
    let cases = [
        ("burst:100,exit:5", 5),
        ("burst:2000,exit:9", 9),
        ("burst:300,kill:USR2", 140),
    ];
    for (script, code) in cases {
        let run = run_standin(&root, script, TIMEOUT);
        assert!(run.ended_by_itself, "case {script}: hung:\n{}", run.output);
        let line = run
            .output
            .lines()
            .find(|l| l.starts_with("fledge-init: /bin/kestrel "))
            .unwrap_or_else(|| panic!("case {script}: no status line:\n{}", run.output));
        assert!(
            line.ends_with(&format!("status {code}")) || line.ends_with(&format!("status {code})")),
            "case {script}: want status {code}, got {line:?}"
        );
    }
}

#[test]
fn supervise_forwards_every_signal() {
    require_pid1!();
    let root = Root::new();
    root.conf("fledge.log=console fledge.supervise=1 fledge.grace_ms=20000\n");
    let pid1 = Pid1::start(&root, &[("STANDIN", "signals")], Launch::Direct);
    pid1.wait_for("STANDIN-READY", TIMEOUT);
    // musl numbers real-time signals from 35 (it keeps 32-34); 40 and 64 are real-time in both
    // C libraries.
    let signals = [
        ("HUP", libc::SIGHUP),
        ("QUIT", libc::SIGQUIT),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("WINCH", libc::SIGWINCH),
        ("CONT", libc::SIGCONT),
        ("ALRM", libc::SIGALRM),
        ("TSTP", libc::SIGTSTP),
        ("TTIN", libc::SIGTTIN),
        ("TTOU", libc::SIGTTOU),
        ("URG", libc::SIGURG),
        ("IO", libc::SIGIO),
        ("PROF", libc::SIGPROF),
        ("VTALRM", libc::SIGVTALRM),
        ("XCPU", libc::SIGXCPU),
        ("XFSZ", libc::SIGXFSZ),
        ("STKFLT", libc::SIGSTKFLT),
        ("PIPE", libc::SIGPIPE),
        ("40", 40),
        ("64", 64),
        ("INT", libc::SIGINT),
        ("TERM", libc::SIGTERM),
    ];
    for (name, sig) in signals {
        pid1.signal(sig);
        pid1.wait_for(&format!("STANDIN-SIGNAL {name}"), TIMEOUT);
    }
    let run = pid1.finish(TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    assert_printed(&run, "fledge-init: /bin/kestrel exited with status 0");
    assert_printed(&run, "fledge-init: exit-status=0");
}

#[test]
fn sigterm_to_pid_1_shuts_down_a_child_that_handles_it() {
    require_pid1!();
    let run = signal_and_finish(&supervise_root(), libc::SIGTERM);
    assert!(
        run.output.contains("STANDIN-SIGNAL TERM")
            && run
                .output
                .contains("fledge-init: /bin/kestrel exited with status 0"),
        "{}",
        run.output
    );
}

/// Runs the stand-in's `signals` action, sends `sig` to PID 1 once it is ready and waits for
/// the run to end by itself.
pub(crate) fn signal_and_finish(root: &Root, sig: i32) -> fledge_tests::Finished {
    let pid1 = Pid1::start(root, &[("STANDIN", "signals")], Launch::Direct);
    pid1.wait_for("STANDIN-READY", TIMEOUT);
    pid1.signal(sig);
    let run = pid1.finish(TIMEOUT);
    assert!(run.ended_by_itself, "signal {sig}: hung:\n{}", run.output);
    run
}

#[test]
fn sigterm_to_pid_1_kills_a_child_that_ignores_it_after_the_grace_period() {
    require_pid1!();
    let root = Root::new();
    root.conf("fledge.log=console fledge.supervise=1 fledge.grace_ms=300\n");
    let pid1 = Pid1::start(
        &root,
        &[("STANDIN", "ignore-term,ready,sleep:60000")],
        Launch::Direct,
    );
    pid1.wait_for("STANDIN-READY", TIMEOUT);
    pid1.signal(libc::SIGTERM);
    let run = pid1.finish(TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    assert_printed(
        &run,
        "fledge-init: /bin/kestrel killed by signal 9 (status 137)",
    );
}

#[test]
fn supervised_child_starts_clean() {
    require_pid1!();
    // Control: in the exec path the leaked fd 7 does reach the agent, so the harness leaks it.
    let control = Pid1::start(
        &exec_root(),
        &[("STANDIN", "hygiene")],
        Launch::WithLeakedFd,
    )
    .finish(TIMEOUT);
    assert!(
        control.output.contains(" fds=7"),
        "control run did not see the leaked fd:\n{}",
        control.output
    );

    let run = Pid1::start(
        &supervise_root(),
        &[("STANDIN", "hygiene")],
        Launch::WithLeakedFd,
    )
    .finish(TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    assert_printed(
        &run,
        "STANDIN-HYGIENE mask=none sigpipe=default fds=none session_leader=true",
    );
}

#[test]
fn refuses_to_run_when_not_pid_1() {
    require_pid1!();
    // In a private mount namespace, so that a regression could not mount over the host's /dev.
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(&fledge_tests::guest_bins().init)
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.starts_with("fledge-init: must run as PID 1 (this is pid "),
        "{stderr}"
    );
}

/// The whole chain: `fledge build` lays out the image with the embedded init and the baked
/// `[init] supervise = true`; unpacked, its `/init` supervises the agent.
#[test]
fn fledge_built_image_boots_and_supervises_the_agent() {
    require_pid1!();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("fledge.toml");
    let text = format!(
        "version = \"1\"\nstrategy = \"initramfs\"\n[init]\nsupervise = true\n[agent]\n\
         source_strategy = \"local\"\npath = \"{}\"\n[source]\nbusybox_url = \"/bin/busybox\"\n",
        fledge_tests::guest_bins().standin.display()
    );
    std::fs::write(&config, text).unwrap();
    let image = work.path().join("image.cpio");
    let out = std::process::Command::new(fledge_tests::fledge_bin())
        .args(["build", "--compression", "none", "-c"])
        .arg(&config)
        .arg("-o")
        .arg(&image)
        .arg("--cache-dir")
        .arg(work.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fledge build: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let root = Root::from_image(&image);
    let conf = std::fs::read_to_string(root.path().join("etc/fledge-init.conf")).unwrap();
    assert!(
        conf.contains("fledge.supervise=1"),
        "baked options: {conf:?}"
    );
    root.conf(&format!("{conf}fledge.log=console\n"));
    let run = run_standin(&root, "report,exit:7", TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    let line = line_starting(&run, "STANDIN-REPORT");
    assert_ne!(
        report_field(line, "pid"),
        "1",
        "supervised agent is a child: {line}"
    );
    assert_printed(&run, "/bin/kestrel exited with status 7");
}
