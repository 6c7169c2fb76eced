//! `fledge run` end to end: the real CLI boots images under QEMU on Debian's kernel (TCG here:
//! the KVM probe must notice that KVM hangs on these machines and fall back).
//!
//! Needs what the smoke runs need (`bash qemu/fetch-kernel.sh`, busybox-static); skips with the
//! reason otherwise, except under `CI=true`. Each test is one boot, except the kernel search.
//! Ctrl-C is a SIGINT sent to `fledge run` once the example serves.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fledge_qemu::host::Host;
use fledge_qemu::project::Project;
use fledge_qemu::tools::Tools;

/// How long one `fledge run` may take (build, probe, TCG boot, shutdown) on a loaded machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn setup(test: &str) -> Option<(Host, &'static Tools)> {
    let host = Host::for_test(test)?;
    match Tools::get() {
        Ok(t) => Some((host, t)),
        Err(e) => panic!("{test}: cannot build the test programs: {e}"),
    }
}

/// A default-mode project whose agent is the stand-in, supervised by fledge-init.
fn supervised_standin(host: &Host, tools: &Tools) -> Project {
    let p = Project::default_mode(host, tools, "supervise = true").unwrap();
    std::fs::write(
        p.path().join("manifest.toml"),
        "name = \"standin\"\nversion = \"0.1.0\"\n\n[resources]\ncpu_cores = 1\nmemory_mb = 128\n",
    )
    .unwrap();
    p
}

/// A running `fledge run`, its output collected as it comes.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    started: Instant,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let t = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            t.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

impl Running {
    fn start(host: &Host, tools: &Tools, dir: &Path, args: &[&str]) -> Running {
        let mut cmd = Command::new(&tools.fledge);
        cmd.arg("run")
            .args(args)
            .current_dir(dir)
            .env("FLEDGE_KERNEL", &host.kernel)
            .env("FLEDGE_CACHE_DIR", dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start fledge run");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    fn output(&self) -> String {
        format!(
            "----- stdout (console) -----\n{}\n----- stderr -----\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits until the console shows `text`; panics with everything printed on timeout or exit.
    fn wait_for_console(&mut self, text: &str) {
        while !self.stdout.lock().unwrap().contains(text) {
            let exited = self.child.try_wait().unwrap();
            if exited.is_some() || self.started.elapsed() > RUN_TIMEOUT {
                let _ = self.child.kill();
                panic!(
                    "no `{text}` on the console ({exited:?}):\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pids of `fledge run`'s children (QEMU).
    fn children(&self) -> Vec<u32> {
        let pid = self.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    fn interrupt(&self) {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -INT failed");
    }

    /// Waits for the end; returns the status and everything printed.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if self.started.elapsed() > RUN_TIMEOUT {
                let _ = self.child.kill();
                panic!(
                    "fledge run did not end within {RUN_TIMEOUT:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The readers end when the pipes close; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }
}

/// True when no process `pid` is left (or it is no longer QEMU).
fn gone(pid: u32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    !comm.starts_with("qemu")
}

#[test]
fn run_exits_with_the_workloads_status_and_probes_kvm() {
    let Some((host, tools)) = setup("run_exits_with_the_workloads_status_and_probes_kvm") else {
        return;
    };
    let p = supervised_standin(&host, tools);
    let r = Running::start(
        &host,
        tools,
        p.path(),
        &["--accel", "auto", "--append", "STANDIN=exit:7"],
    );
    let (status, out, err) = r.finish();
    let all = format!("status {status}\n----- stdout -----\n{out}\n----- stderr -----\n{err}");
    assert_eq!(status.code(), Some(7), "{all}");
    assert!(
        out.contains("fledge-init: /bin/kestrel exited with status 7"),
        "{all}"
    );
    assert!(err.contains("the workload exited with status 7"), "{all}");
    // On these machines KVM hangs (or aborts): the probe must notice and fall back to TCG.
    // Where KVM works the run uses it, and the boot above proves it.
    if err.contains("under KVM") {
        eprintln!("KVM works on this machine: the probe chose it");
    } else {
        assert!(
            err.contains("KVM not used: ") && err.contains("; using TCG"),
            "{all}"
        );
        assert!(err.contains("under TCG on -M "), "{all}");
    }
}

/// `GET /` on 127.0.0.1:`port`: the whole answer.
fn get(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// `fledge run` of the http-service example with the Debian kernel's `modules` in the image:
/// the health check passes from the host, the host reaches the server, and SIGINT to `fledge
/// run` shuts the guest down in order on `machine`, fledge-init logging `shutdown` first.
fn http_example_under_fledge_run(test: &str, modules: &[&str], machine: &str, shutdown: &str) {
    let Some((host, tools)) = setup(test) else {
        return;
    };
    let Some(tree) = host.module_tree(test) else {
        return;
    };
    let server = &fledge_tests::guest_bins().http_service;
    let p = Project::example(&host, "http-service", &[(server, "bin/http-service")]).unwrap();
    // Debian's kernel has the virtio drivers and the ACPI button driver as modules only.
    let config = p.path().join("fledge.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!(
        "\n[kernel]\nmodules = {modules:?}\nmodules_dir = {:?}\n",
        tree.display().to_string()
    );
    std::fs::write(&config, text).unwrap();

    let mut r = Running::start(&host, tools, p.path(), &["--accel", "tcg"]);
    r.wait_for_console("http-service example: serving on 0.0.0.0:8080");
    // The health check passed from the host; the same port answers this test.
    let deadline = Instant::now() + Duration::from_secs(150);
    let line = loop {
        let err = r.stderr.lock().unwrap().clone();
        if let Some(l) = err.lines().find(|l| l.starts_with("healthy after ")) {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "never healthy:\n{}", r.output());
        std::thread::sleep(Duration::from_millis(100));
    };
    let port: u16 = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no URL in `{line}`"));
    let answer = get(port);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.ends_with("hello from the fledge http-service example\n"),
        "{answer}"
    );
    eprintln!("http-service under fledge run (TCG, {machine}): {line}");
    let err = r.stderr.lock().unwrap().clone();
    assert!(
        err.contains(&format!("under TCG on -M {machine} ")),
        "{}",
        r.output()
    );

    let qemu = r.children();
    assert_eq!(qemu.len(), 1, "one QEMU child: {qemu:?}\n{}", r.output());
    r.interrupt();
    let (status, out, err) = r.finish();
    let all = format!("status {status}\n----- stdout -----\n{out}\n----- stderr -----\n{err}");
    assert!(
        err.contains("interrupted: asking the guest to power down"),
        "{all}"
    );
    // The request reached fledge-init, which passed a signal on to the script, which stopped
    // the server and exited 0; fledge-init reported that and powered off.
    assert!(out.contains(shutdown), "{all}");
    assert!(out.contains("http-service example: stopped"), "{all}");
    assert!(out.contains("fledge-init: exit-status=0"), "{all}");
    assert!(out.contains("reboot: Power down"), "{all}");
    assert_eq!(status.code(), Some(0), "{all}");
    assert!(
        !err.contains("killing QEMU"),
        "the guest shut down by itself:\n{all}"
    );
    assert!(
        gone(qemu[0]),
        "QEMU (pid {}) is still running:\n{all}",
        qemu[0]
    );
}

#[test]
fn run_serves_the_http_example_on_q35_and_ctrl_alt_del_shuts_it_down() {
    // virtio-pci and no virtio-mmio: q35, where Ctrl-C is Ctrl-Alt-Del, SIGINT to fledge-init
    // (the kernel's keyboard driver is built in).
    http_example_under_fledge_run(
        "run_serves_the_http_example_on_q35_and_ctrl_alt_del_shuts_it_down",
        &["virtio_net", "virtio_pci"],
        "q35",
        "fledge-init: SIGINT (Ctrl-Alt-Del): shutting down",
    );
}

#[test]
fn run_serves_the_http_example_on_microvm_and_the_power_button_shuts_it_down() {
    // virtio-mmio and the ACPI button driver: microvm, no keyboard; Ctrl-C presses the ACPI
    // power button, which fledge-init reads from the kernel's ACPI events.
    http_example_under_fledge_run(
        "run_serves_the_http_example_on_microvm_and_the_power_button_shuts_it_down",
        &["virtio_net", "virtio_mmio", "button"],
        "microvm",
        "fledge-init: power button pressed: shutting down",
    );
}

#[test]
fn run_without_a_kernel_names_where_it_looked() {
    let Some((host, tools)) = setup("run_without_a_kernel_names_where_it_looked") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A named kernel that is not there.
    let out = Command::new(&tools.fledge)
        .args(["run", "--kernel", "/nonexistent/vmlinuz", "--accel", "tcg"])
        .arg(&host.kernel) // any existing file as IMAGE: the kernel is looked for first
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the kernel named by --kernel does not exist: /nonexistent/vmlinuz"),
        "{err}"
    );
    // No kernel anywhere: only checkable where /boot holds none (build machines, CI).
    let boot_has_one = std::fs::read_dir("/boot")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .unwrap_or(false);
    if boot_has_one {
        eprintln!("SKIP the search half: /boot has a vmlinuz-* here");
        return;
    }
    let out = Command::new(&tools.fledge)
        .args(["run", "--accel", "tcg"])
        .arg(&host.kernel)
        .env_remove("FLEDGE_KERNEL")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(
            "error: no kernel to boot: looked at --kernel, $FLEDGE_KERNEL, /boot/vmlinuz-"
        ),
        "{err}"
    );
    assert!(
        err.contains("/boot/vmlinuz-*") && err.contains("dpkg -x"),
        "{err}"
    );
}

/// `GET path` on 127.0.0.1:`port`: the whole answer.
fn get_path(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    std::io::Write::write_all(&mut s, request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// A default-mode project as Volant's plugins are: the stand-in is the agent (`STANDIN` from
/// `[init] env`: first the agent's second mounts and a pty opened after them, then the agent),
/// and a workload the manifest names, serving on 8081 (the stand-in again, `serve:8081`). With
/// Debian's kernel, the virtio network and ACPI button drivers as modules. `fill` bytes of
/// noise in the manifest's env make it too long for the kernel command line.
fn agent_project(host: &Host, tools: &Tools, tree: &Path, supervise: bool, fill: usize) -> Project {
    let script = if supervise {
        "agent"
    } else {
        "remount,pty,agent"
    };
    let supervise = if supervise { "supervise = true\n" } else { "" };
    let p = Project::default_mode(
        host,
        tools,
        &format!("{supervise}env = {{ STANDIN = \"{script}\" }}"),
    )
    .unwrap();
    p.copy_executable(&tools.standin, "web").unwrap();
    let config = p.path().join("fledge.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!(
        "\n[mappings]\n\"web\" = \"/usr/bin/web\"\n\n[kernel]\nmodules = [\"virtio_net\", \
         \"virtio_mmio\", \"button\"]\nmodules_dir = {:?}\n",
        tree.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: String = (0..fill)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    std::fs::write(
        p.path().join("manifest.toml"),
        format!(
            "name = \"agentweb\"\nversion = \"0.1.0\"\n\n[resources]\ncpu_cores = 1\n\
             memory_mb = 256\n\n[workload]\nentrypoint = \"/usr/bin/web\"\n\n[env]\n\
             STANDIN = \"serve:8081\"\nNOISE = \"{noise}\"\n\n[[network.expose]]\nport = 8081\n\n\
             [health_check]\nendpoint = \"/ready\"\n"
        ),
    )
    .unwrap();
    p
}

/// Waits for `healthy after` on stderr; returns the line and the agent's host port in it.
fn wait_healthy(r: &Running) -> (String, u16) {
    let deadline = Instant::now() + Duration::from_secs(200);
    let line = loop {
        let err = r.stderr.lock().unwrap().clone();
        if let Some(l) = err.lines().find(|l| l.contains("healthy after ")) {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "never healthy:\n{}", r.output());
        std::thread::sleep(Duration::from_millis(100));
    };
    let port = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no URL in `{line}`"));
    (line, port)
}

/// The `started` event's forwards as (host, guest, to).
fn forwards(events: &Path) -> Vec<(u64, u64, String)> {
    let text = std::fs::read_to_string(events).unwrap();
    let started: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "started")
        .unwrap_or_else(|| panic!("no started event in {text}"));
    started["forwards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let n = |k: &str| f[k].as_u64().unwrap();
            (n("host"), n("guest"), f["to"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Default mode with the agent as PID 1, as Volant boots it and with no `--append`: the agent
/// finds its manifest on the command line, mounts devpts again and still opens a pty, starts
/// the workload, and answers on the forwarded 8080 (`/healthz`, and the workload's page through
/// `/v1/`); Ctrl-C stops the VM at once, as announced.
#[test]
fn run_boots_a_default_mode_plugin_as_volant_does() {
    let test = "run_boots_a_default_mode_plugin_as_volant_does";
    let Some((host, tools)) = setup(test) else {
        return;
    };
    let Some(tree) = host.module_tree(test) else {
        return;
    };
    let p = agent_project(&host, tools, &tree, false, 0);
    let events = p.path().join("events.jsonl");
    let events_arg = events.display().to_string();
    let mut r = Running::start(
        &host,
        tools,
        p.path(),
        &["--accel", "tcg", "--json", &events_arg],
    );
    let (line, port) = wait_healthy(&r);
    eprintln!("default mode under fledge run (TCG): {line}");
    assert!(line.contains("/healthz and http://127.0.0.1:"), "{line}");
    assert!(line.ends_with("/v1/ready answer"), "{line}");
    r.wait_for_console("STANDIN-AGENT listening on :8080");
    let out = r.stdout.lock().unwrap().clone();
    assert!(
        out.contains("STANDIN-AGENT manifest=cmdline"),
        "{}",
        r.output()
    );
    assert!(out.contains("STANDIN-REMOUNT proc=ok"), "{}", r.output());
    assert!(out.contains("devpts=ok"), "{}", r.output());
    assert!(out.contains("STANDIN-PTY ok"), "{}", r.output());
    let health = get_path(port, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
    assert!(health.ends_with("{\"status\":\"ok\"}"), "{health}");
    let page = get_path(port, "/v1/hello/page");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.ends_with("STANDIN-PAGE /hello/page\n"), "{page}");
    let f = forwards(&events);
    assert!(
        f.iter()
            .any(|(h, g, to)| *h == port as u64 && *g == 8080 && to == "agent"),
        "{f:?}"
    );
    assert!(
        f.iter().any(|(_, g, to)| *g == 8081 && to == "workload"),
        "{f:?}"
    );
    let err = r.stderr.lock().unwrap().clone();
    assert!(err.contains("Ctrl-C stops the VM hard"), "{}", r.output());

    let qemu = r.children();
    let asked = Instant::now();
    r.interrupt();
    let (status, out, err) = r.finish();
    let all = format!("status {status}\n----- stdout -----\n{out}\n----- stderr -----\n{err}");
    assert!(asked.elapsed() < Duration::from_secs(10), "at once: {all}");
    assert!(err.contains("interrupted: stopping the VM hard"), "{all}");
    assert_eq!(status.code(), Some(121), "{all}");
    assert!(qemu.iter().all(|&q| gone(q)), "QEMU is gone: {all}");
}

/// Supervised default mode with a manifest too long for the kernel command line: the agent
/// fetches it from fledge run's API, the workload answers through the agent, and Ctrl-C gives
/// fledge-init's shutdown lines and the agent's status.
#[test]
fn run_supervises_the_agent_which_fetches_a_long_manifest_from_the_api() {
    let test = "run_supervises_the_agent_which_fetches_a_long_manifest_from_the_api";
    let Some((host, tools)) = setup(test) else {
        return;
    };
    let Some(tree) = host.module_tree(test) else {
        return;
    };
    let p = agent_project(&host, tools, &tree, true, 3000);
    let r = Running::start(&host, tools, p.path(), &["--accel", "tcg"]);
    let (line, port) = wait_healthy(&r);
    eprintln!("supervised default mode under fledge run (TCG): {line}");
    let err = r.stderr.lock().unwrap().clone();
    assert!(
        err.contains("over x86's 2047: left off it"),
        "{}",
        r.output()
    );
    assert!(
        err.contains("the agent fetched its manifest from fledge run's API (/api/v1/images/agentweb/manifest)"),
        "{}",
        r.output()
    );
    assert!(!err.contains("Ctrl-C stops the VM hard"), "{}", r.output());
    let out = r.stdout.lock().unwrap().clone();
    assert!(out.contains("STANDIN-AGENT manifest=api"), "{}", r.output());
    let page = get_path(port, "/v1/");
    assert!(page.ends_with("STANDIN-PAGE /\n"), "{page}");

    r.interrupt();
    let (status, out, err) = r.finish();
    let all = format!("status {status}\n----- stdout -----\n{out}\n----- stderr -----\n{err}");
    assert!(
        out.contains("fledge-init: power button pressed: shutting down"),
        "{all}"
    );
    let code = out
        .lines()
        .find_map(|l| l.split("fledge-init: exit-status=").nth(1))
        .and_then(|c| c.trim().parse::<i32>().ok())
        .unwrap_or_else(|| panic!("no exit-status line: {all}"));
    assert_eq!(status.code(), Some(code), "{all}");
    assert!(
        err.contains(&format!("the workload exited with status {code}")),
        "{all}"
    );
}
