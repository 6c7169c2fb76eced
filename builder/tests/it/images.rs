//! Container images made by real tools: umoci builds an OCI layout (two layers, a whiteout,
//! setuid and 1000:1000 entries, a merged /usr), skopeo converts it to `oci-archive:` and
//! `docker-archive:` and pushes it to Debian's docker-registry started here on 127.0.0.1 with
//! htpasswd auth. Every transport must give the same image byte for byte, and a rebuild with
//! the registry gone works from the cache.

use std::path::Path;
use std::process::Command;

use crate::common::{Project, DEFAULT_MODE};

/// `true` when every tool is installed; in CI a missing tool fails the test instead.
pub fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have {missing:?} (scripts/test-all installs them)"
    );
    eprintln!("skipped: {missing:?} not installed (apt-get install umoci skopeo docker-registry apache2-utils)");
    false
}

pub fn run(dir: &Path, cmd: &str) {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OCI layout `img:v1` made by umoci: two layers and a config.
pub fn umoci_image(dir: &Path) {
    run(dir, "umoci init --layout img && umoci new --image img:v1");
    run(
        dir,
        "umoci unpack --image img:v1 b1 >/dev/null && cd b1/rootfs && mkdir -p usr/bin srv etc && ln -s usr/bin bin \
         && printf app > usr/bin/app && chmod 4755 usr/bin/app && chown 1000:1000 srv && printf old > etc/old \
         && printf 'root:x:0:0::/root:/bin/sh\\napp:x:1000:1000::/srv:/bin/sh\\n' > etc/passwd \
         && cd ../.. && umoci repack --image img:v1 b1 && rm -rf b1",
    );
    run(
        dir,
        "umoci unpack --image img:v1 b2 >/dev/null && rm b2/rootfs/etc/old && printf new > b2/rootfs/etc/new \
         && umoci repack --image img:v1 b2 && rm -rf b2",
    );
    run(
        dir,
        "umoci config --image img:v1 --config.entrypoint /usr/bin/app --config.cmd serve --config.env MODE=test \
         --config.workingdir /srv --config.user app --config.exposedports 9000/tcp",
    );
}

fn build(p: &Project, image: &str, env: &[(&str, &str)]) -> (bool, String, Vec<u8>) {
    p.config(&format!("image = \"{image}\"\n{DEFAULT_MODE}"));
    let mut cmd = p.command(&["build", "-v", "-o", "out.cpio.gz"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let bytes = std::fs::read(p.path("out.cpio.gz")).unwrap_or_default();
    let _ = std::fs::remove_file(p.path("out.cpio.gz"));
    (out.status.success(), stderr, bytes)
}

#[test]
fn every_transport_gives_the_same_image_and_a_rebuild_needs_no_registry() {
    if !have(&["umoci", "skopeo", "docker-registry", "htpasswd"]) {
        return;
    }
    let p = Project::new();
    let dir = p.dir.path();
    umoci_image(dir);
    run(dir, "skopeo copy -q oci:img:v1 oci-archive:img.tar && skopeo copy -q oci:img:v1 docker-archive:saved.tar:app:v1");

    let (ok, err, oci) = build(&p, "oci:img:v1", &[]);
    assert!(ok, "{err}");
    std::fs::write(p.path("oci.cpio.gz"), &oci).unwrap();
    let out = p.fledge(&["inspect", "oci.cpio.gz"]);
    let list = String::from_utf8_lossy(&out.stdout);
    for want in [
        "-rwsr-xr-x   0/0            3 /usr/bin/app",
        "drwxr-xr-x 1000/1000          0 /srv",
        "/bin -> usr/bin",
        "/etc/new",
        "/usr/bin/busybox",
    ] {
        assert!(list.contains(want), "{want:?} missing from\n{list}");
    }
    assert!(
        !list.contains("/etc/old"),
        "the whiteout removed /etc/old:\n{list}"
    );
    let manifest = std::fs::read_to_string(p.path("out.manifest.json")).unwrap();
    assert!(
        manifest.contains("\"/usr/bin/app\"")
            && manifest.contains("127.0.0.1:9000")
            && manifest.contains("\"/srv\""),
        "{manifest}"
    );

    for image in [
        "oci-archive:img.tar",
        "docker-archive:saved.tar:app:v1",
        "docker-archive:saved.tar",
    ] {
        let (ok, err, bytes) = build(&p, image, &[]);
        assert!(ok && bytes == oci, "{image} gives another image: {err}");
    }

    let (registry, host) = crate::push::start_registry(dir, true);
    run(dir, &format!("skopeo copy -q --dest-tls-verify=false --dest-creds u:secret oci:img:v1 docker://{host}/team/app:v1"));
    let nothing = p.path("no-auth.json");
    let anon = [
        ("REGISTRY_AUTH_FILE", nothing.to_str().unwrap()),
        ("HOME", dir.to_str().unwrap()),
        ("XDG_RUNTIME_DIR", ""),
    ];
    let (ok, err, _) = build(&p, &format!("docker://{host}/team/app:v1"), &anon);
    assert!(
        !ok && err.contains("user name and password") && err.contains("`source.image`"),
        "{err}"
    );

    run(
        dir,
        &format!(
            "skopeo login -u u -p secret --tls-verify=false --authfile auth.json {host} >/dev/null"
        ),
    );
    let auth = p.path("auth.json");
    let creds = [
        ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
        ("HOME", dir.to_str().unwrap()),
    ];
    let (ok, err, pulled) = build(&p, &format!("docker://{host}/team/app:v1"), &creds);
    assert!(
        ok && pulled == oci,
        "the registry gives another image: {err}"
    );
    assert!(
        err.contains("the tag resolved to sha256:"),
        "-v names the digest: {err}"
    );
    let digest = err
        .split("the tag resolved to ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();

    drop(registry);
    let (ok, err, offline) = build(&p, &format!("docker://{host}/team/app:v1"), &creds);
    assert!(ok && offline == oci, "offline rebuild of the tag: {err}");
    assert!(
        err.contains("last time"),
        "says the cached answer is used: {err}"
    );
    let (ok, err, pinned) = build(&p, &format!("docker://{host}/team/app@{digest}"), &creds);
    assert!(ok && pinned == oci, "offline build pinned by digest: {err}");
}
