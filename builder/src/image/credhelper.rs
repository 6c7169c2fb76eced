//! Docker credential helpers: `docker-credential-NAME get` with the registry's server address
//! on stdin answers `{"ServerURL": ..., "Username": ..., "Secret": ...}` on stdout (the
//! documented protocol of docker-credential-helpers, used for ECR, GCR, ACR and desktop key
//! chains). A helper runs with a time bound and a bound on what it may print; an answer of
//! "credentials not found" is not an error, anything else that goes wrong is, naming the helper.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long a helper may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Most a helper may print on stdout (or stderr).
const MAX_OUTPUT: u64 = 64 << 10;

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The program a helper name stands for (`ecr-login` -> `docker-credential-ecr-login`).
pub fn program(name: &str) -> String {
    format!("docker-credential-{name}")
}

/// Asks helper `name` for the credentials of `server`: `Ok(None)` when it has none.
pub fn get(name: &str, server: &str) -> Result<Option<(String, String)>, String> {
    if name.is_empty() || name.contains(['/', '\0']) {
        return Err(format!(
            "the credential helper name {name:?} is not a helper name"
        ));
    }
    ask(std::path::Path::new(&program(name)), server, TIMEOUT)
}

/// Runs the helper program `exe` (found on PATH when it is a bare name).
fn ask(
    exe: &std::path::Path,
    server: &str,
    timeout: Duration,
) -> Result<Option<(String, String)>, String> {
    let prog = exe.file_name().map_or_else(
        || exe.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut child = Command::new(exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the credential helper {prog}: {e}"))?;
    // The address and a newline, then end of input; a helper that does not read it is fine.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(format!("{server}\n").as_bytes());
    }
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(r) = r {
                let _ = r.take(MAX_OUTPUT + 1).read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the credential helper {prog} did not answer within {} s",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for the credential helper {prog}: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if out.len() as u64 > MAX_OUTPUT {
        return Err(format!(
            "the credential helper {prog} printed more than {MAX_OUTPUT} bytes"
        ));
    }
    let text = String::from_utf8_lossy(&out);
    if !status.success() {
        // The protocol's answer for an unknown server, on stdout.
        if text.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let said = [text.trim(), String::from_utf8_lossy(&err).trim()]
            .into_iter()
            .find(|s| !s.is_empty())
            .map(|s| s.lines().next().unwrap_or_default().to_string())
            .unwrap_or_else(|| "nothing".to_string());
        return Err(format!(
            "the credential helper {prog} failed for {server} ({status}): it said {said:?}"
        ));
    }
    let answer: Answer = serde_json::from_slice(&out).map_err(|e| {
        format!("the credential helper {prog} answered for {server} with no credentials JSON ({{\"Username\", \"Secret\"}}): {e}")
    })?;
    if answer.username == "<token>" {
        return Err(format!(
            "the credential helper {prog} gives an identity token for {server}, which fledge cannot use: log in with a user name and password or a registry token"
        ));
    }
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some((answer.username, answer.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Puts `docker-credential-NAME` scripts in a directory on PATH (for this process).
    fn helper(dir: &std::path::Path, name: &str, script: &str) {
        let p = dir.join(program(name));
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn helpers_answer_refuse_fail_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        helper(
            dir.path(),
            "t-ok",
            r#"read host; [ "$1" = get ] && printf '{"ServerURL":"%s","Username":"u","Secret":"pw-%s"}' "$host" "$host""#,
        );
        helper(
            dir.path(),
            "t-none",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        helper(
            dir.path(),
            "t-bad",
            "echo 'the keychain is locked' >&2; exit 3",
        );
        helper(dir.path(), "t-junk", "echo hello");
        helper(dir.path(), "t-slow", "sleep 5");
        let at = |name: &str| dir.path().join(program(name));
        let get = |name: &str, server: &str| ask(&at(name), server, TIMEOUT);
        assert_eq!(
            get("t-ok", "127.0.0.1:5000").unwrap(),
            Some(("u".into(), "pw-127.0.0.1:5000".into()))
        );
        assert_eq!(get("t-none", "h").unwrap(), None);
        let e = get("t-bad", "h").unwrap_err();
        assert!(
            e.contains("docker-credential-t-bad") && e.contains("keychain is locked"),
            "{e}"
        );
        let e = get("t-junk", "h").unwrap_err();
        assert!(
            e.contains("docker-credential-t-junk") && e.contains("JSON"),
            "{e}"
        );
        let e = super::get("t-missing-here", "h").unwrap_err();
        assert!(
            e.contains("cannot run the credential helper docker-credential-t-missing-here"),
            "{e}"
        );
        assert!(super::get("../x", "h").is_err());
        let start = Instant::now();
        let e = ask(&at("t-slow"), "h", Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("did not answer within"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
