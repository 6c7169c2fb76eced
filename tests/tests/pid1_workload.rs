//! `fledge-init` as PID 1 of a namespace: what a workload finds (mounts, ptys, `/dev` links,
//! `lo`), the workload spec and its overrides, the module list, the shutdown signals, the
//! exit-status line and fatal lines on a stderr that is not the console.

use std::time::Duration;

use fledge_abi::workload::Workload;
use fledge_tests::{require_pid1, run_standin, Launch, Pid1, Root};

use crate::pid1::{
    assert_printed, exec_root, line_starting, report_field, signal_and_finish, supervise_root,
    TIMEOUT,
};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_workload_gets_ptys_shared_memory_mqueue_cgroup2_dev_links_and_lo() {
    require_pid1!();
    let run = run_standin(&exec_root(), "devices,net", TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    assert_printed(
        &run,
        "STANDIN-DEVICES pty=ok shm=ok mqueue=ok cgroup2=ok fd=ok",
    );
    let net = line_starting(&run, "STANDIN-NET");
    assert_eq!(report_field(net, "lo"), "up", "{net}");
}

/// Volant's agent, as PID 1, mounts proc, devpts, `/run` and `/tmp` again on top of
/// fledge-init's: a pty opened after that still works (the `/dev/ptmx` fledge-init leaves opens
/// the devpts on top), and the `/dev` links still resolve through the new proc.
#[test]
fn ptys_and_dev_links_survive_the_agents_second_mounts() {
    require_pid1!();
    let run = run_standin(&exec_root(), "remount,pty,devices", TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    let remount = line_starting(&run, "STANDIN-REMOUNT");
    // The second devpts, proc and tmpfs instances were stacked, not refused.
    for field in ["devpts", "proc", "run", "tmp"] {
        assert_eq!(report_field(remount, field), "ok", "{remount}");
    }
    assert_printed(&run, "STANDIN-PTY ok");
    assert_printed(&run, "fd=ok");
}

/// `json` as Volant passes a manifest (`VOLANT_MANIFEST`, `volant.manifest=`): gzip, then
/// base64 URL alphabet without padding.
fn volant_encoded(json: &str) -> String {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.as_bytes()).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(gz.finish().unwrap())
}

/// The stand-in agent behaves as Volant's where the tests rely on it: with the manifest in
/// `VOLANT_MANIFEST` it starts the workload, waits for its health, and when the workload holds
/// 8080 it cannot listen and, as PID 1, hangs with the real agent's line.
#[test]
fn the_standin_agent_hangs_like_volants_when_the_workload_takes_8080() {
    require_pid1!();
    let manifest = r#"{"name":"clash","workload":{"type":"http","base_url":"http://127.0.0.1:8080",
        "entrypoint":["/bin/kestrel"],"env":{"STANDIN":"serve:8080"}},
        "health_check":{"endpoint":"/","timeout_ms":1000}}"#;
    let encoded = volant_encoded(manifest);
    let env = [("STANDIN", "agent"), ("VOLANT_MANIFEST", encoded.as_str())];
    let root = exec_root();
    let run = Pid1::start(&root, &env, Launch::Direct);
    run.wait_for("STANDIN-AGENT manifest=env", TIMEOUT);
    run.wait_for("STANDIN-SERVE listening on :8080", TIMEOUT);
    run.wait_for("STANDIN-AGENT workload healthy at 127.0.0.1:8080/", TIMEOUT);
    run.wait_for("pid1 cannot exit; halting", TIMEOUT);
    let finished = run.finish(Duration::from_secs(2));
    assert!(
        !finished.ended_by_itself,
        "it hangs rather than ending:\n{}",
        finished.output
    );
    assert!(
        !finished.output.contains("STANDIN-AGENT listening"),
        "{}",
        finished.output
    );
}

/// A spec as the builder writes it: the program found through the spec's `PATH`, argv with a
/// space in an argument, env, working directory, open-file limit, hostname.
fn app_spec(root: &Root, script: &str) -> Workload {
    std::fs::create_dir_all(root.path().join("opt/bin")).unwrap();
    std::fs::create_dir_all(root.path().join("srv/data")).unwrap();
    root.copy_exe(&fledge_tests::guest_bins().standin, "opt/bin/app");
    Workload {
        argv: strings(&["app", "one two", "three"]),
        env: strings(&[
            "PATH=/opt/bin:/bin",
            &format!("STANDIN={script}"),
            "GREETING=hello world",
        ]),
        cwd: Some("/srv/data".into()),
        nofile: Some(4096),
        hostname: Some("spec-host".into()),
        ..Workload::default()
    }
}

#[test]
fn exec_mode_starts_the_spec_as_pid_1() {
    require_pid1!();
    let root = exec_root();
    let spec = app_spec(&root, "report,workload");
    root.workload(&spec);
    let run = Pid1::start(&root, &[], Launch::Direct).finish(TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    let report = line_starting(&run, "STANDIN-REPORT");
    assert_eq!(report_field(report, "pid"), "1", "{report}");
    let w = line_starting(&run, "STANDIN-WORKLOAD");
    assert!(w.contains("argv=app|one two|three "), "{w}");
    assert_eq!(report_field(w, "cwd"), "/srv/data", "{w}");
    assert_eq!(report_field(w, "uid"), "0", "{w}");
    assert_eq!(report_field(w, "nofile"), "4096/4096", "{w}");
    assert_eq!(report_field(w, "hostname"), "spec-host", "{w}");
    assert_printed(&run, "STANDIN-ENV GREETING=hello world");
    assert_printed(&run, "STANDIN-ENV PATH=/opt/bin:/bin");
    assert_printed(&run, "STANDIN-ENV HOME=/"); // the kernel's environment stays
}

#[test]
fn supervise_mode_runs_the_spec_as_its_user() {
    require_pid1!();
    let root = supervise_root();
    let mut spec = app_spec(&root, "workload,exit:7");
    spec.user = Some((1000, 1001));
    spec.groups = vec![27, 1001];
    root.workload(&spec);
    let run = Pid1::start(&root, &[], Launch::Direct).finish(TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    let w = line_starting(&run, "STANDIN-WORKLOAD");
    assert!(w.contains("argv=app|one two|three "), "{w}");
    for (key, want) in [
        ("uid", "1000"),
        ("gid", "1001"),
        ("groups", "27,1001"),
        ("cwd", "/srv/data"),
        ("nofile", "4096/4096"),
    ] {
        assert_eq!(report_field(w, key), want, "{key}: {w}");
    }
    assert_printed(&run, "fledge-init: /opt/bin/app exited with status 7");
    assert_printed(&run, "fledge-init: exit-status=7");
}

#[test]
fn options_override_the_spec() {
    require_pid1!();
    let root = Root::new();
    // The options file and the kernel command line share one parser; the namespace's
    // /proc/cmdline is the host's, so the file stands in for it here.
    root.conf(
        "fledge.log=console fledge.supervise=1 fledge.cwd=/srv fledge.user=5:6 \
         fledge.nofile=2048 fledge.hostname=from-cmdline fledge.env=GREETING=bye\n",
    );
    let spec = app_spec(&root, "workload");
    root.workload(&spec);
    let run = Pid1::start(&root, &[], Launch::Direct).finish(TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    let w = line_starting(&run, "STANDIN-WORKLOAD");
    for (key, want) in [
        ("cwd", "/srv"),
        ("uid", "5"),
        ("gid", "6"),
        ("nofile", "2048/2048"),
        ("hostname", "from-cmdline"),
    ] {
        assert_eq!(report_field(w, key), want, "{key}: {w}");
    }
    assert_printed(&run, "STANDIN-ENV GREETING=bye");
}

#[test]
fn the_default_open_file_limit_is_high() {
    require_pid1!();
    let run = run_standin(&exec_root(), "workload", TIMEOUT);
    let w = line_starting(&run, "STANDIN-WORKLOAD");
    // Raising the hard limit needs CAP_SYS_RESOURCE (bit 24), which some test hosts drop even
    // for root (a VM's PID 1 has it: the QEMU boots check the value there).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    if cap_eff & (1 << 24) != 0 {
        assert_eq!(report_field(w, "nofile"), "1048576/1048576", "{w}");
    } else {
        assert_printed(
            &run,
            "fledge-init: failed to raise RLIMIT_NOFILE to 1048576: Operation not permitted",
        );
    }
}

#[test]
fn a_working_directory_that_is_missing_is_a_clear_fatal_line() {
    require_pid1!();
    for (mode, root, status) in [
        ("exec", exec_root(), 1),
        ("supervise", supervise_root(), 126),
    ] {
        let mut spec = app_spec(&root, "report");
        spec.cwd = Some("/no/such/dir".into());
        root.workload(&spec);
        let run = Pid1::start(&root, &[], Launch::Direct).finish(TIMEOUT);
        assert!(run.ended_by_itself, "{mode}: hung:\n{}", run.output);
        assert!(
            run.output.contains(
                "fledge-init: failed to change directory to /no/such/dir: No such file or directory"
            ) && run
                .output
                .contains(&format!("fledge-init: exit-status={status}")),
            "{mode}:\n{}",
            run.output
        );
        assert!(
            !run.output.contains("STANDIN-REPORT"),
            "{mode}: started anyway"
        );
    }
}

#[test]
fn a_malformed_spec_stops_the_boot_naming_the_line() {
    require_pid1!();
    let root = exec_root();
    std::fs::create_dir_all(root.path().join("etc/fledge")).unwrap();
    root.write(
        "etc/fledge/workload",
        "fledge-workload 1\narg /bin/kestrel\nuser root\n",
    );
    let run = run_standin(&root, "report", TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    assert_printed(
        &run,
        "fledge-init: bad /etc/fledge/workload: line 3: `user` value \"root\" is not numeric UID:GID",
    );
    assert!(!run.output.contains("STANDIN-REPORT"), "{}", run.output);
}

#[test]
fn module_failures_name_the_module_and_only_required_ones_stop_the_boot() {
    require_pid1!();
    // Only modules that do not exist: the namespace shares the host's kernel.
    let list = "# test\n/lib/modules/missing/a.ko opt=1\nnot-a-path\n";
    let root = exec_root();
    std::fs::create_dir_all(root.path().join("etc/fledge")).unwrap();
    root.write("etc/fledge/modules.load", list);
    let run = run_standin(&root, "report", TIMEOUT);
    assert_printed(
        &run,
        "fledge-init: failed to load module /lib/modules/missing/a.ko: No such file or directory; going on",
    );
    assert_printed(
        &run,
        "fledge-init: /etc/fledge/modules.load line 3: \"not-a-path\" is not",
    );
    assert_printed(&run, "STANDIN-REPORT");

    root.write("etc/fledge/modules.load", "!/lib/modules/missing/b.ko\n");
    let run = run_standin(&root, "report", TIMEOUT);
    assert_printed(
        &run,
        "fledge-init: failed to load required module /lib/modules/missing/b.ko: No such file or directory",
    );
    assert!(!run.output.contains("STANDIN-REPORT"), "{}", run.output);
}

/// Ctrl-Alt-Del reaches PID 1 as SIGINT (after `RB_DISABLE_CAD`); SIGPWR reaches the target as
/// SIGTERM. Both start the shutdown: a target that keeps running after SIGINT is killed when the
/// grace period is over, which a merely forwarded signal (SIGHUP) never does.
#[test]
fn ctrl_alt_del_and_sigpwr_start_the_orderly_shutdown() {
    require_pid1!();
    let root = Root::new();
    root.conf("fledge.log=console fledge.supervise=1 fledge.grace_ms=500\n");

    let pid1 = Pid1::start(&root, &[("STANDIN", "signals")], Launch::Direct);
    pid1.wait_for("STANDIN-READY", TIMEOUT);
    pid1.signal(libc::SIGHUP);
    pid1.wait_for("STANDIN-SIGNAL HUP", TIMEOUT);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert!(
        !pid1.output().contains("exit-status="),
        "SIGHUP alone must not end the run:\n{}",
        pid1.output()
    );
    pid1.signal(libc::SIGINT);
    let run = pid1.finish(TIMEOUT);
    assert!(run.ended_by_itself, "SIGINT: hung:\n{}", run.output);
    assert_printed(&run, "STANDIN-SIGNAL INT");
    assert_printed(&run, "fledge-init: exit-status=137");

    let run = signal_and_finish(&root, libc::SIGPWR);
    assert_printed(&run, "STANDIN-SIGNAL TERM");
    assert_printed(&run, "fledge-init: exit-status=0");
}

/// Without `fledge.log=console` the init logs to `/dev/kmsg` and counts on the kernel to echo
/// errors to the console; stdio here is a pipe, so the fatal line must be written there too.
#[test]
fn fatal_lines_reach_a_stderr_that_is_not_the_console() {
    require_pid1!();
    let root = Root::new();
    root.conf("# fledge.log left at its default\n");
    root.remove("bin/kestrel");
    let run = run_standin(&root, "report", TIMEOUT);
    assert!(run.ended_by_itself, "hung:\n{}", run.output);
    assert_printed(
        &run,
        "fledge-init: failed to execute /bin/kestrel: No such file or directory",
    );
    assert_printed(&run, "fledge-init: exit-status=1");
}
