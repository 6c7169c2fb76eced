//! What `fledge run` takes from a Volant manifest (`<name>.manifest.json`, as `fledge build`
//! writes it): the name (the guest's host name), `runtime`, `resources` (memory and CPUs), the
//! workload's port from `workload.base_url`, `health_check`, and the whole manifest as compact
//! JSON (what a default-mode image's agent is given).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::RunError;

/// The largest manifest read.
/// As large as a build writes one.
const MAX_MANIFEST: u64 = crate::manifest::MAX_LEN;

/// The settings of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub name: String,
    /// `runtime`, else the name (as Volant's `Normalize` does).
    pub runtime: String,
    pub cpus: u64,
    pub memory_mb: u64,
    /// The guest TCP port the workload serves on.
    pub port: Option<u16>,
    /// `health_check.endpoint` and `timeout_ms`.
    pub health: Option<(String, i64)>,
    /// The manifest as compact JSON; `None` without one.
    pub json: Option<String>,
    /// The program the workload starts (`workload.entrypoint[0]`).
    pub program: Option<String>,
}

impl Plugin {
    /// Defaults for an image without a manifest: Volant's defaults for a manifest template
    /// (1 CPU, 512 MiB), no port, no health check.
    pub fn without_manifest(image: &Path) -> Plugin {
        let name = image
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .unwrap_or("vm")
            .to_owned();
        Plugin {
            runtime: name.clone(),
            name,
            cpus: 1,
            memory_mb: 512,
            port: None,
            health: None,
            json: None,
            program: None,
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    name: String,
    runtime: Option<String>,
    resources: RawResources,
    workload: Option<RawWorkload>,
    health_check: Option<RawHealth>,
    initramfs: Option<RawInitramfs>,
    rootfs: Option<RawInitramfs>,
}

#[derive(Deserialize)]
struct RawResources {
    cpu_cores: i64,
    memory_mb: i64,
}

#[derive(Deserialize)]
struct RawWorkload {
    base_url: Option<String>,
    #[serde(default)]
    entrypoint: Vec<String>,
}

#[derive(Deserialize)]
struct RawHealth {
    endpoint: Option<String>,
    timeout_ms: Option<i64>,
}

#[derive(Deserialize)]
struct RawInitramfs {
    url: Option<String>,
}

/// Reads a manifest JSON file.
pub fn load(path: &Path) -> Result<Plugin, RunError> {
    let bad = |problem: String| RunError::Manifest {
        path: path.to_path_buf(),
        problem,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MANIFEST + 1).read_to_string(&mut text))
        .map_err(|e| bad(e.to_string()))?;
    if text.len() as u64 > MAX_MANIFEST {
        return Err(bad(format!("larger than {MAX_MANIFEST} bytes")));
    }
    parse(&text).map_err(bad)
}

/// Parses manifest JSON; the error names the field.
pub fn parse(text: &str) -> Result<Plugin, String> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| format!("not a Volant manifest: {e}"))?;
    let value: serde_json::Value = serde_json::from_str(text).expect("parsed just above");
    let positive = |v: i64, field: &str| {
        u64::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("{field} must be a positive number, not {v}"))
    };
    let cpus = positive(raw.resources.cpu_cores, "resources.cpu_cores")?;
    let memory_mb = positive(raw.resources.memory_mb, "resources.memory_mb")?;
    let program = raw
        .workload
        .as_ref()
        .and_then(|w| w.entrypoint.first())
        .map(|e| e.trim().to_string());
    let port = match raw.workload.and_then(|w| w.base_url) {
        Some(url) => Some(
            port_of(&url).ok_or_else(|| format!("workload.base_url `{url}` names no TCP port"))?,
        ),
        None => None,
    };
    let health = raw.health_check.and_then(|h| {
        let endpoint = h.endpoint.filter(|e| !e.trim().is_empty())?;
        Some((endpoint, h.timeout_ms.unwrap_or(0)))
    });
    let runtime = raw
        .runtime
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| raw.name.clone());
    Ok(Plugin {
        name: raw.name,
        runtime,
        cpus,
        memory_mb,
        port,
        health,
        json: Some(value.to_string()),
        program,
    })
}

pub use crate::manifest::volant::port_of;

/// The manifest beside an image: the one `*.manifest.json` in its directory whose
/// `initramfs.url` (or `rootfs.url`) is the image's path (as `fledge build` writes it).
pub fn beside(image: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(image).ok()?;
    let dir = abs.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".manifest.json")))
        .find(|p| {
            let text = std::fs::File::open(p).and_then(|f| {
                let mut s = String::new();
                f.take(MAX_MANIFEST).read_to_string(&mut s).map(|_| s)
            });
            let url = text
                .ok()
                .and_then(|t| serde_json::from_str::<Raw>(&t).ok())
                .and_then(|r| r.initramfs.or(r.rootfs))
                .and_then(|i| i.url);
            url.is_some_and(|u| Path::new(u.strip_prefix("file://").unwrap_or(&u)) == abs)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_base_urls() {
        let cases = [
            ("http://127.0.0.1:8080", Some(8080)),
            ("http://127.0.0.1:8080/api?x=1", Some(8080)),
            ("http://example", Some(80)),
            ("https://example/", Some(443)),
            ("http://[::1]:9000/", Some(9000)),
            ("http://u:p@h:81", Some(81)),
            ("http://h:0", None),
            ("http://h:99999", None),
            ("ftp://h:21", None),
            ("127.0.0.1:8080", None),
        ];
        for (i, (url, want)) in cases.iter().enumerate() {
            assert_eq!(port_of(url), *want, "case {i}: {url}");
        }
    }

    #[test]
    fn manifest_fields_and_errors() {
        let ok = r#"{"name":"web","resources":{"cpu_cores":2,"memory_mb":256},
            "workload":{"type":"http","base_url":"http://127.0.0.1:8080","entrypoint":["/x"]},
            "health_check":{"endpoint":"/healthz","timeout_ms":5000},
            "initramfs":{"url":"/tmp/x.cpio.gz"}}"#;
        let json = serde_json::from_str::<serde_json::Value>(ok)
            .unwrap()
            .to_string();
        assert_eq!(
            parse(ok).unwrap(),
            Plugin {
                name: "web".into(),
                runtime: "web".into(),
                cpus: 2,
                memory_mb: 256,
                port: Some(8080),
                health: Some(("/healthz".into(), 5000)),
                json: Some(json),
                program: Some("/x".into()),
            }
        );
        let rt = ok.replace("\"name\":\"web\"", "\"name\":\"web\",\"runtime\":\"rt\"");
        assert_eq!(parse(&rt).unwrap().runtime, "rt");
        let zero = ok.replace("\"cpu_cores\":2", "\"cpu_cores\":0");
        assert!(parse(&zero).unwrap_err().contains("resources.cpu_cores"));
        let no_port = ok.replace("http://127.0.0.1:8080", "nope");
        assert!(parse(&no_port).unwrap_err().contains("workload.base_url"));
        assert!(parse("[]")
            .unwrap_err()
            .starts_with("not a Volant manifest"));
    }

    #[test]
    fn finds_the_manifest_naming_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a.cpio.gz");
        std::fs::write(&image, "x").unwrap();
        let m = |url: &Path| {
            format!(
                r#"{{"name":"a","resources":{{"cpu_cores":1,"memory_mb":64}},"initramfs":{{"url":"{}"}}}}"#,
                url.display()
            )
        };
        std::fs::write(
            dir.path().join("other.manifest.json"),
            m(&dir.path().join("b")),
        )
        .unwrap();
        assert_eq!(beside(&image), None);
        std::fs::write(dir.path().join("a.manifest.json"), m(&image)).unwrap();
        assert_eq!(beside(&image), Some(dir.path().join("a.manifest.json")));
    }

    #[test]
    fn a_manifest_as_large_as_a_build_writes_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.manifest.json");
        // An image's 2 MiB Env, as a build puts it into workload.env.
        let env = format!("{{\"BIG\":\"{}\"}}", "e".repeat(2 << 20));
        let text = format!(
            r#"{{"name":"web","resources":{{"cpu_cores":1,"memory_mb":64}},
            "workload":{{"type":"http","base_url":"http://127.0.0.1:8080","entrypoint":["/x"],"env":{env}}},
            "initramfs":{{"url":"/tmp/x.cpio.gz"}}}}"#
        );
        std::fs::write(&path, text).unwrap();
        assert!(load(&path).is_ok());
        std::fs::write(&path, vec![b' '; (crate::manifest::MAX_LEN + 1) as usize]).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }
}
