//! The layer stack: each mode's layout, the precedence rule and its messages.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use fledge_abi::paths::{CUSTOM_INIT as CUSTOM_INIT_PATH, VOLANT_INIT as VOLANT_INIT_PATH};

use super::*;
use crate::archive::Content;
use crate::config::{Config, InitMode};
use crate::normalise::normalise;

struct Fixture {
    dir: tempfile::TempDir,
    busybox: Fetched,
    agent: Fetched,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bb = dir.path().join("busybox");
    fs::write(&bb, b"bb").unwrap();
    let ag = dir.path().join("kestrel");
    fs::write(&ag, b"agent").unwrap();
    let f = |p: PathBuf| Fetched {
        path: p,
        sha256: String::new(),
        size: 2,
        origin: String::new(),
        cached: false,
    };
    let mut agent = f(ag);
    agent.size = 5;
    Fixture {
        busybox: f(bb),
        agent,
        dir,
    }
}

fn write(fx: &Fixture, rel: &str, body: &[u8], mode: u32) {
    let p = fx.dir.path().join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn plan_of(fx: &Fixture, body: &str) -> Result<Plan, PlanError> {
    let text = format!("version = \"1\"\nstrategy = \"initramfs\"\n{body}");
    let cfg = Config::from_str(&text, &fx.dir.path().join("fledge.toml")).unwrap();
    let agent = matches!(cfg.init, InitMode::Default { .. }).then_some(&fx.agent);
    plan(&Inputs {
        config: &cfg,
        busybox: &fx.busybox,
        agent,
        init: b"INIT",
        outputs: &[fx.dir.path().join("out.img")],
        modules: None,
        image: None,
    })
}

fn node<'a>(p: &'a Plan, path: &str) -> &'a Planned {
    p.nodes
        .get(path)
        .unwrap_or_else(|| panic!("{path} missing from plan"))
}

#[test]
fn default_mode_layout() {
    let fx = fixture();
    let p = plan_of(
        &fx,
        "[agent]\nsource_strategy = \"local\"\npath = \"kestrel\"\n",
    )
    .unwrap();
    assert_eq!(
        node(&p, "/init").kind,
        Kind::File(Content::Bytes(Arc::from(&b"INIT"[..])))
    );
    assert_eq!(node(&p, "/bin/kestrel").perm, 0o755);
    assert_eq!(node(&p, "/tmp").perm, 0o1777);
    assert_eq!(
        node(&p, "/dev/console").kind,
        Kind::CharDev { major: 5, minor: 1 }
    );
    assert_eq!(node(&p, "/dev/console").perm, 0o600);
    assert_eq!(
        node(&p, "/dev/null").kind,
        Kind::CharDev { major: 1, minor: 3 }
    );
    assert_eq!(node(&p, "/bin/sh").kind, Kind::Symlink("busybox".into()));
    for d in BASE_DIRS {
        assert_eq!(node(&p, d).kind, Kind::Dir, "{d}");
    }
    assert!(!p.nodes.contains_key(VOLANT_INIT_PATH));
}

#[test]
fn custom_mode_host_file_and_seed_idiom() {
    let fx = fixture();
    write(&fx, "my-init", b"#!/bin/sh\n", 0o644);
    let p = plan_of(
        &fx,
        "[init]\npath = \"./my-init\"\n[mappings]\n\"./my-init\" = \"/init\"\n",
    )
    .unwrap();
    assert_eq!(
        node(&p, "/init").kind,
        Kind::File(Content::Bytes(Arc::from(&b"INIT"[..]))),
        "fledge-init stays /init"
    );
    assert_eq!(node(&p, CUSTOM_INIT_PATH).perm, 0o755);
    assert_eq!(
        node(&p, VOLANT_INIT_PATH).kind,
        Kind::File(Content::Bytes(Arc::from(&b"/sbin/custom-init\n"[..])))
    );
    assert!(!p.nodes.contains_key("/bin/kestrel"));
}

#[test]
fn custom_mode_in_image_path() {
    let fx = fixture();
    write(&fx, "my-init.sh", b"#!/bin/sh\n", 0o755);
    let ok = "[init]\npath = \"/usr/local/bin/my-init.sh\"\n[mappings]\n\"my-init.sh\" = \"/usr/local/bin/my-init.sh\"\n";
    write(&fx, "plain.sh", b"#!/bin/sh\n", 0o644);
    let p = plan_of(
        &fx,
        "[init]\npath = \"/etc/plain.sh\"\n[mappings]\n\"plain.sh\" = \"/etc/plain.sh\"\n",
    )
    .unwrap();
    assert_eq!(
        node(&p, "/etc/plain.sh").perm,
        0o755,
        "the custom init is made executable"
    );
    let p = plan_of(&fx, ok).unwrap();
    assert_eq!(
        node(&p, VOLANT_INIT_PATH).kind,
        Kind::File(Content::Bytes(Arc::from(
            &b"/usr/local/bin/my-init.sh\n"[..]
        )))
    );
    assert_eq!(node(&p, "/usr/local").kind, Kind::Dir);
    let err = plan_of(&fx, "[init]\npath = \"/usr/local/bin/nothing\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`init.path`") && err.contains("nothing in the image provides it"),
        "{err}"
    );
}

#[test]
fn none_mode_requires_init_mapping_and_makes_it_executable() {
    let fx = fixture();
    write(&fx, "sup", b"\x7fELF", 0o644);
    let p = plan_of(
        &fx,
        "[init]\nnone = true\n[mappings]\n\"sup\" = \"/init\"\n",
    )
    .unwrap();
    assert_eq!(node(&p, "/init").perm, 0o755);
    assert!(!p.nodes.contains_key("/bin/kestrel"));
    let err = plan_of(&fx, "[init]\nnone = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`init.none`") && err.contains("/init"),
        "{err}"
    );
}

#[test]
fn mapping_errors_name_the_key() {
    let fx = fixture();
    write(&fx, "a", b"a", 0o644);
    write(&fx, "b", b"b", 0o644);
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "missing source",
            "[mappings]\n\"./nope\" = \"/x\"\n",
            &["fledge.toml:4", "mappings.\"./nope\"", "cannot be read"],
        ),
        (
            "two writers",
            "[mappings]\n\"a\" = \"/x\"\n\"b\" = \"/x\"\n",
            &["mappings.\"b\"", "mappings.\"a\" (line 4)"],
        ),
        (
            "onto kestrel",
            "[mappings]\n\"a\" = \"/bin/kestrel\"\n",
            &["mappings.\"a\"", "source_strategy = \"local\""],
        ),
        (
            "onto busybox",
            "[mappings]\n\"a\" = \"/bin/busybox\"\n",
            &["busybox_url"],
        ),
        (
            "onto /init",
            "[mappings]\n\"a\" = \"/init\"\n",
            &["mappings.\"a\"", "none = true"],
        ),
        (
            "file over dir",
            "[mappings]\n\"a\" = \"/usr/bin\"\n",
            &["mappings.\"a\"", "/usr/bin"],
        ),
        (
            "under a file",
            "[mappings]\n\"a\" = \"/x\"\n\"b\" = \"/x/y\"\n",
            &["mappings.\"b\"", "/x"],
        ),
        (
            "file onto /",
            "[mappings]\n\"a\" = \"/\"\n",
            &["mappings.\"a\"", "root directory"],
        ),
    ];
    for (name, body, needles) in cases {
        let err = plan_of(&fx, body).expect_err(name).to_string();
        for n in *needles {
            assert!(err.contains(n), "case {name}: {err:?} should contain {n:?}");
        }
    }
}

#[test]
fn directory_mapping_keeps_symlinks_and_skips_fifos() {
    let fx = fixture();
    write(&fx, "tree/lib/libx.so.1", b"so", 0o644);
    write(&fx, "tree/share/data.txt", b"d", 0o600);
    write(&fx, "tree/bin/tool", b"t", 0o700);
    std::os::unix::fs::symlink("../../etc/passwd", fx.dir.path().join("tree/share/link")).unwrap();
    let fifo = fx.dir.path().join("tree/fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    write(&fx, "a", b"a", 0o755);
    let p = plan_of(
        &fx,
        "[init]\nnone = true\n[mappings]\n\"tree\" = \"/usr\"\n\"a\" = \"/init\"\n",
    )
    .unwrap();
    assert_eq!(node(&p, "/usr/lib/libx.so.1").perm, 0o755);
    assert_eq!(
        node(&p, "/usr/share/data.txt").perm,
        0o600,
        "a file others may not read stays so"
    );
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("others may not read") && w.contains("2 file(s)")),
        "{:?}",
        p.warnings
    );
    assert_eq!(node(&p, "/usr/bin/tool").perm, 0o700 & 0o666 | 0o100);
    assert_eq!(
        node(&p, "/usr/share/link").kind,
        Kind::Symlink("../../etc/passwd".into())
    );
    assert!(!p.nodes.contains_key("/usr/fifo"));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("fifo") && w.contains("FIFO")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn applet_links_may_be_replaced_by_a_mapping() {
    let fx = fixture();
    write(&fx, "ls", b"my ls", 0o755);
    let p = plan_of(&fx, "[mappings]\n\"ls\" = \"/bin/ls\"\n").unwrap();
    assert!(matches!(node(&p, "/bin/ls").kind, Kind::File(_)));
}

#[test]
fn fhs_modes() {
    let cases = [
        ("/usr/bin/x", 0o644, 0o755),
        ("/opt/bin/x", 0o644, 0o755),
        ("/opt/bin/x", 0o600, 0o700),
        ("/etc/shadow", 0o600, 0o600),
        ("/etc/x", 0o755, 0o755),
        ("/etc/x", 0o700, 0o700),
        ("/etc/x", 0o750, 0o750),
        ("/etc/x", 0o640, 0o640),
        ("/etc/x", 0o604, 0o604),
        ("/usr/lib/libc.so", 0o644, 0o755),
        ("/lib/libz.so.1.2", 0o644, 0o755),
        ("/usr/lib/readme.txt", 0o644, 0o644),
        ("/srv/app.so", 0o644, 0o644),
        ("/etc/suid", 0o4755, 0o755),
    ];
    for (dest, src, want) in cases {
        assert_eq!(fhs_mode(dest, src), want, "{dest} from {src:o}");
    }
}

#[test]
fn normaliser_orders_parents_first_and_links_duplicates() {
    let fx = fixture();
    write(&fx, "t/a", b"same", 0o644);
    write(&fx, "t/b", b"same", 0o644);
    write(&fx, "t/c", b"diff", 0o644);
    write(&fx, "t/d-x", b"same", 0o755);
    write(&fx, "t/z", b"same", 0o644);
    let p = plan_of(&fx, "[mappings]\n\"t\" = \"/srv/t\"\n").unwrap();
    let entries = normalise(&p, 42, true).unwrap();
    let pos = |name: &str| entries.iter().position(|e| e.path == name).unwrap();
    for (i, e) in entries.iter().enumerate() {
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            assert!(pos(parent) < i, "{} before its parent", e.path);
        }
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 42));
    }
    let (a, b, c) = (
        &entries[pos("srv/t/a")],
        &entries[pos("srv/t/b")],
        &entries[pos("srv/t/c")],
    );
    let z = &entries[pos("srv/t/z")];
    assert_eq!((a.ino, a.nlink), (b.ino, 3));
    assert_eq!((z.ino, z.nlink), (a.ino, 3));
    assert_eq!(a.kind, Kind::File(Content::Empty), "first has no body");
    assert_eq!(b.kind, Kind::File(Content::Empty), "middle has no body");
    assert_eq!(z.body_len(), 4, "last of a group has the body");
    let (pa, pb, pz) = (pos("srv/t/a"), pos("srv/t/b"), pos("srv/t/z"));
    assert_eq!(
        (pa + 1, pb + 1),
        (pb, pz),
        "a group is contiguous, body last"
    );
    assert!(pos("srv/t/c") < pa, "members move later, next to the body");
    assert_eq!(c.nlink, 1);
    assert_eq!(
        entries[pos("srv/t/d-x")].nlink,
        1,
        "other permissions: not linked"
    );
    let inos: std::collections::HashSet<u32> = entries.iter().map(|e| e.ino).collect();
    assert_eq!(inos.len(), entries.len() - 2, "three paths, one inode");
    let plain = normalise(&p, 42, false).unwrap();
    let a = plain.iter().find(|e| e.path == "srv/t/a").unwrap();
    assert_eq!(
        (a.nlink, a.body_len()),
        (1, 4),
        "no dedup: every body stored"
    );
}

#[test]
fn a_later_source_replaces_an_applet_link_with_a_note() {
    let fx = fixture();
    write(&fx, "ls", b"my ls", 0o755);
    let p = plan_of(&fx, "[mappings]\n\"ls\" = \"/bin/ls\"\n").unwrap();
    assert!(
        p.notes.iter().any(|n| n.contains("/bin/ls")
            && n.contains("mappings.\"ls\"")
            && n.contains("applet")),
        "{:?}",
        p.notes
    );
}

#[test]
fn a_conflict_names_both_origins_whichever_comes_first() {
    let fx = fixture();
    write(&fx, "a", b"a", 0o644);
    // The mapping is planned before fledge's own files, the applet link before the mapping:
    // either way the message is about the mapping and names the other source.
    for (body, other) in [
        ("[mappings]\n\"a\" = \"/init\"\n", "fledge-init"),
        (
            "[init]\nsupervise = true\n[mappings]\n\"a\" = \"/etc/fledge-init.conf\"\n",
            "init.supervise",
        ),
        ("[mappings]\n\"a\" = \"/bin/sh/x\"\n", "busybox applet link"),
        ("[mappings]\n\"a\" = \"/dev/null\"\n", "base layout"),
    ] {
        let err = plan_of(&fx, body).expect_err(body).to_string();
        assert!(
            err.contains("fledge.toml:") && err.contains("`mappings.\"a\"`") && err.contains(other),
            "{body}: {err}"
        );
    }
}

#[test]
fn the_normaliser_keeps_a_planned_owner() {
    let fx = fixture();
    write(&fx, "a", b"a", 0o644);
    let mut p = plan_of(&fx, "[mappings]\n\"a\" = \"/srv/a\"\n").unwrap();
    let node = p.nodes.remove("/srv/a").unwrap().owned_by(1000, 100);
    p.nodes.insert("/srv/a".into(), node);
    let entries = normalise(&p, 1, false).unwrap();
    let owner = |path: &str| {
        let e = entries.iter().find(|e| e.path == path).unwrap();
        (e.uid, e.gid)
    };
    assert_eq!(owner("srv/a"), (1000, 100));
    assert_eq!(owner("srv"), (0, 0));
}

#[test]
fn init_command_bakes_the_workload_spec_with_the_program_found_in_path() {
    let fx = fixture();
    write(&fx, "app", b"#!/bin/sh\n", 0o755);
    write(
        &fx,
        "passwd",
        b"root:x:0:0::/:/bin/sh\nweb:x:1000:1000::/srv:/bin/sh\n",
        0o644,
    );
    write(&fx, "group", b"web:x:1000:\nlog:x:4:web\n", 0o644);
    let body = "[init]\ncommand = [\"app\", \"--port\", \"8080\"]\nuser = \"web\"\n\
                workdir = \"/srv\"\nhostname = \"svc\"\nnofile = 65536\n\
                [init.env]\nPATH = \"/opt/bin:/usr/bin\"\nMODE = \"prod\"\n\
                [mappings]\n\"app\" = \"/opt/bin/app\"\n\"passwd\" = \"/etc/passwd\"\n\
                \"group\" = \"/etc/group\"\n";
    let p = plan_of(&fx, body).unwrap();
    let text = match &node(&p, fledge_abi::paths::WORKLOAD).kind {
        Kind::File(Content::Bytes(b)) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("spec is {other:?}"),
    };
    let spec = fledge_abi::workload::Workload::decode(&text).unwrap();
    assert_eq!(spec.argv, ["app", "--port", "8080"]);
    assert_eq!(spec.env, ["MODE=prod", "PATH=/opt/bin:/usr/bin"]);
    assert_eq!(spec.user, Some((1000, 1000)));
    assert_eq!(spec.groups, vec![4]);
    assert_eq!(spec.cwd.as_deref(), Some("/srv"));
    assert_eq!(
        (spec.nofile, spec.hostname.as_deref()),
        (Some(65536), Some("svc"))
    );
    assert_eq!(
        node(&p, VOLANT_INIT_PATH).kind,
        Kind::File(Content::Bytes(Arc::from(&b"/opt/bin/app\n"[..]))),
        "the program as found"
    );
}

#[test]
fn init_command_errors_name_the_key() {
    let fx = fixture();
    let cases = [
        (
            "[init]\ncommand = [\"nothere\"]\n",
            "`init.command`",
            "none of the image's PATH",
        ),
        (
            "[init]\ncommand = [\"/opt/x\"]\n",
            "`init.command`",
            "nothing in the image provides it",
        ),
        (
            "[init]\ncommand = [\"/bin/busybox\"]\nuser = \"ghost\"\n",
            "`init.user`",
            "\"ghost\"",
        ),
    ];
    for (i, (body, key, text)) in cases.into_iter().enumerate() {
        let e = plan_of(&fx, body).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(text), "case {i}: {e}");
    }
    let p = plan_of(&fx, "[init]\ncommand = [\"busybox\", \"httpd\"]\n").unwrap();
    assert!(p.nodes.contains_key(fledge_abi::paths::WORKLOAD));
    let p = plan_of(&fx, "[init]\npath = \"/bin/busybox\"\n").unwrap();
    assert!(
        !p.nodes.contains_key(fledge_abi::paths::WORKLOAD),
        "no keys, no spec"
    );
}

#[test]
fn default_mode_refuses_a_mapping_onto_volant_init() {
    let fx = fixture();
    write(&fx, "a", b"/usr/bin/evil\n", 0o644);
    let err = plan_of(
        &fx,
        "[agent]\nsource_strategy = \"local\"\npath = \"kestrel\"\n[mappings]\n\"a\" = \"/.volant_init\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`mappings.\"a\"`")
            && err.contains("/.volant_init")
            && err.contains("[init] path"),
        "{err}"
    );
}

#[test]
fn a_file_over_4_gib_is_refused_while_planning() {
    let fx = fixture();
    let big = fs::File::create(fx.dir.path().join("big")).unwrap();
    big.set_len(MAX_FILE + 1).unwrap();
    let err = plan_of(&fx, "[mappings]\n\"big\" = \"/srv/big\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`mappings.\"big\"`") && err.contains("/srv/big") && err.contains("4 GiB"),
        "{err}"
    );
    big.set_len(MAX_FILE).unwrap();
    plan_of(&fx, "[mappings]\n\"big\" = \"/srv/big\"\n").expect("4 GiB - 1 fits");
}

#[test]
fn a_name_that_is_not_utf8_fails_and_names_the_file() {
    use std::os::unix::ffi::OsStrExt;
    let fx = fixture();
    write(&fx, "t/ok", b"ok", 0o644);
    let bad = fx
        .dir
        .path()
        .join("t")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::write(bad, b"x").unwrap();
    let err = plan_of(&fx, "[mappings]\n\"t\" = \"/srv/t\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`mappings.\"t\"`") && err.contains("not UTF-8") && err.contains("caf"),
        "{err}"
    );
}

#[test]
fn outputs_and_temporary_files_are_left_out_of_a_mapped_tree() {
    let fx = fixture();
    write(&fx, "t/app", b"app", 0o644);
    write(&fx, "t/.plugin.cpio.gz.Ab12Cd.tmp", b"half an image", 0o600);
    write(&fx, "t/.notes.tmp", b"mine", 0o644);
    // `plan_of` names out.img as this build's output: put it inside the tree.
    fs::rename(fx.dir.path().join("t/app"), fx.dir.path().join("out.img")).unwrap();
    fs::hard_link(
        fx.dir.path().join("out.img"),
        fx.dir.path().join("t/out.img"),
    )
    .unwrap();
    write(&fx, "t/app", b"app", 0o644);
    let p = plan_of(&fx, "[mappings]\n\"t\" = \"/srv\"\n").unwrap();
    assert!(p.nodes.contains_key("/srv/app"));
    assert!(p.nodes.contains_key("/srv/.notes.tmp"), "not of our naming");
    assert!(!p.nodes.contains_key("/srv/.plugin.cpio.gz.Ab12Cd.tmp"));
    assert!(!p.nodes.contains_key("/srv/out.img"));
    assert_eq!(
        p.notes.iter().filter(|n| n.contains("left out")).count(),
        2,
        "{:?}",
        p.notes
    );
}

#[test]
fn a_skip_warning_is_given_once() {
    let fx = fixture();
    write(&fx, "t/a", b"a", 0o644);
    let fifo = fx.dir.path().join("t/fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let p = plan_of(
        &fx,
        "[mappings]\n\"t\" = \"/srv/one\"\n\"./t\" = \"/srv/two\"\n",
    )
    .unwrap();
    assert_eq!(
        p.warnings.iter().filter(|w| w.contains("FIFO")).count(),
        1,
        "{:?}",
        p.warnings
    );
}

#[test]
fn an_absolute_custom_init_found_only_on_the_host_is_taken_from_there() {
    let fx = fixture();
    write(&fx, "host-init", b"#!/bin/sh\n", 0o644);
    let host = fx.dir.path().join("host-init");
    let host = host.to_str().unwrap();
    let p = plan_of(&fx, &format!("[init]\npath = \"{host}\"\n")).unwrap();
    let n = node(&p, host);
    assert_eq!((n.perm, &n.origin), (0o755, &Origin::CustomInit));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains(host) && w.contains("no mapping")),
        "{:?}",
        p.warnings
    );
}

/// An image with a merged /usr, its own /bin/sh and files owned by 1000.
fn image_fixture(dir: &std::path::Path) -> crate::image::Image {
    use crate::image::tree::{NodeKind as N, TarEntry, What};
    let data: std::sync::Arc<std::path::Path> = dir.join("layer").into();
    fs::write(&data, b"app:x:1000:1000::/home/app:/bin/sh\nappbody").unwrap();
    let file = |offset, size| {
        What::Node(N::File {
            data: data.clone(),
            offset,
            size,
        })
    };
    let e = |name: &str, what: What, perm, uid| TarEntry {
        name: name.into(),
        what,
        perm,
        uid,
        gid: uid,
    };
    let mut tree = crate::image::RootFs::default();
    for entry in [
        e("bin", What::Node(N::Symlink("usr/bin".into())), 0o777, 0),
        e(
            "usr/bin/sh",
            What::Node(N::Symlink("dash".into())),
            0o777,
            0,
        ),
        e("usr/bin/dash", file(0, 4), 0o755, 0),
        e("etc/passwd", file(0, 36), 0o644, 0),
        e("etc/hostname", file(0, 3), 0o644, 0),
        e("usr/local/bin/app", file(36, 7), 0o4750, 1000),
        e("srv", What::Node(N::Dir), 0o700, 1000),
        e("tmp", What::Node(N::Dir), 0o1777, 0),
    ] {
        tree.apply(0, entry).unwrap();
    }
    crate::image::Image {
        text: "oci:img".into(),
        digest: crate::image::Digest::of(b"m"),
        config: crate::image::ImageConfig {
            entrypoint: vec!["app".into()],
            cmd: vec!["--port".into(), "80".into()],
            env: vec!["PATH=/usr/local/bin:/usr/bin".into(), "MODE=prod".into()],
            working_dir: Some("/srv".into()),
            user: Some("app".into()),
            ports: vec![80],
        },
        layers: Vec::new(),
        tree,
        warnings: Vec::new(),
    }
}

#[test]
fn an_image_is_the_base_and_yields_to_every_source_above() {
    let fx = fixture();
    write(&fx, "hostname", b"mine\n", 0o644);
    let text = "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nimage = \"oci:img\"\n[init]\nfrom_image = true\n[mappings]\n\"hostname\" = \"/etc/hostname\"\n";
    let cfg = Config::from_str(text, &fx.dir.path().join("fledge.toml")).unwrap();
    let image = image_fixture(fx.dir.path());
    let p = plan(&Inputs {
        config: &cfg,
        busybox: &fx.busybox,
        agent: None,
        init: b"INIT",
        modules: None,
        outputs: &[],
        image: Some(&image),
    })
    .unwrap();
    assert_eq!(
        node(&p, "/bin").kind,
        Kind::Symlink("usr/bin".into()),
        "the image's /bin link stays"
    );
    assert!(
        p.nodes.contains_key("/usr/bin/busybox"),
        "busybox goes where /bin points"
    );
    assert!(!p.nodes.contains_key("/bin/busybox"));
    assert_eq!(
        node(&p, "/usr/bin/sh").kind,
        Kind::Symlink("dash".into()),
        "the image's sh wins"
    );
    assert_eq!(
        node(&p, "/usr/bin/ls").origin,
        Origin::Applet,
        "applets fill what the image lacks"
    );
    let app = node(&p, "/usr/local/bin/app");
    assert_eq!(
        (app.perm, app.uid, app.gid, &app.origin),
        (0o4750, 1000, 1000, &Origin::Image { layer: 1 })
    );
    assert_eq!(
        (node(&p, "/srv").perm, node(&p, "/srv").uid),
        (0o700, 1000),
        "a merged directory keeps the image's mode"
    );
    assert!(
        matches!(node(&p, "/etc/hostname").origin, Origin::Mapping { .. }),
        "a mapping replaces an image file"
    );
    assert!(
        p.notes.iter().any(|n| n.contains("/etc/hostname")),
        "{:?}",
        p.notes
    );
    assert_eq!(node(&p, "/init").origin, Origin::FledgeInit);
    let Kind::File(Content::Bytes(spec)) = &node(&p, fledge_abi::paths::WORKLOAD).kind else {
        panic!("no workload spec")
    };
    let spec = fledge_abi::workload::Workload::decode(std::str::from_utf8(spec).unwrap()).unwrap();
    assert_eq!(spec.argv, ["app", "--port", "80"]);
    assert_eq!(spec.env, ["PATH=/usr/local/bin:/usr/bin", "MODE=prod"]);
    assert_eq!(
        (spec.cwd.as_deref(), spec.user),
        (Some("/srv"), Some((1000, 1000)))
    );
    assert_eq!(
        node(&p, VOLANT_INIT_PATH).kind,
        Kind::File(Content::Bytes(Arc::from(&b"/usr/local/bin/app\n"[..])))
    );
    // Normalised entries keep the image's owners.
    let entries = normalise(&p, 1, true).unwrap();
    let e = entries
        .iter()
        .find(|e| e.path == "usr/local/bin/app")
        .unwrap();
    assert_eq!((e.uid, e.gid, e.perm), (1000, 1000, 0o4750));
}

#[test]
fn fledge_files_replace_image_files_with_a_warning() {
    let fx = fixture();
    let text = "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nimage = \"oci:img\"\n[agent]\nsource_strategy = \"local\"\npath = \"kestrel\"\n";
    let cfg = Config::from_str(text, &fx.dir.path().join("fledge.toml")).unwrap();
    let mut image = image_fixture(fx.dir.path());
    let data = fx.dir.path().join("layer");
    let init = crate::image::tree::TarEntry {
        name: "init".into(),
        what: crate::image::tree::What::Node(crate::image::NodeKind::File {
            data: data.into(),
            offset: 0,
            size: 1,
        }),
        perm: 0o755,
        uid: 0,
        gid: 0,
    };
    image.tree.apply(0, init).unwrap();
    let p = plan(&Inputs {
        config: &cfg,
        busybox: &fx.busybox,
        agent: Some(&fx.agent),
        init: b"INIT",
        modules: None,
        outputs: &[],
        image: Some(&image),
    })
    .unwrap();
    assert_eq!(node(&p, "/init").origin, Origin::FledgeInit);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("/init") && w.contains("layer 1 of the image")),
        "{:?}",
        p.warnings
    );
    assert!(
        p.nodes.contains_key("/usr/bin/kestrel"),
        "the agent goes where /bin points"
    );
}

/// The image fixture plus `entries` in a second layer.
fn image_with(
    dir: &std::path::Path,
    entries: Vec<(&str, crate::image::tree::What)>,
) -> crate::image::Image {
    let mut image = image_fixture(dir);
    for (name, what) in entries {
        let e = crate::image::tree::TarEntry {
            name: name.into(),
            what,
            perm: 0o644,
            uid: 0,
            gid: 0,
        };
        image.tree.apply(1, e).unwrap();
    }
    image
}

#[test]
fn fledges_own_paths_are_never_the_images() {
    use crate::image::tree::What;
    use crate::image::NodeKind as N;
    use fledge_abi::paths;
    let fx = fixture();
    let data: std::sync::Arc<std::path::Path> = fx.dir.path().join("layer").into();
    let file = || {
        What::Node(N::File {
            data: data.clone(),
            offset: 0,
            size: 3,
        })
    };
    let plan_with = |cfg_tail: &str, image: &crate::image::Image| {
        let text = format!(
            "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nimage = \"oci:img\"\n{cfg_tail}"
        );
        let cfg = Config::from_str(&text, &fx.dir.path().join("fledge.toml")).unwrap();
        plan(&Inputs {
            config: &cfg,
            busybox: &fx.busybox,
            agent: Some(&fx.agent),
            init: b"INIT",
            modules: None,
            outputs: &[],
            image: Some(image),
        })
    };
    let agent = "[agent]\nsource_strategy = \"local\"\npath = \"kestrel\"\n";
    // An image's workload spec, init options (a FIFO), module list and /init/ directory.
    let image = image_with(
        fx.dir.path(),
        vec![
            ("etc/fledge/workload", file()),
            ("etc/fledge-init.conf", What::Node(N::Fifo)),
            ("etc/fledge/modules.load", file()),
            ("init/evil", file()),
            (".volant_init", file()),
        ],
    );
    let p = plan_with(agent, &image).unwrap();
    for gone in [
        paths::WORKLOAD,
        paths::INIT_CONF,
        paths::MODULES_LOAD,
        "/init/evil",
        paths::VOLANT_INIT,
    ] {
        assert!(!p.nodes.contains_key(gone), "{gone} left out");
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with(gone) && w.contains("layer 2 of the image")),
            "{gone}: {:?}",
            p.warnings
        );
    }
    assert_eq!(node(&p, paths::INIT).origin, Origin::FledgeInit);
    // Where fledge writes one, it is fledge's (and the image's goes with a warning).
    let p = plan_with(&format!("{agent}[init]\nsupervise = true\n"), &image).unwrap();
    assert_eq!(node(&p, paths::INIT_CONF).origin, Origin::InitConf);

    // An image whose /etc is a link: fledge does not write its config through it.
    let mut linked = image_fixture(fx.dir.path());
    linked
        .tree
        .apply(
            1,
            crate::image::tree::TarEntry {
                name: "etc".into(),
                what: What::Node(N::Symlink("tmp".into())),
                perm: 0o777,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
    let e = plan_with(&format!("{agent}[init]\nsupervise = true\n"), &linked)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/etc/fledge-init.conf") && e.contains("the image's /etc is a symlink to tmp"),
        "{e}"
    );
    assert!(e.contains("init.supervise"), "{e}");
}

#[test]
fn what_the_init_exec_or_setuid_would_refuse_fails_the_build() {
    let fx = fixture();
    let big = "v".repeat(200 << 10);
    let cases = [
        (
            "[init]\ncommand = [\"/bin/busybox\"]\nuser = \"4294967295:4294967295\"\n".to_string(),
            "`init.user`",
            "id 4294967295",
        ),
        (
            format!("[init]\ncommand = [\"/bin/busybox\"]\nenv = {{ BIG = \"{big}\" }}\n"),
            "`init.env`",
            "(E2BIG)",
        ),
        (
            format!("[init]\ncommand = [\"/bin/busybox\", \"{big}\"]\n"),
            "`init.command`",
            "(E2BIG)",
        ),
    ];
    for (i, (body, key, text)) in cases.iter().enumerate() {
        let e = plan_of(&fx, body).unwrap_err().to_string();
        assert!(
            e.contains(key) && e.contains(text),
            "case {i}: {}",
            &e[..e.len().min(300)]
        );
        assert!(e.len() < 400, "case {i}: one short line, {} bytes", e.len());
    }
}

#[test]
fn a_normal_path_resolves_to_itself_when_no_image_link_is_followed() {
    // What lets `Stack::resolve` skip the walk: with no link to follow, the walk gives a
    // normal path back unchanged, through directories, files, symlinks and missing parts.
    let mut plan = Plan {
        nodes: Default::default(),
        warnings: Vec::new(),
        notes: Vec::new(),
    };
    let at = |kind| Planned::new(kind, 0o755, Origin::Base);
    plan.nodes.insert("/usr".into(), at(Kind::Dir));
    plan.nodes.insert("/usr/bin".into(), at(Kind::Dir));
    plan.nodes
        .insert("/usr/bin/f".into(), at(Kind::File(Content::Empty)));
    plan.nodes
        .insert("/bin".into(), at(Kind::Symlink("usr/bin".into())));
    let none = std::collections::BTreeSet::new();
    for path in [
        "/usr/bin/f",
        "/usr/bin/f/below",
        "/bin/x",
        "/bin",
        "/new/deep/path",
        "/usr",
    ] {
        assert!(is_normal(path), "{path}");
        assert_eq!(plan.resolve(path, Some(&none), Last::Keep), path);
        assert_eq!(plan.resolve(path, Some(&none), Last::Follow), path);
    }
    for path in [
        "/",
        "usr/bin",
        "/usr//bin",
        "/usr/./bin",
        "/usr/../bin",
        "/usr/",
        "",
    ] {
        assert!(!is_normal(path), "{path:?}");
    }
}
