//! The software bill of materials every build writes beside the image: `<name>.spdx.json`, an
//! SPDX 2.3 JSON document.
//!
//! This module owns what the document says and its bytes. The image is the described package;
//! it contains one package per origin of its entries (busybox, the agent, the container image,
//! the kernel modules, each mapping, fledge-init, the files fledge generates, the shared
//! libraries) and, where a package database says so ([`packages`]), one package per Debian or
//! Alpine package of a container image or of the library sysroot. Every regular file of the
//! image is one file entry with its sha256 (and the sha1 SPDX requires), contained by the
//! package it came from.
//!
//! Deterministic: the document is a function of the plan, the inputs' digests, the image digest
//! and the build's epoch. The namespace is derived from the image digest, the creation time is
//! `SOURCE_DATE_EPOCH` (the entries' mtime), ids are numbered in path order, and JSON object
//! keys are sorted.

pub mod digest;
pub mod packages;

pub use digest::Known;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::archive::{Content, Kind};
use crate::config::{AgentSource, Config, CustomInit, InitMode};
use crate::fetch::Fetched;
use crate::plan::{Origin, Plan};

/// fledge's version, as SPDX creator and as fledge-init's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The inputs a build resolved, as the SBOM and the provenance name them.
#[derive(Debug, Clone)]
pub struct Sources {
    pub busybox: Fetched,
    /// The agent, and the release tag asked for when it came from a release.
    pub agent: Option<(Fetched, Option<String>)>,
    pub image: Option<ImageSource>,
    /// The guest kernel's release and module tree, with `[kernel]`.
    pub kernel: Option<(String, PathBuf)>,
}

/// A container image as resolved.
#[derive(Debug, Clone)]
pub struct ImageSource {
    /// The reference as written in `[source] image`.
    pub reference: String,
    /// `sha256:<hex>` of the manifest (for `docker-archive:` the config).
    pub digest: String,
    /// The layers' `diff_id`s, bottom first.
    pub diff_ids: Vec<String>,
}

/// What the document describes.
pub struct Facts<'a> {
    pub config: &'a Config,
    pub plan: &'a Plan,
    pub sources: &'a Sources,
    /// The image's file name.
    pub name: &'a str,
    /// The image's sha256, hex.
    pub sha256: &'a str,
    pub epoch: u32,
    /// Threads for hashing the files.
    pub threads: usize,
    /// Digests already made of the image's bodies.
    pub known: &'a Known<'a>,
}

/// An SBOM or provenance that cannot be made: a file of the image that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {} for the {document} (the body of {file}): {source}", path.display())]
pub struct SbomError {
    /// `SBOM` or `provenance`.
    pub document: &'static str,
    /// The image path whose body it is.
    pub file: String,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The digests of the bodies of `files` (image path, body), for `document`; the error names
/// the image path and the host file.
pub fn digests_of(
    files: &[(&str, &Content)],
    threads: usize,
    known: &Known,
    sha1: bool,
    document: &'static str,
) -> Result<Vec<digest::Digests>, SbomError> {
    digest::all(files, threads, known, sha1).map_err(|(path, source)| {
        let file = files
            .iter()
            .find(|(_, c)| c.source() == Some(path.as_path()))
            .map_or_else(String::new, |(p, _)| p.to_string());
        SbomError {
            document,
            file,
            path,
            source,
        }
    })
}

/// Where `<name>.spdx.json` goes for an image at `artifact` whose manifest is named `name`.
pub fn sbom_path(artifact: &Path, name: &str) -> PathBuf {
    let dir = artifact.parent().unwrap_or(Path::new(""));
    dir.join(format!("{name}.spdx.json"))
}

/// One package of the document, before ids are given.
#[derive(Debug, Clone, Default)]
pub(crate) struct Package {
    pub name: String,
    pub version: Option<String>,
    /// A URL, or `NOASSERTION`.
    pub download: Option<String>,
    pub sha256: Option<String>,
    pub purl: Option<String>,
    pub source_info: Option<String>,
    pub comment: Option<String>,
    /// The package this one is part of (a dpkg package of the container image), else the image.
    pub parent: Option<usize>,
}

/// The document's JSON text (pretty, ending in a newline).
pub fn render(f: &Facts) -> Result<String, SbomError> {
    let mut text = Vec::new();
    render_to(f, &mut text)?.expect("writing to memory does not fail");
    Ok(String::from_utf8(text).expect("JSON is UTF-8"))
}

/// Writes the document's JSON text to `out` as it is made, so no second copy of every path is
/// held: the outer error is a file of the image that cannot be read, the inner one `out`'s.
pub fn render_to(
    f: &Facts,
    out: &mut dyn std::io::Write,
) -> Result<std::io::Result<()>, SbomError> {
    let mut packages: Vec<Package> = Vec::new();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let files: Vec<(&str, &Content, &Origin)> = f
        .plan
        .nodes
        .iter()
        .filter_map(|(p, n)| match &n.kind {
            Kind::File(c) => Some((&**p, c, &n.origin)),
            _ => None,
        })
        .collect();
    let mut owner: Vec<usize> = Vec::with_capacity(files.len());
    for (_, _, origin) in &files {
        let (key, make) = origin_package(f, origin);
        let i = *by_key.entry(key).or_insert_with(|| {
            packages.push(make());
            packages.len() - 1
        });
        owner.push(i);
    }
    // Files a package database claims move to that database's package.
    let claims = packages::claims(f, &files, &mut packages, &by_key);
    for (i, c) in claims.into_iter().enumerate() {
        if let Some(p) = c {
            owner[i] = p;
        }
    }
    let bodies: Vec<(&str, &Content)> = files.iter().map(|(p, c, _)| (*p, *c)).collect();
    let digests = digests_of(&bodies, f.threads, f.known, true, "SBOM")?;
    Ok(document(f, &packages, &files, &owner, &digests, out))
}

/// The package key of an origin and how to make the package the first time it is seen.
fn origin_package<'f>(
    f: &'f Facts,
    origin: &Origin,
) -> (String, Box<dyn FnOnce() -> Package + 'f>) {
    let fledge = |name: &str, comment: &str| Package {
        name: name.into(),
        version: Some(VERSION.into()),
        comment: Some(comment.into()),
        ..Package::default()
    };
    match origin {
        Origin::Busybox | Origin::Applet => ("busybox".into(), Box::new(|| busybox(f))),
        Origin::Agent => ("agent".into(), Box::new(|| agent(f))),
        Origin::FledgeInit => (
            "fledge-init".into(),
            Box::new(move || fledge("fledge-init", "the PID 1 carried inside fledge")),
        ),
        Origin::Base | Origin::VolantInit | Origin::InitConf | Origin::Workload => (
            "fledge".into(),
            Box::new(move || fledge("fledge", "files fledge generates from fledge.toml")),
        ),
        Origin::CustomInit => ("custom-init".into(), Box::new(|| custom_init(f))),
        Origin::Mapping { key, .. } => {
            let key = key.clone();
            (
                format!("mapping\0{key}"),
                Box::new(move || mapping(f, &key)),
            )
        }
        Origin::Kernel(_) => ("kernel".into(), Box::new(|| kernel(f))),
        Origin::Image { .. } => ("image".into(), Box::new(|| image(f))),
        Origin::Library { .. } => ("libraries".into(), Box::new(|| libraries(f))),
    }
}

/// A path relative to `fledge.toml`'s directory when under it, else absolute.
fn relative(f: &Facts, p: &Path) -> String {
    let base =
        std::path::absolute(&f.config.base_dir).unwrap_or_else(|_| f.config.base_dir.clone());
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match abs.strip_prefix(&base) {
        Ok(r) if r.as_os_str().is_empty() => ".".into(),
        Ok(r) => r.display().to_string(),
        Err(_) => abs.display().to_string(),
    }
}

/// A URL for `downloadLocation`, or `None` for a local file.
fn remote(location: &str) -> Option<String> {
    crate::fetch::is_remote(location).then(|| location.to_string())
}

fn busybox(f: &Facts) -> Package {
    let b = &f.sources.busybox;
    let download = remote(&b.origin);
    Package {
        name: "busybox".into(),
        version: busybox_version(&b.path),
        source_info: download
            .is_none()
            .then(|| format!("host file {}", relative(f, &b.path))),
        download,
        sha256: Some(b.sha256.clone()),
        comment: Some("source.busybox_url; its applet links are symlinks".into()),
        ..Package::default()
    }
}

/// The version a busybox binary announces (`BusyBox v1.35.0`), when it says.
fn busybox_version(path: &Path) -> Option<String> {
    let text = digest::read(
        &Content::Path {
            path: path.to_path_buf(),
            size: 64 << 20,
        },
        64 << 20,
    )?;
    let at = text.windows(9).position(|w| w == b"BusyBox v")? + 9;
    let v: String = text[at..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        .map(|b| *b as char)
        .take(40)
        .collect();
    (!v.is_empty()).then_some(v)
}

fn agent(f: &Facts) -> Package {
    let Some((a, tag)) = &f.sources.agent else {
        return Package {
            name: "kestrel".into(),
            ..Package::default()
        };
    };
    let download = remote(&a.origin);
    // A release's asset URL names its tag: .../releases/download/<tag>/<asset>.
    let tag = download
        .as_deref()
        .and_then(|u| u.split("/releases/download/").nth(1))
        .and_then(|r| r.split('/').next())
        .map(str::to_string)
        .or_else(|| tag.clone().filter(|t| t != "latest"));
    let how = match &f.config.init {
        InitMode::Default {
            agent: AgentSource::Release { version },
        } => format!("[agent] release {version} of volantvm/volant"),
        InitMode::Default {
            agent: AgentSource::Http { .. },
        } => "[agent] url".into(),
        _ => "[agent] path".into(),
    };
    Package {
        name: "kestrel".into(),
        version: tag,
        source_info: download
            .is_none()
            .then(|| format!("host file {}", relative(f, &a.path))),
        download,
        sha256: Some(a.sha256.clone()),
        comment: Some(how),
        ..Package::default()
    }
}

fn custom_init(f: &Facts) -> Package {
    let path = match &f.config.init {
        InitMode::Custom {
            init: CustomInit::Host(p),
        } => relative(f, p),
        _ => "NOASSERTION".into(),
    };
    Package {
        name: "custom init".into(),
        source_info: Some(format!("host file {path} (init.path)")),
        ..Package::default()
    }
}

fn mapping(f: &Facts, key: &str) -> Package {
    let host = f
        .config
        .mappings
        .iter()
        .find(|m| m.key == key)
        .map_or_else(|| key.to_string(), |m| relative(f, &m.source));
    Package {
        name: format!("mappings.\"{key}\""),
        source_info: Some(format!("host path {host}, relative to fledge.toml")),
        ..Package::default()
    }
}

fn kernel(f: &Facts) -> Package {
    let (release, dir) = match &f.sources.kernel {
        Some((r, d)) => (Some(r.clone()), Some(relative(f, d))),
        None => (None, None),
    };
    Package {
        name: "kernel modules".into(),
        version: release,
        source_info: dir.map(|d| format!("module tree {d} ([kernel])")),
        ..Package::default()
    }
}

fn image(f: &Facts) -> Package {
    let Some(i) = &f.sources.image else {
        return Package {
            name: "container image".into(),
            ..Package::default()
        };
    };
    Package {
        name: i.reference.clone(),
        version: Some(i.digest.clone()),
        sha256: i.digest.strip_prefix("sha256:").map(str::to_string),
        comment: Some(format!(
            "[source] image; manifest {}; layer diff_ids, bottom first: {}",
            i.digest,
            i.diff_ids.join(" ")
        )),
        ..Package::default()
    }
}

fn libraries(f: &Facts) -> Package {
    Package {
        name: "shared libraries".into(),
        source_info: Some(format!(
            "the library closure of the programs placed, from build.sysroot {}",
            relative(f, &f.config.libraries.sysroot)
        )),
        ..Package::default()
    }
}

/// SPDX ids may hold letters, digits, `.` and `-`.
fn id(prefix: &str, n: usize) -> String {
    format!("SPDXRef-{prefix}-{n}")
}

/// `YYYY-MM-DDThh:mm:ssZ` of a Unix time.
pub fn rfc3339(t: u32) -> String {
    let (days, secs) = (i64::from(t) / 86_400, i64::from(t) % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The SPDX JSON shapes written, in the order SPDX 2.3's examples give their fields; serialised
/// straight from borrowed values, so a document of many files holds no JSON tree in memory.
mod shape {
    use serde::Serialize;

    pub const NOASSERTION: &str = "NOASSERTION";

    /// An image path as SPDX names a file: `./usr/bin/env`, written without a copy.
    pub struct Dotted<'a>(pub &'a str);

    impl Serialize for Dotted<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&format_args!(".{}", self.0))
        }
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Doc<'a> {
        pub spdx_version: &'static str,
        pub data_license: &'static str,
        #[serde(rename = "SPDXID")]
        pub spdx_id: &'static str,
        pub name: &'a str,
        pub document_namespace: String,
        pub creation_info: CreationInfo,
        pub packages: Vec<Pkg<'a>>,
        pub files: Vec<File<'a>>,
        pub relationships: Vec<Rel>,
    }

    #[derive(Serialize)]
    pub struct CreationInfo {
        pub created: String,
        pub creators: [String; 1],
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Checksum<'a> {
        pub algorithm: &'static str,
        pub checksum_value: &'a str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ExternalRef<'a> {
        pub reference_category: &'static str,
        pub reference_type: &'static str,
        pub reference_locator: &'a str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct VerificationCode {
        pub package_verification_code_value: String,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Pkg<'a> {
        #[serde(rename = "SPDXID")]
        pub spdx_id: String,
        pub name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub version_info: Option<&'a str>,
        pub download_location: &'a str,
        pub files_analyzed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub package_verification_code: Option<VerificationCode>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub checksums: Vec<Checksum<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub primary_package_purpose: Option<&'static str>,
        pub supplier: &'static str,
        pub license_concluded: &'static str,
        pub license_declared: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub license_info_from_files: Option<[&'static str; 1]>,
        pub copyright_text: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub source_info: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub comment: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub external_refs: Vec<ExternalRef<'a>>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct File<'a> {
        #[serde(rename = "SPDXID")]
        pub spdx_id: String,
        pub file_name: Dotted<'a>,
        pub checksums: [Checksum<'a>; 2],
        pub license_concluded: &'static str,
        pub copyright_text: &'static str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Rel {
        pub spdx_element_id: String,
        pub relationship_type: &'static str,
        pub related_spdx_element: String,
    }

    impl<'a> Pkg<'a> {
        /// A package asserting nothing about licences, supplier or copyright.
        pub fn new(spdx_id: String, name: &'a str) -> Pkg<'a> {
            Pkg {
                spdx_id,
                name,
                version_info: None,
                download_location: NOASSERTION,
                files_analyzed: false,
                package_verification_code: None,
                checksums: Vec::new(),
                primary_package_purpose: None,
                supplier: NOASSERTION,
                license_concluded: NOASSERTION,
                license_declared: NOASSERTION,
                license_info_from_files: None,
                copyright_text: NOASSERTION,
                source_info: None,
                comment: None,
                external_refs: Vec::new(),
            }
        }
    }
}

fn document(
    f: &Facts,
    packages: &[Package],
    files: &[(&str, &Content, &Origin)],
    owner: &[usize],
    digests: &[digest::Digests],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use shape::{Checksum, ExternalRef, Pkg, Rel, VerificationCode, NOASSERTION};
    let contains = |from: String, to: String| Rel {
        spdx_element_id: from,
        relationship_type: "CONTAINS",
        related_spdx_element: to,
    };
    let mut relationships = vec![Rel {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: "SPDXRef-Image".into(),
    }];
    let mut image = Pkg::new("SPDXRef-Image".into(), f.name);
    image.checksums.push(Checksum {
        algorithm: "SHA256",
        checksum_value: f.sha256,
    });
    image.primary_package_purpose = Some("OPERATING-SYSTEM");
    image.comment = Some("the initramfs image fledge built");
    let mut pkgs = vec![image];
    // sha1s of each package's files, for its verification code.
    let mut sha1s: Vec<Vec<&str>> = vec![Vec::new(); packages.len()];
    for (i, d) in digests.iter().enumerate() {
        sha1s[owner[i]].push(&d.sha1);
    }
    for (i, p) in packages.iter().enumerate() {
        let mut v = Pkg::new(id("Package", i + 1), &p.name);
        v.version_info = p.version.as_deref();
        v.download_location = p.download.as_deref().unwrap_or(NOASSERTION);
        if let Some(x) = &p.sha256 {
            v.checksums.push(Checksum {
                algorithm: "SHA256",
                checksum_value: x,
            });
        }
        if let Some(x) = &p.purl {
            v.external_refs.push(ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: x,
            });
        }
        v.source_info = p.source_info.as_deref();
        v.comment = p.comment.as_deref();
        if !sha1s[i].is_empty() {
            v.files_analyzed = true;
            v.license_info_from_files = Some([NOASSERTION]);
            v.package_verification_code = Some(VerificationCode {
                package_verification_code_value: verification_code(&sha1s[i]),
            });
        }
        pkgs.push(v);
        let parent = p
            .parent
            .map_or_else(|| "SPDXRef-Image".to_string(), |q| id("Package", q + 1));
        relationships.push(contains(parent, id("Package", i + 1)));
    }
    let mut out_files = Vec::with_capacity(files.len());
    for (i, ((path, _, _), d)) in files.iter().zip(digests).enumerate() {
        out_files.push(shape::File {
            spdx_id: id("File", i + 1),
            file_name: shape::Dotted(path),
            checksums: [
                Checksum {
                    algorithm: "SHA1",
                    checksum_value: &d.sha1,
                },
                Checksum {
                    algorithm: "SHA256",
                    checksum_value: &d.sha256,
                },
            ],
            license_concluded: NOASSERTION,
            copyright_text: NOASSERTION,
        });
        relationships.push(contains(id("Package", owner[i] + 1), id("File", i + 1)));
    }
    let doc = shape::Doc {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: f.name,
        document_namespace: format!(
            "https://spdx.org/spdxdocs/fledge/{}-{}",
            url_safe(f.name),
            f.sha256
        ),
        creation_info: shape::CreationInfo {
            created: rfc3339(f.epoch),
            creators: [format!("Tool: fledge-{VERSION}")],
        },
        packages: pkgs,
        files: out_files,
        relationships,
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    out.write_all(b"\n")
}

/// A name as one URI path segment.
fn url_safe(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// SPDX's package verification code: the sha1 of the sorted sha1s of its files, concatenated.
fn verification_code(sha1s: &[&str]) -> String {
    use sha1::Digest as _;
    let mut s = sha1s.to_vec();
    s.sort_unstable();
    hex::encode(sha1::Sha1::digest(s.concat().as_bytes()))
}

#[cfg(test)]
mod tests;
