//! The top layer: fledge's own files (`/init`, the agent, the custom init and `/.volant_init`,
//! the baked init options, the workload spec), and the checks that the program PID 1 starts is in the image.
//!
//! It comes last so it sees everything the other sources placed.

use std::fs;
use std::sync::Arc;

use fledge_abi::{options, paths};

use super::{invalid, Inputs, Layer, Origin, PlanError, Planned, Stack};
use crate::archive::{Content, Kind};
use crate::config::{Config, CustomInit, InitMode};
use crate::util::shown;

pub(super) const LAYER: Layer = Layer {
    name: "fledge's own files",
    check,
    add,
};

/// A host custom init exists.
fn check(cfg: &Config) -> Result<(), PlanError> {
    if let InitMode::Custom {
        init: CustomInit::Host(host),
    } = &cfg.init
    {
        host_init(cfg, host)?;
    }
    Ok(())
}

/// The host custom init's metadata, or the error naming `init.path`.
fn host_init(cfg: &Config, host: &std::path::Path) -> Result<fs::Metadata, PlanError> {
    fs::metadata(host).map_err(|e| {
        invalid(
            cfg,
            None,
            "init.path",
            format!("names {}, which cannot be read ({e}): fix the path (relative to the config's directory) or create the file", shown(host)),
        )
    })
}

fn add(inputs: &Inputs, stack: &mut Stack) -> Result<(), PlanError> {
    let cfg = inputs.config;
    let init_bin = || {
        let kind = Kind::File(Content::Bytes(Arc::from(inputs.init)));
        Planned::new(kind, 0o755, Origin::FledgeInit)
    };
    match &cfg.init {
        InitMode::Default { .. } => {
            stack.put(paths::INIT, init_bin())?;
            refuse_volant_init(stack)?;
            let agent = inputs.agent.expect("default mode is planned with an agent");
            let kind = Kind::File(Content::Path {
                path: agent.path.clone(),
                size: agent.size,
            });
            stack.put(paths::AGENT, Planned::new(kind, 0o755, Origin::Agent))?;
        }
        InitMode::Custom { init } => {
            stack.put(paths::INIT, init_bin())?;
            let target = custom_init(inputs, stack, init)?;
            let line = Content::Bytes(Arc::from(format!("{target}\n").into_bytes()));
            let node = Planned::new(Kind::File(line), 0o644, Origin::VolantInit);
            stack.put(paths::VOLANT_INIT, node)?;
        }
        InitMode::None => {}
    }
    // On a disk, /sbin/init is where an init that switched to it looks first (Volant's).
    if cfg.rootfs.is_some() && !matches!(cfg.init, InitMode::None) {
        let link = Planned::new(Kind::Symlink(paths::INIT.into()), 0o777, Origin::FledgeInit);
        stack.put(paths::SBIN_INIT, link)?;
    }
    if cfg.supervise {
        let text = format!(
            "# written by fledge from [init] supervise = true\n{}=1\n",
            options::SUPERVISE
        );
        let conf = Kind::File(Content::Bytes(Arc::from(text.into_bytes())));
        stack.put(
            paths::INIT_CONF,
            Planned::new(conf, 0o644, Origin::InitConf),
        )?;
    }
    super::workload::add(&workload_keys(inputs)?, stack)?;
    own_paths(cfg, stack);
    started_program(cfg, stack)
}

/// What fledge-init reads is fledge's: an image's copy of one of [`super::OWN_PATHS`] that
/// fledge does not write in this build is left out (else it would steer PID 1: an image's
/// workload spec, or a FIFO it blocks on), and an image's directory where fledge writes a
/// file takes its contents along. Each is a warning naming the path and the layer.
fn own_paths(cfg: &Config, stack: &mut Stack) {
    for path in super::OWN_PATHS {
        // Without fledge-init, /init is the user's program (a mapping or the image's).
        if path == paths::INIT && matches!(cfg.init, InitMode::None) {
            continue;
        }
        let from_image = |o: &Origin| matches!(o, Origin::Image { .. });
        let at = [path.to_string(), stack.resolved(path)];
        let (node_origin, fledges) = match stack.plan().nodes.get(path) {
            Some(n) => (Some(n.origin.clone()), !from_image(&n.origin)),
            None => (None, false),
        };
        let mut left_out: Vec<(String, Origin)> = Vec::new();
        if fledges {
            // An image directory replaced by fledge's file: its children go too.
            let under = format!("{path}/");
            let children: Vec<String> = (stack.plan().nodes.keys())
                .filter(|p| p.starts_with(&under))
                .map(|p| p.to_string())
                .collect();
            for c in children {
                left_out.extend(stack.remove_tree(&c));
            }
        } else {
            for p in at.iter() {
                let image_node = stack
                    .plan()
                    .nodes
                    .get(p.as_str())
                    .map(|n| from_image(&n.origin));
                if image_node == Some(true) {
                    left_out.extend(stack.remove_tree(p));
                }
            }
        }
        let Some((first, origin)) = left_out.first().cloned() else {
            continue;
        };
        let more = match left_out.len() {
            1 => String::new(),
            n => format!(" (and {} paths under it)", n - 1),
        };
        let why = match node_origin {
            Some(o) if fledges => format!("fledge writes its own {path} ({o})"),
            _ => format!("fledge writes no {path} in this build"),
        };
        stack.warn(format!(
            "{first} from {origin}{more} is left out: fledge-init reads {path}, and {why}; an image's copy would steer PID 1"
        ));
    }
}

/// In default mode `/.volant_init` would make fledge-init start another program than the agent.
fn refuse_volant_init(stack: &Stack) -> Result<(), PlanError> {
    let Some(node) = stack.plan().nodes.get(paths::VOLANT_INIT) else {
        return Ok(());
    };
    if matches!(node.origin, Origin::Image { .. }) {
        // Left out with a warning by `own_paths`.
        return Ok(());
    }
    let (line, key) = node.origin.key();
    Err(stack.invalid(
        line,
        &key,
        format!(
            "writes {}, which names the custom init fledge-init starts instead of the kestrel agent: set [init] path = \"...\" for a custom init, or choose another destination",
            paths::VOLANT_INIT
        ),
    ))
}

/// The `[init]` workload keys, over the image's config with `init.from_image`.
fn workload_keys(inputs: &Inputs) -> Result<crate::config::WorkloadKeys, PlanError> {
    let cfg = inputs.config;
    match (&cfg.init, inputs.image) {
        (
            InitMode::Custom {
                init: CustomInit::FromImage,
            },
            Some(image),
        ) => super::image::workload_keys(cfg, image),
        _ => Ok(cfg.workload.clone()),
    }
}

/// Installs a host custom init; returns the in-image path `/.volant_init` names.
fn custom_init(inputs: &Inputs, stack: &mut Stack, init: &CustomInit) -> Result<String, PlanError> {
    let cfg = inputs.config;
    let host = match init {
        CustomInit::InImage(path) => return Ok(path.clone()),
        CustomInit::Command => return super::workload::program(&cfg.workload, stack),
        CustomInit::FromImage => {
            let keys = workload_keys(inputs)?;
            if keys.command.is_empty() {
                // Only `validate`, which does not pull the image, gets here.
                return Ok("/".into());
            }
            return super::workload::program(&keys, stack);
        }
        CustomInit::Host(host) => host,
    };
    let meta = host_init(cfg, host)?;
    if !meta.is_file() {
        return Err(stack.invalid(
            None,
            "init.path",
            format!("names {}, which is not a regular file: point `init.path` at your init script or program", shown(host)),
        ));
    }
    let kind = Kind::File(Content::Path {
        path: host.clone(),
        size: meta.len(),
    });
    stack.put(
        paths::CUSTOM_INIT,
        Planned::new(kind, 0o755, Origin::CustomInit),
    )?;
    Ok(paths::CUSTOM_INIT.to_string())
}

/// The program PID 1 execs (the in-image custom init, or `/init` in none mode) is in the image
/// and executable wherever its source put it.
fn started_program(cfg: &Config, stack: &mut Stack) -> Result<(), PlanError> {
    let (path, key, missing) = match &cfg.init {
        InitMode::Custom {
            init: CustomInit::InImage(path),
        } => (
            path.as_str(),
            "init.path",
            format!("is {path}, but nothing in the image provides it: add a [mappings] entry whose destination is \"{path}\""),
        ),
        InitMode::None => (
            paths::INIT,
            "init.none",
            "is true, but no mapping provides /init: add `\"./your-init\" = \"/init\"` under [mappings]".to_string(),
        ),
        _ => return Ok(()),
    };
    match stack.plan().nodes.get(path).map(|n| &n.kind) {
        Some(Kind::File(_)) => stack.set_perm(path, 0o755),
        Some(Kind::Symlink(_)) => {}
        None if key == "init.path" => return from_host(stack, path, missing),
        _ => return Err(stack.invalid(None, key, missing)),
    }
    Ok(())
}

/// An in-image custom init no source provides but the host has (the original took it from the
/// host): taken from there, with a warning.
fn from_host(stack: &mut Stack, path: &str, missing: String) -> Result<(), PlanError> {
    let meta = match fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        _ => return Err(stack.invalid(None, "init.path", missing)),
    };
    stack.warn(format!(
        "`init.path` is {path}, which no mapping provides: taking this machine's {path}; add `\"{path}\" = \"{path}\"` under [mappings] to say so"
    ));
    let kind = Kind::File(Content::Path {
        path: path.into(),
        size: meta.len(),
    });
    stack.put(path, Planned::new(kind, 0o755, Origin::CustomInit))
}
