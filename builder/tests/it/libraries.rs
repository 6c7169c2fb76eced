//! Shared libraries end to end: a dynamically linked custom init builds into an image that is
//! byte-identical wherever it is built, `-v` names each library's program, and `inspect
//! --check` refuses a hand-made image whose dynamic `/init` has no loader.

use std::sync::Arc;

use fledge::archive::{Content, Entry, Kind, NewcWriter};

use crate::common::Project;

const LS_INIT: &str =
    "[init]\npath = \"/usr/bin/ls\"\n[mappings]\n\"/usr/bin/ls\" = \"/usr/bin/ls\"\n";

#[test]
fn a_dynamic_init_builds_reproducibly_with_its_libraries() {
    let (a, b) = (Project::new(), Project::new());
    a.config(LS_INIT);
    b.config(LS_INIT);
    let (ia, ib) = (a.build("a.cpio", &[]), b.build("b.cpio", &[]));
    assert!(ia == ib, "two builds of a dynamic init differ");
    let listing = a.ok(&["inspect", "a.cpio"]);
    for want in ["/lib64 -> usr/lib64", "/libc.so.6", "ld-linux-x86-64.so.2"] {
        assert!(listing.contains(want), "{want} in:\n{listing}");
    }
    a.ok(&["inspect", "--check", "a.cpio"]);
    let o = a.fledge(&["-v", "build", "--dry-run"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("libc.so.6 for /usr/bin/ls"), "{err}");
}

#[test]
fn inspect_check_refuses_a_dynamic_init_without_its_loader() {
    let p = Project::new();
    let ls = std::fs::read("/usr/bin/ls").unwrap();
    let e = |path: &str, kind, perm, ino| Entry::new(path, kind, perm, ino, 1, 1);
    let mut w = NewcWriter::new(Vec::new());
    for entry in [
        e("dev", Kind::Dir, 0o755, 1),
        e(
            "dev/console",
            Kind::CharDev { major: 5, minor: 1 },
            0o600,
            2,
        ),
        e("init", Kind::File(Content::Bytes(Arc::from(ls))), 0o755, 3),
    ] {
        w.append(&entry).unwrap();
    }
    p.file("hand.cpio", &w.finish().unwrap(), 0o644);
    let o = p.fledge(&["inspect", "--check", "hand.cpio"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "/init needs the interpreter /lib64/ld-linux-x86-64.so.2, which is not in the image"
        ),
        "{err}"
    );
}
