//! End-to-end tests of the commands for people: `build --dry-run`, `inspect --tree/--check`,
//! `new`, completions and the man page, and the progress output with and without a terminal.

use std::fs;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;

use crate::common::{hex, Project, AGENT, BUSYBOX, DEFAULT_MODE};
use fledge::archive::{Content, Entry, Kind, NewcWriter};

#[test]
fn dry_run_lists_the_plan_with_sources_and_writes_nothing() {
    let p = Project::new();
    p.file("app/myapp", b"#!/bin/sh\n", 0o750);
    p.config(&format!(
        "{DEFAULT_MODE}[mappings]\n\"app/myapp\" = \"/usr/bin/myapp\"\n"
    ));
    let before = p.files();
    let out = p.ok(&["build", "--dry-run", "-o", "out/img.cpio.gz"]);
    assert_eq!(p.files(), before, "a dry run writes nothing");
    for want in [
        "drwxr-xr-x   0/0            0 /bin  <- generated\n".to_string(),
        "lrwxrwxrwx   0/0            7 /bin/sh -> busybox  <- busybox\n".to_string(),
        "crw-------   0/0          5,1 /dev/console  <- generated\n".to_string(),
        "-rwxr-x---   0/0           10 /usr/bin/myapp  <- ./app/myapp\n".to_string(),
        format!(
            "-rwxr-xr-x   0/0   {:>10} /bin/kestrel  <- agent\n",
            AGENT.len()
        ),
        format!(
            "-rwxr-xr-x   0/0   {:>10} /bin/busybox  <- busybox\n",
            BUSYBOX.len()
        ),
    ] {
        assert!(out.contains(&want), "{want:?} not in:\n{out}");
    }
    assert!(
        out.lines().any(|l| l.ends_with(" /init  <- fledge-init")),
        "{out}"
    );
    assert!(
        out.ends_with("nothing written (would write out/img.cpio.gz)\n"),
        "{out}"
    );
    assert!(!p.path("out").exists());
}

#[test]
fn verbose_build_explains_each_step() {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    let o = p.fledge(&["-v", "build", "-o", "img.cpio"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "  busybox: tools/busybox -> ",
        "  placed /bin/busybox -rwxr-xr-x from busybox\n",
        "  placed /tmp drwxrwxrwt from generated\n",
        "  placed /init -rwxr-xr-x from fledge-init\n",
    ] {
        assert!(err.contains(want), "{want:?} not in:\n{err}");
    }
    let o = p.fledge(&["-q", "build", "-o", "img2.cpio"]);
    assert!(o.status.success());
    assert!(o.stderr.is_empty() && o.stdout.is_empty(), "-q is silent");
}

fn entry(path: &str, kind: Kind, perm: u32, ino: u32) -> Entry {
    Entry::new(path, kind, perm, ino, 1, 0)
}

fn bytes(b: &[u8]) -> Kind {
    Kind::File(Content::Bytes(Arc::from(b)))
}

/// A small bootable image, with `change` applied to its entries.
fn image(p: &Project, name: &str, change: impl FnOnce(&mut Vec<Entry>)) {
    let mut v = vec![
        entry("bin", Kind::Dir, 0o755, 1),
        entry("bin/busybox", bytes(b"0123456789"), 0o755, 2),
        entry("bin/sh", Kind::Symlink("busybox".into()), 0o777, 3),
        entry("dev", Kind::Dir, 0o755, 4),
        entry(
            "dev/console",
            Kind::CharDev { major: 5, minor: 1 },
            0o600,
            5,
        ),
        entry("init", bytes(b"#!/bin/sh\n"), 0o755, 6),
        entry("usr", Kind::Dir, 0o755, 7),
        entry("usr/bin", Kind::Dir, 0o755, 8),
        entry("usr/bin/app", bytes(b"abcde"), 0o755, 9),
    ];
    change(&mut v);
    let mut w = NewcWriter::new(Vec::new());
    for e in &v {
        w.append(e).unwrap();
    }
    fs::write(p.path(name), w.finish().unwrap()).unwrap();
}

fn remove(v: &mut Vec<Entry>, path: &str) {
    v.retain(|e| e.path != path);
}

#[test]
fn inspect_tree_sums_directory_sizes() {
    let p = Project::new();
    image(&p, "img", |_| {});
    let out = p.ok(&["inspect", "--tree", "img"]);
    assert_eq!(
        out,
        "        25  /\n\
         \x20       10    bin/\n\
         \x20       10      busybox\n\
         \x20        7      sh -> busybox\n\
         \x20        0    dev/\n\
         \x20      5,1      console\n\
         \x20       10    init\n\
         \x20        5    usr/\n\
         \x20        5      bin/\n\
         \x20        5        app\n"
    );
    let o = p.fledge(&["inspect", "--json", "img"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dir_sizes"]["/usr"], 5);
    assert_eq!(v["dir_sizes"]["/"], 25);
    assert_eq!(v["boot_problems"], serde_json::json!([]));
}

#[test]
fn inspect_check_flags_what_breaks_a_boot() {
    let p = Project::new();
    image(&p, "good", |_| {});
    let out = p.ok(&["inspect", "--check", "good"]);
    assert_eq!(out, "good: boot check passed (9 entries)\n");

    type Change = fn(&mut Vec<Entry>);
    let cases: &[(&str, Change, &str)] = &[
        (
            "no-init",
            |v| remove(v, "init"),
            "/init is missing: the kernel has nothing to run as PID 1 (map your init program to /init, or use fledge's default or custom init mode)",
        ),
        (
            "init-not-exec",
            |v| v.iter_mut().find(|e| e.path == "init").unwrap().perm = 0o644,
            "/init is not executable (mode -rw-r--r--): the kernel cannot run it as PID 1; give it mode 0755",
        ),
        (
            "init-dir",
            |v| {
                remove(v, "init");
                v.push(entry("init", Kind::Dir, 0o755, 20));
            },
            "/init is not a regular file (it is a directory): the kernel can only execute a file",
        ),
        (
            "init-dangling",
            |v| {
                remove(v, "init");
                v.push(entry("init", Kind::Symlink("sbin/init".into()), 0o777, 20));
            },
            "/init points to /sbin/init, which is not in the image",
        ),
        (
            "no-console",
            |v| remove(v, "dev/console"),
            "/dev/console is missing: PID 1 would start without a console (the kernel opens it before running /init); add a character device 5,1",
        ),
        (
            "dangling-bin",
            |v| v.push(entry("bin/ls", Kind::Symlink("/bin/toybox".into()), 0o777, 21)),
            "/bin/ls -> /bin/toybox points to /bin/toybox, which is not in the image",
        ),
        (
            "dangling-into-bin",
            |v| {
                v.push(entry("etc", Kind::Dir, 0o755, 22));
                v.push(entry("etc/rc", Kind::Symlink("../bin/rc".into()), 0o777, 23));
            },
            "/etc/rc -> ../bin/rc points to /bin/rc, which is not in the image",
        ),
        (
            "volant-init-missing",
            |v| v.push(entry(".volant_init", bytes(b"/sbin/custom-init\n"), 0o644, 24)),
            "/.volant_init names /sbin/custom-init, which is not in the image: fledge-init would have no init to run; map your init program to /sbin/custom-init",
        ),
    ];
    for (name, change, want) in cases {
        image(&p, name, change);
        let o = p.fledge(&["inspect", "--check", name]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert_eq!(
            err.lines().next().unwrap_or_default(),
            format!("error: {name}: boot check failed: {want}"),
            "{name}"
        );
        assert!(o.stdout.is_empty(), "{name}");
        // Without --check the listing is printed and the problem is a warning.
        let o = p.fledge(&["inspect", name]);
        assert!(o.status.success(), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err, format!("warning: boot check: {want}\n"), "{name}");
    }
    // A symlink outside the bin directories may point at what exists only at run time.
    image(&p, "runtime-link", |v| {
        v.push(entry("etc", Kind::Dir, 0o755, 22));
        v.push(entry(
            "etc/mtab",
            Kind::Symlink("/proc/self/mounts".into()),
            0o777,
            23,
        ));
    });
    p.ok(&["inspect", "--check", "runtime-link"]);
}

#[test]
fn completions_and_man_page_generate() {
    let p = Project::new();
    for (shell, needle) in [
        ("bash", "_fledge()"),
        ("zsh", "#compdef fledge"),
        ("fish", "complete -c fledge"),
        ("elvish", "fledge"),
        ("powershell", "fledge"),
    ] {
        let out = p.ok(&["completions", shell]);
        assert!(out.contains(needle), "{shell}: {needle:?} missing");
        assert!(out.contains("dry-run"), "{shell} completes build flags");
    }
    let man = p.ok(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH fledge"),
        "{man}"
    );
    assert!(man.contains("inspect") && man.contains("completions"));
    let o = p.fledge(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Points a `fledge new` project's busybox (and agent) at the local stand-ins, for offline builds.
fn offline(p: &Project, dir: &str) {
    let cfg = p.path(&format!("{dir}/fledge.toml"));
    let text = fs::read_to_string(&cfg).unwrap().replace(
        "# [source]\n# busybox_url = \"/bin/busybox\"\n",
        &format!(
            "[source]\nbusybox_url = \"../tools/busybox\"\nbusybox_sha256 = \"{}\"\n",
            hex(BUSYBOX)
        ),
    );
    let text = text.replace(
        "source_strategy = \"release\"\nversion = \"latest\"\n",
        "source_strategy = \"local\"\npath = \"../tools/kestrel\"\n",
    );
    assert!(text.contains("../tools/busybox"), "busybox lines changed?");
    fs::write(cfg, text).unwrap();
}

#[test]
fn new_projects_validate_build_and_never_overwrite() {
    let p = Project::new();
    for mode in ["default", "custom", "none"] {
        let out = p.ok(&["new", "--mode", mode, mode]);
        assert!(
            out.contains(&format!("created {mode}/fledge.toml\n")),
            "{out}"
        );
        let cfg = fs::read_to_string(p.path(&format!("{mode}/fledge.toml"))).unwrap();
        assert_eq!(
            cfg.lines().next().unwrap(),
            "#:schema https://raw.githubusercontent.com/volantvm/volant/main/docs/schemas/fledge-toml-v1.json"
        );
        let manifest = p.path(&format!("{mode}/manifest.toml"));
        let supported = fledge::manifest::load_template(&manifest)
            .map(|_| true)
            .unwrap_or_else(|e| !e.to_string().contains("not built yet"));
        if !supported {
            eprintln!("note: manifest support is not built yet; checking fledge.toml alone");
            fs::rename(&manifest, p.path(&format!("{mode}.manifest.toml"))).unwrap();
        }
        // As written (default busybox and release agent: validation is offline).
        let cfg_arg = format!("{mode}/fledge.toml");
        p.ok(&["validate", "-c", &cfg_arg]);
        offline(&p, mode);
        let img = format!("{mode}.cpio.gz");
        p.ok(&["build", "-c", &cfg_arg, "-o", &img]);
        p.ok(&["inspect", "--check", &img]);

        // Refuses to overwrite, and writes nothing.
        let before = fs::read(p.path(&cfg_arg)).unwrap();
        let o = p.fledge(&["new", "--mode", mode, mode]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.lines().next().unwrap(),
            format!("error: {mode}/fledge.toml already exists: fledge new does not overwrite files; choose a new directory or remove it")
        );
        assert_eq!(fs::read(p.path(&cfg_arg)).unwrap(), before);
    }
    assert!(p.path("custom/init.sh").exists() && p.path("none/init").exists());
}

fn have_script() -> bool {
    let ok = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "script (util-linux) is required in CI"
        );
        eprintln!("skipped: script is not installed (apt-get install bsdutils)");
    }
    ok
}

/// Serves `body` once per connection on 127.0.0.1; returns the URL.
fn serve(body: &'static [u8]) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/busybox", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    url
}

#[test]
fn progress_bars_only_on_a_terminal() {
    let p = Project::new();
    let url = serve(BUSYBOX);
    let cfg = format!(
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"{url}\"\nbusybox_sha256 = \"{}\"\n{DEFAULT_MODE}",
        hex(BUSYBOX)
    );
    p.file("fledge.toml", cfg.as_bytes(), 0o644);

    // No terminal: plain lines, no escape codes.
    let o = p.fledge(&["build", "-o", "plain.cpio.gz"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("busybox: downloading {url}\n")),
        "{err}"
    );
    assert!(
        err.contains("writing 85 entries (gzip) to plain.cpio.gz\n"),
        "{err}"
    );
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");

    if !have_script() {
        return;
    }
    let run = |args: &str| {
        let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_fledge"));
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .current_dir(p.dir.path())
            .env("FLEDGE_CACHE_DIR", p.path("cache2"))
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let tty = run("build -o tty.cpio.gz");
    assert!(tty.contains("\x1b[2K"), "a bar redraws its line: {tty:?}");
    assert!(
        tty.contains("busybox: downloading [")
            && tty.contains(&format!("{0} B/{0} B", BUSYBOX.len())),
        "download bar: {tty:?}"
    );
    assert!(
        tty.contains("compressing (gzip)"),
        "compression bar: {tty:?}"
    );
    let quiet = run("-q build -o quiet.cpio.gz");
    assert!(quiet.is_empty(), "-q draws nothing: {quiet:?}");
}
