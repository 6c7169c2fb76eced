//! Support for the end-to-end tests: the static guest binaries (built on demand), a throw-away
//! image root, and running `fledge-init` as PID 1 of a fresh PID + mount namespace chrooted into
//! that root (`unshare --pid --fork --mount --uts --net --ipc --cgroup --kill-child chroot ROOT
//! /init`), with its output collected line by line.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The `fledge` binary of this build: `cargo test --workspace` puts it beside the test
/// executable's directory (`target/<profile>/fledge`); otherwise it is built there.
pub fn fledge_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join("fledge");
    if !bin.exists() {
        let target_dir = workspace_root().join("target/e2e-host");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "fledge", "--target-dir"])
            .arg(&target_dir)
            .current_dir(workspace_root())
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build -p fledge failed");
        return target_dir.join("debug/fledge");
    }
    bin
}

/// The guest binaries, built for x86_64-unknown-linux-musl with the `init` profile.
pub struct GuestBins {
    pub init: PathBuf,
    pub standin: PathBuf,
    /// The programs of the examples (`examples/`): the default example's agent,
    pub example_agent: PathBuf,
    /// the none example's PID 1,
    pub none_init: PathBuf,
    /// and the HTTP service example's server.
    pub http_service: PathBuf,
}

const TRIPLE: &str = "x86_64-unknown-linux-musl";
const PROFILE: &str = "init";

/// Builds `fledge-init`, `fledge-standin` and the examples' programs once per test run, with a
/// nested cargo in a target directory of its own (`target/fledge-init`, shared with the build
/// script that embeds the init) so it never waits on the running test build's lock.
pub fn guest_bins() -> &'static GuestBins {
    static BINS: OnceLock<GuestBins> = OnceLock::new();
    BINS.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target/fledge-init");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--target", TRIPLE, "--profile", PROFILE])
            .args(["-p", "fledge-init", "-p", "fledge-standins"])
            .args(["-p", "example-agent", "-p", "example-none-init"])
            .args(["-p", "example-http-service"])
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        // A plain build of other crates: none of the running test build's settings apply.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            let keep = matches!(k.as_str(), "CARGO_HOME" | "CARGO_NET_OFFLINE")
                || k.starts_with("CARGO_REGISTRIES_")
                || k.starts_with("CARGO_HTTP_");
            if (k.starts_with("CARGO_") && !keep)
                || matches!(
                    k.as_str(),
                    "RUSTC" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "RUSTFLAGS"
                )
            {
                cmd.env_remove(&k);
            }
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build the guest binaries: {e}"));
        assert!(
            status.success(),
            "building fledge-init, fledge-standin and the examples' programs for {TRIPLE} \
             failed (see above)"
        );
        let out = target_dir.join(TRIPLE).join(PROFILE);
        GuestBins {
            init: out.join("fledge-init"),
            standin: out.join("fledge-standin"),
            example_agent: out.join("example-agent"),
            none_init: out.join("none-init"),
            http_service: out.join("http-service"),
        }
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Why PID 1 tests cannot run here, if they cannot: they need root (for unshare, chroot, mount
/// and reboot in the namespace), util-linux `unshare`, `chroot`, and a static busybox.
pub fn pid1_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (unshare --pid --mount, chroot, mount)".into());
    }
    for tool in ["unshare", "chroot"] {
        if find_in_path(tool).is_none() {
            return Some(format!("`{tool}` not found in PATH"));
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install busybox-static)"
        ));
    }
    None
}

/// Skips the calling test (printing why) when PID 1 tests cannot run here; with `CI=true` the
/// test fails instead, so CI never passes by skipping.
#[macro_export]
macro_rules! require_pid1 {
    () => {
        if let Some(why) = $crate::pid1_unavailable() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PID 1 test cannot run under CI=true: {why}");
            }
            eprintln!("skipping: {why}");
            return;
        }
    };
}

const BUSYBOX: &str = "/bin/busybox";

/// Held while a test copies an executable into an image and while one forks: a child forked
/// while another thread's copy is open for writing keeps that fd until it execs, and an exec of
/// the copy in that window fails with "Text file busy".
static SPAWN: Mutex<()> = Mutex::new(());

/// A throw-away image root: `/init` (fledge-init), `/bin/kestrel` (the stand-in), busybox with
/// `/bin/sh`, and empty `/dev /proc /sys /tmp /run /etc`.
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        let bins = guest_bins();
        let dir = tempfile::Builder::new()
            .prefix("fledge-pid1-")
            .tempdir()
            .expect("create temp dir");
        let root = Root { dir };
        for d in ["bin", "sbin", "dev", "proc", "sys", "tmp", "run", "etc"] {
            fs::create_dir_all(root.path().join(d)).expect("create image dir");
        }
        root.copy_exe(&bins.init, "init");
        root.copy_exe(&bins.standin, "bin/kestrel");
        root.copy_exe(Path::new(BUSYBOX), "bin/busybox");
        symlink("busybox", root.path().join("bin/sh")).expect("symlink /bin/sh");
        root
    }

    /// Unpacks an uncompressed newc image (as `fledge build --compression none` writes it) with
    /// GNU cpio, device nodes included (root only).
    pub fn from_image(image: &Path) -> Root {
        let dir = tempfile::Builder::new()
            .prefix("fledge-image-")
            .tempdir()
            .expect("create temp dir");
        let bytes = std::fs::read(image).expect("read the image");
        // `cpio -i` stops at the first trailer; the builder writes one archive per segment.
        for part in archives(&bytes) {
            let mut child = Command::new("cpio")
                .args(["-idm", "--quiet", "--no-absolute-filenames"])
                .current_dir(dir.path())
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run cpio (apt-get install cpio)");
            std::io::Write::write_all(&mut child.stdin.take().expect("piped stdin"), part)
                .expect("feed cpio");
            let out = child.wait_with_output().expect("wait for cpio");
            assert!(
                out.status.success(),
                "cpio -i {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Root { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `from` to `rel` in the image, mode 0755.
    pub fn copy_exe(&self, from: &Path, rel: &str) -> &Self {
        let _no_fork = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let to = self.path().join(rel);
        fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {} to {rel}: {e}", from.display()));
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).expect("chmod");
        self
    }

    /// Writes `contents` to `rel` in the image.
    pub fn write(&self, rel: &str, contents: &str) -> &Self {
        fs::write(self.path().join(rel), contents).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        fs::remove_file(self.path().join(rel)).unwrap_or_else(|e| panic!("remove {rel}: {e}"));
        self
    }

    /// The workload spec, `/etc/fledge/workload`, written with the builder's encoder.
    pub fn workload(&self, spec: &fledge_abi::workload::Workload) -> &Self {
        fs::create_dir_all(self.path().join("etc/fledge")).expect("create etc/fledge");
        self.write("etc/fledge/workload", &spec.encode().expect("valid spec"))
    }

    /// The baked options file, `/etc/fledge-init.conf`. Always add `fledge.log=console` in
    /// tests: the namespace's `/dev/kmsg` is the host's kernel log.
    pub fn conf(&self, text: &str) -> &Self {
        self.write("etc/fledge-init.conf", text)
    }
}

impl Default for Root {
    fn default() -> Self {
        Root::new()
    }
}

/// How the init is started inside the namespace.
pub enum Launch {
    /// `chroot ROOT /init`.
    Direct,
    /// `chroot ROOT /bin/sh -c 'exec 7</init; exec /init'`: the init starts with an extra,
    /// inheritable fd 7 (to check that it does not leak into the target).
    WithLeakedFd,
}

/// The collected output of a run, stdout and stderr interleaved.
type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// `fledge-init` running as PID 1 of its own namespaces.
pub struct Pid1 {
    child: Child,
    lines: Lines,
    reader: Option<JoinHandle<()>>,
}

/// How a run ended.
pub struct Finished {
    /// Every line printed, stdout and stderr interleaved.
    pub output: String,
    /// False when the run had to be killed at the timeout.
    pub ended_by_itself: bool,
    /// The `unshare` process's status (it mirrors the namespace init's end).
    pub status: ExitStatus,
}

impl Pid1 {
    /// Starts the init in `root` with exactly `env` (plus `HOME=/` and `TERM=linux`, as the
    /// kernel gives init) as its environment.
    pub fn start(root: &Root, env: &[(&str, &str)], launch: Launch) -> Pid1 {
        let unshare = find_in_path("unshare").expect("unshare in PATH");
        let chroot = find_in_path("chroot").expect("chroot in PATH");
        let (reader, writer) = std::io::pipe().expect("pipe");
        let mut cmd = Command::new(unshare);
        // Own UTS, network, IPC and cgroup namespaces too: the init sets the hostname, brings
        // `lo` up and mounts mqueue and cgroup2, none of which may touch the host's (a cgroup2
        // mount in the host's cgroup namespace applies its options to the host's hierarchy).
        cmd.args(["--pid", "--fork", "--mount", "--kill-child"])
            .args(["--uts", "--net", "--ipc", "--cgroup"])
            .arg(chroot)
            .arg(root.path());
        match launch {
            Launch::Direct => cmd.arg("/init"),
            Launch::WithLeakedFd => cmd.args(["/bin/sh", "-c", "exec 7</init; exec /init"]),
        };
        cmd.env_clear()
            .env("HOME", "/")
            .env("TERM", "linux")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(writer.try_clone().expect("dup pipe"))
            .stderr(writer);
        let child = {
            let _no_copy = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
            cmd.spawn().expect("spawn unshare")
        };
        drop(cmd); // closes our copies of the write end, so EOF comes when the namespace ends

        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
        });
        Pid1 {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// Waits until a line containing `needle` appears; returns it, or panics with the output
    /// after `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.lines;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "no line containing {needle:?} within {timeout:?}; output:\n{}",
                    lines.join("\n")
                );
            }
            lines = cvar.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// The host pid of the namespace's PID 1: the child of the `unshare` process.
    pub fn init_host_pid(&self) -> i32 {
        let parent = self.child.id().to_string();
        for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after `(comm)`: state, ppid, ...
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid == Some(parent.as_str()) {
                return entry.file_name().to_string_lossy().parse().expect("pid");
            }
        }
        panic!("no child of unshare (pid {parent}) found");
    }

    /// Sends `sig` to the namespace's PID 1.
    pub fn signal(&self, sig: i32) {
        let pid = self.init_host_pid();
        // SAFETY: kill takes plain integers; `pid` is the namespace init we started.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits for the namespace to end, killing it after `timeout`.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let mut ended_by_itself = true;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for unshare") {
                break status;
            }
            if Instant::now() >= deadline {
                ended_by_itself = false;
                // `--kill-child`: the namespace init, and so the namespace, dies with unshare.
                let _ = self.child.kill();
                break self.child.wait().expect("wait for killed unshare");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Finished {
            output: self.output(),
            ended_by_itself,
            status,
        }
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        // A panicking test must not leave a namespace running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the init to the end with `STANDIN=script` and returns what happened.
pub fn run_standin(root: &Root, script: &str, timeout: Duration) -> Finished {
    Pid1::start(root, &[("STANDIN", script)], Launch::Direct).finish(timeout)
}

/// The newc archives of an uncompressed image, in order: each runs up to its trailer and the
/// padding after it; NUL bytes between archives are skipped, as the kernel does.
fn archives(bytes: &[u8]) -> Vec<&[u8]> {
    let field = |at: usize, i: usize| -> usize {
        let hex = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).expect("hex");
        usize::from_str_radix(hex, 16).expect("a newc header field")
    };
    let pad4 = |n: usize| n.div_ceil(4) * 4;
    let (mut parts, mut start, mut at) = (Vec::new(), 0, 0);
    while at + 110 <= bytes.len() {
        assert_eq!(&bytes[at..at + 6], b"070701", "newc magic at offset {at}");
        let (namesize, filesize) = (field(at, 11), field(at, 6));
        let name = &bytes[at + 110..at + 110 + namesize.saturating_sub(1)];
        at = pad4(pad4(at + 110 + namesize) + filesize);
        if name == b"TRAILER!!!" {
            let next = bytes[at.min(bytes.len())..].iter().position(|&b| b != 0);
            let end = next.map_or(bytes.len(), |n| at + n);
            parts.push(&bytes[start..end]);
            start = end;
            at = end;
        }
    }
    parts
}
