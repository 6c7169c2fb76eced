//! The module load list ([`crate::paths::MODULES_LOAD`]): the kernel modules `fledge-init`
//! loads with `finit_module`, in order, before it sets up the network. The builder writes it
//! (dependencies before the modules that need them); the init parses it.
//!
//! One module per line: the in-image absolute path of an uncompressed `.ko`, then optionally one
//! space and the module's parameters, passed to the kernel as they are:
//!
//! ```text
//! # fledge module load list
//! /lib/modules/6.1.0-28-amd64/kernel/net/core/failover.ko
//! !/lib/modules/6.1.0-28-amd64/kernel/drivers/net/virtio_net.ko napi_tx=1
//! ```
//!
//! A `!` before the path marks the module required: when it fails to load the boot stops;
//! any other failure is reported and the next module loaded. Blank lines and lines starting with
//! `#` are skipped.

use core::fmt;

/// The longest load list the init reads.
pub const MAX_LEN: usize = 256 * 1024;

/// One line of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    /// Absolute in-image path of the `.ko`.
    pub path: &'a str,
    /// Parameters (`name=value` separated by spaces); empty for none.
    pub params: &'a str,
    /// A failure to load it ends the boot.
    pub required: bool,
}

/// A line that is not a module entry (1-based line number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineError<'a> {
    pub line: usize,
    pub text: &'a str,
}

impl fmt::Display for LineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: \"{}\" is not an absolute path of an uncompressed .ko",
            self.line, self.text
        )
    }
}

/// The line the builder writes for `self` (with its newline).
impl fmt::Display for Module<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.required { "!" } else { "" };
        match self.params {
            "" => writeln!(f, "{mark}{}", self.path),
            p => writeln!(f, "{mark}{} {p}", self.path),
        }
    }
}

impl Module<'_> {
    /// Whether the builder may write this entry: an absolute `.ko` path without spaces, NULs or
    /// newlines, parameters on one line.
    pub fn is_valid(&self) -> bool {
        valid_path(self.path) && !self.params.contains(['\n', '\r', '\0'])
    }
}

fn valid_path(p: &str) -> bool {
    p.starts_with('/') && p.ends_with(".ko") && p.len() > 4 && !p.contains([' ', '\0', '\n'])
}

/// The entries of a load list, in order; a malformed line yields its error and parsing goes on.
pub fn parse(text: &str) -> impl Iterator<Item = Result<Module<'_>, LineError<'_>>> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let line = raw.trim_end();
        if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
            return None;
        }
        let (required, rest) = match line.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, line),
        };
        let (path, params) = rest.split_once(' ').unwrap_or((rest, ""));
        let m = Module {
            path,
            params: params.trim(),
            required,
        };
        Some(if m.is_valid() {
            Ok(m)
        } else {
            Err(LineError {
                line: i + 1,
                text: raw,
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    const VIRTIO: &str = "/lib/modules/6.1.0/kernel/drivers/net/virtio_net.ko";
    const FAILOVER: &str = "/lib/modules/6.1.0/kernel/net/core/failover.ko";

    #[test]
    fn round_trips_through_the_builders_lines() {
        let mods = [
            Module {
                path: FAILOVER,
                params: "",
                required: false,
            },
            Module {
                path: VIRTIO,
                params: "napi_tx=1 foo=bar",
                required: true,
            },
        ];
        let text: String = mods.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            text,
            alloc::format!("{FAILOVER}\n!{VIRTIO} napi_tx=1 foo=bar\n")
        );
        let back: Vec<_> = parse(&text).collect();
        assert_eq!(back, mods.map(Ok));
    }

    #[test]
    fn skips_comments_and_reports_bad_lines_by_number() {
        let text =
            alloc::format!("# list\n\n{FAILOVER}\nvirtio_net.ko\n/lib/x.ko.xz\n   \n!{VIRTIO}  \n");
        let got: Vec<_> = parse(&text).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].unwrap().path, FAILOVER);
        assert_eq!(
            got[1].unwrap_err().to_string(),
            "line 4: \"virtio_net.ko\" is not an absolute path of an uncompressed .ko"
        );
        assert_eq!(got[2].unwrap_err().line, 5);
        let v = got[3].unwrap();
        assert!(
            v.required && v.path == VIRTIO && v.params.is_empty(),
            "{v:?}"
        );
    }

    #[test]
    fn the_builder_cannot_write_a_line_the_init_would_misread() {
        let bad = [
            ("relative.ko", ""),
            ("/a b.ko", ""),
            ("/lib/m.ko.zst", ""),
            ("/lib/m.ko", "a=1\nb=2"),
        ];
        for (i, (path, params)) in bad.into_iter().enumerate() {
            let m = Module {
                path,
                params,
                required: false,
            };
            assert!(!m.is_valid(), "case {i}: {m:?}");
        }
    }
}
