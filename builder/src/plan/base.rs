//! The base layer: the directories and device nodes every image has.

use super::{nothing_to_check, Inputs, Layer, Origin, PlanError, Planned, Stack};
use crate::archive::Kind;

pub(super) const LAYER: Layer = Layer {
    name: "base directories and nodes",
    check: nothing_to_check,
    add,
};

/// Directories every image has (0755), besides `/tmp` (1777).
pub const BASE_DIRS: &[&str] = &[
    "/bin",
    "/dev",
    "/etc",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/sbin",
    "/var",
    "/var/log",
];

fn add(_: &Inputs, stack: &mut Stack) -> Result<(), PlanError> {
    for d in BASE_DIRS {
        stack.put(d, Planned::new(Kind::Dir, 0o755, Origin::Base))?;
    }
    stack.put("/tmp", Planned::new(Kind::Dir, 0o1777, Origin::Base))?;
    let console = Kind::CharDev { major: 5, minor: 1 };
    stack.put("/dev/console", Planned::new(console, 0o600, Origin::Base))?;
    let null = Kind::CharDev { major: 1, minor: 3 };
    stack.put("/dev/null", Planned::new(null, 0o666, Origin::Base))
}
