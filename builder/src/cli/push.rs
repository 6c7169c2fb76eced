//! The flags of `fledge push` and `fledge pull` and what they print ([`fledge::push`]).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use fledge::push::{self, PushRequest, Target};

use super::{say, Result, Stdout};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image to push (an initramfs or a root file system disk).
    pub image: PathBuf,
    /// Where to: docker://HOST[:PORT]/REPO:TAG or oci:DIR:TAG.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// The Volant manifest JSON [default: the *.manifest.json beside the image whose
    /// initramfs.checksum is the image's digest].
    #[arg(short, long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// A further file to carry in the artifact (an SBOM, a disk); repeatable.
    #[arg(long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Mount blobs the target lacks from this repository of the same registry instead of
    /// uploading them, where the registry has them.
    #[arg(long, value_name = "REPO")]
    pub mount_from: Option<String>,
    /// Upload blobs larger than this in chunks of this size (PATCH), e.g. 16M.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = super::size_arg)]
    pub chunk_size: u64,
    /// Set initramfs.url in the pushed manifest JSON to the image blob's registry URL
    /// (http(s)://HOST/v2/REPO/blobs/sha256:...); the file on disk is left as it is.
    #[arg(long)]
    pub url_from_registry: bool,
    /// Allow plain HTTP to a registry that is not on this machine.
    #[arg(long)]
    pub plain_http: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// What to pull: docker://HOST[:PORT]/REPO:TAG (or @sha256:...) or oci:DIR:TAG.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// The directory to write the files into (created if missing).
    pub dir: PathBuf,
    /// Allow plain HTTP to a registry that is not on this machine.
    #[arg(long)]
    pub plain_http: bool,
}

pub fn push(a: PushArgs, quiet: bool) -> Result<()> {
    let target = Target::parse(&a.reference)?;
    let mut req = PushRequest::new(a.image);
    req.manifest = a.manifest;
    req.files = a.files;
    req.mount_from = a.mount_from;
    req.chunk = a.chunk_size;
    req.url_from_registry = a.url_from_registry;
    req.plain_http = a.plain_http;
    let p = push::push(&req, &target)?;
    if !quiet {
        log::info!(
            "pushed {target}: {} files; {} blobs uploaded, {} already there, {} mounted",
            p.layers.len(),
            p.uploaded,
            p.present,
            p.mounted
        );
        if let Some(u) = &p.blob_url {
            log::info!("image blob {u}");
        }
    }
    say!("{}", p.digest);
    Ok(())
}

pub fn pull(a: PullArgs, quiet: bool) -> Result<()> {
    let target = Target::parse(&a.reference)?;
    let p = push::pull(&target, &a.dir, a.plain_http)?;
    if !quiet {
        for (f, size) in &p.files {
            say!("{} ({size} bytes)", f.display());
        }
        log::info!("pulled {target} ({})", p.digest);
    }
    Ok(())
}
