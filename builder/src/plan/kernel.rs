//! The kernel-module layer: the modules `[kernel]` resolved ([`crate::kmod`]), under
//! `/lib/modules/<release>/`, the firmware they name under `/lib/firmware/`, and the load list
//! fledge-init reads ([`paths::MODULES_LOAD`]).
//!
//! It comes after the mappings, so a mapping that writes one of these paths is a conflict that
//! names both.

use std::sync::Arc;

use fledge_abi::paths;

use super::{nothing_to_check, Inputs, Layer, Node, Origin, PlanError, Stack};
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
    let file = |bytes: &Arc<[u8]>| Kind::File(Content::Bytes(bytes.clone()));
    for (placed, r) in m.files.iter().zip(&m.resolution.modules) {
        let why = format!("{} ({})", placed.from.display(), r.reason);
        stack.put(
            &placed.path,
            Node::new(file(&placed.bytes), 0o644, Origin::Kernel(why)),
        )?;
    }
    for f in &m.firmware {
        let why = format!("{} (firmware)", f.from.display());
        stack.put(
            &f.path,
            Node::new(file(&f.bytes), 0o644, Origin::Kernel(why)),
        )?;
    }
    let list = Kind::File(Content::Bytes(Arc::from(m.load_list.as_bytes())));
    let why = "generated (module load list)".to_string();
    stack.put(
        paths::MODULES_LOAD,
        Node::new(list, 0o644, Origin::Kernel(why)),
    )
}
