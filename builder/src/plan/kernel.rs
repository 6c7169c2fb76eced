//! The kernel-module layer: the modules `[kernel]` resolved ([`crate::kmod`]), under
//! `/lib/modules/<release>/`, the firmware they name under `/lib/firmware/`, and the load list
//! fledge-init reads ([`paths::MODULES_LOAD`]).
//!
//! It comes after the mappings, so a mapping that writes one of these paths is a conflict that
//! names both. Directories a lower layer made symlinks (a merged-`/usr` root file system has
//! `/lib -> usr/lib`) are followed, so the files land where the guest's path walk finds them;
//! the load list keeps the `/lib/modules/...` paths, which resolve the same way at boot.

use std::sync::Arc;

use fledge_abi::paths;

use super::{nothing_to_check, Inputs, Layer, Origin, PlanError, Planned, Stack};
use crate::archive::{Content, Kind};

pub(super) const LAYER: Layer = Layer {
    name: "kernel modules",
    check: nothing_to_check,
    add,
};

fn add(inputs: &Inputs, stack: &mut Stack) -> Result<(), PlanError> {
    let Some(m) = inputs.modules else {
        return Ok(());
    };
    let mut put = |path: &str, kind: Kind, why: String| {
        let at = stack.plan().resolved(path);
        stack.put(&at, Planned::new(kind, 0o644, Origin::Kernel(why)))
    };
    let file = |bytes: &Arc<[u8]>| Kind::File(Content::Bytes(bytes.clone()));
    for (placed, r) in m.files.iter().zip(&m.resolution.modules) {
        let why = format!("{} ({})", placed.from.display(), r.reason);
        put(&placed.path, file(&placed.bytes), why)?;
    }
    for f in &m.firmware {
        let why = format!("{} (firmware)", f.from.display());
        put(&f.path, file(&f.bytes), why)?;
    }
    let list = Kind::File(Content::Bytes(Arc::from(m.load_list.as_bytes())));
    put(
        paths::MODULES_LOAD,
        list,
        "generated (module load list)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    #[test]
    fn directories_that_are_symlinks_are_followed() {
        let mut plan = Plan::default();
        let link = |t: &str| Planned::new(Kind::Symlink(t.into()), 0o777, Origin::Base);
        let dir = || Planned::new(Kind::Dir, 0o755, Origin::Base);
        plan.nodes.insert("/lib".into(), link("usr/lib"));
        plan.nodes.insert("/usr".into(), dir());
        plan.nodes.insert("/usr/lib".into(), dir());
        plan.nodes
            .insert("/usr/lib/firmware".into(), link("/opt/./fw"));
        plan.nodes.insert("/loop".into(), link("/loop"));
        let cases = [
            (
                "/lib/modules/6.1/kernel/a.ko",
                "/usr/lib/modules/6.1/kernel/a.ko",
            ),
            ("/lib/firmware/x/y.bin", "/opt/fw/x/y.bin"),
            ("/etc/fledge/modules.load", "/etc/fledge/modules.load"),
            // The last component itself is not followed.
            ("/lib", "/lib"),
            // A loop stops being followed; the put then refuses to write through a symlink.
            ("/loop/a", "/loop/a"),
        ];
        for (i, (path, want)) in cases.iter().enumerate() {
            assert_eq!(plan.resolved(path), *want, "case {i}: {path}");
        }
    }
}
