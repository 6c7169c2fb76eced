//! The container-image layer: the root file system of `[source] image`, at the bottom of the
//! stack, and the workload keys its config gives (`[init] from_image = true`; the spec itself
//! is written by the workload module of the top layer).
//!
//! The image's entries keep the owners, groups and modes of their layers. Being the base, they
//! yield to every source above: busybox and its links only fill paths the image lacks (the
//! image's `/bin/sh` wins), a mapping replaces an image file (a `-v` note), fledge's own files
//! replace one with a warning, and directories merge (the image's mode and owner stay).
//! Paths placed above are resolved through the image's symlinks, so with a merged `/usr`
//! (`/bin -> usr/bin`) busybox lands in `/usr/bin`.

use std::sync::Arc;

use super::{invalid, Inputs, Layer, Origin, PlanError, Planned, Stack};
use crate::archive::{Content, Kind};
use crate::config::{Config, WorkloadKeys};
use crate::image::{Image, NodeKind};

pub(super) const LAYER: Layer = Layer {
    name: "container image",
    check,
    add,
};

/// A local image file or directory exists.
fn check(cfg: &Config) -> Result<(), PlanError> {
    use crate::image::ImageRef;
    let path = match cfg.image.as_ref().map(|s| &s.reference) {
        Some(ImageRef::OciDir { dir, .. }) => dir,
        Some(ImageRef::OciArchive { file, .. } | ImageRef::DockerArchive { file, .. }) => file,
        _ => return Ok(()),
    };
    std::fs::metadata(path).map(drop).map_err(|e| {
        invalid(
            cfg,
            None,
            "source.image",
            format!(
                "names {}, which cannot be read ({e})",
                crate::util::shown(path)
            ),
        )
    })
}

fn add(inputs: &Inputs, stack: &mut Stack) -> Result<(), PlanError> {
    let Some(image) = inputs.image else {
        return Ok(());
    };
    image.tree.for_each(|path, n| {
        let kind = match &n.kind {
            NodeKind::Dir => Kind::Dir,
            NodeKind::File { data, offset, size } => Kind::File(Content::Slice {
                path: Arc::clone(data),
                offset: *offset,
                size: *size,
            }),
            NodeKind::Symlink(t) => Kind::Symlink(t.clone()),
            NodeKind::CharDev { major, minor } => Kind::CharDev {
                major: *major,
                minor: *minor,
            },
            NodeKind::BlockDev { major, minor } => Kind::BlockDev {
                major: *major,
                minor: *minor,
            },
            NodeKind::Fifo => Kind::Fifo,
        };
        let origin = Origin::Image { layer: n.layer + 1 };
        let node = Planned::new(kind, n.perm, origin).owned_by(n.uid, n.gid);
        stack.put_resolved(Arc::from(path), node)
    })?;
    for w in &image.warnings {
        stack.warn(w.clone());
    }
    let xattrs = &image.tree.xattrs;
    if inputs.config.rootfs.is_none() && !xattrs.is_empty() {
        let mut names: Vec<String> = xattrs
            .iter()
            .take(5)
            .map(|(p, a)| {
                let keys: Vec<&str> = a.keys().map(String::as_str).collect();
                format!("/{p} ({})", keys.join(", "))
            })
            .collect();
        if xattrs.len() > 5 {
            names.push(format!("and {} more", xattrs.len() - 5));
        }
        stack.warn(format!(
            "image {}: newc archives cannot store extended attributes, so these are dropped (a squashfs disk, strategy = \"oci_rootfs\", keeps them): {}",
            image.text,
            names.join(", ")
        ));
    }
    Ok(())
}

/// The `[init]` workload keys over the image config's (`init.from_image`): the config's
/// Entrypoint + Cmd, Env, WorkingDir and User where `[init]` does not set `command`, an `env`
/// variable, `workdir` or `user`.
pub(super) fn workload_keys(cfg: &Config, image: &Image) -> Result<WorkloadKeys, PlanError> {
    let c = &image.config;
    let mut keys = cfg.workload.clone();
    if keys.command.is_empty() {
        keys.command = c.argv();
    }
    if keys.command.is_empty() {
        return Err(invalid(
            cfg,
            None,
            "init.from_image",
            format!(
                "is true, but the config of {} has no Entrypoint or Cmd: set [init] command",
                image.text
            ),
        ));
    }
    let mut env: Vec<(String, String)> = c
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &cfg.workload.env {
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(e) => e.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    keys.env = env;
    keys.workdir = keys.workdir.or_else(|| c.working_dir.clone());
    keys.user = keys.user.or_else(|| c.user.clone());
    Ok(keys)
}
