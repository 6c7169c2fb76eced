//! `fledge push` and `fledge pull` against Debian's docker-registry started here on 127.0.0.1
//! (without auth, and with htpasswd basic auth whose password a `docker-credential-test`
//! helper supplies), read back by skopeo, and against two tiny servers that check a redirect
//! to another port carries no credentials.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{hex, Project, DEFAULT_MODE};
use crate::images::{have, run};

/// The registry process; stopped when dropped.
pub struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts docker-registry on a free loopback port, with htpasswd auth for `u`/`secret` when
/// `auth`.
pub fn start_registry(dir: &Path, auth: bool) -> (Registry, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\n",
        d = dir.display()
    );
    if auth {
        run(dir, "htpasswd -Bbn u secret > htpasswd");
        cfg += &format!(
            "auth:\n  htpasswd:\n    realm: fledge-test\n    path: {}/htpasswd\n",
            dir.display()
        );
    }
    std::fs::write(dir.join("registry.yml"), cfg).unwrap();
    let child = Command::new("docker-registry")
        .args(["serve", "registry.yml"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = Registry(child);
    let host = format!("127.0.0.1:{port}");
    let start = Instant::now();
    while TcpStream::connect(&host).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "docker-registry did not start on {host}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (reg, host)
}

/// A project with a built image `out/plugin.cpio.gz`, its manifest and an extra file.
fn built() -> Project {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    p.ok(&["build", "-q", "-o", "out/plugin.cpio.gz"]);
    p.file(
        "out/notes.spdx.json",
        b"{\"spdxVersion\": \"SPDX-2.3\"}\n",
        0o644,
    );
    p
}

/// fledge with credentials only from `docker_config` (a directory).
fn fledge(p: &Project, args: &[&str], docker_config: &Path, path: Option<&str>) -> Output {
    let mut cmd = p.command(args);
    cmd.env("DOCKER_CONFIG", docker_config)
        .env("HOME", p.path("home"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env("FLEDGE_HTTP_HEADER_TIMEOUT", "20");
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.output().unwrap()
}

fn ok(o: Output, what: &str) -> (String, String) {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{what} failed: {stderr}");
    (String::from_utf8(o.stdout).unwrap(), stderr)
}

/// The files of `dir`, name and bytes, sorted.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A plain HTTP GET on 127.0.0.1: status and body.
fn http_get(url: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, all[split + 4..].to_vec())
}

#[test]
fn push_pull_round_trip_skopeo_reads_it_and_the_blob_url_serves_the_image() {
    if !have(&["docker-registry", "skopeo"]) {
        return;
    }
    let p = built();
    let reg_dir = tempfile::tempdir().unwrap();
    let (_reg, host) = start_registry(reg_dir.path(), false);
    let cfg = p.path("home/docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let out = p.path("out");
    let image = std::fs::read(out.join("plugin.cpio.gz")).unwrap();
    let target = format!("docker://{host}/team/plugin:v1");

    // Chunks of 1 KiB: the image goes up in PATCHes, the small files in one PUT each.
    let args = [
        "push",
        "out/plugin.cpio.gz",
        &target,
        "--file",
        "out/notes.spdx.json",
        "--chunk-size",
        "1K",
    ];
    assert!(
        image.len() > 1024,
        "the image is large enough to be chunked"
    );
    let (stdout, stderr) = ok(fledge(&p, &args, &cfg, None), "push");
    let digest = stdout.trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{stdout}"
    );
    assert!(
        stderr.contains("6 blobs uploaded, 0 already there"),
        "{stderr}"
    );
    // Again: every blob is there (HEAD), and the manifest is the same bytes.
    let (again, stderr) = ok(fledge(&p, &args, &cfg, None), "second push");
    assert_eq!(again.trim(), digest);
    assert!(
        stderr.contains("0 blobs uploaded, 6 already there"),
        "{stderr}"
    );

    // Pull by tag and by digest: byte-identical files.
    let want = {
        let mut v = files(&out);
        v.retain(|(n, _)| !n.starts_with('.'));
        v
    };
    assert_eq!(
        want.len(),
        5,
        "{:?}",
        want.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    ok(fledge(&p, &["pull", &target, "got"], &cfg, None), "pull");
    assert_eq!(files(&p.path("got")), want);
    let by_digest = format!("docker://{host}/team/plugin@{digest}");
    ok(
        fledge(&p, &["pull", &by_digest, "got2"], &cfg, None),
        "pull by digest",
    );
    assert_eq!(files(&p.path("got2")), want);

    // skopeo reads the manifest we pushed and copies the artifact to an OCI layout.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/team/plugin:v1"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(format!("sha256:{}", hex(&raw.stdout)), digest);
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.fledge.plugin.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    let titles: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(titles[0], "plugin.cpio.gz");
    assert_eq!(titles[2], "notes.spdx.json");
    assert_eq!(titles[3..], ["plugin.spdx.json", "plugin.provenance.json"]);
    assert_eq!(m["layers"][4]["mediaType"], "application/vnd.in-toto+json");
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.fledge.initramfs.v1.cpio+gzip"
    );
    run(
        p.dir.path(),
        &format!(
            "skopeo copy -q --src-tls-verify=false docker://{host}/team/plugin:v1 oci:copy:v1"
        ),
    );
    ok(
        fledge(&p, &["pull", "oci:copy:v1", "got3"], &cfg, None),
        "pull from layout",
    );
    assert_eq!(files(&p.path("got3")), want);

    // The blob URL serves the image; --url-from-registry writes it into the pushed manifest.
    let tagged = format!("docker://{host}/team/plugin:direct");
    let (_, stderr) = ok(
        fledge(
            &p,
            &["push", "out/plugin.cpio.gz", &tagged, "--url-from-registry"],
            &cfg,
            None,
        ),
        "push --url-from-registry",
    );
    // Only the rewritten manifest is new.
    assert!(
        stderr.contains("1 blobs uploaded, 4 already there"),
        "{stderr}"
    );
    ok(
        fledge(&p, &["pull", &tagged, "direct"], &cfg, None),
        "pull direct",
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path("direct/plugin.manifest.json")).unwrap())
            .unwrap();
    let url = json["initramfs"]["url"].as_str().unwrap().to_string();
    assert_eq!(
        url,
        format!("http://{host}/v2/team/plugin/blobs/sha256:{}", hex(&image))
    );
    let (status, body) = http_get(&url);
    assert_eq!(status, 200);
    assert!(body == image, "the blob URL serves the image");
    assert_eq!(
        std::fs::read(p.path("direct/plugin.cpio.gz")).unwrap(),
        image
    );
    let local: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("plugin.manifest.json")).unwrap()).unwrap();
    assert_ne!(
        local["initramfs"]["url"], json["initramfs"]["url"],
        "the file on disk is left as it is"
    );

    // A mount from the first repository: nothing uploaded.
    let other = format!("docker://{host}/else/plugin:v1");
    let (_, stderr) = ok(
        fledge(
            &p,
            &[
                "push",
                "out/plugin.cpio.gz",
                &other,
                "--file",
                "out/notes.spdx.json",
                "--mount-from",
                "team/plugin",
            ],
            &cfg,
            None,
        ),
        "push --mount-from",
    );
    assert!(
        stderr.contains("0 blobs uploaded, 0 already there, 6 mounted"),
        "{stderr}"
    );

    // A tampered blob in a layout is refused, and nothing is written.
    let layer = m["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let blob = p.path(&format!("copy/blobs/sha256/{layer}"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let o = fledge(&p, &["pull", "oci:copy:v1", "bad"], &cfg, None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("plugin.manifest.json") && stderr.contains("not sha256:"),
        "{stderr}"
    );
    assert!(
        files(&p.path("bad")).is_empty(),
        "no file of a failed pull appears"
    );

    // A digest that is not there is named.
    let missing = format!("docker://{host}/team/plugin@sha256:{}", "0".repeat(64));
    let o = fledge(&p, &["pull", &missing, "none"], &cfg, None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("HTTP 404") && stderr.contains("team/plugin"),
        "{stderr}"
    );
}

#[test]
fn a_credential_helper_supplies_the_password_for_htpasswd() {
    if !have(&["docker-registry", "htpasswd"]) {
        return;
    }
    let p = built();
    let reg_dir = tempfile::tempdir().unwrap();
    let (_reg, host) = start_registry(reg_dir.path(), true);
    let cfg = p.path("home/docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let target = format!("docker://{host}/team/plugin:v1");
    let push = ["push", "out/plugin.cpio.gz", target.as_str()];

    let o = fledge(&p, &push, &cfg, None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("wants a user name and password"),
        "{stderr}"
    );

    // The helper answers only for this registry, checking it is asked with `get`.
    let bin = p.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\n[ \"$server\" = {host} ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"u\",\"Secret\":\"%s\"}}' \"$server\" \"$(cat {pw})\"\n",
        pw = p.path("password").display()
    );
    p.file("bin/docker-credential-test", script.as_bytes(), 0o755);
    p.file("password", b"wrong", 0o600);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"credHelpers": {{"{host}": "test"}}}}"#),
    )
    .unwrap();
    let o = fledge(&p, &push, &cfg, Some(&path));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && stderr.contains("HTTP 401")
            && stderr.contains("the credentials of u from docker-credential-test (credHelpers in"),
        "{stderr}"
    );
    p.file("password", b"secret", 0o600);
    let (digest, _) = ok(fledge(&p, &push, &cfg, Some(&path)), "push with the helper");

    // credsStore serves the pull the same way.
    std::fs::write(cfg.join("config.json"), r#"{"credsStore": "test"}"#).unwrap();
    let (stdout, _) = ok(
        fledge(&p, &["pull", &target, "got"], &cfg, Some(&path)),
        "pull with credsStore",
    );
    assert!(stdout.contains("plugin.cpio.gz"), "{stdout}");
    assert_eq!(
        std::fs::read(p.path("got/plugin.cpio.gz")).unwrap(),
        std::fs::read(p.path("out/plugin.cpio.gz")).unwrap()
    );
    let by_digest = format!("docker://{host}/team/plugin@{}", digest.trim());
    ok(
        fledge(&p, &["pull", &by_digest, "got2"], &cfg, Some(&path)),
        "pull by digest",
    );

    // A broken helper is named.
    p.file(
        "bin/docker-credential-test",
        b"#!/bin/sh\necho 'the keychain is locked' >&2\nexit 3\n",
        0o755,
    );
    let o = fledge(&p, &push, &cfg, Some(&path));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && stderr.contains("docker-credential-test")
            && stderr.contains("keychain is locked"),
        "{stderr}"
    );
}

/// Serves each connection with `answer(request head)`; returns the port and every head seen.
fn server(answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(20) {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head += &line;
            }
            log.lock().unwrap().push(head.clone());
            let _ = s.write_all(&answer(&head));
        }
    });
    (port, seen)
}

fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

#[test]
fn a_redirect_to_another_port_gets_no_authorization() {
    let p = Project::new();
    let body = b"hello from the blob store\n".to_vec();
    let store_body = body.clone();
    let (store, store_seen) = server(move |_| response("200 OK", "", &store_body));
    let manifest = one_file_manifest(&body);
    let (reg, reg_seen) = server(move |head| {
        if !head
            .to_ascii_lowercase()
            .contains("\r\nauthorization: basic ")
        {
            return response(
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"test\"\r\n",
                b"",
            );
        }
        if head.starts_with("GET /v2/r/manifests/t ") {
            response(
                "200 OK",
                "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                &manifest,
            )
        } else if head.starts_with("GET /v2/r/blobs/") {
            response(
                "307 Temporary Redirect",
                &format!("Location: http://127.0.0.1:{store}/blob?sig=1\r\n"),
                b"",
            )
        } else {
            response("404 Not Found", "", b"")
        }
    });
    let cfg = p.path("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("u:secret")
    };
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths": {{"127.0.0.1:{reg}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let (stdout, _) = ok(
        fledge(
            &p,
            &["pull", &format!("docker://127.0.0.1:{reg}/r:t"), "got"],
            &cfg,
            None,
        ),
        "pull through a redirect",
    );
    assert!(stdout.contains("hello.txt"), "{stdout}");
    assert_eq!(std::fs::read(p.path("got/hello.txt")).unwrap(), body);
    let reg_seen = reg_seen.lock().unwrap();
    assert!(
        reg_seen.iter().any(|h| h.starts_with("GET /v2/r/blobs/")
            && h.to_ascii_lowercase().contains("authorization: basic")),
        "the registry itself gets the credentials: {reg_seen:?}"
    );
    let store_seen = store_seen.lock().unwrap();
    assert_eq!(store_seen.len(), 1, "{store_seen:?}");
    assert!(
        store_seen[0].starts_with("GET /blob?sig=1 "),
        "{store_seen:?}"
    );
    assert!(
        !store_seen[0].to_ascii_lowercase().contains("authorization"),
        "the blob store on another port got credentials: {store_seen:?}"
    );
}

/// An artifact manifest with one layer, `hello.txt`, holding `body`.
fn one_file_manifest(body: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": format!("sha256:{}", hex(b"{}")), "size": 2},
        "layers": [{"mediaType": "text/plain", "digest": format!("sha256:{}", hex(body)), "size": body.len(),
                    "annotations": {"org.opencontainers.image.title": "hello.txt"}}],
    }))
    .unwrap()
}

#[test]
fn a_bearer_token_is_fetched_once_with_the_credentials_and_the_scope() {
    let p = Project::new();
    let body = b"hello through a token\n".to_vec();
    let manifest = one_file_manifest(&body);
    let (reg, seen) = server(move |head| {
        let lower = head.to_ascii_lowercase();
        let host = lower
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .unwrap_or_default()
            .trim()
            .to_string();
        if head.starts_with("GET /token?") {
            return if lower.contains("\r\nauthorization: basic ") {
                response("200 OK", "", br#"{"token": "tok-1"}"#)
            } else {
                response("401 Unauthorized", "", b"")
            };
        }
        if !lower.contains("\r\nauthorization: bearer tok-1") {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://{host}/token\",service=\"fake\",scope=\"repository:r:pull\"\r\n"
            );
            return response("401 Unauthorized", &challenge, b"");
        }
        if head.starts_with("GET /v2/r/manifests/t ") {
            response("200 OK", "", &manifest)
        } else if head.starts_with("GET /v2/r/blobs/") {
            response("200 OK", "", &body)
        } else {
            response("404 Not Found", "", b"")
        }
    });
    let cfg = p.path("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("u:secret")
    };
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths": {{"127.0.0.1:{reg}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    ok(
        fledge(
            &p,
            &["pull", &format!("docker://127.0.0.1:{reg}/r:t"), "got"],
            &cfg,
            None,
        ),
        "pull with a token",
    );
    assert_eq!(
        std::fs::read(p.path("got/hello.txt")).unwrap(),
        b"hello through a token\n"
    );
    let seen = seen.lock().unwrap();
    let tokens: Vec<&String> = seen
        .iter()
        .filter(|h| h.starts_with("GET /token?"))
        .collect();
    assert_eq!(tokens.len(), 1, "one token for the run: {seen:?}");
    let line = tokens[0].lines().next().unwrap();
    assert!(
        line.contains("scope=repository%3Ar%3Apull") && line.contains("service=fake"),
        "{line}"
    );
}

#[test]
fn a_registry_that_stalls_hits_the_header_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().take(4) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let p = Project::new();
    let start = Instant::now();
    let o = p
        .command(&["pull", &format!("docker://127.0.0.1:{port}/r:t"), "got"])
        .env("FLEDGE_HTTP_HEADER_TIMEOUT", "1")
        .env("DOCKER_CONFIG", p.path("none"))
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("FLEDGE_HTTP_HEADER_TIMEOUT")
            && stderr.contains(&format!("127.0.0.1:{port}/v2/r/manifests/t")),
        "{stderr}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
}

/// A build of `p` with its own cache directory `cache` (one machine), verbose, plus `args`:
/// its stderr and the image's bytes.
fn build_on(p: &Project, cache: &str, args: &[&str]) -> (String, Vec<u8>) {
    let out = format!("{cache}.cpio.gz");
    let mut all = vec!["build", "-v", "-o", &out];
    all.extend_from_slice(args);
    let o = p
        .command(&all)
        .env("FLEDGE_CACHE_DIR", p.path(cache))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "build on {cache}: {stderr}");
    (stderr, std::fs::read(p.path(&out)).unwrap())
}

/// The number before `what` in `text` ("... 7 entries fetched").
fn count_before(text: &str, what: &str) -> usize {
    let at = text
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {text}"));
    text[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {what:?} in {text}"))
}

#[test]
fn a_registry_cache_turns_a_second_machines_first_build_into_a_copy_and_a_bad_one_changes_nothing()
{
    if !have(&["docker-registry", "umoci"]) {
        return;
    }
    let p = Project::new();
    crate::images::umoci_image(p.dir.path());
    p.config(&format!("image = \"oci:img:v1\"\n{DEFAULT_MODE}"));
    let reg_dir = tempfile::tempdir().unwrap();
    let (_reg, host) = start_registry(reg_dir.path(), false);
    let shared = format!("docker://{host}/team/cache:main");

    // The reference: a cold build with no shared cache at all.
    let (_, cold) = build_on(&p, "cold", &[]);
    // Machine A: cold, then its cache goes up: segments and both image layers.
    let (stderr, a) = build_on(&p, "a", &["--cache-to", &shared]);
    assert!(a == cold, "--cache-to changes nothing in the image");
    let entries = count_before(&stderr, "entries, ");
    assert!(entries >= 3, "{stderr}");
    assert_eq!(
        count_before(&stderr, "blobs uploaded"),
        entries + 1,
        "{stderr}"
    );

    // Machine B, empty cache: everything is fetched, nothing compressed or unpacked again.
    let (stderr, b) = build_on(&p, "b", &["--cache-from", &shared]);
    assert!(b == cold, "a build from the shared cache is byte-identical");
    assert_eq!(
        count_before(&stderr, "entries fetched"),
        entries,
        "{stderr}"
    );
    let segments = count_before(&stderr, "segments from the cache");
    assert!(
        stderr.contains(&format!("{segments} of {segments} segments from the cache")),
        "{stderr}"
    );
    assert!(
        stderr.contains("layer 1: ") && stderr.contains("is cached"),
        "{stderr}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");

    // The same cache in an OCI layout, then two entries tampered with: both are skipped
    // with a note, the rest used, and the image is the same.
    build_on(&p, "a", &["--cache-to", "oci:shared:main"]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path("shared/index.json")).unwrap()).unwrap();
    let blob = |d: &str| p.path(&format!("shared/blobs/sha256/{}", &d[7..]));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.fledge.cache.v1");
    let layers = m["layers"].as_array().unwrap();
    for kind in ["segment-", "layer-"] {
        let l = layers
            .iter()
            .find(|l| {
                l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .unwrap()
                    .starts_with(kind)
            })
            .unwrap_or_else(|| panic!("no {kind} entry in {m}"));
        let path = blob(l["digest"].as_str().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    }
    let (stderr, c) = build_on(&p, "c", &["--cache-from", "oci:shared:main"]);
    assert!(c == cold, "a tampered cache changes nothing");
    assert_eq!(stderr.matches("skipped: ").count(), 2, "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert_eq!(
        count_before(&stderr, "entries fetched"),
        entries - 2,
        "{stderr}"
    );

    // Unreachable, and not a cache at all: a warning each, and the same image.
    let (stderr, d) = build_on(&p, "d", &["--cache-from", "docker://127.0.0.1:1/none:x"]);
    assert!(
        d == cold && stderr.contains("not used, building without it"),
        "{stderr}"
    );
    p.ok(&["build", "-q", "-o", "out/plugin.cpio.gz"]);
    ok(
        fledge(
            &p,
            &["push", "out/plugin.cpio.gz", "oci:plugin:v1"],
            &p.path("home"),
            None,
        ),
        "push the plugin",
    );
    let (stderr, e) = build_on(&p, "e", &["--cache-from", "oci:plugin:v1"]);
    assert!(
        e == cold && stderr.contains("not application/vnd.fledge.cache.v1"),
        "{stderr}"
    );
}
