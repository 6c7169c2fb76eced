//! Human-readable views of a planned image, before anything is written: the `--dry-run` listing
//! of `fledge build` and the per-file lines `-v` prints.
//!
//! This module owns the answer to "where does this path come from" ([`source_of`]); it only
//! reads the [`Plan`] that [`crate::plan::plan`] made.

use crate::archive::{Content, Kind};
use crate::inspect::mode_string;
use crate::plan::{Origin, Plan, Planned};

/// Where a planned path comes from: a host path, or `busybox`, `fledge-init`, `agent` or
/// `generated` (made by fledge itself: directories, device nodes, small config files).
pub fn source_of(node: &Planned) -> String {
    let host = match &node.kind {
        Kind::File(Content::Path { path, .. }) => Some(path.display().to_string()),
        _ => None,
    };
    match &node.origin {
        Origin::Base | Origin::VolantInit | Origin::InitConf | Origin::Workload => {
            "generated".into()
        }
        Origin::Image { layer } => format!("image layer {layer}"),
        Origin::Applet | Origin::Busybox => "busybox".into(),
        Origin::FledgeInit => "fledge-init".into(),
        Origin::Agent => "agent".into(),
        Origin::CustomInit => host.unwrap_or_else(|| "generated".into()),
        Origin::Mapping { key, .. } => host.unwrap_or_else(|| key.clone()),
        Origin::Kernel(_) if node.kind == Kind::Dir => "generated".into(),
        Origin::Kernel(why) => why.clone(),
        Origin::Library { program } => match host {
            Some(h) => format!("{h} (a library of {program})"),
            None => format!("sysroot (for {program})"),
        },
    }
}

/// Full `st_mode` of a planned node (type bits plus permissions).
pub fn st_mode(node: &Planned) -> u32 {
    node.kind.type_bits() | node.perm
}

/// Bytes a planned node stores (file size, symlink target length), or its device numbers.
fn size_field(node: &Planned) -> String {
    match &node.kind {
        Kind::Dir => "0".into(),
        Kind::File(Content::Empty) => "0".into(),
        Kind::File(Content::Bytes(b)) => b.len().to_string(),
        Kind::File(Content::Path { size, .. } | Content::Slice { size, .. }) => size.to_string(),
        Kind::Symlink(t) => t.len().to_string(),
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
            format!("{major},{minor}")
        }
        Kind::Fifo => "0".into(),
    }
}

/// One line per planned path, like `fledge inspect`, plus where each comes from:
/// `mode owner size path [-> target]  <- source`.
pub fn format_plan(plan: &Plan) -> String {
    let mut out = String::new();
    for (path, node) in &plan.nodes {
        let target = match &node.kind {
            Kind::Symlink(t) => format!(" -> {t}"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{}   {}/{}   {:>10} {path}{target}  <- {}\n",
            mode_string(st_mode(node)),
            node.uid,
            node.gid,
            size_field(node),
            source_of(node)
        ));
    }
    out
}

/// Logs (at debug level, shown by `-v`) each path placed with its mode and source.
pub fn log_placed(plan: &Plan) {
    for (path, node) in &plan.nodes {
        log::debug!(
            "placed {path} {} from {}",
            mode_string(st_mode(node)),
            source_of(node)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn node(kind: Kind, perm: u32, origin: Origin) -> Planned {
        Planned::new(kind, perm, origin)
    }

    #[test]
    fn names_each_kind_of_source() {
        let mut plan = Plan::default();
        let host = Kind::File(Content::Path {
            path: PathBuf::from("/src/app"),
            size: 12,
        });
        plan.nodes
            .insert("/bin".into(), node(Kind::Dir, 0o755, Origin::Base));
        plan.nodes.insert(
            "/bin/sh".into(),
            node(Kind::Symlink("busybox".into()), 0o777, Origin::Applet),
        );
        plan.nodes.insert(
            "/init".into(),
            node(
                Kind::File(Content::Bytes(Arc::from(&b"elf"[..]))),
                0o755,
                Origin::FledgeInit,
            ),
        );
        plan.nodes.insert(
            "/usr/bin/app".into(),
            node(
                host,
                0o750,
                Origin::Mapping {
                    key: "app".into(),
                    line: Some(3),
                },
            ),
        );
        assert_eq!(
            format_plan(&plan),
            "drwxr-xr-x   0/0            0 /bin  <- generated\n\
             lrwxrwxrwx   0/0            7 /bin/sh -> busybox  <- busybox\n\
             -rwxr-xr-x   0/0            3 /init  <- fledge-init\n\
             -rwxr-x---   0/0           12 /usr/bin/app  <- /src/app\n"
        );
    }
}
