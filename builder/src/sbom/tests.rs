use super::*;

#[test]
fn rfc3339_of_known_times() {
    let cases = [
        (0, "1970-01-01T00:00:00Z"),
        (1_704_067_200, "2024-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (4_294_967_295, "2106-02-07T06:28:15Z"),
        (1_709_251_199, "2024-02-29T23:59:59Z"),
    ];
    for (i, (t, want)) in cases.iter().enumerate() {
        assert_eq!(rfc3339(*t), *want, "case {i}");
    }
}

#[test]
fn verification_code_is_order_free() {
    let a = verification_code(&["b", "a"]);
    assert_eq!(a, verification_code(&["a", "b"]));
    // sha1("ab")
    assert_eq!(a, "da23614e02469a0d7c7bd1bdab5c9c474b1904dc");
}

#[test]
fn names_become_one_uri_segment() {
    assert_eq!(url_safe("web.cpio.gz"), "web.cpio.gz");
    assert_eq!(url_safe("a b/#"), "a%20b%2F%23");
}

use std::sync::Arc;

use serde_json::Value;

use crate::plan::Planned;

fn file(c: Content, origin: Origin) -> Planned {
    Planned::new(Kind::File(c), 0o644, origin)
}

fn bytes(b: &[u8]) -> Content {
    Content::Bytes(Arc::from(b))
}

/// A document for `plan`, parsed back.
fn render_json(dir: &Path, config: &str, plan: &Plan) -> Value {
    let path = dir.join("fledge.toml");
    let head = "version = \"1\"\nstrategy = \"initramfs\"\n[init]\npath = \"/bin/app\"\n";
    std::fs::write(&path, format!("{head}{config}")).unwrap();
    let config = Config::from_str(&format!("{head}{config}"), &path).unwrap();
    let sources = Sources {
        busybox: Fetched {
            path: dir.join("busybox"),
            sha256: "ab".repeat(32),
            size: 0,
            origin: "https://example.org/busybox".into(),
            cached: true,
        },
        agent: None,
        image: None,
        kernel: None,
    };
    let text = render(&Facts {
        config: &config,
        plan,
        sources: &sources,
        name: "x.cpio",
        sha256: &"cd".repeat(32),
        epoch: 0,
        threads: 2,
        known: &Known::default(),
    })
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// fileName -> name of the package containing it.
fn owners(doc: &Value) -> BTreeMap<String, String> {
    let name = |id: &str| {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["SPDXID"] == id)
            .map(|p| p["name"].as_str().unwrap().to_string())
    };
    let mut out = BTreeMap::new();
    for f in doc["files"].as_array().unwrap() {
        let id = &f["SPDXID"];
        let r = doc["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| &r["relatedSpdxElement"] == id)
            .unwrap();
        out.insert(
            f["fileName"].as_str().unwrap().to_string(),
            name(r["spdxElementId"].as_str().unwrap()).unwrap(),
        );
    }
    out
}

#[test]
fn sysroot_libraries_are_attributed_to_the_debian_package_listing_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sysroot");
    let real = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::fs::write(real.join("libfoo.so.1"), b"foo").unwrap();
    std::fs::write(real.join("libbar.so.2"), b"bar").unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.2-3\n\nPackage: unrelated\nStatus: install ok installed\nVersion: 9\n",
    )
    .unwrap();
    // The list names the library by its pre-merged-/usr path.
    std::fs::write(
        root.join("var/lib/dpkg/info/libfoo1:amd64.list"),
        "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libfoo.so.1\n",
    )
    .unwrap();
    let lib = |name: &str| {
        file(
            Content::Path {
                path: real.join(name),
                size: 3,
            },
            Origin::Library {
                program: "/bin/app".into(),
            },
        )
    };
    let mut plan = Plan::default();
    plan.nodes.insert(
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1".into(),
        lib("libfoo.so.1"),
    );
    plan.nodes.insert(
        "/usr/lib/x86_64-linux-gnu/libbar.so.2".into(),
        lib("libbar.so.2"),
    );
    plan.nodes
        .insert("/bin/busybox".into(), file(bytes(b"bb"), Origin::Busybox));
    let doc = render_json(dir.path(), "[build]\nsysroot = \"sysroot\"\n", &plan);
    let owners = owners(&doc);
    assert_eq!(owners["./usr/lib/x86_64-linux-gnu/libfoo.so.1"], "libfoo1");
    assert_eq!(
        owners["./usr/lib/x86_64-linux-gnu/libbar.so.2"],
        "shared libraries"
    );
    assert_eq!(owners["./bin/busybox"], "busybox");
    let pkgs = doc["packages"].as_array().unwrap();
    let foo = pkgs.iter().find(|p| p["name"] == "libfoo1").unwrap();
    assert_eq!(
        foo["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/libfoo1@1%3A1.2-3?arch=amd64"
    );
    assert!(
        !pkgs.iter().any(|p| p["name"] == "unrelated"),
        "a sysroot package owning no placed file is not listed"
    );
    let bb = pkgs.iter().find(|p| p["name"] == "busybox").unwrap();
    assert_eq!(bb["downloadLocation"], "https://example.org/busybox");
    assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
}

#[test]
fn an_apk_database_claims_the_images_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = Plan::default();
    let img = Origin::Image { layer: 1 };
    let db = "P:musl\nV:1.2.4-r2\nA:x86_64\nF:lib\nR:ld-musl-x86_64.so.1\n\n";
    plan.nodes.insert(
        "/lib/apk/db/installed".into(),
        file(bytes(db.as_bytes()), img.clone()),
    );
    plan.nodes.insert(
        "/lib/ld-musl-x86_64.so.1".into(),
        file(bytes(b"ld"), img.clone()),
    );
    plan.nodes
        .insert("/etc/motd".into(), file(bytes(b"hi"), img));
    plan.nodes.insert(
        "/etc/os-release".into(),
        file(bytes(b"ID=alpine\n"), Origin::Image { layer: 1 }),
    );
    let doc = render_json(dir.path(), "", &plan);
    let owners = owners(&doc);
    assert_eq!(owners["./lib/ld-musl-x86_64.so.1"], "musl");
    assert_eq!(owners["./etc/motd"], "container image");
    let musl = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "musl")
        .unwrap();
    assert_eq!(
        musl["externalRefs"][0]["referenceLocator"],
        "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64"
    );
}

#[test]
fn an_unreadable_body_names_the_image_path_and_the_host_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fledge.toml"), "").unwrap();
    let head = "version = \"1\"\nstrategy = \"initramfs\"\n[init]\npath = \"/bin/app\"\n";
    let config = Config::from_str(head, &dir.path().join("fledge.toml")).unwrap();
    let mut plan = Plan::default();
    let gone = dir.path().join("gone");
    let key = Origin::Mapping {
        key: "gone".into(),
        line: None,
    };
    let c = Content::Path {
        path: gone.clone(),
        size: 1,
    };
    plan.nodes.insert("/etc/gone".into(), file(c, key));
    let sources = Sources {
        busybox: Fetched {
            path: gone.clone(),
            sha256: String::new(),
            size: 0,
            origin: "busybox".into(),
            cached: false,
        },
        agent: None,
        image: None,
        kernel: None,
    };
    let e = render(&Facts {
        config: &config,
        plan: &plan,
        sources: &sources,
        name: "x",
        sha256: "",
        epoch: 0,
        threads: 1,
        known: &Known::default(),
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&gone.display().to_string())
            && e.contains("the body of /etc/gone")
            && e.contains("SBOM"),
        "{e}"
    );
}
