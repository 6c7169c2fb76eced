//! Reading the init's options: the file the builder bakes into the image, then the kernel command
//! line, which wins. The syntax and the option set are `fledge_init::cmdline`'s.

use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::CStr;

pub use fledge_init::cmdline::{ExitAction, LogTarget, Options};

use crate::sys;

/// The kernel command line.
pub const CMDLINE_PATH: &CStr = c"/proc/cmdline";
/// The longest options file read; the kernel command line is far shorter.
const MAX_LEN: usize = 64 * 1024;

/// Reads the baked file, then the command line; a missing file is the same as an empty one.
/// Returns the options and one message per ignored bad value.
pub fn load(conf: &CStr, cmdline: &CStr) -> (Options, Vec<String>) {
    let mut opts = Options::default();
    let mut warnings = Vec::new();
    for path in [conf, cmdline] {
        if let Ok(text) = sys::read_to_string(path, MAX_LEN) {
            opts.apply(&text, &mut warnings);
        }
    }
    (opts, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn the_command_line_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("fledge-init.conf");
        let cmdline = dir.path().join("cmdline");
        std::fs::write(
            &conf,
            "# baked by fledge\nfledge.supervise=1\nfledge.grace_ms=100\n",
        )
        .unwrap();
        std::fs::write(
            &cmdline,
            "console=ttyS0 fledge.supervise=0 fledge.exit=reboot\n",
        )
        .unwrap();
        let c = |p: &std::path::Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        let (conf, cmdline) = (c(&conf), c(&cmdline));
        let (o, w) = load(&conf, &cmdline);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            o,
            Options {
                supervise: false,
                exit: ExitAction::Reboot,
                grace: Duration::from_millis(100),
                ..Options::default()
            }
        );
        let (o, _) = load(&c(&dir.path().join("missing")), &cmdline);
        assert!(!o.supervise);
        let (o, _) = load(&conf, &c(&dir.path().join("missing")));
        assert!(o.supervise, "file alone applies");
    }
}
