//! A registry repository as a shared build cache: `fledge build --cache-from REF --cache-to REF`.
//!
//! This module owns the cache artifact: one OCI image manifest with `artifactType`
//! [`CACHE_ARTIFACT_TYPE`], the empty config, and one layer per cache entry the build used -
//! compressed segments ([`SEGMENT_TYPE`], titled `segment-<key>`, the cache file as it is on
//! disk) and uncompressed image layers ([`LAYER_TYPE`], titled `layer-<diff_id hex>`). Entries
//! are files of the local cache, so a fetched entry is checked the way a local one is: a
//! segment by its trailer and, before use, by decompressing it and comparing it with the
//! segment's own bytes; a layer by its digest, which must be its name (its `diff_id`). So a
//! cache can only save work, never change an image.
//!
//! Fetching never fails a build: a missing, unreachable or tampered cache, or an entry over a
//! bound, is skipped with a note. Storing pushes the entries used since the build started
//! (a use sets an entry's mtime) and replaces the tag.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{copy_checked, file_blob, read_artifact, send, PushError, Target, Upload};
use crate::compress::SegmentCache;
use crate::fetch::net::NetLimits;
use crate::output::{self, Pending};

/// The `artifactType` of a cache artifact.
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.fledge.cache.v1";
/// A compressed segment: a segment-cache file.
pub const SEGMENT_TYPE: &str = "application/vnd.fledge.cache.segment.v1";
/// An image layer's uncompressed tar.
pub const LAYER_TYPE: &str = "application/vnd.fledge.cache.layer.v1.tar";

/// What a fetch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Entries copied into the local cache, and their bytes.
    pub fetched: usize,
    pub bytes: u64,
    /// Entries the local cache already held.
    pub present: usize,
    /// Why entries (or the whole cache) were skipped, one sentence each.
    pub notes: Vec<String>,
}

/// What a store pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The cache manifest's digest; `None` when the build used no cache entry.
    pub digest: Option<crate::image::Digest>,
    pub entries: usize,
    pub uploaded: usize,
    pub present: usize,
}

/// An entry's kind and name from its title.
fn parse_title(title: &str) -> Option<(bool, &str)> {
    let (layer, hex) = if let Some(h) = title.strip_prefix("layer-") {
        (true, h)
    } else {
        (false, title.strip_prefix("segment-")?)
    };
    let keyed = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    keyed.then_some((layer, hex))
}

/// Copies every entry of the cache at `target` that `cache` lacks into it, within the
/// cache's bound. Problems are notes, never errors.
pub fn fetch(target: &Target, cache: &SegmentCache, plain_http: bool) -> Fetched {
    let mut out = Fetched::default();
    if cache.limit() == 0 {
        out.notes.push(format!(
            "--cache-from {target}: the cache is off ({}=0), nothing fetched",
            crate::compress::LIMIT_ENV
        ));
        return out;
    }
    let (mut remote, artifact) = match read_artifact(target, plain_http) {
        Ok(r) => r,
        Err(e) => {
            out.notes.push(format!(
                "--cache-from {target}: not used, building without it: {e}"
            ));
            return out;
        }
    };
    if artifact.artifact_type.as_deref() != Some(CACHE_ARTIFACT_TYPE) {
        out.notes.push(format!(
            "--cache-from {target}: not used: its artifactType is {:?}, not {CACHE_ARTIFACT_TYPE}",
            artifact.artifact_type.unwrap_or_default()
        ));
        return out;
    }
    let segment_cap = NetLimits::from_env().map_or(u64::MAX, |l| l.max_bytes);
    let layer_cap = crate::image::layer::limit().unwrap_or(crate::image::layer::DEFAULT_LIMIT);
    let mut room = cache.limit();
    for l in &artifact.layers {
        let skip = |why: String| format!("--cache-from {target}: {} skipped: {why}", l.title);
        let Some((is_layer, hex)) = parse_title(&l.title) else {
            out.notes.push(skip(
                "the title is neither segment-<sha256 hex> nor layer-<sha256 hex>".into(),
            ));
            continue;
        };
        let dir = if is_layer {
            cache.layer_dir()
        } else {
            cache.dir()
        };
        let dest = dir.join(hex);
        if dest.is_file() {
            out.present += 1;
            continue;
        }
        if is_layer && l.digest.hex() != hex {
            out.notes.push(skip(format!(
                "its digest {} is not the diff_id its name says",
                l.digest
            )));
            continue;
        }
        let cap = if is_layer { layer_cap } else { segment_cap };
        if l.size > cap || l.size > room {
            out.notes.push(skip(format!(
                "{} bytes do not fit the cache's bound ({} left) or the size limit",
                l.size, room
            )));
            continue;
        }
        match fetch_one(&mut remote, l, &dest) {
            Ok(()) => {
                room -= l.size;
                out.fetched += 1;
                out.bytes += l.size;
            }
            Err(e) => out.notes.push(skip(e.0)),
        }
    }
    out
}

/// Downloads one entry into the cache, checked against its descriptor.
fn fetch_one(remote: &mut super::Remote, l: &super::Layer, dest: &Path) -> Result<(), PushError> {
    let mut p = Pending::cache_entry(dest)
        .map_err(|e| PushError(format!("cannot write {}: {e}", dest.display())))?;
    copy_checked(
        &mut remote.blob(&l.digest)?,
        p.file(),
        &l.digest,
        l.size,
        "the blob",
    )?;
    // Fetched is not used: the build marks what it uses, and only that goes to --cache-to.
    let _ = p
        .file()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    output::commit(vec![p])
        .map_err(|(p, e)| PushError(format!("cannot write {}: {e}", p.display())))
}

/// Pushes the entries of `cache` used since `since` to `target` as the cache artifact.
pub fn store(
    target: &Target,
    cache: &SegmentCache,
    since: SystemTime,
    plain_http: bool,
) -> Result<Stored, PushError> {
    // File times come from a clock that may lag the one `since` was read from.
    let since = since.checked_sub(Duration::from_secs(1)).unwrap_or(since);
    let used = cache.used_since(since).map_err(|e| {
        PushError(format!(
            "--cache-to {target}: cannot list the cache {}: {e}",
            cache.dir().display()
        ))
    })?;
    let mut blobs = Vec::with_capacity(used.len());
    for (path, is_layer) in &used {
        let (kind, media_type) = if *is_layer {
            ("layer", LAYER_TYPE)
        } else {
            ("segment", SEGMENT_TYPE)
        };
        let mut b = file_blob(path, Some(media_type))?;
        b.layer.title = format!("{kind}-{}", b.layer.title);
        blobs.push(b);
    }
    if blobs.is_empty() {
        return Ok(Stored {
            digest: None,
            entries: 0,
            uploaded: 0,
            present: 0,
        });
    }
    let sent = send(
        target,
        &blobs,
        CACHE_ARTIFACT_TYPE,
        &Upload {
            chunk: super::DEFAULT_CHUNK,
            mount_from: None,
            plain_http,
        },
    )?;
    Ok(Stored {
        digest: Some(sent.digest),
        entries: blobs.len(),
        uploaded: sent.uploaded,
        present: sent.present,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_name_a_kind_and_a_sha256() {
        let hex = "a".repeat(64);
        assert_eq!(
            parse_title(&format!("layer-{hex}")),
            Some((true, hex.as_str()))
        );
        assert_eq!(
            parse_title(&format!("segment-{hex}")),
            Some((false, hex.as_str()))
        );
        for bad in [
            format!("blob-{hex}"),
            format!("layer-{}", "A".repeat(64)),
            format!("segment-{}", &hex[1..]),
            format!("segment-../{}", &hex[3..]),
            "layer-".into(),
        ] {
            assert_eq!(parse_title(&bad), None, "{bad}");
        }
    }
}
