//! A hostile registry on 127.0.0.1, started here: a blob without end, a blob that drips, a
//! registry that answers 500. Every pull fails within the `FLEDGE_HTTP_*` bounds, naming the
//! variable, leaves no bytes in the cache, and a signal during a pull leaves no temporary file.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::{Project, DEFAULT_MODE};

/// How the registry answers a request for the layer blob.
#[derive(Clone, Copy, PartialEq)]
enum Blob {
    Honest,
    /// 200 without a length, then bytes until the client goes (at most 64 MiB).
    Endless,
    /// One byte every 200 ms (for at most 60 s).
    Drip,
}

pub(crate) struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_hex: String,
    layer: Vec<u8>,
    layer_hex: String,
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A tar of one file.
fn tar_of(name: &str, body: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, name, body).unwrap();
    tar.into_inner().unwrap()
}

/// An image of one plain tar layer holding `/srv/hello`; `claimed` replaces the layer's size in
/// its descriptor.
fn image(claimed: Option<u64>) -> Image {
    let tar = tar_of("srv/hello", b"hello from the layer\n");
    image_of(tar.clone(), &tar, claimed)
}

/// An image of one layer: the blob `layer` whose uncompressed tar is `tar`.
pub(crate) fn image_of(layer: Vec<u8>, tar: &[u8], claimed: Option<u64>) -> Image {
    let layer_hex = sha(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha(tar))]},
    })
    .to_string()
    .into_bytes();
    let config_hex = sha(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_hex}"),
                    "size": claimed.unwrap_or(layer.len() as u64)}],
    })
    .to_string()
    .into_bytes();
    Image {
        manifest,
        config,
        config_hex,
        layer,
        layer_hex,
    }
}

/// Requests the registry got, by kind, and the status it answers every request with (200:
/// it serves).
#[derive(Default)]
struct Hits {
    tags: AtomicUsize,
    blobs: AtomicUsize,
    status: AtomicUsize,
}

/// Serves `img` as `app:v1` on a free loopback port. Returns the host and the request counts.
fn registry(img: Image, blob: Blob) -> (String, Arc<Hits>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(Hits::default());
    hits.status.store(200, Ordering::SeqCst);
    let (img, h) = (Arc::new(img), hits.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (img, h) = (img.clone(), h.clone());
            std::thread::spawn(move || answer(conn, &img, blob, &h));
        }
    });
    (host, hits)
}

fn answer(mut conn: TcpStream, img: &Image, blob: Blob, hits: &Hits) {
    let status = hits.status.load(Ordering::SeqCst);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
    let send = |conn: &mut TcpStream, status: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn
            .write_all(head.as_bytes())
            .and_then(|_| conn.write_all(body));
    };
    if path == "/v2/app/manifests/v1" {
        hits.tags.fetch_add(1, Ordering::SeqCst);
    }
    if status != 200 {
        return send(&mut conn, &format!("{status} Failing"), b"");
    }
    let layer_path = format!("/v2/app/blobs/sha256:{}", img.layer_hex);
    if path == "/v2/app/manifests/v1" {
        send(&mut conn, "200 OK", &img.manifest);
    } else if path == format!("/v2/app/blobs/sha256:{}", img.config_hex) {
        send(&mut conn, "200 OK", &img.config);
    } else if path == layer_path {
        hits.blobs.fetch_add(1, Ordering::SeqCst);
        match blob {
            Blob::Honest => send(&mut conn, "200 OK", &img.layer),
            Blob::Endless => {
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                let chunk = [0u8; 65536];
                for _ in 0..1024 {
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                }
            }
            Blob::Drip => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    img.layer.len()
                );
                let _ = conn.write_all(head.as_bytes());
                for b in img.layer.iter().take(300) {
                    if conn.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    } else {
        send(&mut conn, "404 Not Found", b"");
    }
}

/// Bytes under `dir`, and the names of our temporary files there.
fn held(dir: &Path) -> (u64, Vec<String>) {
    let (mut bytes, mut temps) = (0, Vec::new());
    let Ok(list) = std::fs::read_dir(dir) else {
        return (0, temps);
    };
    for e in list.flatten() {
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            let (b, t) = held(&e.path());
            bytes += b;
            temps.extend(t);
        } else {
            bytes += meta.len();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                temps.push(name);
            }
        }
    }
    (bytes, temps)
}

fn project(host: &str) -> Project {
    let p = Project::new();
    p.config(&format!(
        "image = \"docker://{host}/app:v1\"\n{DEFAULT_MODE}"
    ));
    p
}

const QUICK: &[(&str, &str)] = &[
    ("FLEDGE_HTTP_CONNECT_TIMEOUT", "2"),
    ("FLEDGE_HTTP_HEADER_TIMEOUT", "2"),
    ("FLEDGE_HTTP_IDLE_TIMEOUT", "2"),
    ("FLEDGE_HTTP_TOTAL_TIMEOUT", "2"),
    ("FLEDGE_HTTP_MAX_MIB", "1"),
];

#[test]
fn hostile_blobs_fail_within_the_bounds_naming_them_and_leave_nothing_in_the_cache() {
    let real = image(None).layer.len() as u64;
    let cases: [(&str, Blob, Option<u64>, &str); 3] = [
        (
            "endless, honest descriptor",
            Blob::Endless,
            None,
            &format!("larger than its descriptor's size of {real} bytes"),
        ),
        (
            "endless, a descriptor of 10 GB",
            Blob::Endless,
            Some(10_000_000_000),
            "larger than the download cap of 1 MiB (FLEDGE_HTTP_MAX_MIB)",
        ),
        (
            "drip",
            Blob::Drip,
            None,
            "longer than 2 s in all (FLEDGE_HTTP_TOTAL_TIMEOUT)",
        ),
    ];
    for (name, blob, claimed, want) in cases {
        let (host, hits) = registry(image(claimed), blob);
        let p = project(&host);
        let t = Instant::now();
        let o = p.fledge_env(&["build", "-o", "out.cpio"], QUICK);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "{name}: {:?}",
            t.elapsed()
        );
        let first = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
        assert!(
            first.contains(want) && first.contains("source.image"),
            "{name}: {err}"
        );
        assert!(hits.blobs.load(Ordering::SeqCst) >= 1, "{name}");
        let (bytes, temps) = held(&p.path("cache/layers"));
        assert_eq!(
            (bytes, temps),
            (0, vec![]),
            "{name}: nothing left in layers/"
        );
        assert!(!p.path("out.cpio").exists(), "{name}");
    }
}

#[test]
fn a_failing_registry_is_asked_twice_then_the_tag_remembered_is_used() {
    let (host, hits) = registry(image(None), Blob::Honest);
    let p = project(&host);
    p.build("first.cpio", QUICK);
    // The registry now answers 500 to everything; the cache has the image.
    hits.status.store(500, Ordering::SeqCst);
    hits.tags.store(0, Ordering::SeqCst);
    let o = p.fledge_env(
        &["build", "-o", "second.cpio", "--compression", "none"],
        QUICK,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("answers with errors") && err.contains("last time"),
        "{err}"
    );
    assert_eq!(
        hits.tags.load(Ordering::SeqCst),
        2,
        "a 500 is tried once more"
    );
    assert_eq!(
        std::fs::read(p.path("first.cpio")).unwrap(),
        std::fs::read(p.path("second.cpio")).unwrap()
    );
    // Without a remembered answer the build fails, saying so.
    std::fs::remove_dir_all(p.path("cache/images")).unwrap();
    let o = p.fledge_env(&["build", "-o", "third.cpio"], QUICK);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("HTTP 500 (tried twice)"), "{err}");
}

#[test]
fn a_signal_during_a_layer_pull_leaves_no_temporary_file() {
    let (host, _) = registry(image(None), Blob::Drip);
    let p = project(&host);
    let mut child = p
        .command(&["build", "-o", "out.cpio"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let layers = p.path("cache/layers");
    let t = Instant::now();
    while held(&layers).1.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the pull never began"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(held(&p.path("cache")).1, Vec::<String>::new());
    assert_eq!(held(&layers).0, 0, "no bytes of the layer kept");
}

#[test]
fn a_layer_bomb_stops_at_the_layer_bound_and_layers_count_in_the_cache() {
    let tar = tar_of("srv/zeros", &vec![0u8; 8 << 20]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    assert!(blob.len() < 64 << 10, "a small blob: {}", blob.len());
    let (host, _) = registry(image_of(blob, &tar, None), Blob::Honest);
    let p = project(&host);
    let bound = [QUICK, &[("FLEDGE_LAYER_MAX_SIZE", "1M")]].concat();
    let o = p.fledge_env(&["build", "-o", "out.cpio"], &bound);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("more than 1.00 MiB uncompressed (FLEDGE_LAYER_MAX_SIZE)"),
        "{err}"
    );
    assert_eq!(held(&p.path("cache/layers")), (0, vec![]));

    // Within the bound the layer is cached, shown by `fledge cache`, and pruned with the rest.
    p.build("out.cpio", QUICK);
    let (bytes, _) = held(&p.path("cache/layers"));
    assert!(bytes >= 8 << 20, "{bytes}");
    let shown = p.ok(&["cache"]);
    assert!(shown.contains("image layers: 1 in"), "{shown}");
    let pruned = p.ok(&["cache", "prune", "--max-size", "1M"]);
    assert!(pruned.contains("removed 1 entries"), "{pruned}");
    assert_eq!(held(&p.path("cache/layers")).0, 0);
    // A build within a cache bound smaller than the layer keeps the cache within it.
    p.build(
        "again.cpio",
        &[QUICK, &[("FLEDGE_CACHE_MAX_SIZE", "1M")]].concat(),
    );
    assert!(held(&p.path("cache/layers")).0 <= 1 << 20);
}

/// `layout/`: an OCI layout of `img`.
pub(crate) fn layout(p: &Project, img: &Image) {
    let blobs = p.path("layout/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for b in [&img.manifest, &img.config, &img.layer] {
        std::fs::write(blobs.join(sha(b)), b).unwrap();
    }
    std::fs::write(
        p.path("layout/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", sha(&img.manifest)), "size": img.manifest.len()}]});
    std::fs::write(p.path("layout/index.json"), index.to_string()).unwrap();
}

#[test]
fn validate_runs_the_image_checks_of_a_build_without_the_network() {
    let p = Project::new();
    // A layer that is a text file, under the digests that name it.
    let text = b"not a tar archive, just text\n".repeat(40);
    layout(&p, &image_of(text.clone(), &text, None));
    p.config(&format!("image = \"oci:layout\"\n{DEFAULT_MODE}"));
    let o = p.fledge(&["validate"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("layer 1"), "{err}");
    // An unknown image user, as `build` would say.
    std::fs::remove_dir_all(p.path("layout")).unwrap();
    layout(&p, &image(None));
    p.config("image = \"oci:layout\"\n[init]\ncommand = [\"/bin/busybox\"]\nuser = \"ghost\"\n");
    let o = p.fledge(&["validate"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`init.user`") && err.contains("ghost"),
        "{err}"
    );
    // A registry image that is not in the cache: valid, and nothing was asked of the registry.
    let (host, hits) = registry(image(None), Blob::Honest);
    p.config(&format!(
        "image = \"docker://{host}/app:v1\"\n{DEFAULT_MODE}"
    ));
    let out = p.ok(&["validate"]);
    assert_eq!(hits.tags.load(Ordering::SeqCst), 0, "{out}");
    // Once pulled, validate checks it from the cache: a damaged cached layer fails it.
    p.build("pulled.cpio", QUICK);
    for e in std::fs::read_dir(p.path("cache/layers")).unwrap().flatten() {
        std::fs::write(e.path(), b"damaged").unwrap();
    }
    let o = p.fledge(&["validate"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("layer 1"), "{err}");
    assert_eq!(hits.tags.load(Ordering::SeqCst), 1, "only the build asked");
}

#[test]
fn an_output_onto_an_image_input_is_refused_and_the_input_kept() {
    let img = image(None);
    let p = Project::new();
    // An OCI layout of the image, and the same as a tar file.
    layout(&p, &img);
    let mut tar = tar::Builder::new(std::fs::File::create(p.path("image.tar")).unwrap());
    tar.append_dir_all(".", p.path("layout")).unwrap();
    tar.finish().unwrap();
    drop(tar);
    let cases = [
        (
            "oci:layout",
            "layout/index.json",
            "the OCI layout's index.json",
        ),
        (
            "oci:layout",
            "layout/oci-layout",
            "the OCI layout's oci-layout",
        ),
        (
            "oci-archive:image.tar",
            "image.tar",
            "the image archive (source.image)",
        ),
    ];
    for (image, out, why) in cases {
        p.config(&format!("image = \"{image}\"\n{DEFAULT_MODE}"));
        p.ok(&["build", "-o", "fine.cpio"]);
        let before = std::fs::read(p.path(out)).unwrap();
        let o = p.fledge(&["build", "-o", out]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "-o {out}: {err}");
        assert!(
            err.contains("-o/--output") && err.contains(why),
            "-o {out}: {err}"
        );
        assert_eq!(
            std::fs::read(p.path(out)).unwrap(),
            before,
            "-o {out} unchanged"
        );
    }
}

#[test]
fn deep_layers_and_deep_mapped_trees_build() {
    // A layer of 1500 files, one in each directory of a chain 1500 deep (3000-byte names).
    let mut tar = tar::Builder::new(Vec::new());
    for depth in 0..1500 {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let name = format!("{}f", "a/".repeat(depth));
        tar.append_data(&mut h, &name, &b"x"[..]).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let p = Project::new();
    layout(&p, &image_of(tar.clone(), &tar, None));
    p.config(&format!("image = \"oci:layout\"\n{DEFAULT_MODE}"));
    let image = p.build("deep.cpio", &[]);
    let deepest = format!("{}f", "a/".repeat(1499));
    assert!(
        image
            .windows(deepest.len())
            .any(|w| w == deepest.as_bytes()),
        "the deepest file is in the image"
    );

    // A mapped host tree 1500 directories deep.
    let mut dir = p.path("tree");
    for _ in 0..1500 {
        dir.push("a");
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), b"x").unwrap();
    p.config(&format!("[mappings]\n\"tree\" = \"/srv\"\n{DEFAULT_MODE}"));
    let image = p.build("mapped.cpio", &[]);
    let deepest = format!("srv/{}f", "a/".repeat(1500));
    assert!(image
        .windows(deepest.len())
        .any(|w| w == deepest.as_bytes()));
}

/// A layer of `srv/hello` and the symlink `bin -> target`.
fn bin_link_layer(target: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    tar.append_link(&mut h, "bin", target).unwrap();
    tar.into_inner().unwrap()
}

#[test]
fn an_images_bin_link_to_nothing_gets_its_directory_and_a_bad_one_names_the_image() {
    let p = Project::new();
    p.config(&format!("image = \"oci:layout\"\n{DEFAULT_MODE}"));
    let tar = bin_link_layer("usr/bin");
    layout(&p, &image_of(tar.clone(), &tar, None));
    p.build("merged.cpio", &[]);
    let listing = p.ok(&["inspect", "merged.cpio"]);
    assert!(listing.contains("/usr/bin/busybox"), "{listing}");

    // A link to a file cannot be the base layout's /bin: the image is named, not `mappings`.
    std::fs::remove_dir_all(p.path("layout")).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "etc/file", &b"x"[..]).unwrap();
    let mut tar = tar.into_inner().unwrap();
    tar.truncate(tar.len() - 1024);
    tar.extend(bin_link_layer("etc/file"));
    layout(&p, &image_of(tar.clone(), &tar, None));
    let o = p.fledge(&["build", "-o", "bad.cpio"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let first = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert!(
        first.contains("`source.image` writes /bin") && !first.contains("`mappings`"),
        "{err}"
    );
}
