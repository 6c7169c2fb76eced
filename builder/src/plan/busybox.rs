//! The busybox layer: busybox itself and its applet links in `/bin`.

use fledge_abi::paths;

use super::{nothing_to_check, Inputs, Layer, Origin, PlanError, Planned, Stack};
use crate::archive::{Content, Kind};

pub(super) const LAYER: Layer = Layer {
    name: "busybox and its links",
    check: nothing_to_check,
    add,
};

/// busybox applets linked in `/bin` (the original's list, plus what debugging a guest needs).
pub const BASE_APPLETS: &[&str] = &[
    // the original's
    "sh", "ash", "ls", "cat", "cp", "mv", "rm", "mkdir", "rmdir", "ln", "chmod", "chown", "ps",
    "kill", "mount", "umount", "grep", "sed", "awk", "find", "test", "echo", "printf", "true",
    "false", "sleep", "pwd", "cd", "env", "which", "tar", "gzip", "gunzip", "wget", "vi",
    // debugging and shutdown
    "[", "basename", "cut", "date", "df", "dirname", "dmesg", "du", "free", "head", "hostname",
    "id", "ip", "less", "mknod", "nc", "ping", "poweroff", "readlink", "reboot", "sort", "stat",
    "sync", "tail", "top", "touch", "tr", "uname", "uniq", "wc", "xargs",
];

fn add(inputs: &Inputs, stack: &mut Stack) -> Result<(), PlanError> {
    let bb = Kind::File(Content::Path {
        path: inputs.busybox.path.clone(),
        size: inputs.busybox.size,
    });
    // An image's own busybox stays (the links then use it).
    if !stack.has(paths::BUSYBOX) {
        stack.put(paths::BUSYBOX, Planned::new(bb, 0o755, Origin::Busybox))?;
    }
    let extra = inputs.config.extra_applets.iter().map(String::as_str);
    for a in BASE_APPLETS.iter().copied().chain(extra) {
        let path = format!("/bin/{a}");
        // An applet never displaces what a source below placed (or busybox itself).
        if !stack.has(&path) {
            let link = Kind::Symlink("busybox".into());
            stack.put(&path, Planned::new(link, 0o777, Origin::Applet))?;
        }
    }
    Ok(())
}
