//! The provenance statement every build writes beside the image: `<name>.provenance.json`, an
//! in-toto Statement v1 with an SLSA provenance v1 predicate.
//!
//! This module owns what the statement says and how it is read back. Its subject is the image
//! (name and sha256); the build definition's external parameters are what the user chose (the
//! config and manifest template paths, compression, level, dedup, the manifest URLs, the
//! epoch), enough for `fledge verify --rebuild` to run the same build again; the resolved
//! dependencies are every input by digest: the config, the manifest template, busybox, the
//! agent, the container image and its layers, fledge-init, and every host file the image
//! takes a body from. No time stamps or host names are written: two builds of the same inputs
//! give the same bytes.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::archive::{Content, Kind};
use crate::pipeline::{Prepared, Request};
use crate::plan::Origin;
use crate::sbom::VERSION;

/// The statement's `_type`.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The predicate's type.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// The build type this document's parameters follow.
pub const BUILD_TYPE: &str = "https://github.com/volantvm/fledge/blob/main/README.md#provenance";

/// What the statement describes.
pub struct Facts<'a> {
    pub req: &'a Request,
    pub prepared: &'a Prepared,
    /// The image's file name.
    pub name: &'a str,
    /// Digests already made of the image's bodies.
    pub known: &'a crate::sbom::Known<'a>,
}

/// Where `<name>.provenance.json` goes for an image at `artifact` whose manifest is `name`.
pub fn provenance_path(artifact: &Path, name: &str) -> PathBuf {
    let dir = artifact.parent().unwrap_or(Path::new(""));
    dir.join(format!("{name}.provenance.json"))
}

/// The statement but its subject: all that does not need the image's digest, so that it is
/// made while the image's last bytes are still being compressed.
pub struct Unfinished {
    /// The statement's pretty text up to its closing brace. The subject is the last key of
    /// the object (keys are in order), so it goes last.
    head: String,
    name: String,
}

impl Unfinished {
    /// The statement's JSON text (pretty, ending in a newline) for the image of `sha256` (hex).
    pub fn finish(self, sha256: &str) -> String {
        let subject = json!([{"name": self.name, "digest": {"sha256": sha256}}]);
        close_with(self.head, "subject", &subject)
    }
}

/// The pretty text of the object `v` without its closing brace, for [`close_with`].
fn open_object(v: &Value) -> String {
    let mut text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    let open = text
        .strip_suffix("\n}")
        .expect("a non-empty object ends in a brace");
    text.truncate(open.len());
    text
}

/// Closes an [`open_object`] with `key` (which sorts after every key it has) set to `value`,
/// and a newline: the text the whole object renders to at once.
fn close_with(mut head: String, key: &str, value: &Value) -> String {
    head.push_str(",\n  ");
    head.push_str(&Value::from(key).to_string());
    head.push_str(": ");
    // One level in: every line but the first indented once more. No JSON string holds a raw
    // newline, so every newline of the text is one of the layout's.
    let nested = serde_json::to_string_pretty(value).expect("JSON values serialise");
    head.push_str(&nested.replace('\n', "\n  "));
    head.push_str("\n}\n");
    head
}

/// The statement without its subject ([`Unfinished::finish`] adds it).
pub fn render(f: &Facts) -> Result<Unfinished, crate::sbom::SbomError> {
    let p = f.prepared;
    // The working directory is looked up once, not once for each of thousands of host files.
    let cwd = std::env::current_dir().ok();
    let abs = |x: &Path| {
        match &cwd {
            Some(d) if x.is_relative() => std::path::absolute(d.join(x)),
            _ => std::path::absolute(x),
        }
        .unwrap_or_else(|_| x.to_path_buf())
    };
    let mut deps = vec![file_dep("fledge.toml", &abs(&p.config.path))];
    if let Some(t) = p.manifest.1.origin() {
        deps.push(file_dep("manifest.toml", &abs(t)));
    }
    let src = &p.sources;
    deps.push(json!({
        "name": "busybox",
        "uri": uri(&src.busybox.origin, &src.busybox.path),
        "digest": {"sha256": src.busybox.sha256},
    }));
    if let Some((a, _)) = &src.agent {
        deps.push(json!({
            "name": "kestrel",
            "uri": uri(&a.origin, &a.path),
            "digest": {"sha256": a.sha256},
        }));
    }
    if let Some(i) = &src.image {
        deps.push(json!({
            "name": "image",
            "uri": i.reference,
            "digest": {"sha256": i.digest.trim_start_matches("sha256:")},
            "annotations": {"diff_ids": i.diff_ids},
        }));
    }
    deps.push(json!({
        "name": "fledge-init",
        "digest": {"sha256": hex::encode(Sha256::digest(crate::embedded::INIT_X86_64))},
        "annotations": {"version": VERSION},
    }));
    // Every host file a body is read from (mappings, the custom init, libraries, modules).
    let hosted: Vec<(&str, &Content)> = p
        .plan
        .nodes
        .iter()
        .filter_map(|(path, n)| match &n.kind {
            Kind::File(c @ Content::Path { .. })
                if !matches!(n.origin, Origin::Busybox | Origin::Agent) =>
            {
                Some((&**path, c))
            }
            _ => None,
        })
        .collect();
    let digests =
        crate::sbom::digests_of(&hosted, p.options.threads, f.known, false, "provenance")?;
    for ((image_path, c), d) in hosted.iter().zip(&digests) {
        let Content::Path { path, .. } = c else {
            continue;
        };
        deps.push(json!({
            "name": image_path,
            "uri": format!("file://{}", abs(path).display()),
            "digest": {"sha256": d.sha256},
        }));
    }
    let level = p.options.level;
    let mut statement = json!({
        "_type": STATEMENT_V1,
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "config": abs(&f.req.config).display().to_string(),
                    "manifest": f.req.manifest.as_deref().map(|m| abs(m).display().to_string()),
                    "output": f.name,
                    "compression": p.options.compression.name(),
                    "level": level,
                    "dedup": f.req.dedup,
                    "url": f.req.url,
                    "base_url": f.req.base_url,
                    "source_date_epoch": p.epoch,
                },
                "internalParameters": {"fledge_version": VERSION},
                "resolvedDependencies": null,
            },
            "runDetails": {
                "builder": {
                    "id": format!("{}/releases/tag/v{VERSION}", env!("CARGO_PKG_REPOSITORY")),
                    "version": {"fledge": VERSION},
                },
                "metadata": {},
            },
        },
    });
    // Moved in: json! would serialise the thousands of them into a copy.
    statement["predicate"]["buildDefinition"]["resolvedDependencies"] = Value::Array(deps);
    Ok(Unfinished {
        head: open_object(&statement),
        name: f.name.to_string(),
    })
}

fn file_dep(name: &str, path: &Path) -> Value {
    let digest = std::fs::read(path)
        .map(|b| hex::encode(Sha256::digest(&b)))
        .unwrap_or_default();
    json!({
        "name": name,
        "uri": format!("file://{}", path.display()),
        "digest": {"sha256": digest},
    })
}

/// A URI for an input: its URL, or `file://` and its absolute path.
fn uri(origin: &str, path: &Path) -> String {
    if crate::fetch::is_remote(origin) {
        origin.to_string()
    } else {
        let p = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        format!("file://{}", p.display())
    }
}

/// What `fledge verify` reads back from a statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// The subject: name and sha256 hex.
    pub subject: (String, String),
    /// The external parameters.
    pub parameters: Value,
    /// The resolved dependencies: name, URI (may be empty) and sha256.
    pub dependencies: Vec<(String, String, String)>,
}

/// Reads a statement, checking its types; the error says what is wrong.
pub fn read(text: &str) -> Result<Read, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
    if v["_type"] != STATEMENT_V1 {
        return Err(format!("has _type {}, not {STATEMENT_V1}", v["_type"]));
    }
    if v["predicateType"] != SLSA_PROVENANCE_V1 {
        return Err(format!(
            "has predicateType {}, not {SLSA_PROVENANCE_V1}",
            v["predicateType"]
        ));
    }
    let s = &v["subject"][0];
    let (Some(name), Some(sha)) = (s["name"].as_str(), s["digest"]["sha256"].as_str()) else {
        return Err("has no subject with a name and a sha256 digest".into());
    };
    let deps = v["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let text = |d: &Value| d.as_str().unwrap_or_default().to_string();
    Ok(Read {
        subject: (name.to_string(), sha.to_string()),
        parameters: v["predicate"]["buildDefinition"]["externalParameters"].clone(),
        dependencies: deps
            .iter()
            .map(|d| {
                (
                    text(&d["name"]),
                    text(&d["uri"]),
                    text(&d["digest"]["sha256"]),
                )
            })
            .collect(),
    })
}

/// The first input of `now` that differs from `then` (another digest, new or gone), as a
/// phrase for a message.
pub fn changed_input(then: &Read, now: &Read) -> Option<String> {
    let find = |r: &Read, name: &str| r.dependencies.iter().find(|d| d.0 == name).cloned();
    let at = |uri: &str| {
        if uri.is_empty() {
            String::new()
        } else {
            format!(" ({uri})")
        }
    };
    for (name, uri, sha) in &now.dependencies {
        match find(then, name) {
            Some((_, _, old)) if old == *sha => {}
            Some((_, _, old)) => {
                return Some(format!(
                    "the input {name}{} is sha256 {sha} now, the provenance recorded {old}",
                    at(uri)
                ))
            }
            None => return Some(format!("the input {name}{} is new", at(uri))),
        }
    }
    then.dependencies
        .iter()
        .find(|d| find(now, &d.0).is_none())
        .map(|(name, uri, _)| format!("the input {name}{} is gone", at(uri)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_finished_later_is_the_one_rendered_at_once() {
        let head = json!({
            "_type": "t",
            "predicate": {"deps": [{"name": "a\nb \"q\"", "d": {}}, [], 1], "e": {}},
            "predicateType": "p",
        });
        let subject = json!([{"name": "x.cpio\n", "digest": {"sha256": "ab"}}]);
        let mut whole = head.clone();
        whole["subject"] = subject.clone();
        let at_once = serde_json::to_string_pretty(&whole).unwrap() + "\n";
        let later = close_with(open_object(&head), "subject", &subject);
        assert_eq!(later, at_once);
    }

    #[test]
    fn read_checks_types_and_subject() {
        let good = json!({
            "_type": STATEMENT_V1,
            "predicateType": SLSA_PROVENANCE_V1,
            "subject": [{"name": "a.cpio", "digest": {"sha256": "ab"}}],
            "predicate": {"buildDefinition": {"externalParameters": {"dedup": true}}},
        });
        let r = read(&good.to_string()).unwrap();
        assert_eq!(r.subject, ("a.cpio".to_string(), "ab".to_string()));
        assert_eq!(r.parameters["dedup"], true);
        let mut bad = good.clone();
        bad["_type"] = "https://in-toto.io/Statement/v0.1".into();
        assert!(read(&bad.to_string()).unwrap_err().contains("_type"));
        let mut bad = good.clone();
        bad["subject"] = json!([]);
        assert!(read(&bad.to_string()).unwrap_err().contains("subject"));
        assert!(read("{").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn changed_inputs_are_named() {
        let r = |deps: &[(&str, &str)]| Read {
            subject: Default::default(),
            parameters: Value::Null,
            dependencies: deps
                .iter()
                .map(|(n, d)| (n.to_string(), format!("file:///{n}"), d.to_string()))
                .collect(),
        };
        let then = r(&[("a", "1"), ("b", "2")]);
        assert_eq!(changed_input(&then, &then), None);
        let cases = [
            (
                r(&[("a", "1"), ("b", "3")]),
                "the input b (file:///b) is sha256 3 now, the provenance recorded 2",
            ),
            (
                r(&[("a", "1"), ("b", "2"), ("c", "4")]),
                "the input c (file:///c) is new",
            ),
            (r(&[("a", "1")]), "the input b (file:///b) is gone"),
        ];
        for (i, (now, want)) in cases.iter().enumerate() {
            assert_eq!(
                changed_input(&then, now).as_deref(),
                Some(*want),
                "case {i}"
            );
        }
    }
}
