//! The supply-chain outputs of a build and `fledge verify`: the SBOM validates with the SPDX
//! project's validator and is byte-identical across builds, the provenance parses with the
//! in-toto project's library as a v1 Statement, a container image's dpkg packages are listed,
//! and `verify` names the first file that differs in a tampered image or SBOM.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::common::{hex, Project, AGENT, BUSYBOX, DEFAULT_MODE};

/// `target/pyvenv`, where `scripts/test-all` installs the Python tools.
fn venv() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("pyvenv/bin")
}

/// `None`, with a line saying why, when `what` is missing outside CI; in CI it fails the test.
fn skip(what: &str) -> Option<PathBuf> {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have {what} (scripts/test-all installs it into target/pyvenv)"
    );
    eprintln!("skipped: {what} not installed (pip install spdx-tools in-toto-attestation)");
    None
}

/// The SPDX validator, from the venv or PATH.
fn pyspdxtools() -> Option<PathBuf> {
    let venv = venv().join("pyspdxtools");
    if venv.is_file() {
        return Some(venv);
    }
    Command::new("sh")
        .args(["-c", "command -v pyspdxtools"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .or_else(|| skip("pyspdxtools"))
}

/// A Python that can import the in-toto attestation library: the venv's, else python3.
fn in_toto_python() -> Option<PathBuf> {
    [venv().join("python3"), PathBuf::from("python3")]
        .into_iter()
        .find(|py| {
            Command::new(py)
                .args(["-c", "import in_toto_attestation"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .or_else(|| skip("the in-toto-attestation Python library"))
}

/// A project with a mapped file and tree, built uncompressed to `out.cpio`.
fn project() -> Project {
    let p = Project::new();
    p.file("site/index.html", b"<p>hi</p>\n", 0o644);
    p.file("site/css/a.css", b"p{}\n", 0o644);
    p.file("app.conf", b"port=9000\n", 0o644);
    p.config(&format!(
        "{DEFAULT_MODE}[mappings]\n\"site\" = \"/srv/site\"\n\"app.conf\" = \"/etc/app.conf\"\n"
    ));
    p
}

fn json(p: &Project, rel: &str) -> Value {
    serde_json::from_slice(&fs::read(p.path(rel)).unwrap()).unwrap()
}

/// fileName -> (sha256, the name of the package containing it).
fn files_of(sbom: &Value) -> std::collections::BTreeMap<String, (String, String)> {
    let names: std::collections::HashMap<&str, &str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["SPDXID"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let ids: std::collections::HashMap<&str, &str> = sbom["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["SPDXID"].as_str().unwrap(),
                f["fileName"].as_str().unwrap(),
            )
        })
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for f in sbom["files"].as_array().unwrap() {
        let sha = f["checksums"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["algorithm"] == "SHA256")
            .unwrap()["checksumValue"]
            .as_str()
            .unwrap()
            .to_string();
        out.insert(
            f["fileName"].as_str().unwrap().to_string(),
            (sha, String::new()),
        );
    }
    for r in sbom["relationships"].as_array().unwrap() {
        let (from, to) = (
            r["spdxElementId"].as_str().unwrap(),
            r["relatedSpdxElement"].as_str().unwrap(),
        );
        if let (Some(pkg), Some(file)) = (names.get(from), ids.get(to)) {
            out.get_mut(*file).unwrap().1 = pkg.to_string();
        }
    }
    out
}

#[test]
fn the_sbom_lists_every_file_with_its_package_validates_and_is_reproducible() {
    let p = project();
    let image = p.build("out.cpio", &[]);
    let first = fs::read(p.path("out.spdx.json")).unwrap();
    let sbom: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(sbom["creationInfo"]["created"], "2024-01-01T00:00:00Z");
    let namespace = sbom["documentNamespace"].as_str().unwrap();
    assert!(namespace.ends_with(&hex(&image)), "{namespace}");
    let files = files_of(&sbom);
    let want = [
        ("./bin/busybox", hex(BUSYBOX), "busybox"),
        ("./bin/kestrel", hex(AGENT), "kestrel"),
        (
            "./srv/site/index.html",
            hex(b"<p>hi</p>\n"),
            "mappings.\"site\"",
        ),
        ("./srv/site/css/a.css", hex(b"p{}\n"), "mappings.\"site\""),
        (
            "./etc/app.conf",
            hex(b"port=9000\n"),
            "mappings.\"app.conf\"",
        ),
    ];
    for (i, (name, sha, pkg)) in want.iter().enumerate() {
        let got = files
            .get(*name)
            .unwrap_or_else(|| panic!("case {i}: {name} missing: {files:?}"));
        assert_eq!((&got.0, got.1.as_str()), (sha, *pkg), "case {i}: {name}");
    }
    assert_eq!(files["./init"].1, "fledge-init");
    // Every regular file of the image, and nothing else.
    let listing = p.ok(&["inspect", "--json", "out.cpio"]);
    let listed: Value = serde_json::from_str(&listing).unwrap();
    let regular: Vec<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mode"].as_u64().unwrap() & 0o170000 == 0o100000)
        .map(|e| format!(".{}", e["path"].as_str().unwrap()))
        .collect();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), {
        let mut r = regular.clone();
        r.sort();
        r
    });
    let busybox = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "busybox")
        .unwrap();
    assert_eq!(busybox["checksums"][0]["checksumValue"], hex(BUSYBOX));
    let mapping = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mappings.\"site\"")
        .unwrap();
    assert!(
        mapping["sourceInfo"]
            .as_str()
            .unwrap()
            .contains("host path site,"),
        "{mapping}"
    );
    // A second build, in another directory, gives the same bytes.
    let q = project();
    q.build("out.cpio", &[]);
    assert_eq!(fs::read(q.path("out.spdx.json")).unwrap(), first);
    let later = p.build("out.cpio", &[("SOURCE_DATE_EPOCH", "1709251199")]);
    let again: Value = json(&p, "out.spdx.json");
    assert_eq!(again["creationInfo"]["created"], "2024-02-29T23:59:59Z");
    assert!(again["documentNamespace"]
        .as_str()
        .unwrap()
        .ends_with(&hex(&later)));
    if let Some(tool) = pyspdxtools() {
        let o = Command::new(&tool)
            .arg("-i")
            .arg(p.path("out.spdx.json"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && !err.contains("invalid"),
            "pyspdxtools: {err}"
        );
    }
}

#[test]
fn sbom_false_writes_none_and_the_other_outputs_stay() {
    let p = Project::new();
    p.config(&format!("{DEFAULT_MODE}[build]\nsbom = false\n"));
    p.build("out.cpio", &[]);
    assert!(!p.path("out.spdx.json").exists());
    assert!(p.path("out.manifest.json").is_file());
    assert!(p.path("out.provenance.json").is_file());
}

#[test]
fn the_provenance_is_an_in_toto_v1_statement_naming_the_image_and_its_inputs() {
    let p = project();
    let image = p.build("out.cpio", &[]);
    let v = json(&p, "out.provenance.json");
    assert_eq!(v["subject"][0]["name"], "out.cpio");
    assert_eq!(v["subject"][0]["digest"]["sha256"], hex(&image));
    let deps = v["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let digest_of = |name: &str| {
        deps.iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {deps:?}"))["digest"]["sha256"]
            .clone()
    };
    assert_eq!(digest_of("busybox"), hex(BUSYBOX));
    assert_eq!(digest_of("kestrel"), hex(AGENT));
    assert_eq!(digest_of("/etc/app.conf"), hex(b"port=9000\n"));
    let config = fs::read(p.path("fledge.toml")).unwrap();
    assert_eq!(digest_of("fledge.toml"), hex(&config));
    let Some(python) = in_toto_python() else {
        return;
    };
    let script = r#"
import json, sys
from google.protobuf import json_format
from in_toto_attestation.v1 import statement, statement_pb2
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
text = open(sys.argv[1]).read()
pb = json_format.Parse(text, statement_pb2.Statement())
statement.Statement.copy_from_pb(pb).validate()
assert pb.predicate_type == "https://slsa.dev/provenance/v1", pb.predicate_type
prov = json_format.ParseDict(json.loads(text)["predicate"], provenance_pb2.Provenance())
print(len(prov.build_definition.resolved_dependencies))
"#;
    let o = Command::new(&python)
        .args(["-c", script])
        .arg(p.path("out.provenance.json"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "in-toto: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let n: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(n, deps.len());
}

fn verify(p: &Project, args: &[&str]) -> (bool, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let o = p.fledge(&all);
    let text =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    (o.status.success(), text)
}

#[test]
fn verify_passes_an_untouched_image_and_names_a_tampered_file() {
    let p = project();
    let image = p.build("out.cpio", &[]);
    let (ok, text) = verify(&p, &["out.cpio"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("verified") && text.contains(&hex(&image)),
        "{text}"
    );
    // One byte of /etc/app.conf's body in the uncompressed image.
    let at = image.windows(9).position(|w| w == b"port=9000").unwrap();
    let mut bad = image.clone();
    bad[at] = b'P';
    fs::write(p.path("out.cpio"), &bad).unwrap();
    let (ok, text) = verify(&p, &["out.cpio"]);
    assert!(!ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or(&text);
    assert!(
        line.contains("out.cpio: /etc/app.conf has sha256") && line.contains("out.spdx.json says"),
        "{text}"
    );
    // Without the SBOM, the manifest's checksum catches it.
    let (ok, text) = verify(&p, &["out.cpio", "--sbom", "/dev/null"]);
    assert!(!ok && text.contains("is not JSON"), "{text}");
    fs::remove_file(p.path("out.spdx.json")).unwrap();
    let (ok, text) = verify(&p, &["out.cpio"]);
    assert!(!ok && text.contains("initramfs.checksum"), "{text}");
}

#[test]
fn verify_names_the_file_a_tampered_sbom_gets_wrong_missing_or_extra() {
    let p = project();
    p.build("out.cpio", &[]);
    let good = fs::read_to_string(p.path("out.spdx.json")).unwrap();
    let sha = hex(b"port=9000\n");
    let cases: [(&str, String, &str); 3] = [
        (
            "digest",
            good.replacen(&sha, &"0".repeat(64), 1),
            "/etc/app.conf has sha256",
        ),
        (
            "missing",
            good.replace("\"./etc/app.conf\"", "\"./etc/other.conf\""),
            "holds /etc/app.conf, which",
        ),
        (
            "extra",
            good.replacen("\"files\": [", "\"files\": [{\"SPDXID\": \"SPDXRef-File-x\", \"fileName\": \"./zzz\", \"checksums\": [{\"algorithm\": \"SHA256\", \"checksumValue\": \"00\"}]},", 1),
            "lists /zzz, which",
        ),
    ];
    for (name, text, want) in cases {
        fs::write(p.path("out.spdx.json"), text).unwrap();
        let (ok, out) = verify(&p, &["out.cpio"]);
        assert!(!ok, "{name}: {out}");
        assert!(out.contains(want), "{name}: {out}");
    }
}

#[test]
fn verify_rebuild_passes_untouched_and_fails_when_an_input_changed() {
    let p = project();
    p.build("out.cpio", &[]);
    let (ok, text) = verify(&p, &["out.cpio", "--rebuild"]);
    assert!(ok, "{text}");
    assert!(text.contains("a rebuild gives identical bytes"), "{text}");
    p.file("app.conf", b"port=9001\n", 0o644);
    let (ok, text) = verify(&p, &["out.cpio", "--rebuild"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("rebuilding it from")
            && text.contains("first difference: /etc/app.conf; the input /etc/app.conf (file://")
            && text.contains(&format!("the provenance recorded {}", hex(b"port=9000\n"))),
        "{text}"
    );
}

#[test]
fn a_container_images_dpkg_packages_are_listed_and_own_their_files() {
    if !crate::images::have(&["umoci"]) {
        return;
    }
    let p = Project::new();
    let status = "Package: hello\\nStatus: install ok installed\\nArchitecture: amd64\\nVersion: 2.10-3\\n\\nPackage: base-files\\nStatus: install ok installed\\nArchitecture: amd64\\nVersion: 12.4+deb12u5\\n";
    crate::images::run(
        p.dir.path(),
        &format!(
            "umoci init --layout img && umoci new --image img:v1 && umoci unpack --image img:v1 b >/dev/null \
             && cd b/rootfs && mkdir -p usr/bin var/lib/dpkg/info etc && ln -s usr/bin bin \
             && printf hello > usr/bin/hello && printf 'ID=debian\\n' > etc/os-release \
             && printf '{status}' > var/lib/dpkg/status \
             && printf '/.\\n/bin\\n/bin/hello\\n' > var/lib/dpkg/info/hello.list \
             && printf '/etc/os-release\\n' > var/lib/dpkg/info/base-files.list \
             && cd ../.. && umoci repack --image img:v1 b && rm -rf b"
        ),
    );
    p.config(&format!("image = \"oci:img:v1\"\n{DEFAULT_MODE}"));
    p.build("out.cpio", &[]);
    let sbom = json(&p, "out.spdx.json");
    let files = files_of(&sbom);
    assert_eq!(files["./usr/bin/hello"].1, "hello", "{files:?}");
    assert_eq!(files["./etc/os-release"].1, "base-files");
    assert_eq!(files["./var/lib/dpkg/status"].1, "oci:img:v1");
    let hello = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hello")
        .unwrap();
    assert_eq!(hello["versionInfo"], "2.10-3");
    assert_eq!(
        hello["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/hello@2.10-3?arch=amd64"
    );
    let image = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "oci:img:v1")
        .unwrap();
    assert!(
        image["comment"].as_str().unwrap().contains("diff_ids"),
        "{image}"
    );
    if let Some(tool) = pyspdxtools() {
        let o = Command::new(&tool)
            .arg("-i")
            .arg(p.path("out.spdx.json"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && !err.contains("invalid"),
            "pyspdxtools: {err}"
        );
    }
}
