//! Images on this machine: OCI image layouts (a directory or the same in a tar file) and the
//! archives `docker save` and `podman save` write, read in place.
//!
//! A tar file is indexed once (name -> offset and size of its body); blobs are then read from
//! their offsets, so nothing is unpacked. Names inside archives come from the archive and are
//! only ever looked up in that index, never joined to a host path; in a layout directory the
//! only paths opened are `index.json`, `oci-layout` and `blobs/sha256/<64 hex>`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};
use serde::Deserialize;

use super::resolve::{self, Blobs, Resolved};
use super::{Digest, Platform, Problem, MAX_JSON};

/// The annotation naming a manifest in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Most members an image archive may have.
const MAX_MEMBERS: usize = 100_000;

fn read_err(path: &Path) -> impl Fn(io::Error) -> Problem + '_ {
    move |source| Problem::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// An OCI image layout directory.
pub struct Dir {
    root: PathBuf,
}

impl Dir {
    pub fn open(root: &Path) -> Result<Dir, Problem> {
        let meta = std::fs::metadata(root).map_err(read_err(root))?;
        if !meta.is_dir() {
            return Err(Problem::Invalid(format!(
                "{} is not a directory: for a tar file write \"oci-archive:{}\"",
                root.display(),
                root.display()
            )));
        }
        Ok(Dir {
            root: root.to_path_buf(),
        })
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<ImageIndex, Problem> {
        let path = self.root.join("index.json");
        let f = File::open(&path).map_err(read_err(&path))?;
        parse_index(f, &path.display().to_string())
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }
}

impl Blobs for Dir {
    fn manifest(&mut self, d: &Digest) -> Result<Vec<u8>, Problem> {
        let path = self.blob_path(d);
        read_json(
            File::open(&path).map_err(read_err(&path))?,
            &path.display().to_string(),
        )
    }

    fn blob(&mut self, d: &Digest, _size: Option<u64>) -> Result<Box<dyn Read>, Problem> {
        let path = self.blob_path(d);
        Ok(Box::new(File::open(&path).map_err(read_err(&path))?))
    }
}

/// A tar file read in place through an index of its members.
pub struct Archive {
    path: PathBuf,
    members: HashMap<String, (u64, u64)>,
}

impl Archive {
    /// Indexes the tar at `path`.
    pub fn open(path: &Path) -> Result<Archive, Problem> {
        let mut f = File::open(path).map_err(read_err(path))?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).map_err(read_err(path))?;
        if n >= 2 && (magic[..2] == [0x1f, 0x8b] || magic == [0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(Problem::Invalid(format!(
                "{} is compressed: decompress it first (gunzip or unzstd), image archives are plain tar files",
                path.display()
            )));
        }
        f.rewind().map_err(read_err(path))?;
        let bad = |e: io::Error| {
            Problem::Invalid(format!("{} is not a tar archive: {e}", path.display()))
        };
        let mut archive = tar::Archive::new(f);
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            if !matches!(
                entry.header().entry_type(),
                tar::EntryType::Regular | tar::EntryType::Continuous
            ) {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = name.trim_start_matches("./").to_string();
            members.insert(name, (entry.raw_file_position(), entry.size()));
            if members.len() > MAX_MEMBERS {
                return Err(Problem::Invalid(format!(
                    "{} has more than {MAX_MEMBERS} members, which no image archive has",
                    path.display()
                )));
            }
        }
        Ok(Archive {
            path: path.to_path_buf(),
            members,
        })
    }

    /// The body of member `name`.
    fn member(&self, name: &str) -> Result<Box<dyn Read>, Problem> {
        let &(offset, size) = self
            .members
            .get(name.trim_start_matches("./"))
            .ok_or_else(|| {
                Problem::Invalid(format!("{} has no member {name:?}", self.path.display()))
            })?;
        let mut f = File::open(&self.path).map_err(read_err(&self.path))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(read_err(&self.path))?;
        Ok(Box::new(f.take(size)))
    }

    fn where_(&self, name: &str) -> String {
        format!("{}:{name}", self.path.display())
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<ImageIndex, Problem> {
        parse_index(self.member("index.json")?, &self.where_("index.json"))
    }
}

impl Blobs for Archive {
    fn manifest(&mut self, d: &Digest) -> Result<Vec<u8>, Problem> {
        let name = format!("blobs/sha256/{}", d.hex());
        read_json(self.member(&name)?, &self.where_(&name))
    }

    fn blob(&mut self, d: &Digest, _size: Option<u64>) -> Result<Box<dyn Read>, Problem> {
        self.member(&format!("blobs/sha256/{}", d.hex()))
    }
}

fn read_json(r: impl Read, what: &str) -> Result<Vec<u8>, Problem> {
    let mut bytes = Vec::new();
    r.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Problem::Invalid(format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(Problem::Invalid(format!(
            "{what} is larger than {MAX_JSON} bytes"
        )));
    }
    Ok(bytes)
}

fn parse_index(r: impl Read, what: &str) -> Result<ImageIndex, Problem> {
    let bytes = read_json(r, what)?;
    ImageIndex::from_reader(&bytes[..]).map_err(|e| {
        Problem::Invalid(format!(
            "{what} is not an OCI image index: {}",
            resolve::why(e)
        ))
    })
}

/// The entry of a layout's `index.json` that `tag` names (or the only one).
pub fn pick_from_index(
    index: &ImageIndex,
    tag: Option<&str>,
    at: &str,
) -> Result<Descriptor, Problem> {
    let name = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    let all = index.manifests();
    let found = match tag {
        Some(t) => all.iter().find(|d| name(d).as_deref() == Some(t)),
        None if all.len() == 1 => all.first(),
        None => None,
    };
    if let Some(d) = found {
        return Ok(d.clone());
    }
    let names: Vec<String> = all.iter().filter_map(name).collect();
    let listed = if names.is_empty() {
        "no tags".to_string()
    } else {
        crate::util::listed(&names, ", ")
    };
    Err(Problem::Invalid(match tag {
        Some(t) => format!("{at} has no image tagged {t:?} (it has: {listed})"),
        None if all.is_empty() => format!("{at} holds no image"),
        None => format!(
            "{at} holds {} images: add one of its tags ({listed}) after a `:`",
            all.len()
        ),
    }))
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Reads a `docker save` / `podman save` archive: `manifest.json` names the config and the
/// layer files; the config's `diff_ids` check the layers.
pub fn docker_archive(
    path: &Path,
    name: Option<&str>,
    platform: &Platform,
    cache: &Path,
) -> Result<Resolved, Problem> {
    let archive = Archive::open(path)?;
    let list_bytes = read_json(
        archive.member("manifest.json")?,
        &archive.where_("manifest.json"),
    )?;
    let list: Vec<SavedImage> = serde_json::from_slice(&list_bytes).map_err(|e| {
        Problem::Invalid(format!(
            "{} is not a docker-archive manifest: {e}",
            archive.where_("manifest.json")
        ))
    })?;
    let tags = |i: &SavedImage| i.repo_tags.clone().unwrap_or_default();
    let chosen = match name {
        Some(n) if n.starts_with('@') => n[1..].parse::<usize>().ok().and_then(|i| list.get(i)),
        Some(n) => list.iter().find(|i| {
            tags(i).iter().any(|t| {
                t == n
                    || t.strip_prefix("docker.io/library/") == Some(n)
                    || t.strip_prefix("localhost/") == Some(n)
            })
        }),
        None if list.len() == 1 => list.first(),
        None => None,
    };
    let Some(image) = chosen else {
        let all: Vec<String> = list.iter().flat_map(tags).collect();
        return Err(Problem::Invalid(format!(
            "{} holds {} image(s) and none is {}: name one of {} (or @0, @1, ...) after the file name",
            path.display(),
            list.len(),
            name.map(|n| format!("{n:?}")).unwrap_or_else(|| "chosen".into()),
            if all.is_empty() { "its indexes".into() } else { crate::util::listed(&all, ", ") }
        )));
    };
    let config_bytes = read_json(
        archive.member(&image.config)?,
        &archive.where_(&image.config),
    )?;
    let digest = Digest::of(&config_bytes);
    // The config's file name is its digest (`<hex>.json` or `blobs/sha256/<hex>`).
    let stem = image
        .config
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".json");
    if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) && stem != digest.hex() {
        return Err(Problem::Digest {
            what: format!("image config {}", archive.where_(&image.config)),
            actual: digest.to_string(),
        });
    }
    let (config, diff_ids) = resolve::parse_config(&config_bytes, platform)?;
    let none = vec![None; image.layers.len()];
    let layers = resolve::layers(&none, &diff_ids, cache, |i| {
        archive.member(&image.layers[i])
    })?;
    Ok(Resolved {
        digest,
        config,
        layers,
    })
}
