//! From a reference to a checked manifest, config and cached layers, whatever the transport.
//!
//! Every transport gives blobs by digest ([`Blobs`]); this module walks index -> manifest for
//! the wanted platform -> config -> layers, checking each blob against the digest that names it,
//! and fills the layer cache. `docker save` archives have no manifests by digest and are read
//! by [`super::oci::docker_archive`], which ends in [`layers`] too.

use std::io::Read;
use std::path::Path;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::workload::ImageConfig;
use super::{layer, oci, registry, Digest, ImageRef, LayerInfo, Platform, Problem, Spec, MAX_JSON};

/// Nested indexes followed at most.
const MAX_DEPTH: usize = 4;

/// A manifest, its config and its layers, all checked and cached.
#[derive(Debug)]
pub struct Resolved {
    pub digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<LayerInfo>,
}

/// Where a transport's blobs come from.
pub trait Blobs {
    /// The bytes of a manifest or index (at most [`MAX_JSON`]), not yet checked.
    fn manifest(&mut self, d: &Digest) -> Result<Vec<u8>, Problem>;
    /// A blob's bytes as a stream, not yet checked; `size` is its descriptor's.
    fn blob(&mut self, d: &Digest, size: Option<u64>) -> Result<Box<dyn Read>, Problem>;
    /// The bytes of an image config (at most [`MAX_JSON`]), checked.
    fn config(&mut self, d: &Digest) -> Result<Vec<u8>, Problem> {
        read_checked(self.blob(d, None)?, d, "image config")
    }
}

/// Resolves `spec` to its manifest, config and cached layers.
pub fn resolve(spec: &Spec, cache: &Path, network: bool) -> Result<Resolved, Problem> {
    match &spec.reference {
        ImageRef::OciDir { dir, tag } => {
            let mut src = oci::Dir::open(dir)?;
            let root =
                oci::pick_from_index(&src.index()?, tag.as_deref(), &dir.display().to_string())?;
            finish(&mut src, &descriptor_digest(&root)?, &spec.platform, cache)
        }
        ImageRef::OciArchive { file, tag } => {
            let mut src = oci::Archive::open(file)?;
            let root =
                oci::pick_from_index(&src.index()?, tag.as_deref(), &file.display().to_string())?;
            finish(&mut src, &descriptor_digest(&root)?, &spec.platform, cache)
        }
        ImageRef::DockerArchive { file, name } => {
            oci::docker_archive(file, name.as_deref(), &spec.platform, cache)
        }
        ImageRef::Registry(r) => registry::resolve(r, spec, cache, network),
    }
}

/// From the digest of a manifest or index to a resolved image.
pub fn finish(
    src: &mut dyn Blobs,
    root: &Digest,
    platform: &Platform,
    cache: &Path,
) -> Result<Resolved, Problem> {
    let (digest, manifest) = pick_manifest(src, root, platform)?;
    let config_digest = descriptor_digest(manifest.config())?;
    let config_bytes = src.config(&config_digest)?;
    let (config, diff_ids) = parse_config(&config_bytes, platform)?;
    let blobs: Vec<Digest> = manifest
        .layers()
        .iter()
        .map(descriptor_digest)
        .collect::<Result<_, _>>()?;
    let sizes: Vec<u64> = manifest.layers().iter().map(|d| d.size()).collect();
    let named: Vec<Option<Digest>> = blobs.iter().cloned().map(Some).collect();
    let layers = layers(&named, &diff_ids, cache, |i| {
        // No more than the descriptor says, whatever the transport.
        let blob = src.blob(&blobs[i], Some(sizes[i]))?;
        Ok(Box::new(Capped {
            inner: blob,
            left: sizes[i],
            size: sizes[i],
        }) as Box<dyn Read>)
    })?;
    Ok(Resolved {
        digest,
        config,
        layers,
    })
}

/// A blob read no further than its descriptor's size: one byte more is an error.
struct Capped {
    inner: Box<dyn Read>,
    left: u64,
    size: u64,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left + 1).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(layer::Oversized(self.size)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Makes sure every layer is in the cache: `open(i)` gives the blob of layer `i`, whose
/// compressed digest is `blobs[i]` (`None` where only the `diff_id` is known).
pub fn layers<F>(
    blobs: &[Option<Digest>],
    diff_ids: &[Digest],
    cache: &Path,
    mut open: F,
) -> Result<Vec<LayerInfo>, Problem>
where
    F: FnMut(usize) -> Result<Box<dyn Read>, Problem>,
{
    if blobs.len() != diff_ids.len() {
        return Err(Problem::Invalid(format!(
            "the manifest lists {} layers but the config's rootfs.diff_ids {}",
            blobs.len(),
            diff_ids.len()
        )));
    }
    let mut out = Vec::with_capacity(diff_ids.len());
    for (i, (blob, diff_id)) in blobs.iter().zip(diff_ids).enumerate() {
        let path = layer::cached_path(cache, diff_id);
        let mut listing = None;
        if path.is_file() {
            log::debug!("layer {}: {diff_id} is cached", i + 1);
            // A use, for the cache's least-recently-used pruning; failing only ages it.
            if let Ok(f) = std::fs::File::open(&path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
        } else {
            log::info!("layer {}/{}: {}", i + 1, diff_ids.len(), diff_id.short());
            listing = Some(layer::unpack(open(i)?, i, blob.as_ref(), diff_id, cache)?.1);
        }
        out.push(LayerInfo {
            diff_id: diff_id.clone(),
            path,
            listing,
        });
    }
    Ok(out)
}

/// Follows indexes to the manifest for `platform`; returns its digest and contents.
fn pick_manifest(
    src: &mut dyn Blobs,
    root: &Digest,
    platform: &Platform,
) -> Result<(Digest, ImageManifest), Problem> {
    let mut digest = root.clone();
    for _ in 0..MAX_DEPTH {
        let bytes = src.manifest(&digest)?;
        check(&bytes, &digest, "manifest")?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Problem::Invalid(format!("manifest {digest} is not JSON: {e}")))?;
        if json.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
            return Err(Problem::Invalid(format!(
                "manifest {digest} is Docker schema 1, which is deprecated and not read: push the image again with a current tool"
            )));
        }
        if json.get("manifests").is_some() {
            let index = ImageIndex::from_reader(&bytes[..]).map_err(|e| {
                Problem::Invalid(format!("index {digest} is not an image index: {}", why(e)))
            })?;
            digest = pick_platform(&index, platform, &digest)?;
            continue;
        }
        let manifest = ImageManifest::from_reader(&bytes[..]).map_err(|e| {
            Problem::Invalid(format!(
                "manifest {digest} is not an image manifest: {}",
                why(e)
            ))
        })?;
        return Ok((digest, manifest));
    }
    Err(Problem::Invalid(format!(
        "indexes nest more than {MAX_DEPTH} deep"
    )))
}

/// The manifest of `index` for `platform`.
fn pick_platform(index: &ImageIndex, want: &Platform, at: &Digest) -> Result<Digest, Problem> {
    let mut seen = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        let variant = p.variant().clone();
        seen.push(match &variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
        if os == want.os && arch == want.arch && (want.variant.is_none() || variant == want.variant)
        {
            return descriptor_digest(m);
        }
    }
    Err(Problem::Invalid(format!(
        "index {at} has no image for {want} (it has: {}); set `source.image_platform` to one of them",
        if seen.is_empty() { "none with a platform".to_string() } else { crate::util::listed(&seen, ", ") }
    )))
}

/// The config's workload fields and its layers' `diff_id`s.
pub fn parse_config(
    bytes: &[u8],
    platform: &Platform,
) -> Result<(ImageConfig, Vec<Digest>), Problem> {
    let cfg = ImageConfiguration::from_reader(bytes)
        .map_err(|e| Problem::Invalid(format!("the image config is not valid: {}", why(e))))?;
    let (os, arch) = (cfg.os().to_string(), cfg.architecture().to_string());
    if os != platform.os || arch != platform.arch {
        log::warn!("the image is for {os}/{arch}, not {platform}; it may not run in the guest");
    }
    let diff_ids = cfg
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            Digest::parse(d)
                .map_err(|e| Problem::Invalid(format!("the image config's rootfs.diff_ids: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ImageConfig::from_oci(&cfg), diff_ids))
}

/// What is wrong with an OCI document, in the parser's words (its JSON error names the line
/// and column; the library's own text is only "serde failed").
pub fn why(e: oci_spec::OciSpecError) -> String {
    match e {
        oci_spec::OciSpecError::SerDe(e) => e.to_string(),
        oci_spec::OciSpecError::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// The sha256 digest of a descriptor (other algorithms are refused).
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, Problem> {
    Digest::parse(d.digest().as_ref())
        .map_err(|e| Problem::Invalid(format!("a descriptor names {e}")))
}

/// Reads a small blob whole (at most [`MAX_JSON`]) and checks its digest.
pub fn read_checked(r: impl Read, d: &Digest, what: &str) -> Result<Vec<u8>, Problem> {
    let mut bytes = Vec::new();
    r.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Problem::Invalid(format!("cannot read {what} {d}: {e}")))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(Problem::Invalid(format!(
            "{what} {d} is larger than {MAX_JSON} bytes"
        )));
    }
    check(&bytes, d, what)?;
    Ok(bytes)
}

/// Fails unless `bytes` hash to `d`.
pub fn check(bytes: &[u8], d: &Digest, what: &str) -> Result<(), Problem> {
    let actual = Digest::of(bytes);
    if actual != *d {
        return Err(Problem::Digest {
            what: format!("{what} {d}"),
            actual: actual.to_string(),
        });
    }
    Ok(())
}
