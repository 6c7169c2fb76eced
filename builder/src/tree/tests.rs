use super::*;
use std::io::Read;

fn merged_usr() -> MemTree {
    let mut t = MemTree::default();
    t.put("/lib", Node::Symlink("usr/lib".into()), b"");
    t.put("/lib64", Node::Symlink("usr/lib64".into()), b"");
    t.put(
        "/usr/lib64/ld-linux-x86-64.so.2",
        Node::Symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()),
        b"",
    );
    t.put(
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        Node::File,
        b"ld",
    );
    t.put("/loop", Node::Symlink("loop".into()), b"");
    t.put("/up", Node::Symlink("../../../usr".into()), b"");
    t
}

#[test]
fn walk_records_every_link_of_a_chain() {
    let w = resolve(&merged_usr(), "/lib64/ld-linux-x86-64.so.2").unwrap();
    assert_eq!(w.real, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    assert_eq!(w.node, Some(Node::File));
    let at: Vec<_> = w.links.iter().map(|l| l.at.as_str()).collect();
    assert_eq!(at, ["/lib64", "/usr/lib64/ld-linux-x86-64.so.2", "/lib"]);
}

#[test]
fn walk_stays_inside_and_is_bounded() {
    let t = merged_usr();
    let cases = [
        ("/up/lib64", "/usr/lib64", Some(Node::Dir)),
        ("/../../usr/./lib", "/usr/lib", Some(Node::Dir)),
        ("/nope/libc.so", "/nope/libc.so", None),
        (
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2/x",
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2/x",
            None,
        ),
        ("/", "/", Some(Node::Dir)),
    ];
    for (i, (path, real, node)) in cases.into_iter().enumerate() {
        let w = resolve(&t, path).unwrap();
        assert_eq!((w.real.as_str(), w.node), (real, node), "case {i}: {path}");
    }
    assert!(is_symlink_loop(&resolve(&t, "/loop/x").unwrap_err()));
}

#[test]
fn join_and_parent() {
    assert_eq!(join("/usr/bin", "../lib"), "/usr/lib");
    assert_eq!(join("/usr/bin", "/lib/x"), "/lib/x");
    assert_eq!(join("/", "../../x"), "/x");
    assert_eq!(parent("/x"), "/");
    assert_eq!(parent("/usr/lib/x"), "/usr/lib");
}

#[test]
fn host_tree_never_leaves_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::write(root.join("usr/lib/os-release"), "inside").unwrap();
    std::fs::create_dir(root.join("etc")).unwrap();
    std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc", root.join("usr/etc")).unwrap();
    let t = HostTree { root: root.into() };
    // /lib -> /usr/lib is the sysroot's /usr/lib, not the host's
    assert_eq!(t.node("/lib/os-release").unwrap(), Some(Node::File));
    assert_eq!(t.node("/lib/x86_64-linux-gnu").unwrap(), None);
    assert_eq!(
        t.host_path("/usr/etc/passwd").unwrap().unwrap(),
        root.join("etc/passwd")
    );
    let mut body = String::new();
    t.open("/lib/os-release")
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    assert_eq!(body, "inside");
}

#[test]
fn host_tree_reads_this_machine() {
    let t = HostTree { root: "/".into() };
    let w = resolve(&t, "/lib64/ld-linux-x86-64.so.2").unwrap();
    assert_eq!(w.node, Some(Node::File));
    assert!(
        w.links
            .iter()
            .any(|l| l.at.ends_with("64/ld-linux-x86-64.so.2")),
        "{w:?}"
    );
}

#[test]
fn a_kept_last_link_is_not_followed() {
    let t = merged_usr();
    let w = walk(&t, "/lib64/ld-linux-x86-64.so.2", Last::Keep, Missing::Stop).unwrap();
    assert_eq!(w.real, "/usr/lib64/ld-linux-x86-64.so.2");
    assert_eq!(
        w.node,
        Some(Node::Symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()
        ))
    );
    let w = walk(&t, "/lib", Last::Keep, Missing::Stop).unwrap();
    assert_eq!((w.real.as_str(), w.links.len()), ("/lib", 0));
}

#[test]
fn a_stop_says_where_and_why() {
    let t = merged_usr();
    let w = resolve(&t, "/lib/nope/../x").unwrap();
    assert_eq!(w.real, "/usr/lib/nope/../x", "the rest is kept as written");
    assert_eq!(w.stopped, Some(("/usr/lib/nope".into(), None)));
    assert_eq!((w.node, w.end), (None, None));
    let w = resolve(&t, "/lib64/ld-linux-x86-64.so.2/x").unwrap();
    assert_eq!(
        w.stopped,
        Some((
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
            Some(Node::File)
        ))
    );
}

#[test]
fn create_collects_directories_without_making_them() {
    let t = merged_usr();
    let w = walk(&t, "/lib/a/b/../b/c", Last::Follow, Missing::Create).unwrap();
    assert_eq!(w.real, "/usr/lib/a/b/c");
    assert_eq!(w.node, Some(Node::Dir));
    let names: Vec<_> = w.new.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"], "b is made once");
    assert_eq!(w.new[1].0, Pos::New(0));
    assert_eq!(w.end, Some(Pos::New(2)));
    assert!(t.node("/usr/lib/a").unwrap().is_none());
}

#[test]
fn a_loop_keeps_where_it_was() {
    let t = merged_usr();
    let e = resolve(&t, "/usr/../loop/x").unwrap_err();
    let l = symlink_loop(&e).unwrap();
    assert_eq!(
        (l.path.as_str(), l.partial.as_str()),
        ("/usr/../loop/x", "/loop/x")
    );
}
