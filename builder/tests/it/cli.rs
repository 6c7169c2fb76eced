//! End-to-end tests of the `fledge` binary: build each init mode from fixtures in a temp dir and
//! read the archive back with independent tools (GNU cpio), check reproducibility, atomic output
//! and the error messages of bad inputs.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::{hex, Project, AGENT, BUSYBOX, DEFAULT_MODE};

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").is_err(), "{tool} is required in CI");
        eprintln!("skipped: {tool} is not installed (apt-get install cpio)");
    }
    ok
}

/// `cpio -tv` lines with whitespace folded, keyed by path.
fn cpio_listing(archive: &Path) -> Vec<(String, String)> {
    let o = Command::new("cpio")
        .args(["-tv", "--numeric-uid-gid", "-F"])
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cpio -t failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let folded = l.split_whitespace().collect::<Vec<_>>().join(" ");
            let name_part = folded.split(" -> ").next().unwrap().to_string();
            let name = name_part.rsplit(' ').next().unwrap().to_string();
            (name, folded)
        })
        .collect()
}

fn cpio_extract(archive: &Path, member: &str) -> Vec<u8> {
    let o = Command::new("cpio")
        .args(["-i", "--quiet", "--to-stdout", "-F"])
        .arg(archive)
        .arg(member)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cpio -i {member} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn line<'a>(listing: &'a [(String, String)], name: &str) -> &'a str {
    &listing
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not in archive: {listing:#?}"))
        .1
}

#[test]
fn default_mode_image_reads_back_with_gnu_cpio() {
    if !have("cpio") {
        return;
    }
    let p = Project::new();
    p.file("app/myapp", b"#!/bin/sh\necho app\n", 0o750);
    p.file("app/conf/app.toml", b"port = 8080\n", 0o600);
    std::os::unix::fs::symlink("app.toml", p.path("app/conf/current")).unwrap();
    p.config(&format!("{DEFAULT_MODE}[mappings]\n\"app/myapp\" = \"/usr/bin/myapp\"\n\"app/conf\" = \"/etc/myapp\"\n"));
    p.build("out.cpio", &[]);
    let l = cpio_listing(&p.path("out.cpio"));
    let expect = [
        ("bin", "drwxr-xr-x 2 0 0 0 "),
        ("tmp", "drwxrwxrwt 2 0 0 0 "),
        ("dev/console", "crw------- 1 0 0 5, 1 "),
        ("dev/null", "crw-rw-rw- 1 0 0 1, 3 "),
        ("init", "-rwxr-xr-x 1 0 0 "),
        ("bin/kestrel", &format!("-rwxr-xr-x 1 0 0 {} ", AGENT.len())),
        (
            "bin/busybox",
            &format!("-rwxr-xr-x 1 0 0 {} ", BUSYBOX.len()),
        ),
        ("bin/sh", "lrwxrwxrwx 1 0 0 7 "),
        ("usr/bin/myapp", "-rwxr-x--- 1 0 0 19 "),
        // 0600 on the host: others may not read it in the image either
        ("etc/myapp/app.toml", "-rw------- 1 0 0 12 "),
        ("etc/myapp/current", "lrwxrwxrwx 1 0 0 8 "),
    ];
    for (name, prefix) in expect {
        let got = line(&l, name);
        assert!(
            got.starts_with(prefix),
            "{name}: {got:?} should start with {prefix:?}"
        );
        assert!(
            got.contains("Jan 1 2024"),
            "{name}: mtime should be the default epoch: {got}"
        );
    }
    assert!(line(&l, "bin/sh").ends_with("bin/sh -> busybox"));
    assert!(line(&l, "etc/myapp/current").ends_with("-> app.toml"));
    assert!(
        !l.iter().any(|(n, _)| n == ".volant_init"),
        "no .volant_init in default mode"
    );
    assert_eq!(cpio_extract(&p.path("out.cpio"), "bin/kestrel"), AGENT);
    assert_eq!(
        cpio_extract(&p.path("out.cpio"), "etc/myapp/app.toml"),
        b"port = 8080\n"
    );
    // Parents come before children.
    let names: Vec<&str> = l.iter().map(|(n, _)| n.as_str()).collect();
    for (i, n) in names.iter().enumerate() {
        if let Some((parent, _)) = n.rsplit_once('/') {
            let pi = names
                .iter()
                .position(|x| *x == parent)
                .unwrap_or_else(|| panic!("no parent for {n}"));
            assert!(pi < i, "{parent} after {n}");
        }
    }
    // The init is the embedded fledge-init: a static ELF.
    assert_eq!(&cpio_extract(&p.path("out.cpio"), "init")[..4], b"\x7fELF");
}

#[test]
fn custom_and_none_modes() {
    if !have("cpio") {
        return;
    }
    let p = Project::new();
    p.file("my-init", b"#!/bin/sh\nexec sh\n", 0o644);
    p.config("[init]\npath = \"./my-init\"\n[mappings]\n\"./my-init\" = \"/init\"\n");
    p.build("custom.cpio", &[]);
    let l = cpio_listing(&p.path("custom.cpio"));
    assert_eq!(
        cpio_extract(&p.path("custom.cpio"), ".volant_init"),
        b"/sbin/custom-init\n"
    );
    assert!(line(&l, "sbin/custom-init").starts_with("-rwxr-xr-x"));
    assert_eq!(
        cpio_extract(&p.path("custom.cpio"), "sbin/custom-init"),
        b"#!/bin/sh\nexec sh\n"
    );
    assert_eq!(
        &cpio_extract(&p.path("custom.cpio"), "init")[..4],
        b"\x7fELF",
        "fledge-init stays /init"
    );
    assert!(!l.iter().any(|(n, _)| n == "bin/kestrel"));

    p.file("sup", b"#!/bin/sh\n# my own pid 1\n", 0o644);
    p.config("[init]\nnone = true\n[mappings]\n\"sup\" = \"/init\"\n");
    p.build("none.cpio", &[]);
    let l = cpio_listing(&p.path("none.cpio"));
    assert!(
        line(&l, "init").starts_with("-rwxr-xr-x"),
        "none-mode /init is made executable"
    );
    assert_eq!(
        cpio_extract(&p.path("none.cpio"), "init"),
        b"#!/bin/sh\n# my own pid 1\n"
    );
    assert!(!l
        .iter()
        .any(|(n, _)| n == "bin/kestrel" || n == ".volant_init"));
}

#[test]
fn builds_are_byte_identical_anywhere_and_follow_source_date_epoch() {
    let a = Project::new();
    a.file("data/x.txt", b"x", 0o644);
    a.config(&format!(
        "{DEFAULT_MODE}[mappings]\n\"data\" = \"/srv/data\"\n"
    ));
    let first = a.fledge_env(&["build", "-o", "one.cpio.gz"], &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = a.fledge_env(&["build", "-o", "two.cpio.gz", "-j", "1"], &[]);
    assert!(again.status.success());
    let one = fs::read(a.path("one.cpio.gz")).unwrap();
    assert_eq!(
        one,
        fs::read(a.path("two.cpio.gz")).unwrap(),
        "rebuild must be byte-identical"
    );

    // Another directory, other file times: same bytes.
    let b = Project::new();
    b.file("data/x.txt", b"x", 0o644);
    b.config(&format!(
        "{DEFAULT_MODE}[mappings]\n\"data\" = \"/srv/data\"\n"
    ));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(b.path("data/x.txt"), b"x").unwrap();
    let o = b.fledge_env(&["build", "-o", "one.cpio.gz"], &[]);
    assert!(o.status.success());
    assert_eq!(
        one,
        fs::read(b.path("one.cpio.gz")).unwrap(),
        "build directory must not matter"
    );

    let plain = a.build("plain.cpio", &[]);
    let epoch = a.build("epoch.cpio", &[("SOURCE_DATE_EPOCH", "1000000000")]);
    assert_ne!(plain, epoch, "SOURCE_DATE_EPOCH must change the mtimes");
    assert_eq!(plain.len(), epoch.len());
    let mtime_field = format!("{:08X}", 1_000_000_000u32);
    assert!(String::from_utf8_lossy(&epoch).contains(&mtime_field));
}

#[test]
fn checksum_mismatch_fails_and_leaves_no_artifact() {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    let text = fs::read_to_string(p.path("fledge.toml"))
        .unwrap()
        .replace(&hex(BUSYBOX), &"0".repeat(64));
    fs::write(p.path("fledge.toml"), text).unwrap();
    let o = p.fledge_env(&["build", "-o", "out/plugin.cpio.gz"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: busybox from tools/busybox: sha256 mismatch"),
        "{err}"
    );
    assert!(
        err.contains(&"0".repeat(64)) && err.contains(&hex(BUSYBOX)),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(p.path("out"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing may be written: {left:?}");
}

#[test]
fn bad_inputs_fail_with_one_sentence_naming_them() {
    let p = Project::new();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "missing mapping source",
            "[mappings]\n\"./nope/app\" = \"/usr/bin/app\"\n",
            &["fledge.toml:7", "mappings.\"./nope/app\"", "cannot be read"],
        ),
        (
            "agent in custom mode",
            "[init]\npath = \"./x\"\n[agent]\nsource_strategy = \"local\"\npath = \"k\"\n",
            &["`agent`", "not allowed"],
        ),
        (
            "relative destination",
            "[mappings]\n\"tools/kestrel\" = \"usr/bin/k\"\n",
            &["must be absolute"],
        ),
        ("no /init in none mode", "[init]\nnone = true\n", &["/init"]),
    ];
    for (name, body, needles) in cases {
        p.config(body);
        let o = p.fledge_env(&["build", "-o", "bad.cpio.gz"], &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "case {name}: {err}");
        assert!(err.starts_with("error: "), "case {name}: {err}");
        assert_eq!(err.lines().count(), 1, "case {name}: one line: {err}");
        for n in *needles {
            assert!(err.contains(n), "case {name}: {err:?} should contain {n:?}");
        }
        assert!(
            !p.path("bad.cpio.gz").exists(),
            "case {name}: nothing may be written"
        );
    }
}

#[test]
fn inspect_lists_what_build_wrote() {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    let o = p.fledge_env(&["build", "-o", "img.cpio.gz"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let digest = hex(&fs::read(p.path("img.cpio.gz")).unwrap());
    assert!(
        stdout.contains(&digest),
        "build prints the sha256: {stdout}"
    );
    let o = p.fledge_env(&["inspect", "img.cpio.gz"], &[]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("crw-------   0/0          5,1 /dev/console"),
        "{text}"
    );
    assert!(text.contains("/bin/sh -> busybox"), "{text}");
    let o = p.fledge_env(&["inspect", "--json", "img.cpio.gz"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["compression"], "gzip");
    assert!(json["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["path"] == "/bin/kestrel" && i["size"] == AGENT.len()));
}

#[test]
fn validate_checks_without_writing() {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    let o = p.fledge_env(&["validate"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p.file(
        "fledge.toml",
        b"version = \"1\"\nstrategy = \"oci_rootfs\"\n[filesystem]\ntype = \"xfs\"\n",
        0o644,
    );
    let o = p.fledge_env(&["validate"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("filesystem.type"));
    let o = p.fledge_env(&["bogus"], &[]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn manifest_is_written_beside_the_artifact_and_matches_it() {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    p.file(
        "manifest.toml",
        b"name = \"web\"\nversion = \"1.2.3\"\n[resources]\ncpu_cores = 2\nmemory_mb = 256\n\
          [workload]\nentrypoint = \"/usr/bin/web\"\nargs = [\"--port\", \"9000\"]\n\
          [[network.expose]]\nport = 9000\n",
        0o644,
    );
    let o = p.fledge_env(&["build", "-o", "dist/web.cpio.gz"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let artifact = p.path("dist/web.cpio.gz");
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(p.path("dist/web.manifest.json")).unwrap()).unwrap();
    let digest = hex(&fs::read(&artifact).unwrap());
    assert_eq!(json["initramfs"]["checksum"], format!("sha256:{digest}"));
    assert_eq!(json["initramfs"]["url"], artifact.to_str().unwrap());
    assert_eq!(
        json["workload"]["entrypoint"],
        serde_json::json!(["/usr/bin/web", "--port", "9000"])
    );
    assert_eq!(json["workload"]["base_url"], "http://127.0.0.1:9000");

    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/schemas/plugin-manifest-v1.json");
    match fs::read(&schema_path) {
        Ok(bytes) => {
            let schema: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let v = jsonschema::validator_for(&schema).unwrap();
            let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "schema rejects the manifest: {errors:?}");
        }
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "{}: {e}",
                schema_path.display()
            );
            eprintln!("schema check skipped: {}: {e}", schema_path.display());
        }
    }

    // A broken template: the build fails naming the field and writes neither file.
    p.file(
        "manifest.toml",
        b"name = \"web\"\nversion = \"1\"\n[resources]\ncpu_cores = 0\nmemory_mb = 1\n",
        0o644,
    );
    let o = p.fledge_env(&["build", "-o", "bad/web.cpio.gz"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("resources.cpu_cores"), "{err}");
    assert!(
        !p.path("bad").exists() || fs::read_dir(p.path("bad")).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn validate_checks_the_layout_offline_like_build_would() {
    let p = Project::new();
    // No /init in none mode: only the layout knows.
    p.config("[init]\nnone = true\n");
    let o = p.fledge_env(&["validate"], &[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("`init.none`"));
    // A release agent is not downloaded by validate; the rest is checked.
    p.config("[agent]\nsource_strategy = \"release\"\nversion = \"latest\"\n[mappings]\n\"tools/kestrel\" = \"/bin/kestrel\"\n");
    let o = p.fledge_env(&["validate"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("where fledge puts the kestrel agent"), "{err}");
    p.config(DEFAULT_MODE);
    let o = p.fledge_env(&["validate"], &[]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no manifest.toml"),
        "defaults are not a file"
    );
}

#[test]
fn output_flags_are_checked_before_any_work() {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    p.file(
        "manifest.toml",
        b"name = \"app\"\nversion = \"1.0.0\"\n",
        0o644,
    );
    let o = p.fledge_env(&["build", "-o", "app.manifest.json"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("-o/--output") && err.contains("app.cpio.gz"),
        "{err}"
    );
    assert!(!p.path("app.manifest.json").exists());
    let o = p.fledge_env(
        &[
            "build",
            "--url",
            "ftp://x/y",
            "--compression",
            "lz4",
            "--level",
            "1",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("lz4"), "the level is checked first: {err}");
    let o = p.fledge_env(&["build", "--url", "ftp://x/y"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--url") && err.contains("ftp://x/y"), "{err}");
    assert!(!p.path("plugin.cpio.gz").exists());
}

#[test]
fn validate_checks_a_manifest_template_alone() {
    let p = Project::new();
    p.file("m.toml", b"name = \"web\"\nversion = \"1.0.0\"\n", 0o644);
    let o = p.fledge_env(&["validate", "-m", "m.toml"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "m.toml: valid\n");
    p.file(
        "m.toml",
        b"name = \"web\"\nversion = \"1.0.0\"\n[resources]\nmemory_mb = 0\n",
        0o644,
    );
    let o = p.fledge_env(&["validate", "-m", "m.toml"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resources.memory_mb"));
}

#[test]
fn default_manifest_names_the_program_the_image_starts() {
    let p = Project::new();
    p.file("my-init", b"#!/bin/sh\n", 0o755);
    let cases = [
        ("default", DEFAULT_MODE.to_string(), "/bin/kestrel"),
        (
            "custom",
            "[init]\npath = \"./my-init\"\n".to_string(),
            "/sbin/custom-init",
        ),
        (
            "none",
            "[init]\nnone = true\n[mappings]\n\"my-init\" = \"/init\"\n".to_string(),
            "/init",
        ),
    ];
    for (name, body, want) in cases {
        p.config(&body);
        let out = format!("{name}.cpio.gz");
        let o = p.fledge_env(&["build", "-o", &out], &[]);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(p.path(&format!("{name}.manifest.json"))).unwrap())
                .unwrap();
        assert_eq!(
            json["workload"]["entrypoint"],
            serde_json::json!([want]),
            "case {name}"
        );
    }
}

/// A default-mode workload on the agent's port 8080 is refused before anything is built, naming
/// the key; the same manifest builds in custom mode, and a default-mode build without a port
/// gets 8081.
#[test]
fn default_mode_refuses_a_workload_on_the_agents_port() {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    p.file(
        "manifest.toml",
        b"name = \"web\"\nversion = \"1\"\n[[network.expose]]\nport = 8080\n[workload]\nentrypoint = \"/bin/web\"\n",
        0o644,
    );
    let o = p.fledge(&["build", "-o", "web.cpio.gz"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("error: ")
            && err.contains("manifest.toml:4: network.expose[0].port is port 8080"),
        "{err}"
    );
    assert!(err.contains("agent"), "{err}");
    assert!(!p.path("web.cpio.gz").exists(), "nothing written");

    p.file("manifest.toml", b"name = \"web\"\nversion = \"1\"\n", 0o644);
    p.build("web.cpio.gz", &[]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path("web.manifest.json")).unwrap()).unwrap();
    assert_eq!(json["workload"]["base_url"], "http://127.0.0.1:8081");
    assert_eq!(json["labels"]["volant.image"], "web");
}
