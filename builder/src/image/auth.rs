//! Registry credentials from the files docker, podman and skopeo write (`auths` maps a registry
//! to `base64(user:password)`), looked up in the order podman uses: `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, then `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`. The first file with an entry for the registry wins; within a file
//! the longest matching key (`host/namespace` before `host`) does. Docker's credential
//! helpers count as entries of the file that names them, as Docker uses them: `credHelpers`
//! for the host first, then `auths`, then the file's `credsStore` ([`super::credhelper`] runs
//! them); a helper that has nothing for the host passes to the next file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// The file they came from, for messages.
    pub from: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {})", self.user, self.from.display())
    }
}

impl Credentials {
    /// The `Authorization: Basic ...` value.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The credential files to look in, in order.
pub fn files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut out = Vec::new();
    out.extend(env("REGISTRY_AUTH_FILE"));
    out.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    match env("DOCKER_CONFIG") {
        Some(d) => out.push(d.join("config.json")),
        None => out.extend(env("HOME").map(|h| h.join(".docker/config.json"))),
    }
    out
}

/// Names under which a registry may be stored (Docker Hub has several).
fn aliases(host: &str) -> Vec<&str> {
    if host == super::reference::DOCKER_HUB {
        vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        vec![host]
    }
}

/// Credentials for `host/repo` from the first of `files` that has them; a credential helper
/// that fails is a warning and counts as having none.
pub fn find(files: &[PathBuf], host: &str, repo: &str) -> Option<Credentials> {
    lookup(files, host, repo).unwrap_or_else(|e| {
        log::warn!("{e}; going on without credentials");
        None
    })
}

/// [`find`], with a credential helper's failure as the error (it names the helper and file).
pub fn lookup(files: &[PathBuf], host: &str, repo: &str) -> Result<Option<Credentials>, String> {
    for f in files {
        let Some(parsed) = read(f) else { continue };
        if let Some(c) = helper_creds(f, &parsed, host, true)? {
            return Ok(Some(c));
        }
        if let Some(c) = find_in(f, &parsed, host, repo) {
            return Ok(Some(c));
        }
        if let Some(c) = helper_creds(f, &parsed, host, false)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn read(file: &Path) -> Option<AuthFile> {
    let text = std::fs::read(file).ok()?;
    match serde_json::from_slice(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!("{}: not a credentials file ({e}); ignored", file.display());
            None
        }
    }
}

/// What the file's `credHelpers` entry for `host` (`per_host`) or its `credsStore` answers.
fn helper_creds(
    file: &Path,
    parsed: &AuthFile,
    host: &str,
    per_host: bool,
) -> Result<Option<Credentials>, String> {
    let name = if per_host {
        aliases(host)
            .into_iter()
            .find_map(|h| parsed.cred_helpers.get(h))
    } else {
        parsed.creds_store.as_ref()
    };
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    // Docker stores Docker Hub under its v1 address; other registries by host.
    let server = if host == super::reference::DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    let key = if per_host {
        "credHelpers"
    } else {
        "credsStore"
    };
    let found = super::credhelper::get(name, server)
        .map_err(|e| format!("{e} (named by {key} in {})", file.display()))?;
    Ok(found.map(|(user, password)| Credentials {
        user,
        password,
        from: PathBuf::from(format!(
            "{} ({key} in {})",
            super::credhelper::program(name),
            file.display()
        )),
    }))
}

fn find_in(file: &Path, parsed: &AuthFile, host: &str, repo: &str) -> Option<Credentials> {
    let mut best: Option<(usize, &AuthEntry)> = None;
    for (key, entry) in &parsed.auths {
        // `https://index.docker.io/v1/` -> `index.docker.io/v1`; `host/ns` keeps its path.
        let k = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let k = k
            .strip_suffix("/v1")
            .or_else(|| k.strip_suffix("/v2"))
            .unwrap_or(k);
        let (khost, kpath) = k.split_once('/').unwrap_or((k, ""));
        let fits = aliases(host).contains(&khost)
            && (kpath.is_empty() || repo == kpath || repo.starts_with(&format!("{kpath}/")));
        if fits && best.is_none_or(|(len, _)| k.len() > len) {
            best = Some((k.len(), entry));
        }
    }
    let (_, entry) = best?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.as_deref()?.trim())
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(Credentials {
        user: user.to_string(),
        password: password.to_string(),
        from: file.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn files_in_order_and_longest_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("auth.json");
        let second = dir.path().join("config.json");
        std::fs::write(
            &first,
            format!(
                r#"{{"auths": {{"localhost:5000": {{"auth": "{}"}}, "localhost:5000/team": {{"auth": "{}"}}}}}}"#,
                b64("a:hunter2"),
                b64("team:2")
            ),
        )
        .unwrap();
        std::fs::write(
            &second,
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}, "localhost:5000": {{"auth": "{}"}}}}}}"#,
                b64("hub:3"),
                b64("b:4")
            ),
        )
        .unwrap();
        let files = vec![
            dir.path().join("missing.json"),
            first.clone(),
            second.clone(),
        ];
        let got = |host, repo| find(&files, host, repo).map(|c| (c.user, c.password, c.from));
        assert_eq!(
            got("localhost:5000", "app"),
            Some(("a".into(), "hunter2".into(), first.clone()))
        );
        assert_eq!(
            got("localhost:5000", "team/app"),
            Some(("team".into(), "2".into(), first.clone()))
        );
        assert_eq!(
            got("localhost:5000", "teamx/app"),
            Some(("a".into(), "hunter2".into(), first))
        );
        assert_eq!(
            got("docker.io", "library/nginx"),
            Some(("hub".into(), "3".into(), second))
        );
        assert_eq!(got("ghcr.io", "x"), None);
        let c = find(&files, "localhost:5000", "app").unwrap();
        assert_eq!(c.basic(), format!("Basic {}", b64("a:hunter2")));
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "Debug hides the password"
        );
    }
}
