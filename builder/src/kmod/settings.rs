//! `[kernel]` of `fledge.toml`: which modules, from which tree. The tree is named by `version`
//! and/or `modules_dir`; with neither, asking for modules is an error, never a silent fall-back
//! to the build host's running kernel.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::tree;

/// Where module trees are on this machine when only `kernel.version` is given.
pub const HOST_MODULES: &str = "/lib/modules";

/// One entry of `[kernel] modules`: a module name or alias, and parameters for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    /// Everything after the first space: `"loop max_loop=8"` -> `max_loop=8`.
    pub params: Option<String>,
}

/// `[kernel]`, checked: what to load and from which tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub modules: Vec<Request>,
    /// `version`: the kernel release; `None` takes the name of the tree's directory (with
    /// symlinks followed).
    pub version: Option<String>,
    /// The module tree: `modules_dir`, else `/lib/modules/<version>`.
    pub dir: PathBuf,
}

/// `[kernel]` as written.
#[derive(Debug, Deserialize)]
pub struct RawKernel {
    /// Module names or aliases, each optionally followed by a space and its parameters.
    modules: Option<Spanned<Vec<String>>>,
    /// The guest kernel's release (`uname -r` in the guest).
    version: Option<Spanned<String>>,
    /// The guest kernel's `lib/modules/<release>` tree, relative to the config's directory.
    modules_dir: Option<Spanned<String>>,
    /// Keys this version does not know.
    #[serde(flatten)]
    pub extra: std::collections::BTreeMap<String, toml::Value>,
}

/// Where in `fledge.toml` a value is (a byte range), when known.
pub type Span = Option<std::ops::Range<usize>>;

/// A `[kernel]` key whose value is wrong; the config makes it its error at the key's line (so
/// this module needs nothing of the config's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` {problem}")]
pub struct KeyError {
    pub span: Span,
    pub key: &'static str,
    pub problem: String,
}

/// Checks `[kernel]`, adding the modules `also` names that it does not (a disk's drivers);
/// `None` when it asks for no modules.
pub fn settings(
    raw: RawKernel,
    base_dir: &Path,
    also: &[&str],
) -> Result<Option<Settings>, KeyError> {
    let bad = |span: Span, key: &'static str, problem: String| KeyError { span, key, problem };
    let mut modules = match &raw.modules {
        Some(m) => requests(m.get_ref()).map_err(|p| bad(Some(m.span()), "kernel.modules", p))?,
        None => Vec::new(),
    };
    for name in also {
        if !modules.iter().any(|r| r.name == *name) {
            modules.push(Request {
                name: name.to_string(),
                params: None,
            });
        }
    }
    if let Some(v) = &raw.version {
        check_release(v.get_ref()).map_err(|p| bad(Some(v.span()), "kernel.version", p))?;
    }
    let dir = match &raw.modules_dir {
        Some(d) if d.get_ref().trim().is_empty() => {
            return Err(bad(Some(d.span()), "kernel.modules_dir", "is empty".into()));
        }
        Some(d) => Some(base_dir.join(d.get_ref())),
        None => None,
    };
    if modules.is_empty() {
        return Ok(None);
    }
    let version = raw.version.map(Spanned::into_inner);
    let dir = match (&version, dir) {
        (_, Some(d)) => d,
        (Some(v), None) => Path::new(HOST_MODULES).join(v),
        (None, None) => {
            let span = raw.modules.as_ref().map(|m| m.span());
            return Err(bad(
                span,
                "kernel.modules",
                "needs the guest kernel's module tree: set `kernel.version` (a tree in \
                 /lib/modules) or `kernel.modules_dir`; fledge never uses the build host's \
                 running kernel"
                    .into(),
            ));
        }
    };
    Ok(Some(Settings {
        modules,
        version,
        dir,
    }))
}

/// The entries of `kernel.modules`, split into name and parameters.
fn requests(list: &[String]) -> Result<Vec<Request>, String> {
    let mut out: Vec<Request> = Vec::with_capacity(list.len());
    for entry in list {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("has an empty entry".into());
        }
        if entry.chars().any(char::is_control) {
            return Err(format!("has {entry:?}, which contains a control character"));
        }
        let (name, params) = match entry.split_once(char::is_whitespace) {
            Some((n, p)) => (n, Some(p.trim().to_string())),
            None => (entry, None),
        };
        if name.contains('/') {
            return Err(format!(
                "has \"{name}\": give a module name or alias (e.g. \"virtio_net\"), not a path"
            ));
        }
        let norm = tree::normalise_name(name);
        if out.iter().any(|r| tree::normalise_name(&r.name) == norm) {
            return Err(format!("names {name} twice"));
        }
        out.push(Request {
            name: name.to_string(),
            params,
        });
    }
    Ok(out)
}

/// A kernel release names one directory: no `/`, spaces or control characters.
pub(super) fn check_release(r: &str) -> Result<(), String> {
    if r.is_empty() || r == "." || r == ".." {
        return Err(format!("{r:?} is not a release such as \"6.1.0-48-amd64\""));
    }
    if r.contains('/') || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{r:?} contains a `/`, a space or a control character"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kernel: &str) -> Result<Option<Settings>, String> {
        let raw: RawKernel = toml::from_str(kernel).map_err(|e| e.to_string())?;
        settings(raw, Path::new("/cfg"), &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn settings_name_the_tree_and_never_default_to_the_host() {
        let s = parse(
            "modules = [\"virtio_net\", \"loop  max_loop=8\"]\nversion = \"6.1.0-48-amd64\"\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.dir, Path::new("/lib/modules/6.1.0-48-amd64"));
        assert_eq!(
            s.modules[1],
            Request {
                name: "loop".into(),
                params: Some("max_loop=8".into())
            }
        );
        let s = parse("modules = [\"a\"]\nmodules_dir = \"k/lib/modules/6.1.0-7\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.version.as_deref(), s.dir.as_path()),
            (None, Path::new("/cfg/k/lib/modules/6.1.0-7"))
        );
        let s = parse("modules = [\"a\"]\nmodules_dir = \"/m\"\nversion = \"6.1\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.version.as_deref(), s.dir.as_path()),
            (Some("6.1"), Path::new("/m"))
        );
        assert_eq!(parse("version = \"6.1\"\n").unwrap(), None);

        let bad: &[(&str, &[&str])] = &[
            (
                "modules = [\"a\"]\n",
                &["`kernel.modules`", "never uses the build host"],
            ),
            ("modules = [\"a\", \"a\"]\nversion = \"1\"\n", &["twice"]),
            ("modules = [\"x/y.ko\"]\nversion = \"1\"\n", &["not a path"]),
            ("modules = [\"\"]\nversion = \"1\"\n", &["empty entry"]),
            (
                "modules = [\"a\\nb\"]\nversion = \"1\"\n",
                &["control character"],
            ),
            (
                "modules = [\"a\"]\nversion = \"../x\"\n",
                &["`kernel.version`"],
            ),
            (
                "modules = [\"a\"]\nmodules_dir = \"\"\n",
                &["`kernel.modules_dir`", "empty"],
            ),
        ];
        for (i, (text, want)) in bad.iter().enumerate() {
            let e = parse(text).unwrap_err();
            for w in *want {
                assert!(e.contains(w), "case {i}: {e:?} lacks {w:?}");
            }
        }
    }
}
