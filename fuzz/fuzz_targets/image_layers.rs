//! Container layers applied to the image tree: whatever a stack of layers holds (`..`, absolute
//! names, symlinked parents, hardlinks, whiteouts, opaque directories), the tree never holds a
//! `.`/`..`/empty component, never a path below a symlink, and every hardlink or file lies
//! inside it. The first input byte picks raw tar bytes (the tar parser) or structured entries.
#![no_main]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arbitrary::Arbitrary;
use fledge::image::tree::{NodeKind, RootFs, TarEntry, What};
use fledge::image::{layer, Digest};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Kind {
    Dir,
    File(u16),
    Symlink(String),
    Hardlink(String),
    CharDev,
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// Up to three raw tar streams.
    Raw(Vec<Vec<u8>>),
    /// Up to three layers of entries.
    Layers(Vec<Vec<(String, Kind, u16)>>),
}

fuzz_target!(|input: Input| {
    let mut tree = RootFs::default();
    match input {
        Input::Raw(layers) => {
            for (i, bytes) in layers.iter().take(3).enumerate() {
                let mut f = tempfile::NamedTempFile::new().expect("a temporary file");
                f.write_all(bytes).expect("write the layer");
                let id = Digest::of(bytes);
                if layer::apply(&mut tree, i, f.path(), &id).is_err() {
                    break;
                }
            }
        }
        Input::Layers(layers) => {
            let data: Arc<Path> = Arc::from(Path::new("/nonexistent/layer.tar"));
            for (i, entries) in layers.iter().take(3).enumerate() {
                for (name, kind, perm) in entries.iter().take(64) {
                    let what = match kind {
                        Kind::Dir => What::Node(NodeKind::Dir),
                        Kind::File(size) => What::Node(NodeKind::File {
                            data: data.clone(),
                            offset: 0,
                            size: u64::from(*size),
                        }),
                        Kind::Symlink(t) => What::Node(NodeKind::Symlink(t.clone())),
                        Kind::Hardlink(t) => What::Hardlink(t.clone()),
                        Kind::CharDev => What::Node(NodeKind::CharDev { major: 1, minor: 3 }),
                    };
                    let e = TarEntry {
                        name: name.clone(),
                        what,
                        perm: u32::from(*perm) & 0o7777,
                        uid: 0,
                        gid: 0,
                    };
                    let _ = tree.apply(i, e);
                }
            }
        }
    }
    check(&tree);
});

fn check(tree: &RootFs) {
    let mut paths = Vec::new();
    let _ = tree.for_each(|path, _| {
        assert!(path.starts_with('/'), "relative path {path:?}");
        paths.push(path[1..].to_string());
        Ok::<(), ()>(())
    });
    for path in &paths {
        for c in path.split('/') {
            assert!(
                !c.is_empty() && c != "." && c != "..",
                "bad component in {path:?}"
            );
        }
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for c in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            if let Some(n) = tree.get(&prefix) {
                assert!(
                    !matches!(n.kind, NodeKind::Symlink(_)),
                    "{path:?} lies below the symlink {prefix:?}"
                );
            }
        }
    }
}
