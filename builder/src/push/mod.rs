//! Registries as distribution: `fledge push` and `fledge pull`.
//!
//! This module owns the artifact fledge publishes and reads back: one OCI image manifest with
//! `artifactType` [`ARTIFACT_TYPE`], the empty config ([`EMPTY_CONFIG`], the two bytes `{}`),
//! and one layer per file (the image, its Volant manifest JSON, any further outputs named
//! with `--file`), each with its own media type and its file name as the
//! `org.opencontainers.image.title` annotation, the way ORAS-style tools expect. The SBOM and
//! provenance `fledge build` wrote beside the manifest go too. Targets are a
//! registry (`docker://HOST[:PORT]/REPO:TAG`, through [`client`]) or an OCI image layout
//! directory (`oci:DIR:TAG`, through [`layout`]).
//!
//! A push sends only the blobs the repository lacks (HEAD first; a mount from `--mount-from`
//! when asked), then the manifest, and reports its digest. A pull checks the manifest's digest
//! when the reference names one, every blob's size and digest, and every title (a plain file
//! name: no `/`, not `.` or `..`); the files appear in the directory together and only when
//! every one is complete ([`crate::output::commit`]).

pub mod cache;
mod client;
mod layout;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::compress::detect;
use crate::fetch::net::NetLimits;
use crate::hashing::Hashing;
use crate::image::reference::{ImageRef, Pick, RegistryRef};
use crate::image::Digest;
use crate::output::{self, Pending};

pub use client::same_origin;

/// The `artifactType` of what fledge pushes.
pub const ARTIFACT_TYPE: &str = "application/vnd.fledge.plugin.v1";
/// The config of an artifact: the empty JSON object.
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
/// The media type of the pushed manifest.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of the Volant manifest JSON layer.
pub const VOLANT_MANIFEST_TYPE: &str = "application/vnd.volant.plugin.manifest.v1+json";
/// The annotation that names a layer's file.
pub const TITLE: &str = "org.opencontainers.image.title";
/// Blobs larger than this are uploaded in chunks by default.
pub const DEFAULT_CHUNK: u64 = 64 << 20;

/// A failed push or pull, as one sentence naming what and where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PushError(pub String);

/// Where a push goes or a pull comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Registry(RegistryRef),
    Layout { dir: PathBuf, tag: Option<String> },
}

impl Target {
    /// Parses `docker://HOST[:PORT]/REPO:TAG` (or a bare registry name) or `oci:DIR[:TAG]`.
    pub fn parse(text: &str) -> Result<Target, PushError> {
        let bad = |m: String| PushError(format!("the reference {text:?} {m}"));
        match ImageRef::parse(text, Path::new("")).map_err(bad)? {
            ImageRef::Registry(r) => Ok(Target::Registry(r)),
            ImageRef::OciDir { dir, tag } => Ok(Target::Layout { dir, tag }),
            _ => Err(bad(
                "is not a registry (docker://HOST/REPO:TAG) or an OCI layout directory (oci:DIR:TAG)".into(),
            )),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Registry(r) => write!(f, "docker://{r}"),
            Target::Layout { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                match tag {
                    Some(t) => write!(f, ":{t}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// What to push.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The image (initramfs or root file system disk).
    pub image: PathBuf,
    /// Its Volant manifest JSON [default: the `*.manifest.json` beside the image whose
    /// `initramfs.checksum` is the image's digest].
    pub manifest: Option<PathBuf>,
    /// Further outputs to carry (an SBOM, a second image).
    pub files: Vec<PathBuf>,
    /// A repository of the same registry to mount blobs from.
    pub mount_from: Option<String>,
    /// Blobs larger than this go up in PATCHes of this size.
    pub chunk: u64,
    /// Set the Volant manifest's `initramfs.url` (`rootfs.url`) to the image blob's registry URL.
    pub url_from_registry: bool,
    /// Plain HTTP to a registry not on this machine.
    pub plain_http: bool,
}

impl PushRequest {
    pub fn new(image: PathBuf) -> PushRequest {
        PushRequest {
            image,
            manifest: None,
            files: Vec::new(),
            mount_from: None,
            chunk: DEFAULT_CHUNK,
            url_from_registry: false,
            plain_http: false,
        }
    }
}

/// One file of the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub title: String,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The digest of the pushed manifest.
    pub digest: Digest,
    pub layers: Vec<Layer>,
    /// Blobs sent, found already there, and mounted.
    pub uploaded: usize,
    pub present: usize,
    pub mounted: usize,
    /// The image blob's registry URL (registry targets).
    pub blob_url: Option<String>,
}

/// What a pull wrote.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub digest: Digest,
    pub files: Vec<(PathBuf, u64)>,
}

/// A blob's bytes: a file on disk or made here.
enum Data {
    File(PathBuf),
    Bytes(Vec<u8>),
}

struct Blob {
    layer: Layer,
    data: Data,
}

impl Blob {
    fn open(&self) -> Result<Box<dyn Read + '_>, PushError> {
        match &self.data {
            Data::File(p) => File::open(p)
                .map(|f| Box::new(f) as Box<dyn Read>)
                .map_err(|e| PushError(format!("cannot read {}: {e}", p.display()))),
            Data::Bytes(b) => Ok(Box::new(&b[..])),
        }
    }
}

/// Pushes the image and its outputs to `target`.
pub fn push(req: &PushRequest, target: &Target) -> Result<Pushed, PushError> {
    if req.chunk == 0 {
        return Err(PushError("the chunk size must be at least one byte".into()));
    }
    let image = file_blob(&req.image, None)?;
    let manifest_path = match &req.manifest {
        Some(m) => m.clone(),
        None => find_manifest(&req.image, &image.layer.digest)?,
    };
    let blob_url = match target {
        Target::Registry(r) => Some(blob_url(r, req.plain_http, &image.layer.digest)),
        Target::Layout { .. } => None,
    };
    let volant = if req.url_from_registry {
        let url = blob_url.as_deref().ok_or_else(|| {
            PushError(format!(
                "--url-from-registry needs a registry reference (docker://HOST/REPO:TAG), not {target}"
            ))
        })?;
        let bytes = with_url(&manifest_path, url)?;
        Blob {
            layer: Layer {
                title: file_name(&manifest_path)?,
                media_type: VOLANT_MANIFEST_TYPE.into(),
                digest: Digest::of(&bytes),
                size: bytes.len() as u64,
            },
            data: Data::Bytes(bytes),
        }
    } else {
        file_blob(&manifest_path, Some(VOLANT_MANIFEST_TYPE))?
    };
    let mut blobs = vec![image, volant];
    for f in &req.files {
        blobs.push(file_blob(f, None)?);
    }
    // The build's other outputs beside its manifest (SBOM, provenance, boot initramfs) go with it,
    // unless --file named a file of the same name.
    for f in companions(&manifest_path) {
        let title = file_name(&f)?;
        if !blobs.iter().any(|b| b.layer.title == title) {
            blobs.push(file_blob(&f, None)?);
        }
    }
    for (i, b) in blobs.iter().enumerate() {
        if blobs[..i].iter().any(|o| o.layer.title == b.layer.title) {
            return Err(PushError(format!(
                "two files are named {:?}: the artifact names each file by its name, so they must differ",
                b.layer.title
            )));
        }
    }
    let sent = send(
        target,
        &blobs,
        ARTIFACT_TYPE,
        &Upload {
            chunk: req.chunk,
            mount_from: req.mount_from.as_deref(),
            plain_http: req.plain_http,
        },
    )?;
    Ok(Pushed {
        digest: sent.digest,
        layers: blobs.iter().map(|b| b.layer.clone()).collect(),
        uploaded: sent.uploaded,
        present: sent.present,
        mounted: sent.mounted,
        blob_url,
    })
}

/// How blobs go up.
struct Upload<'a> {
    chunk: u64,
    mount_from: Option<&'a str>,
    plain_http: bool,
}

/// What [`send`] did.
struct Sent {
    digest: Digest,
    uploaded: usize,
    present: usize,
    mounted: usize,
}

/// Sends the empty config and `blobs` that `target` lacks, then the artifact manifest
/// (`artifact_type`, one layer per blob) under the target's tag.
fn send(
    target: &Target,
    blobs: &[Blob],
    artifact_type: &str,
    how: &Upload,
) -> Result<Sent, PushError> {
    let config = Blob {
        layer: Layer {
            title: String::new(),
            media_type: EMPTY_CONFIG.into(),
            digest: Digest::of(b"{}"),
            size: 2,
        },
        data: Data::Bytes(b"{}".to_vec()),
    };
    let manifest = manifest_json(artifact_type, &config.layer, blobs.iter().map(|b| &b.layer));
    let mut sent = Sent {
        digest: Digest::of(&manifest),
        uploaded: 0,
        present: 0,
        mounted: 0,
    };
    let all = std::iter::once(&config).chain(blobs);
    match target {
        Target::Registry(r) => {
            let tag = match &r.pick {
                Pick::Tag(t) => t.clone(),
                Pick::Digest(_) => {
                    return Err(PushError(format!(
                        "{target}: a push needs a tag (docker://HOST/REPO:TAG), not a digest"
                    )))
                }
            };
            let mut c = client::Client::new(r, true, how.mount_from, how.plain_http)?;
            for b in all {
                let d = &b.layer.digest;
                if c.has_blob(d)? {
                    log::debug!("{}: {d} is already there", c.repo);
                    sent.present += 1;
                    continue;
                }
                let location = match how.mount_from {
                    Some(from) => match c.mount(d, from)? {
                        None => {
                            log::debug!("{}: mounted {d} from {from}", c.repo);
                            sent.mounted += 1;
                            continue;
                        }
                        Some(loc) => loc,
                    },
                    None => c.start_upload()?,
                };
                let mut body = b.open()?;
                c.upload(location, d, &mut body, b.layer.size, how.chunk)?;
                log::debug!("{}: uploaded {d} ({} bytes)", c.repo, b.layer.size);
                sent.uploaded += 1;
            }
            let reported = c.put_manifest(&tag, MANIFEST_TYPE, &manifest)?;
            if let Some(r) = reported.filter(|r| *r != sent.digest.to_string()) {
                return Err(PushError(format!(
                    "{target}: the registry stored the manifest as {r}, but its bytes are {}",
                    sent.digest
                )));
            }
        }
        Target::Layout { dir, tag } => {
            let tag = tag
                .as_deref()
                .ok_or_else(|| PushError(format!("{target}: a push needs a tag (oci:DIR:TAG)")))?;
            for b in all {
                if layout::has_blob(dir, &b.layer.digest) {
                    sent.present += 1;
                    continue;
                }
                let mut body = b.open()?;
                layout::put_blob(dir, &b.layer.digest, b.layer.size, &mut body)?;
                sent.uploaded += 1;
            }
            layout::put_manifest(dir, tag, &manifest)?;
        }
    }
    Ok(sent)
}

/// Where an artifact is read from, once its manifest is read.
enum Remote<'a> {
    Registry(Box<client::Client>),
    Layout(&'a Path),
}

impl Remote<'_> {
    /// The blob `d` as a stream; the caller checks its size and digest.
    fn blob(&mut self, d: &Digest) -> Result<Box<dyn Read + '_>, PushError> {
        Ok(match self {
            Remote::Registry(c) => Box::new(c.blob(d)?),
            Remote::Layout(dir) => Box::new(layout::blob(dir, d)?),
        })
    }
}

/// An artifact's manifest as read: its digest, `artifactType` and layers.
struct Artifact {
    digest: Digest,
    artifact_type: Option<String>,
    layers: Vec<Layer>,
}

/// Reads the artifact manifest at `target` (checked against the digest it names, if any).
fn read_artifact(target: &Target, plain_http: bool) -> Result<(Remote<'_>, Artifact), PushError> {
    let (remote, bytes, wanted) = match target {
        Target::Registry(r) => {
            let mut c = client::Client::new(r, false, None, plain_http)?;
            let bytes = c.manifest(&r.reference(), MANIFEST_TYPE)?;
            let wanted = match &r.pick {
                Pick::Digest(d) => Some(d.clone()),
                Pick::Tag(_) => None,
            };
            (Remote::Registry(Box::new(c)), bytes, wanted)
        }
        Target::Layout { dir: l, tag } => {
            let (bytes, wanted) = layout::manifest(l, tag.as_deref())?;
            (Remote::Layout(l), bytes, wanted)
        }
    };
    let digest = Digest::of(&bytes);
    if let Some(w) = wanted.filter(|w| *w != digest) {
        return Err(PushError(format!(
            "{target}: the manifest's bytes are {digest}, not the {w} asked for"
        )));
    }
    let (artifact_type, layers) =
        parse_manifest(&bytes).map_err(|m| PushError(format!("{target}: {m}")))?;
    Ok((
        remote,
        Artifact {
            digest,
            artifact_type,
            layers,
        },
    ))
}

/// Pulls an artifact into `dir`: every file by its title, each checked by size and digest.
pub fn pull(target: &Target, dir: &Path, plain_http: bool) -> Result<Pulled, PushError> {
    let limits = NetLimits::from_env().map_err(PushError)?;
    let (mut remote, artifact) = read_artifact(target, plain_http)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| PushError(format!("cannot create {}: {e}", dir.display())))?;
    let mut pending = Vec::new();
    let mut files = Vec::new();
    for l in &artifact.layers {
        if l.size > limits.max_bytes {
            return Err(PushError(format!(
                "{target}: {} is {} bytes, over the download cap of {}",
                l.title,
                l.size,
                limits.cap_text()
            )));
        }
        let path = dir.join(&l.title);
        let mut p = Pending::create(&path)
            .map_err(|e| PushError(format!("cannot write {}: {e}", path.display())))?;
        let what = format!("{target}: {} ({})", l.title, l.digest);
        copy_checked(
            &mut remote.blob(&l.digest)?,
            p.file(),
            &l.digest,
            l.size,
            &what,
        )?;
        files.push((path, l.size));
        pending.push(p);
    }
    output::commit(pending)
        .map_err(|(p, e)| PushError(format!("cannot write {}: {e}", p.display())))?;
    Ok(Pulled {
        digest: artifact.digest,
        files,
    })
}

/// `http(s)://HOST/v2/REPO/blobs/DIGEST`.
pub fn blob_url(r: &RegistryRef, plain_http: bool, d: &Digest) -> String {
    let scheme = if plain_http || r.is_loopback() {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{}/v2/{}/blobs/{d}", r.api_host(), r.repo)
}

/// The artifact manifest: the config, then the layers in order.
fn manifest_json<'a>(
    artifact_type: &str,
    config: &Layer,
    layers: impl Iterator<Item = &'a Layer>,
) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .map(|l| {
            json!({
                "mediaType": l.media_type,
                "digest": l.digest.to_string(),
                "size": l.size,
                "annotations": { TITLE: l.title },
            })
        })
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": artifact_type,
        "config": {
            "mediaType": config.media_type,
            "digest": config.digest.to_string(),
            "size": config.size,
        },
        "layers": layers,
    });
    serde_json::to_vec(&m).expect("JSON values serialise")
}

/// The `artifactType` and layers of a pulled manifest, every title a plain file name and no
/// two the same.
fn parse_manifest(bytes: &[u8]) -> Result<(Option<String>, Vec<Layer>), String> {
    let m: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    match m.get("mediaType").and_then(Value::as_str) {
        Some(MANIFEST_TYPE) | None => {}
        Some(other) => {
            return Err(format!(
                "the manifest is a {other}, not an artifact manifest ({MANIFEST_TYPE})"
            ))
        }
    }
    let layers = m
        .get("layers")
        .and_then(Value::as_array)
        .ok_or("the manifest has no layers")?;
    let mut out: Vec<Layer> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let digest = l
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("layer {i} has no digest"))
            .and_then(|d| Digest::parse(d).map_err(|e| format!("layer {i}: {e}")))?;
        let size = l
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("layer {i} ({digest}) has no size"))?;
        let title = l
            .get("annotations")
            .and_then(|a| a.get(TITLE))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                format!("layer {i} ({digest}) has no {TITLE} annotation, so it names no file")
            })?;
        check_title(title).map_err(|m| format!("layer {i} ({digest}): {m}"))?;
        if out.iter().any(|o| o.title == title) {
            return Err(format!("two layers are named {title:?}"));
        }
        out.push(Layer {
            title: title.to_string(),
            media_type: l
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            digest,
            size,
        });
    }
    let artifact_type = m
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((artifact_type, out))
}

/// A title is written as a file name in the pull directory: one plain component.
pub fn check_title(t: &str) -> Result<(), String> {
    if t.is_empty() || t == "." || t == ".." || t.contains(['/', '\\', '\0']) || t.len() > 255 {
        return Err(format!(
            "the title {t:?} is not a plain file name (no '/', not '.' or '..')"
        ));
    }
    if output::is_temp_name(t) {
        return Err(format!(
            "the title {t:?} looks like a temporary file of fledge"
        ));
    }
    Ok(())
}

/// Copies `size` bytes from `r` to `w`, checking the size and digest.
fn copy_checked(
    r: &mut dyn Read,
    w: &mut File,
    d: &Digest,
    size: u64,
    what: &str,
) -> Result<(), PushError> {
    let mut out = Hashing::new(w);
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| PushError(format!("{what}: cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > size {
            return Err(PushError(format!(
                "{what}: more than the {size} bytes the manifest says"
            )));
        }
        out.write_all(&buf[..n])
            .map_err(|e| PushError(format!("{what}: cannot write: {e}")))?;
    }
    if got != size {
        return Err(PushError(format!(
            "{what}: {got} bytes, not the {size} the manifest says"
        )));
    }
    let found = Digest::from_bytes(out.digest());
    if found != *d {
        return Err(PushError(format!(
            "{what}: the bytes are {found}, not {d}: refused"
        )));
    }
    Ok(())
}

fn file_name(p: &Path) -> Result<String, PushError> {
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PushError(format!("{} has no file name in UTF-8", p.display())))?;
    check_title(name).map_err(|m| PushError(format!("{}: {m}", p.display())))?;
    Ok(name.to_string())
}

/// A file's layer: its digest, size and media type (given, or from its name and first bytes).
fn file_blob(p: &Path, media_type: Option<&str>) -> Result<Blob, PushError> {
    let title = file_name(p)?;
    let f = File::open(p).map_err(|e| PushError(format!("cannot read {}: {e}", p.display())))?;
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Err(PushError(format!("{} is not a regular file", p.display())));
    }
    let mut f = Hashing::new(f);
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| PushError(format!("cannot read {}: {e}", p.display())))?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16 - head.len())]);
        }
    }
    let size = f.passed();
    let media_type = match media_type {
        Some(m) => m.to_string(),
        None => media_type_of(&title, &head),
    };
    Ok(Blob {
        layer: Layer {
            title,
            media_type,
            digest: Digest::from_bytes(f.digest()),
            size,
        },
        data: Data::File(p.to_path_buf()),
    })
}

/// The media type of a file fledge carries, from its first bytes and name.
pub fn media_type_of(name: &str, head: &[u8]) -> String {
    if head.starts_with(b"hsqs") {
        return "application/vnd.fledge.rootfs.v1.squashfs".into();
    }
    if let Some(c) = detect(head) {
        return format!(
            "application/vnd.fledge.initramfs.v1.cpio{}",
            c.format().media_suffix
        );
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".spdx.json") {
        "application/spdx+json".into()
    } else if lower.ends_with(".cdx.json") {
        "application/vnd.cyclonedx+json".into()
    } else if lower.ends_with(".provenance.json") || lower.ends_with(".intoto.json") {
        "application/vnd.in-toto+json".into()
    } else if lower.ends_with(".manifest.json") {
        VOLANT_MANIFEST_TYPE.into()
    } else if lower.ends_with(".json") {
        "application/json".into()
    } else {
        "application/octet-stream".into()
    }
}

/// The other files `fledge build` wrote beside `manifest` (`NAME.manifest.json`):
/// `NAME.spdx.json`, `NAME.provenance.json` and a disk's `NAME.boot.cpio.gz`, those that exist.
fn companions(manifest: &Path) -> Vec<PathBuf> {
    let Some(name) = manifest
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".manifest.json"))
    else {
        return Vec::new();
    };
    ["spdx.json", "provenance.json", "boot.cpio.gz"]
        .iter()
        .map(|ext| manifest.with_file_name(format!("{name}.{ext}")))
        .filter(|p| p.is_file())
        .collect()
}

/// The Volant manifest JSON beside `image` whose `initramfs.checksum` (a disk's
/// `rootfs.checksum`) is `d`.
fn find_manifest(image: &Path, d: &Digest) -> Result<PathBuf, PushError> {
    let dir = match image.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| PushError(format!("cannot list {}: {e}", dir.display())))?;
    let mut found = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        let is_manifest = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".manifest.json"));
        if !is_manifest || !p.is_file() {
            continue;
        }
        let Some(json) = read_json(&p).ok() else {
            continue;
        };
        let sum = |key: &str| {
            json.pointer(key)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let names = [sum("/initramfs/checksum"), sum("/rootfs/checksum")];
        if names.contains(&Some(d.to_string())) {
            found.push(p);
        }
    }
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(PushError(format!(
            "no *.manifest.json beside {} has initramfs.checksum or rootfs.checksum {d}: build the image with `fledge build`, or name its manifest with --manifest FILE",
            image.display()
        ))),
        _ => Err(PushError(format!(
            "{} manifests beside {} describe it ({}): name one with --manifest FILE",
            found.len(),
            image.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn read_json(p: &Path) -> Result<Value, PushError> {
    let f = File::open(p).map_err(|e| PushError(format!("cannot read {}: {e}", p.display())))?;
    let mut bytes = Vec::new();
    f.take(crate::image::MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| PushError(format!("cannot read {}: {e}", p.display())))?;
    if bytes.len() as u64 > crate::image::MAX_JSON {
        return Err(PushError(format!("{} is larger than 8 MiB", p.display())));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| PushError(format!("{} is not JSON: {e}", p.display())))
}

/// The Volant manifest at `p` with `initramfs.url` (a disk's `rootfs.url`) set to `url`, as
/// fledge writes manifests.
fn with_url(p: &Path, url: &str) -> Result<Vec<u8>, PushError> {
    let mut json = read_json(p)?;
    let key = if json.get("rootfs").is_some() {
        "rootfs"
    } else {
        "initramfs"
    };
    let slot = json
        .get_mut(key)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| PushError(format!("{} has no initramfs or rootfs object", p.display())))?;
    slot.insert("url".into(), Value::String(url.to_string()));
    let mut bytes = serde_json::to_vec_pretty(&json).expect("JSON values serialise");
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_plain_names() {
        for bad in ["", ".", "..", "a/b", "../x", "/etc/passwd", "a\\b", "a\0b"] {
            assert!(check_title(bad).is_err(), "{bad:?}");
        }
        for good in ["plugin.cpio.gz", "caddy.manifest.json", "..x", "a b"] {
            assert!(check_title(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn manifests_round_trip_and_bad_ones_are_named() {
        let config = Layer {
            title: String::new(),
            media_type: EMPTY_CONFIG.into(),
            digest: Digest::of(b"{}"),
            size: 2,
        };
        let layers = [
            Layer {
                title: "plugin.cpio.gz".into(),
                media_type: media_type_of("plugin.cpio.gz", &[0x1f, 0x8b, 8]),
                digest: Digest::of(b"image"),
                size: 5,
            },
            Layer {
                title: "p.manifest.json".into(),
                media_type: VOLANT_MANIFEST_TYPE.into(),
                digest: Digest::of(b"{}\n"),
                size: 3,
            },
        ];
        let bytes = manifest_json(ARTIFACT_TYPE, &config, layers.iter());
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["artifactType"], ARTIFACT_TYPE);
        assert_eq!(json["config"]["mediaType"], EMPTY_CONFIG);
        assert_eq!(
            json["layers"][0]["mediaType"],
            "application/vnd.fledge.initramfs.v1.cpio+gzip"
        );
        assert_eq!(
            parse_manifest(&bytes).unwrap(),
            (Some(ARTIFACT_TYPE.to_string()), layers.to_vec())
        );
        let evil = String::from_utf8(bytes)
            .unwrap()
            .replace("p.manifest.json", "../p.manifest.json");
        let e = parse_manifest(evil.as_bytes()).unwrap_err();
        assert!(
            e.contains("layer 1") && e.contains("not a plain file name"),
            "{e}"
        );
        let twice = serde_json::to_vec(&json!({"layers": [
            json["layers"][0], json["layers"][0]
        ]}))
        .unwrap();
        assert!(parse_manifest(&twice).unwrap_err().contains("two layers"));
    }
}
