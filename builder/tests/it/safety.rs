//! A build never destroys an input, never leaves a partial or stale file, and commits image and
//! manifest as one pair: end to end through the `fledge` binary.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{hex, Project, DEFAULT_MODE};

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_output_that_is_an_input_or_not_a_regular_file_is_refused() {
    let p = Project::new();
    p.file("app/bin/tool", b"tool\n", 0o755);
    p.config(&format!(
        "{DEFAULT_MODE}[mappings]\n\"app/bin/tool\" = \"/usr/bin/tool\"\n"
    ));
    fs::create_dir(p.path("adir")).unwrap();
    let cases = [
        ("fledge.toml", "the build's config"),
        ("tools/busybox", "busybox"),
        ("tools/kestrel", "the kestrel agent"),
        ("app/bin/tool", "mappings.\"app/bin/tool\""),
        ("adir", "a directory"),
        ("/dev/null", "a character device"),
    ];
    for (out, why) in cases {
        let before = fs::symlink_metadata(p.path(out)).map(|m| (m.len(), m.file_type()));
        let body = fs::read(p.path(out)).ok();
        let o = p.fledge(&["build", "-o", out]);
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(1), "-o {out}: {err}");
        assert!(
            err.contains("-o/--output") && err.contains(why),
            "-o {out}: {err}"
        );
        let after = fs::symlink_metadata(p.path(out)).map(|m| (m.len(), m.file_type()));
        assert_eq!(before.ok(), after.ok(), "-o {out} left as it was");
        assert_eq!(body, fs::read(p.path(out)).ok(), "-o {out} unchanged");
    }
    assert!(!std::path::Path::new("/dev/null.manifest.json").exists());
}

#[test]
fn an_output_that_is_a_library_the_plan_copies_is_refused() {
    // Only the plan knows this input: the closure of a dynamic program. The output is another
    // name of the host's libc, so replacing it would not touch libc itself, but the guard must
    // still see it.
    let p = Project::new();
    p.config("[init]\npath = \"/usr/bin/ls\"\n[mappings]\n\"/usr/bin/ls\" = \"/usr/bin/ls\"\n");
    let libc = [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|l| std::path::Path::new(l).exists())
    .expect("the host has glibc");
    if let Err(e) = fs::hard_link(libc, p.path("libc-alias")) {
        eprintln!("skipped: cannot link {libc} into the project ({e})");
        return;
    }
    let o = p.fledge(&["build", "-o", "libc-alias"]);
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("-o/--output")
            && err.contains("libc.so.6")
            && err.contains("a build never overwrites its inputs"),
        "{err}"
    );
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&p.path("libc-alias")), ino(std::path::Path::new(libc)));
}

#[test]
fn a_signal_removes_the_temporary_image_and_exits_128_plus_its_number() {
    let p = Project::new();
    // Incompressible bytes and xz -9 on one thread: the build runs long enough to be stopped.
    let noise: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    p.file("app/noise", &noise, 0o644);
    p.config(&format!(
        "{DEFAULT_MODE}[mappings]\n\"app/noise\" = \"/srv/noise\"\n"
    ));
    for (sig, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        let mut child = p
            .command(&[
                "build",
                "-o",
                "out/p.img",
                "--compression",
                "xz",
                "--level",
                "9",
                "-j",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let temp = || {
            fs::read_dir(p.path("out"))
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                })
                .unwrap_or(false)
        };
        while !temp() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no temporary file appeared"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "the build ended before the signal"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let kill = std::process::Command::new("kill")
            .args([format!("-{sig}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "SIG{sig}");
        let left: Vec<_> = fs::read_dir(p.path("out"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "SIG{sig} left {left:?}");
    }
}

#[test]
fn concurrent_builds_of_one_output_commit_matching_pairs() {
    let p = Project::new();
    for (name, body) in [("a", "one"), ("b", "two")] {
        p.file(&format!("{name}/data"), body.as_bytes(), 0o644);
        let cfg = "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"../tools/busybox\"\n[agent]\nsource_strategy = \"local\"\npath = \"../tools/kestrel\"\n[mappings]\n\"data\" = \"/srv/data\"\n";
        p.file(&format!("{name}/fledge.toml"), cfg.as_bytes(), 0o644);
    }
    let out = p.path("shared/plugin.cpio.gz");
    let out = out.to_str().unwrap();
    for round in 0..6 {
        let children: Vec<_> = ["a", "b", "a", "b"]
            .iter()
            .map(|n| {
                p.command(&["build", "-q", "-c", &format!("{n}/fledge.toml"), "-o", out])
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "round {round}");
        }
        let image = fs::read(out).unwrap();
        let manifest = fs::read_to_string(p.path("shared/plugin.manifest.json")).unwrap();
        assert!(
            manifest.contains(&hex(&image)),
            "round {round}: the manifest is another build's"
        );
        for other in ["plugin.spdx.json", "plugin.provenance.json"] {
            let text = fs::read_to_string(p.path(&format!("shared/{other}"))).unwrap();
            assert!(
                text.contains(&hex(&image)),
                "round {round}: {other} is another build's"
            );
        }
    }
    let names: Vec<_> = fs::read_dir(p.path("shared"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        names.len(),
        4,
        "image, manifest, SBOM, provenance: {names:?}"
    );
}

#[test]
fn config_and_template_are_read_bounded_and_only_from_regular_files() {
    let p = Project::new();
    p.config(DEFAULT_MODE);
    let started = Instant::now();
    for args in [
        &["build", "-c", "/dev/zero"][..],
        &["validate", "-c", "/dev/zero"],
        &["build", "-m", "/dev/zero"],
        &["validate", "-m", "/dev/zero"],
    ] {
        let o = p.fledge(args);
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("/dev/zero") && err.contains("character device"),
            "{args:?}: {err}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let mut big = b"version = \"1\"\nstrategy = \"initramfs\"\n".to_vec();
    big.resize(2 << 20, b'\n');
    p.file("big.toml", &big, 0o644);
    let o = p.fledge(&["validate", "-c", "big.toml"]);
    assert!(
        stderr_of(&o).contains("big.toml") && stderr_of(&o).contains("over"),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn validate_and_dry_run_refuse_a_file_over_4_gib_as_build_does() {
    let p = Project::new();
    let f = fs::File::create(p.path("huge")).unwrap();
    f.set_len(u32::MAX as u64 + 1).unwrap();
    p.config(&format!(
        "{DEFAULT_MODE}[mappings]\n\"huge\" = \"/srv/huge\"\n"
    ));
    for args in [&["validate"][..], &["build", "--dry-run"], &["build"]] {
        let o = p.fledge(args);
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("/srv/huge") && err.contains("4 GiB"),
            "{args:?}: {err}"
        );
    }
    assert!(!p.path("plugin.cpio.gz").exists());
}

#[test]
fn a_rebuild_inside_a_mapped_tree_leaves_out_its_outputs_and_stale_temporary_files() {
    let p = Project::new();
    p.file("site/index.html", b"<p>hi</p>\n", 0o644);
    p.config(&format!(
        "{DEFAULT_MODE}[mappings]\n\"site\" = \"/srv/site\"\n"
    ));
    p.ok(&["build", "-o", "site/plugin.cpio.gz"]);
    p.file(
        "site/.plugin.cpio.gz.Zz9Yy8.tmp",
        b"left by a killed build",
        0o600,
    );
    let o = p.fledge(&["-v", "build", "-o", "site/plugin.cpio.gz"]);
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        !p.path("site/.plugin.cpio.gz.Zz9Yy8.tmp").exists(),
        "the stale file is removed"
    );
    for name in ["plugin.cpio.gz", "plugin.manifest.json"] {
        assert!(
            err.contains(&format!("site/{name}: left out")),
            "{name}: {err}"
        );
    }
    let listing = p.ok(&["inspect", "site/plugin.cpio.gz"]);
    assert!(listing.contains("/srv/site/index.html"), "{listing}");
    assert!(!listing.contains("plugin"), "{listing}");
}

#[test]
fn verbose_validate_names_the_program_the_default_manifest_starts() {
    let p = Project::new();
    p.file("my-init", b"#!/bin/sh\n", 0o755);
    for (body, program) in [
        (
            "[init]\nnone = true\n[mappings]\n\"my-init\" = \"/init\"\n",
            "entrypoint /init",
        ),
        (
            "[init]\npath = \"./my-init\"\n",
            "entrypoint /sbin/custom-init",
        ),
        (DEFAULT_MODE, "entrypoint /bin/kestrel"),
    ] {
        p.config(body);
        let o = p.fledge(&["-v", "validate"]);
        let err = stderr_of(&o);
        assert!(o.status.success(), "{err}");
        assert!(err.contains(program), "{body}: {err}");
    }
}
