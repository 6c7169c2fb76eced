//! The stand-in's Volant agent (`agent`, `remount`, `serve:PORT`): what the real agent does in
//! default mode where the tests look (SPEC section 15), in a few hundred lines.
//!
//! - `remount`: as PID 1 only, mounts proc, sysfs, devtmpfs, devpts (`mode=0620,gid=5`, no
//!   `ptmxmode`), and tmpfs on `/dev/shm`, `/run` and `/tmp` again, as the agent does; prints
//!   `STANDIN-REMOUNT` with each result (`ok`, `busy` or the error), or `skipped` when not PID 1.
//! - `agent`: the manifest from `VOLANT_MANIFEST`, else `volant.manifest=` on the kernel command
//!   line (gzip, base64 URL alphabet without padding), else `GET
//!   http://<volant.api_host>:<volant.api_port>/api/v1/images/<volant.image>/manifest` (or
//!   `plugins/<volant.plugin>`); prints `STANDIN-AGENT manifest=env|cmdline|api`; starts
//!   `workload.entrypoint` with the manifest's env and workdir; polls `health_check.endpoint`
//!   on `base_url` (2 minutes); then listens on `:8080` answering `/healthz` and proxying
//!   `/v1/<path>` to `base_url`, printing `STANDIN-AGENT listening on :8080`. When 8080 is taken
//!   it prints the real agent's `pid1 cannot exit; halting` and hangs as PID 1 (exits 1 when
//!   not). With no manifest it starts no workload and still listens (`/healthz` only), as the
//!   real one does.
//! - `serve:PORT`: an HTTP server on `0.0.0.0:PORT` answering every GET with 200 and
//!   `STANDIN-PAGE <path>`; prints `STANDIN-SERVE listening on :PORT`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::say;

/// The agent's port.
const AGENT_PORT: u16 = 8080;
/// How long the agent waits for the workload's health check.
const HEALTH_WINDOW: Duration = Duration::from_secs(120);

/// The agent's re-mounts as PID 1 (SPEC 15), each reported.
pub fn remount() {
    if crate::getpid() != 1 {
        say("STANDIN-REMOUNT skipped (not pid 1)");
        return;
    }
    let rows: [(&str, &str, &str, Option<&str>); 7] = [
        ("proc", "/proc", "proc", None),
        ("sysfs", "/sys", "sysfs", None),
        ("devtmpfs", "/dev", "devtmpfs", None),
        ("devpts", "/dev/pts", "devpts", Some("mode=0620,gid=5")),
        ("shm", "/dev/shm", "tmpfs", None),
        ("run", "/run", "tmpfs", None),
        ("tmp", "/tmp", "tmpfs", None),
    ];
    let mut line = String::from("STANDIN-REMOUNT");
    for (name, target, fstype, data) in rows {
        let _ = std::fs::create_dir_all(target);
        line += &format!(" {name}={}", mount(fstype, target, fstype, data));
    }
    say(&line);
}

fn mount(source: &str, target: &str, fstype: &str, data: Option<&str>) -> String {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (source, target, fstype) = (c(source), c(target), c(fstype));
    let data = data.map(c);
    // SAFETY: all pointers are valid NUL-terminated strings (or null for no data) for the call.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r == 0 {
        return "ok".into();
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EBUSY) {
        "busy".into()
    } else {
        e.to_string().replace(' ', "_")
    }
}

/// The manifest and where it came from.
fn manifest() -> Option<(serde_json::Value, &'static str)> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let param = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    };
    if let Some(m) = std::env::var("VOLANT_MANIFEST")
        .ok()
        .filter(|m| !m.is_empty())
    {
        return Some((decode(&m).unwrap_or_else(|e| crate::fail(&e)), "env"));
    }
    if let Some(m) = param("volant.manifest") {
        return Some((decode(&m).unwrap_or_else(|e| crate::fail(&e)), "cmdline"));
    }
    let host = param("volant.api_host")?;
    let port = param("volant.api_port")?;
    let path = match (param("volant.image"), param("volant.plugin")) {
        (Some(image), _) => format!("/api/v1/images/{image}/manifest"),
        (None, Some(plugin)) => format!("/api/v1/plugins/{plugin}/manifest"),
        (None, None) => return None,
    };
    let (status, body) = get(&format!("{host}:{port}"), &path).ok()?;
    if status != 200 {
        say(&format!("STANDIN-AGENT api {path} answered {status}"));
        return None;
    }
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| crate::fail(&e.to_string()));
    Some((json, "api"))
}

/// base64 URL alphabet without padding, then gzip, then JSON: Volant's `pluginspec.Encode`.
fn decode(text: &str) -> Result<serde_json::Value, String> {
    use base64::Engine as _;
    let gz = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|e| format!("volant.manifest is not base64url: {e}"))?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut json)
        .map_err(|e| format!("volant.manifest is not gzip: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("volant.manifest is not JSON: {e}"))
}

/// `http://host:port[/prefix]` -> (`host:port`, prefix without a trailing `/`).
fn split_base(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let prefix = format!("/{path}").trim_end_matches('/').to_string();
    Some((authority, prefix))
}

/// One HTTP/1.0 GET: (status, body).
fn get(authority: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let raw = exchange(authority, path)?;
    let status = std::str::from_utf8(&raw)
        .ok()
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(Vec::new(), |i| raw[i + 4..].to_vec());
    Ok((status, body))
}

/// Sends a GET and returns the whole raw response.
fn exchange(authority: &str, path: &str) -> std::io::Result<Vec<u8>> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(raw)
}

/// The agent: manifest, workload, health, then `:8080`.
pub fn agent() {
    std::thread::spawn(reap);
    let base = match manifest() {
        Some((m, from)) => {
            say(&format!("STANDIN-AGENT manifest={from}"));
            start_workload(&m)
        }
        None => {
            say("STANDIN-AGENT no manifest: no workload");
            None
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", AGENT_PORT)) {
        Ok(l) => l,
        Err(e) => {
            say(&format!(
                "STANDIN-AGENT cannot listen on :{AGENT_PORT}: {e}"
            ));
            if crate::getpid() == 1 {
                say("pid1 cannot exit; halting");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            std::process::exit(1);
        }
    };
    say(&format!("STANDIN-AGENT listening on :{AGENT_PORT}"));
    for conn in listener.incoming().flatten() {
        let base = base.clone();
        std::thread::spawn(move || answer_agent(conn, base.as_ref()));
    }
}

/// Starts the manifest's workload and waits for its health check; returns its base URL split.
fn start_workload(m: &serde_json::Value) -> Option<(String, String)> {
    let w = &m["workload"];
    let argv: Vec<String> = w["entrypoint"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let Some((program, args)) = argv.split_first() else {
        crate::fail("the manifest has no workload.entrypoint")
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if let Some(env) = w["env"].as_object() {
        for (k, v) in env {
            cmd.env(k, v.as_str().unwrap_or_default());
        }
    }
    if let Some(dir) = w["workdir"].as_str() {
        cmd.current_dir(dir);
    }
    if let Err(e) = cmd.spawn() {
        crate::fail(&format!("cannot start {program}: {e}"));
    }
    let base = w["base_url"].as_str().and_then(split_base);
    if let Some((authority, prefix)) = &base {
        let endpoint = m["health_check"]["endpoint"].as_str().unwrap_or("/");
        let path = format!("{prefix}/{}", endpoint.trim_start_matches('/'));
        let start = Instant::now();
        loop {
            if matches!(get(authority, &path), Ok((200..=299, _))) {
                break;
            }
            if start.elapsed() > HEALTH_WINDOW {
                crate::fail(&format!("{authority}{path} did not become healthy"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        say(&format!(
            "STANDIN-AGENT workload healthy at {authority}{path}"
        ));
    }
    base
}

/// Reaps every child, as the real agent does with `wait4(-1)`.
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer; no memory is shared.
        if unsafe { libc::waitpid(-1, &mut status, 0) } < 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The request path of one HTTP request read from `conn`.
fn request_path(conn: &mut TcpStream) -> Option<String> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).map(String::from)
}

fn respond(conn: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn answer_agent(mut conn: TcpStream, base: Option<&(String, String)>) {
    let Some(path) = request_path(&mut conn) else {
        return;
    };
    if path == "/healthz" {
        return respond(&mut conn, "200 OK", "{\"status\":\"ok\"}");
    }
    let (Some(rest), Some((authority, prefix))) = (path.strip_prefix("/v1"), base) else {
        return respond(&mut conn, "404 Not Found", "not found\n");
    };
    let upstream = format!("{prefix}/{}", rest.trim_start_matches('/'));
    match exchange(authority, &upstream) {
        Ok(raw) => {
            let _ = conn.write_all(&raw);
        }
        Err(e) => respond(&mut conn, "502 Bad Gateway", &format!("{e}\n")),
    }
}

/// `serve:PORT`.
pub fn serve(port: u16) {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .unwrap_or_else(|e| crate::fail(&format!("cannot listen on :{port}: {e}")));
    say(&format!("STANDIN-SERVE listening on :{port}"));
    for mut conn in listener.incoming().flatten() {
        if let Some(path) = request_path(&mut conn) {
            respond(&mut conn, "200 OK", &format!("STANDIN-PAGE {path}\n"));
        }
    }
}

/// `pty`: `STANDIN-PTY ok` or what failed.
pub fn pty() {
    say(&format!("STANDIN-PTY {}", crate::outcome(crate::pty())));
}
