//! `fledge verify`: checks an image against what its build wrote beside it, and optionally
//! rebuilds it from its provenance.
//!
//! This module owns the checks and their order: every file of the image against the SBOM's
//! file entries (digest, nothing missing or extra), then the image's sha256 against the SBOM's
//! image package, the manifest's `initramfs.checksum` and the provenance's subject. The first
//! difference is the error, one line naming the file that differs. `--rebuild` runs the build
//! the provenance's external parameters describe into a temporary directory, offline from the
//! cache, and compares the bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::inspect::reader;

/// Largest SBOM, manifest or provenance read.
const MAX_JSON: u64 = 512 << 20;

/// A check that failed: one sentence naming the file and the first difference.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {problem}", path.display())]
    Differs { path: PathBuf, problem: String },
    #[error("{}: no {what} beside it ({}): pass {flag}", image.display(), looked.display())]
    Missing {
        image: PathBuf,
        what: &'static str,
        looked: PathBuf,
        flag: &'static str,
    },
    #[error("rebuilding {} failed: {source}", image.display())]
    Rebuild {
        image: PathBuf,
        source: Box<crate::Error>,
    },
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub image: PathBuf,
    /// Default: `<name>.manifest.json` of the provenance, else the manifest naming the image.
    pub manifest: Option<PathBuf>,
    /// Default: `<name>.spdx.json` beside the image.
    pub sbom: Option<PathBuf>,
    /// Default: the `*.provenance.json` beside the image whose subject names it.
    pub provenance: Option<PathBuf>,
    /// Rebuild from the provenance and compare the bytes.
    pub rebuild: bool,
    /// The cache a rebuild reads.
    pub cache_dir: Option<PathBuf>,
}

/// What was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sha256: String,
    /// Files compared with the SBOM.
    pub files: usize,
    pub sbom: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    pub provenance: Option<PathBuf>,
    pub rebuilt: bool,
}

/// Runs the checks `req` asks for; the first difference is the error.
pub fn verify(req: &Request) -> Result<Report, VerifyError> {
    let image = &req.image;
    let sha256 = file_sha256(image)?;
    let provenance = match &req.provenance {
        Some(p) => Some(p.clone()),
        None => provenance_beside(image),
    };
    let stem = provenance.as_deref().and_then(|p| {
        let n = p.file_name()?.to_str()?;
        Some(n.strip_suffix(".provenance.json")?.to_string())
    });
    let dir = std::path::absolute(image)
        .ok()
        .and_then(|a| a.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let named = |suffix: &str| {
        stem.as_ref()
            .map(|s| dir.join(format!("{s}{suffix}")))
            .filter(|p| p.exists())
    };
    let sbom = req.sbom.clone().or_else(|| named(".spdx.json"));
    let manifest = req
        .manifest
        .clone()
        .or_else(|| named(".manifest.json"))
        .or_else(|| crate::run::plugin::beside(image));
    if sbom.is_none() && manifest.is_none() && provenance.is_none() {
        return Err(VerifyError::Missing {
            image: image.clone(),
            what: "SBOM, manifest or provenance",
            looked: dir,
            flag: "--sbom, --manifest or --provenance",
        });
    }
    let mut files = 0;
    if let Some(s) = &sbom {
        files = check_sbom(image, s, &sha256)?;
    }
    if let Some(m) = &manifest {
        check_manifest(image, m, &sha256)?;
    }
    let mut rebuilt = false;
    if let Some(p) = &provenance {
        let read = check_provenance(image, p, &sha256)?;
        if req.rebuild {
            rebuild(req, &read, &sha256)?;
            rebuilt = true;
        }
    } else if req.rebuild {
        return Err(VerifyError::Missing {
            image: image.clone(),
            what: "provenance to rebuild from",
            looked: dir,
            flag: "--provenance",
        });
    }
    Ok(Report {
        sha256,
        files,
        sbom,
        manifest,
        provenance,
        rebuilt,
    })
}

fn file_sha256(path: &Path) -> Result<String, VerifyError> {
    let err = |source| VerifyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(err)?;
    Ok(hex::encode(
        crate::hashing::sha256_reader(&mut f).map_err(err)?.0,
    ))
}

fn read_json(path: &Path) -> Result<Value, VerifyError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(MAX_JSON).read_to_string(&mut text))
        .map_err(|source| VerifyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    serde_json::from_str(&text).map_err(|e| VerifyError::Differs {
        path: path.to_path_buf(),
        problem: format!("is not JSON: {e}"),
    })
}

/// The `*.provenance.json` beside `image` whose subject is the image's file name.
fn provenance_beside(image: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(image).ok()?;
    let name = abs.file_name()?.to_str()?.to_string();
    let mut found: Vec<PathBuf> = std::fs::read_dir(abs.parent()?)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.to_str().is_some_and(|s| s.ends_with(".provenance.json"))
                && std::fs::read_to_string(p)
                    .ok()
                    .and_then(|t| crate::provenance::read(&t).ok())
                    .is_some_and(|r| r.subject.0 == name)
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Every regular file of the image against the SBOM's file entries; returns how many.
fn check_sbom(image: &Path, sbom: &Path, sha256: &str) -> Result<usize, VerifyError> {
    let doc = read_json(sbom)?;
    let differs = |path: &Path, problem: String| VerifyError::Differs {
        path: path.to_path_buf(),
        problem,
    };
    let described = doc["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["SPDXID"] == "SPDXRef-Image"))
        .and_then(|p| sha256_of(&p["checksums"]));
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    for f in doc["files"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = f["fileName"].as_str().unwrap_or_default();
        let path = name.strip_prefix('.').unwrap_or(name).to_string();
        let Some(d) = sha256_of(&f["checksums"]) else {
            return Err(differs(
                sbom,
                format!("lists {path} without a SHA256 checksum"),
            ));
        };
        listed.insert(path, d);
    }
    let held = image_files(image)?;
    for (path, digest) in &held {
        match listed.get(path) {
            None => {
                return Err(differs(
                    image,
                    format!("holds {path}, which {} does not list", sbom.display()),
                ))
            }
            Some(d) if d != digest => {
                return Err(differs(
                    image,
                    format!(
                        "{path} has sha256 {digest}, but {} says {d}",
                        sbom.display()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(path) = listed.keys().find(|p| !held.contains_key(*p)) {
        return Err(differs(
            sbom,
            format!("lists {path}, which {} does not hold", image.display()),
        ));
    }
    match described {
        Some(d) if d == sha256 => Ok(held.len()),
        Some(d) => Err(differs(
            image,
            format!(
                "has sha256 {sha256}, but {} describes an image of sha256 {d}",
                sbom.display()
            ),
        )),
        None => Err(differs(
            sbom,
            "has no SPDXRef-Image package with a SHA256 checksum".into(),
        )),
    }
}

fn sha256_of(checksums: &Value) -> Option<String> {
    checksums.as_array()?.iter().find_map(|c| {
        (c["algorithm"] == "SHA256").then(|| c["checksumValue"].as_str().map(str::to_string))?
    })
}

/// The sha256 of every regular file the kernel would create from `image` (a hardlink group's
/// members all get its body's digest; a later entry of a path replaces an earlier).
pub fn image_files(image: &Path) -> Result<BTreeMap<String, String>, VerifyError> {
    let err = |source| VerifyError::Read {
        path: image.to_path_buf(),
        source,
    };
    let mut f = File::open(image).map_err(err)?;
    let squashfs = crate::inspect::is_squashfs(&mut f).map_err(err)?;
    let mut files: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut groups: BTreeMap<reader::LinkGroup, (Vec<String>, Option<String>)> = BTreeMap::new();
    let mut sink = |e: &reader::Entry<'_>| {
        let path = String::from_utf8_lossy(e.path).into_owned();
        if crate::inspect::file_type(e.mode) != crate::inspect::FileType::File {
            files.remove(&path);
            return Ok(());
        }
        let digest = e.sha256.map(hex::encode);
        match e.link_group {
            Some(g) => {
                let (members, body) = groups.entry(g).or_default();
                members.push(path.clone());
                if e.size > 0 || body.is_none() {
                    *body = digest.filter(|_| e.size > 0).or(body.take());
                }
                files.insert(path, None);
            }
            None => {
                files.insert(path, digest);
            }
        }
        Ok(())
    };
    let walked = if squashfs {
        crate::squashfs::read::walk(f, true, &mut sink).map(|_| ())
    } else {
        reader::walk_hashing(f, &mut sink).map(|_| ())
    };
    walked.map_err(|e| match e {
        reader::WalkError::Read(source) | reader::WalkError::Sink(source) => err(source),
        reader::WalkError::Format(problem) => VerifyError::Differs {
            path: image.to_path_buf(),
            problem,
        },
    })?;
    let empty = hex::encode(Sha256::digest(b""));
    for (members, body) in groups.into_values() {
        for m in members {
            if let Some(slot) = files.get_mut(&m) {
                if slot.is_none() {
                    *slot = Some(body.clone().unwrap_or_else(|| empty.clone()));
                }
            }
        }
    }
    Ok(files
        .into_iter()
        .map(|(p, d)| (p, d.unwrap_or_else(|| empty.clone())))
        .collect())
}

fn check_manifest(image: &Path, manifest: &Path, sha256: &str) -> Result<(), VerifyError> {
    let m = read_json(manifest)?;
    let key = if m.get("rootfs").is_some() {
        "rootfs"
    } else {
        "initramfs"
    };
    let Some(sum) = m[key]["checksum"].as_str() else {
        return Err(VerifyError::Differs {
            path: manifest.to_path_buf(),
            problem: format!("has no {key}.checksum"),
        });
    };
    if sum.strip_prefix("sha256:") == Some(sha256) {
        return Ok(());
    }
    Err(VerifyError::Differs {
        path: image.to_path_buf(),
        problem: format!(
            "has sha256 {sha256}, but {key}.checksum of {} is {sum}",
            manifest.display()
        ),
    })
}

fn check_provenance(
    image: &Path,
    provenance: &Path,
    sha256: &str,
) -> Result<crate::provenance::Read, VerifyError> {
    let text = read_json(provenance)?.to_string();
    let read = crate::provenance::read(&text).map_err(|problem| VerifyError::Differs {
        path: provenance.to_path_buf(),
        problem,
    })?;
    if read.subject.1 != sha256 {
        return Err(VerifyError::Differs {
            path: image.to_path_buf(),
            problem: format!(
                "has sha256 {sha256}, but the subject of {} is sha256 {}",
                provenance.display(),
                read.subject.1
            ),
        });
    }
    Ok(read)
}

/// Runs the build the provenance describes into a temporary directory, offline from the
/// cache, and compares its bytes with the image's.
fn rebuild(req: &Request, read: &crate::provenance::Read, sha256: &str) -> Result<(), VerifyError> {
    let p = &read.parameters;
    let image = &req.image;
    let bad = |what: &str| VerifyError::Differs {
        path: req.provenance.clone().unwrap_or_else(|| image.clone()),
        problem: format!("has no build parameter {what} to rebuild from"),
    };
    let config = p["config"].as_str().ok_or_else(|| bad("config"))?;
    let output = p["output"].as_str().ok_or_else(|| bad("output"))?;
    let tmp =
        crate::output::ScratchDir::new("fledge-verify").map_err(|source| VerifyError::Read {
            path: std::env::temp_dir(),
            source,
        })?;
    let mut build = crate::pipeline::Request::new(config, tmp.path().join(output));
    build.manifest = p["manifest"].as_str().map(PathBuf::from);
    build.compression = p["compression"]
        .as_str()
        .and_then(crate::compress::Compression::from_name);
    build.level = p["level"].as_i64().and_then(|l| i32::try_from(l).ok());
    build.dedup = p["dedup"].as_bool().unwrap_or(true);
    build.url = p["url"].as_str().map(str::to_string);
    build.base_url = p["base_url"].as_str().map(str::to_string);
    build.epoch = p["source_date_epoch"]
        .as_u64()
        .and_then(|e| u32::try_from(e).ok());
    if let Some(c) = &req.cache_dir {
        build.cache_dir = c.clone();
    }
    let report = crate::pipeline::build(&build).map_err(|e| VerifyError::Rebuild {
        image: image.clone(),
        source: Box::new(e),
    })?;
    if report.sha256 == sha256 {
        return Ok(());
    }
    // Name the first file that differs, when the rebuild's SBOM can tell.
    let first = report.sbom.as_ref().and_then(|_| {
        let (mine, theirs) = (
            image_files(image).ok()?,
            image_files(&report.artifact).ok()?,
        );
        mine.iter()
            .find(|(p, d)| theirs.get(*p) != Some(d))
            .map(|(p, _)| p.clone())
            .or_else(|| theirs.keys().find(|p| !mine.contains_key(*p)).cloned())
    });
    let input = std::fs::read_to_string(&report.provenance)
        .ok()
        .and_then(|t| crate::provenance::read(&t).ok())
        .and_then(|now| crate::provenance::changed_input(read, &now));
    let detail = match (first, input) {
        (Some(f), Some(i)) => format!(" (first difference: {f}; {i})"),
        (Some(f), None) => format!(" (first difference: {f})"),
        (None, Some(i)) => format!(" ({i})"),
        (None, None) => String::new(),
    };
    Err(VerifyError::Differs {
        path: image.to_path_buf(),
        problem: format!(
            "has sha256 {sha256}, but rebuilding it from {config} gives sha256 {}{detail}",
            report.sha256
        ),
    })
}
