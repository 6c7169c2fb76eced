//! The library closure over a sysroot that holds the fuzzed bytes as the program, as the C
//! library and as the loader, next to symlink loops, links that climb out with `..`, and an
//! ld.so.conf naming them: the closure always ends, and every object it takes is a regular file
//! of the tree reached without leaving it.
#![no_main]

use fledge::libs::closure::closure;
use fledge::libs::elf::X86_64;
use fledge::tree::{MemTree, Node, Tree};
use libfuzzer_sys::fuzz_target;

fn sysroot(elf: &[u8]) -> MemTree {
    let mut t = MemTree::default();
    let link = |t: &mut MemTree, at: &str, to: &str| t.put(at, Node::Symlink(to.into()), b"");
    link(&mut t, "/lib", "usr/lib");
    link(&mut t, "/lib64", "usr/lib64");
    link(&mut t, "/bin", "usr/bin");
    t.put("/usr/bin/prog", Node::File, elf);
    for lib in ["libc.so.6", "libm.so.6", "libfuzz.so.1"] {
        t.put(&format!("/usr/lib/x86_64-linux-gnu/{lib}"), Node::File, elf);
    }
    link(
        &mut t,
        "/usr/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
    );
    link(&mut t, "/usr/lib/loop", "loop");
    link(&mut t, "/usr/lib/ping", "pong");
    link(&mut t, "/usr/lib/pong", "/usr/lib/ping");
    link(&mut t, "/usr/lib/up", "../../../../../../etc");
    link(
        &mut t,
        "/usr/lib/x86_64-linux-gnu/libgone.so",
        "/nowhere/libgone.so",
    );
    t.put("/usr/lib/dev", Node::Other, b"");
    t.put(
        "/etc/ld.so.conf",
        Node::File,
        b"include /etc/ld.so.conf.d/*.conf\n/usr/lib/up\n/usr/lib/loop\n",
    );
    t.put(
        "/etc/ld.so.conf.d/x.conf",
        Node::File,
        b"/usr/lib/ping\n/usr/lib/dev\n/usr/lib/x86_64-linux-gnu/libc.so.6\n",
    );
    t
}

fuzz_target!(|data: &[u8]| {
    let tree = sysroot(data);
    for path in ["/bin/prog", "/usr/lib/x86_64-linux-gnu/libfuzz.so.1"] {
        let c = closure(&tree, path, X86_64, true).expect("a tree in memory does not fail to read");
        for o in &c.objects {
            let real = &o.walk.real;
            assert!(real.starts_with('/'), "{real:?}");
            assert!(!real.split('/').any(|p| p == ".." || p == "."), "{real:?}");
            assert_eq!(
                tree.node(real).unwrap(),
                Some(Node::File),
                "{real:?} for {:?}",
                o.name
            );
        }
    }
});
