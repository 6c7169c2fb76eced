//! Hand-made layers for every edge of layer application, and hand-made OCI layouts for the
//! transports. (Images made by real tools - umoci, skopeo, a registry - are tested in
//! builder/tests and qemu/tests.)

use std::io::Write;
use std::path::{Path, PathBuf};

use super::tree::{NodeKind, RootFs};
use super::*;

/// One tar entry of a hand-made layer; names and link targets are written byte for byte, so
/// `..` and absolute names reach the reader as an attacker would write them.
#[derive(Clone)]
pub struct E {
    name: String,
    ty: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    link: String,
    data: Vec<u8>,
    dev: (u32, u32),
    pax: Vec<(String, String)>,
}

pub fn file(name: &str, data: &[u8]) -> E {
    E {
        name: name.into(),
        ty: b'0',
        mode: 0o644,
        uid: 0,
        gid: 0,
        link: String::new(),
        data: data.to_vec(),
        dev: (0, 0),
        pax: Vec::new(),
    }
}

pub fn dir(name: &str) -> E {
    E {
        ty: b'5',
        mode: 0o755,
        ..file(name, b"")
    }
}

pub fn symlink(name: &str, target: &str) -> E {
    E {
        ty: b'2',
        mode: 0o777,
        link: target.into(),
        ..file(name, b"")
    }
}

pub fn hardlink(name: &str, target: &str) -> E {
    E {
        ty: b'1',
        link: target.into(),
        ..file(name, b"")
    }
}

impl E {
    pub fn mode(mut self, m: u32) -> E {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u32, gid: u32) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    fn dev(mut self, ty: u8, major: u32, minor: u32) -> E {
        self.ty = ty;
        self.dev = (major, minor);
        self
    }
    fn pax(mut self, k: &str, v: &str) -> E {
        self.pax.push((k.into(), v.into()));
        self
    }
}

fn raw_header(name: &str, ty: u8, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let b = h.as_mut_bytes();
    assert!(name.len() <= 100, "test names fit the header");
    b[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_entry_type(tar::EntryType::new(ty));
    h
}

/// An uncompressed layer tar of `entries`.
pub fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &e.pax {
                let rec = format!(" {k}={v}\n");
                let mut len = rec.len() + 1;
                while format!("{len}{rec}").len() != len {
                    len += 1;
                }
                body.extend(format!("{len}{rec}").as_bytes());
            }
            let mut h = raw_header("PaxHeader", b'x', body.len() as u64);
            h.set_cksum();
            b.append(&h, &body[..]).unwrap();
        }
        let mut h = raw_header(&e.name, e.ty, e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.uid.into());
        h.set_gid(e.gid.into());
        h.set_mtime(12345);
        if !e.link.is_empty() {
            h.as_mut_bytes()[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        if e.ty == b'3' || e.ty == b'4' {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        b.append(&h, &e.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Applies layers (each an entry list) to a fresh tree through the cache, as a build that
/// finds them cached does. Every layer is also applied as a fresh unpack lists it (from the
/// stream, seeking past bodies), and both trees must be the same.
fn apply_all(dir: &Path, layers: &[Vec<E>]) -> Result<RootFs, Problem> {
    let (mut tree, mut seeking) = (RootFs::default(), RootFs::default());
    for (i, l) in layers.iter().enumerate() {
        let tar = layer(l);
        let diff_id = Digest::of(&tar);
        let (path, listing) = layer::unpack(&tar[..], i, None, &diff_id, dir)?;
        layer::apply(&mut tree, i, &path, &diff_id)?;
        layer::apply_listing(&mut seeking, i, &diff_id, listing)?;
    }
    let dump = |t: &RootFs| {
        let mut v = Vec::new();
        t.for_each(|p, n| {
            v.push(format!("{p} {n:?}"));
            Ok::<_, ()>(())
        })
        .unwrap();
        (v, format!("{:?}", t.xattrs))
    };
    assert_eq!(
        dump(&tree),
        dump(&seeking),
        "the two ways of reading a layer differ"
    );
    Ok(tree)
}

fn tree_of(layers: &[Vec<E>]) -> (tempfile::TempDir, RootFs) {
    let dir = tempfile::tempdir().unwrap();
    let t = apply_all(dir.path(), layers).unwrap();
    (dir, t)
}

fn paths(t: &RootFs) -> Vec<String> {
    let mut v = Vec::new();
    t.for_each(|p, _| {
        v.push(p[1..].to_string());
        Ok::<_, ()>(())
    })
    .unwrap();
    v.sort();
    v
}

fn body(t: &RootFs, path: &str) -> Vec<u8> {
    t.read(path, 1 << 20)
        .unwrap()
        .unwrap_or_else(|| panic!("{path} is not a file"))
}

#[test]
fn whiteouts_of_a_file_and_of_a_directory() {
    let (_d, t) = tree_of(&[
        vec![
            dir("etc"),
            file("etc/a", b"a"),
            file("etc/b", b"b"),
            dir("var/cache"),
            file("var/cache/x", b"x"),
        ],
        vec![
            file("etc/.wh.a", b""),
            file("var/.wh.cache", b""),
            file("etc/c", b"c"),
        ],
    ]);
    assert_eq!(paths(&t), ["etc", "etc/b", "etc/c", "var"]);
}

#[test]
fn whiteout_hides_lower_layers_only() {
    let (_d, t) = tree_of(&[
        vec![file("a", b"low")],
        vec![file("b", b"same layer"), file(".wh.b", b"")],
    ]);
    assert_eq!(
        paths(&t),
        ["a", "b"],
        "a whiteout does not hide what its own layer gives"
    );
}

#[test]
fn opaque_directory_in_a_later_layer() {
    let (_d, t) = tree_of(&[
        vec![
            dir("app"),
            file("app/old", b"o"),
            dir("app/sub"),
            file("app/sub/deep", b"d"),
            file("keep", b"k"),
        ],
        // The opaque marker after this layer's own entries: they stay, lower ones go.
        vec![
            file("app/sub/new", b"n"),
            file("app/.wh..wh..opq", b""),
            file("app/top", b"t"),
        ],
    ]);
    assert_eq!(
        paths(&t),
        ["app", "app/sub", "app/sub/new", "app/top", "keep"]
    );
}

#[test]
fn hardlink_outlives_its_target() {
    let (_d, t) = tree_of(&[
        vec![
            file("bin/tool", b"TOOL").mode(0o4755).owner(1000, 1000),
            hardlink("bin/alias", "bin/tool"),
        ],
        vec![file("bin/.wh.tool", b"")],
    ]);
    assert_eq!(paths(&t), ["bin", "bin/alias"]);
    assert_eq!(body(&t, "/bin/alias"), b"TOOL");
    let n = t.get("bin/alias").unwrap();
    assert_eq!(
        (n.perm, n.uid, n.gid),
        (0o4755, 1000, 1000),
        "the link has the target's inode metadata"
    );
}

#[test]
fn hardlink_to_a_missing_name_fails() {
    let dir = tempfile::tempdir().unwrap();
    let err = apply_all(dir.path(), &[vec![hardlink("a", "nowhere")]])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 1") && err.contains("\"a\"") && err.contains("not in the image"),
        "{err}"
    );
}

#[test]
fn writes_through_symlinked_parents_stay_inside_the_root() {
    let (_d, t) = tree_of(&[vec![
        dir("etc"),
        file("etc/passwd", b"root"),
        symlink("evil", "/etc"),
        symlink("up", "../../../../etc"),
        symlink("usr/lib64", "../lib"),
        file("evil/passwd", b"changed"),
        file("up/shadow", b"s"),
        file("usr/lib64/ld.so", b"ld"),
    ]]);
    assert_eq!(body(&t, "/etc/passwd"), b"changed");
    assert_eq!(body(&t, "/etc/shadow"), b"s");
    assert_eq!(
        body(&t, "/lib/ld.so"),
        b"ld",
        "relative targets resolve from their directory"
    );
    assert!(t.get("usr/lib64/ld.so").is_none());
    assert_eq!(
        t.get("evil").unwrap().kind,
        NodeKind::Symlink("/etc".into()),
        "the link itself stays"
    );
}

#[test]
fn dot_dot_and_absolute_names_are_cleaned_inside_the_root() {
    let (_d, t) = tree_of(&[vec![
        file("../../escape", b"1"),
        file("/abs/file", b"2"),
        file("./a/../b//c", b"3"),
        dir("./"),
    ]]);
    assert_eq!(paths(&t), ["abs", "abs/file", "b", "b/c", "escape"]);
}

#[test]
fn symlink_loops_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let err = apply_all(
        dir.path(),
        &[vec![symlink("a", "b"), symlink("b", "a"), file("a/x", b"")]],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("symlinks") && err.contains("\"a/x\""), "{err}");
}

#[test]
fn a_file_as_parent_fails() {
    let dir = tempfile::tempdir().unwrap();
    let err = apply_all(dir.path(), &[vec![file("f", b""), file("f/x", b"")]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn owners_modes_devices_and_fifos_are_kept() {
    let (_d, t) = tree_of(&[vec![
        file("usr/bin/su", b"su").mode(0o4755),
        file("usr/bin/wall", b"w").mode(0o2755).owner(0, 5),
        dir("tmp").mode(0o1777),
        dir("home/user").owner(1000, 1000).mode(0o700),
        file("home/user/notes", b"n").owner(1000, 1000).mode(0o600),
        file("dev/null", b"").dev(b'3', 1, 3).mode(0o666),
        file("dev/sda", b"").dev(b'4', 8, 0).mode(0o660).owner(0, 6),
        file("run/fifo", b"").dev(b'6', 0, 0),
    ]]);
    let n = |p: &str| t.get(p).unwrap().clone();
    assert_eq!(n("usr/bin/su").perm, 0o4755);
    assert_eq!((n("usr/bin/wall").perm, n("usr/bin/wall").gid), (0o2755, 5));
    assert_eq!(n("tmp").perm, 0o1777);
    assert_eq!(
        (n("home/user").uid, n("home/user").gid, n("home/user").perm),
        (1000, 1000, 0o700)
    );
    assert_eq!(n("home/user/notes").uid, 1000);
    assert_eq!(n("dev/null").kind, NodeKind::CharDev { major: 1, minor: 3 });
    assert_eq!(
        (n("dev/sda").kind, n("dev/sda").gid),
        (NodeKind::BlockDev { major: 8, minor: 0 }, 6)
    );
    assert_eq!(n("run/fifo").kind, NodeKind::Fifo);
    assert_eq!(
        (n("home").perm, n("home").uid),
        (0o755, 0),
        "implied parents: 0755 root"
    );
}

#[test]
fn later_layers_replace_and_directories_merge() {
    let (_d, t) = tree_of(&[
        vec![
            dir("d").mode(0o700),
            file("d/x", b"1"),
            file("f", b"old"),
            dir("g"),
            file("g/inner", b""),
        ],
        vec![
            dir("d").mode(0o755).owner(1, 1),
            file("f", b"new"),
            file("g", b"a file now"),
        ],
    ]);
    assert_eq!(paths(&t), ["d", "d/x", "f", "g"]);
    assert_eq!(
        (t.get("d").unwrap().perm, t.get("d").unwrap().uid),
        (0o755, 1)
    );
    assert_eq!(body(&t, "f"), b"new");
}

#[test]
fn extended_attributes_and_pax_ids_are_read() {
    let (_d, t) = tree_of(&[vec![file("usr/bin/ping", b"p")
        .pax("SCHILY.xattr.security.capability", "x")
        .pax("uid", "3000000")]]);
    assert_eq!(t.get("usr/bin/ping").unwrap().uid, 3_000_000);
    let attrs: Vec<_> = t.xattrs["usr/bin/ping"].iter().collect();
    assert_eq!(
        attrs,
        [(&"security.capability".to_string(), &b"x".to_vec())]
    );
}

#[test]
fn a_layer_whose_digest_is_wrong_fails() {
    let dir = tempfile::tempdir().unwrap();
    let tar = layer(&[file("a", b"a")]);
    let wrong = Digest::of(b"something else");
    let err = layer::unpack(&tar[..], 0, None, &wrong, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("diff_id") && err.contains("does not match"),
        "{err}"
    );
    assert!(
        !layer::cached_path(dir.path(), &wrong).exists(),
        "nothing left in the cache"
    );
    let right = Digest::of(&tar);
    let err = layer::unpack(&tar[..], 0, Some(&wrong), &right, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer blob") && err.contains("does not match"),
        "{err}"
    );
    // A cached layer changed on disk is caught when it is read.
    let (path, _) = layer::unpack(&tar[..], 0, None, &right, dir.path()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[600] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = layer::apply(&mut RootFs::default(), 0, &path, &right)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cached layer") && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn a_layer_cut_short_inside_a_body_fails_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    // Bodies larger than the chunks the stream is shared in, so skips cross chunks.
    let big: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let whole = layer(&[file("a", &big), file("b", &big), file("c", b"c")]);
    // Whole, the listing made from the stream matches a read of the cached file.
    let tree = apply_all(
        dir.path(),
        &[vec![file("a", &big), file("b", &big), file("c", b"c")]],
    )
    .unwrap();
    assert!(tree.get("b").is_some() && tree.get("c").is_some());
    // Cut in the middle of the second body (no end-of-archive blocks follow).
    let cut = &whole[..512 + big.len().next_multiple_of(512) + 512 + 300_000];
    let diff_id = Digest::of(cut);
    let err = layer::unpack(cut, 0, None, &diff_id, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad tar entry") && err.contains("ends inside"),
        "{err}"
    );
    // The tar is the one the digest names, so it stays cached; reading it again fails alike.
    let path = layer::cached_path(dir.path(), &diff_id);
    let err = layer::apply(&mut RootFs::default(), 0, &path, &diff_id)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad tar entry"), "{err}");
}

#[test]
fn a_damaged_compressed_layer_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..900_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let tar = layer(&[file("a", &big), file("b", b"b")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let mut blob = gz.finish().unwrap();
    let diff_id = Digest::of(&tar);
    // Whole, it unpacks (read, decompressed, hashed and listed on their threads).
    let cache = dir.path().join("whole");
    let (_, listing) =
        layer::unpack(&blob[..], 0, Some(&Digest::of(&blob)), &diff_id, &cache).unwrap();
    let mut tree = RootFs::default();
    layer::apply_listing(&mut tree, 0, &diff_id, listing).unwrap();
    assert!(tree.get("a").is_some() && tree.get("b").is_some());
    // One byte changed in the middle of the deflate data.
    let mid = blob.len() / 2;
    blob[mid] ^= 0x55;
    let cache = dir.path().join("damaged");
    let err = layer::unpack(&blob[..], 0, None, &diff_id, &cache)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be decompressed") || err.contains("does not match"),
        "{err}"
    );
    assert!(
        !layer::cached_path(&cache, &diff_id).exists(),
        "nothing left in the cache"
    );
    let left: Vec<_> = std::fs::read_dir(cache.join("layers"))
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(
        left.iter().all(|n| *n == 0),
        "no temporary file left: {left:?}"
    );
}

// ---- whole images: hand-made OCI layouts -----------------------------------------------------

/// Writes blobs of an OCI layout into `root`; returns the descriptor JSON of each.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Layout {
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            root: root.to_path_buf(),
        }
    }

    fn blob(&self, media: &str, bytes: &[u8]) -> serde_json::Value {
        let d = Digest::of(bytes);
        std::fs::write(self.root.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        serde_json::json!({"mediaType": media, "digest": d.to_string(), "size": bytes.len()})
    }

    /// An image of `layers` (tar bytes, compressed as named) with `config`; returns the
    /// manifest descriptor.
    fn image(
        &self,
        layers: &[(Vec<u8>, &str)],
        config: serde_json::Value,
        arch: &str,
    ) -> serde_json::Value {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, comp) in layers {
            diff_ids.push(Digest::of(tar).to_string());
            let (bytes, media) = match *comp {
                "gzip" => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(tar).unwrap();
                    (
                        e.finish().unwrap(),
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                    )
                }
                "zstd" => (
                    zstd::encode_all(&tar[..], 1).unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
                _ => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            };
            descs.push(self.blob(media, &bytes));
        }
        let cfg = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let cfg = self.blob(
            "application/vnd.oci.image.config.v1+json",
            cfg.to_string().as_bytes(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg, "layers": descs,
        });
        let mut d = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        );
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        d
    }

    fn index(&self, manifests: Vec<(serde_json::Value, Option<&str>)>) {
        let ms: Vec<serde_json::Value> = manifests
            .into_iter()
            .map(|(mut d, tag)| {
                if let Some(t) = tag {
                    d["annotations"] = serde_json::json!({ oci::REF_NAME: t });
                }
                d
            })
            .collect();
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": ms});
        std::fs::write(self.root.join("index.json"), index.to_string()).unwrap();
    }
}

fn spec(text: &str, base: &Path) -> Spec {
    Spec {
        text: text.into(),
        reference: ImageRef::parse(text, base).unwrap(),
        platform: Platform::default(),
        plain_http: false,
    }
}

fn app_layers() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (
            layer(&[
                dir("etc"),
                file(
                    "etc/passwd",
                    b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
                ),
                file("etc/group", b"root:x:0:\nstaff:x:50:\n"),
                file("bin/app", b"v1"),
            ]),
            "gzip",
        ),
        (
            layer(&[
                file("bin/app", b"v2").mode(0o755),
                file("etc/.wh.group", b""),
            ]),
            "zstd",
        ),
        (layer(&[file("srv/data", b"d").owner(1000, 1000)]), "tar"),
    ]
}

#[test]
fn oci_layout_with_every_compression_and_a_tag() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::new(&d.path().join("img"));
    let config = serde_json::json!({"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["A=1"], "WorkingDir": "/srv", "User": "app", "ExposedPorts": {"9090/tcp": {}, "80/tcp": {}, "53/udp": {}}});
    let m = l.image(&app_layers(), config, "amd64");
    let other = l.image(&app_layers()[..1], serde_json::json!({}), "amd64");
    l.index(vec![(other, Some("old")), (m, Some("v2"))]);
    let cache = d.path().join("cache");
    let img = load(&spec("oci:img:v2", d.path()), &cache).unwrap();
    assert_eq!(body(&img.tree, "/bin/app"), b"v2");
    assert_eq!(img.tree.get("bin/app").unwrap().perm, 0o755);
    assert!(img.tree.get("etc/group").is_none());
    assert_eq!(img.tree.get("srv/data").unwrap().uid, 1000);
    assert_eq!(img.layers.len(), 3);
    assert_eq!(img.config.argv(), ["/bin/app", "--serve"]);
    assert_eq!(img.config.ports, [80, 9090], "tcp ports, ascending");
    assert_eq!(img.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(img.config.user.as_deref(), Some("app"));
    assert_eq!(img.config.env, ["A=1"]);
    assert!(body(&img.tree, "/etc/passwd").starts_with(b"root:"));
    // Without a tag, two images are ambiguous and the message lists the tags.
    let err = load(&spec("oci:img", d.path()), &cache)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("old, v2") && err.contains("`source.image` \"oci:img\""),
        "{err}"
    );
    let err = load(&spec("oci:img:nope", d.path()), &cache)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no image tagged \"nope\""), "{err}");
}

#[test]
fn an_index_picks_the_platform() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::new(&d.path().join("img"));
    let arm = l.image(
        &[(layer(&[file("arch", b"arm64")]), "tar")],
        serde_json::json!({}),
        "arm64",
    );
    let amd = l.image(
        &[(layer(&[file("arch", b"amd64")]), "tar")],
        serde_json::json!({}),
        "amd64",
    );
    let inner = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm, amd]});
    let idx = l.blob(
        "application/vnd.oci.image.index.v1+json",
        inner.to_string().as_bytes(),
    );
    l.index(vec![(idx, Some("multi"))]);
    let cache = d.path().join("cache");
    let img = load(&spec("oci:img:multi", d.path()), &cache).unwrap();
    assert_eq!(body(&img.tree, "arch"), b"amd64");
    let mut s = spec("oci:img:multi", d.path());
    s.platform = Platform::parse("linux/arm64").unwrap();
    assert_eq!(body(&load(&s, &cache).unwrap().tree, "arch"), b"arm64");
    s.platform = Platform::parse("linux/riscv64").unwrap();
    let err = load(&s, &cache).unwrap_err().to_string();
    assert!(
        err.contains("linux/arm64, linux/amd64") && err.contains("image_platform"),
        "{err}"
    );
}

#[test]
fn a_changed_blob_fails_the_build() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::new(&d.path().join("img"));
    let m = l.image(
        &[(layer(&[file("a", b"a")]), "gzip")],
        serde_json::json!({}),
        "amd64",
    );
    l.index(vec![(m.clone(), None)]);
    // Replace the layer blob with other bytes under the same name.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            d.path()
                .join("img/blobs/sha256")
                .join(&m["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let layer_hex = &manifest["layers"][0]["digest"].as_str().unwrap()[7..];
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&layer(&[file("a", b"evil")])).unwrap();
    std::fs::write(
        d.path().join("img/blobs/sha256").join(layer_hex),
        e.finish().unwrap(),
    )
    .unwrap();
    let err = load(&spec("oci:img", d.path()), &d.path().join("cache"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match its digest"), "{err}");
}

#[test]
fn platform_and_digest_parsing() {
    assert!(Platform::parse("linux").is_err());
    assert_eq!(
        Platform::parse("linux/arm64/v8").unwrap().to_string(),
        "linux/arm64/v8"
    );
    assert!(Digest::parse("sha256:../../etc/passwd").is_err());
    assert!(
        Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err(),
        "lowercase only"
    );
    assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_err());
}

#[test]
fn challenges() {
    let (s, p) = registry::parse_challenge(
        r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
    );
    assert_eq!(s, "Bearer");
    assert_eq!(
        p,
        [
            (
                "realm".to_string(),
                "https://auth.example/token".to_string()
            ),
            ("service".into(), "reg".into()),
            ("scope".into(), "repository:a/b:pull,push".into())
        ]
    );
    let (s, p) = registry::parse_challenge("Basic realm=\"Registry Realm\"");
    assert_eq!((s.as_str(), p.len()), ("Basic", 1));
}

/// A registry on loopback that wants a bearer token from its own token service, serving the
/// blobs of a hand-made layout; counts token requests. It answers until the test process ends.
fn fake_registry(
    layout: PathBuf,
    manifest: Vec<u8>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let tokens = std::sync::Arc::new(AtomicUsize::new(0));
    let (t, h) = (tokens.clone(), host.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut authorized = false;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                authorized |= line
                    .to_ascii_lowercase()
                    .starts_with("authorization: bearer tok-123");
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, extra, body): (&str, String, Vec<u8>) = if path.starts_with("/token?") {
                assert!(
                    path.contains("scope=repository%3Aapp%3Apull")
                        || path.contains("scope=repository:app:pull"),
                    "{path}"
                );
                t.fetch_add(1, Ordering::SeqCst);
                ("200 OK", String::new(), br#"{"token":"tok-123"}"#.to_vec())
            } else if !authorized {
                let challenge = format!("WWW-Authenticate: Bearer realm=\"http://{h}/token\",service=\"fake\",scope=\"repository:app:pull\"\r\n");
                ("401 Unauthorized", challenge, Vec::new())
            } else if path == "/v2/app/manifests/v1" {
                ("200 OK", String::new(), manifest.clone())
            } else if let Some(d) = path
                .strip_prefix("/v2/app/blobs/sha256:")
                .or_else(|| path.strip_prefix("/v2/app/manifests/sha256:"))
            {
                match std::fs::read(layout.join("blobs/sha256").join(d)) {
                    Ok(b) => ("200 OK", String::new(), b),
                    Err(_) => ("404 Not Found", String::new(), Vec::new()),
                }
            } else {
                ("404 Not Found", String::new(), Vec::new())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn
                .write_all(head.as_bytes())
                .and_then(|_| conn.write_all(&body));
        }
    });
    (host, tokens)
}

#[test]
fn a_registry_with_bearer_tokens_and_an_offline_rebuild() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::new(&d.path().join("img"));
    let m = l.image(
        &app_layers(),
        serde_json::json!({"Cmd": ["/bin/app"]}),
        "amd64",
    );
    let manifest_hex = m["digest"].as_str().unwrap()[7..].to_string();
    let manifest = std::fs::read(d.path().join("img/blobs/sha256").join(&manifest_hex)).unwrap();
    let (host, tokens) = fake_registry(d.path().join("img"), manifest);
    let cache = d.path().join("cache");
    let text = format!("docker://{host}/app:v1");
    let img = load(&spec(&text, d.path()), &cache).unwrap();
    assert_eq!(body(&img.tree, "/bin/app"), b"v2");
    assert_eq!(
        img.digest.hex(),
        manifest_hex,
        "the tag resolved to the manifest's digest"
    );
    assert!(
        tokens.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "a token was asked for"
    );
    // A registry that is gone: the tag's last answer and the cache do.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let err = load(&spec(&format!("docker://{gone}/app:v1"), d.path()), &cache)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot reach"), "{err}");
    let pinned = format!("docker://{gone}/app@sha256:{manifest_hex}");
    std::fs::remove_dir_all(cache.join("images")).unwrap();
    let err = load(&spec(&pinned, d.path()), &cache);
    let img = err.unwrap_or_else(|e| panic!("pinned by digest, everything is cached: {e}"));
    assert_eq!(body(&img.tree, "/bin/app"), b"v2");
}

#[test]
fn exposed_port_0_is_no_port() {
    let cfg = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"ExposedPorts": {"0/tcp": {}, "8080/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let cfg = oci_spec::image::ImageConfiguration::from_reader(cfg.to_string().as_bytes()).unwrap();
    assert_eq!(crate::image::ImageConfig::from_oci(&cfg).ports, [8080]);
}
