//! An OCI image layout directory as a push target and pull source: `oci-layout`,
//! `blobs/sha256/<hex>` and `index.json`, whose manifests are named by the
//! `org.opencontainers.image.ref.name` annotation. Every file is written atomically; a blob is
//! checked against its digest as it is written, and again when it is read back.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{copy_checked, PushError, ARTIFACT_TYPE, MANIFEST_TYPE};
use crate::image::Digest;
use crate::output::{self, Pending};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(d.hex())
}

/// Whether the layout holds blob `d` with the right bytes (read through, not into memory).
pub fn has_blob(dir: &Path, d: &Digest) -> bool {
    File::open(blob_path(dir, d))
        .and_then(crate::hashing::sha256_reader)
        .is_ok_and(|(digest, _)| Digest::from_bytes(digest) == *d)
}

/// Writes blob `d` (`size` bytes of `body`).
pub fn put_blob(dir: &Path, d: &Digest, size: u64, body: &mut dyn Read) -> Result<(), PushError> {
    let path = blob_path(dir, d);
    let fail = |e: std::io::Error| PushError(format!("cannot write {}: {e}", path.display()));
    let mut p = Pending::create(&path).map_err(fail)?;
    copy_checked(body, p.file(), d, size, &path.display().to_string())?;
    output::commit(vec![p]).map_err(|(_, e)| fail(e))
}

/// Writes the manifest as a blob and names it `tag` in `index.json` (replacing what had it).
pub fn put_manifest(dir: &Path, tag: &str, manifest: &[u8]) -> Result<(), PushError> {
    let d = Digest::of(manifest);
    put_blob(dir, &d, manifest.len() as u64, &mut &manifest[..])?;
    let layout = dir.join("oci-layout");
    if !layout.exists() {
        write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    let index_path = dir.join("index.json");
    let mut index = if index_path.exists() {
        read_index(dir)?
    } else {
        json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": []})
    };
    let list = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| PushError(format!("{} has no manifests list", index_path.display())))?;
    list.retain(|m| {
        m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1"))) != Some(&json!(tag))
    });
    list.push(json!({
        "mediaType": MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "digest": d.to_string(),
        "size": manifest.len(),
        "annotations": { REF_NAME: tag },
    }));
    let bytes = serde_json::to_vec(&index).expect("JSON values serialise");
    write(&index_path, &bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PushError> {
    output::write(path, bytes)
        .map_err(|e| PushError(format!("cannot write {}: {e}", path.display())))
}

fn read_index(dir: &Path) -> Result<Value, PushError> {
    let p = dir.join("index.json");
    let bytes =
        std::fs::read(&p).map_err(|e| PushError(format!("cannot read {}: {e}", p.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| PushError(format!("{} is not JSON: {e}", p.display())))
}

/// The manifest named `tag` (or the only one, without a tag): its bytes, and its digest from
/// the index, which the caller checks.
pub fn manifest(dir: &Path, tag: Option<&str>) -> Result<(Vec<u8>, Option<Digest>), PushError> {
    let index = read_index(dir)?;
    let list = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let named = |m: &&Value| {
        m.get("annotations")
            .and_then(|a| a.get(REF_NAME))
            .and_then(Value::as_str)
            == tag
    };
    let picked: Vec<&Value> = match tag {
        Some(_) => list.iter().filter(named).collect(),
        None => list.iter().collect(),
    };
    let where_ = format!("oci:{}", dir.display());
    let m = match picked.as_slice() {
        [m] => *m,
        [] => {
            return Err(PushError(format!(
                "{where_}: no manifest is named {:?}",
                tag.unwrap_or_default()
            )))
        }
        _ => {
            return Err(PushError(format!(
                "{where_}: {} manifests match: name one with oci:DIR:TAG",
                picked.len()
            )))
        }
    };
    let d = m
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| PushError(format!("{where_}: a manifest in index.json has no digest")))
        .and_then(|d| Digest::parse(d).map_err(|e| PushError(format!("{where_}: {e}"))))?;
    let mut bytes = Vec::new();
    blob(dir, &d)?
        .take(crate::image::MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| PushError(format!("{where_}: cannot read {d}: {e}")))?;
    Ok((bytes, Some(d)))
}

/// Blob `d` for reading; the caller checks it.
pub fn blob(dir: &Path, d: &Digest) -> Result<File, PushError> {
    let p = blob_path(dir, d);
    File::open(&p).map_err(|e| PushError(format!("cannot read {}: {e}", p.display())))
}
