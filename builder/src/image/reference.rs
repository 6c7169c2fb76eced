//! Image references in the transports users know from skopeo and podman.
//!
//! | written | means |
//! |---|---|
//! | `oci:DIR[:TAG]` | an OCI image layout directory; TAG is an `org.opencontainers.image.ref.name` |
//! | `oci-archive:FILE[:TAG]` | the same layout in a tar file |
//! | `docker-archive:FILE[:REF]` | `docker save` / `podman save` output; REF is `name:tag` or `@N` |
//! | `docker://HOST[:PORT]/REPO[:TAG\|@sha256:HEX]` | a registry |
//! | `NAME[:TAG]`, `USER/NAME[:TAG]`, `HOST/REPO...` | a registry, Docker's rules: `docker.io` and `library/` when no host is named |
//!
//! As in skopeo, the first `:` after a file transport's name ends the path.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Digest;

/// The registry used when a reference names none.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves [`DOCKER_HUB`]'s API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    OciDir { dir: PathBuf, tag: Option<String> },
    OciArchive { file: PathBuf, tag: Option<String> },
    DockerArchive { file: PathBuf, name: Option<String> },
    Registry(RegistryRef),
}

/// `HOST/REPO` and the tag or digest asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// As written (`docker.io`, `localhost:5000`).
    pub host: String,
    pub repo: String,
    pub pick: Pick,
}

/// Which manifest of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Tag(String),
    Digest(Digest),
}

impl RegistryRef {
    /// Host to send API requests to (`docker.io` is served by `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.host == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.host
        }
    }

    /// A registry on this machine, where plain HTTP is allowed.
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.host)
    }

    /// The tag or digest in the API's `manifests/<reference>` form.
    pub fn reference(&self) -> String {
        match &self.pick {
            Pick::Tag(t) => t.clone(),
            Pick::Digest(d) => d.to_string(),
        }
    }
}

/// `HOST[:PORT]` names this machine.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pick {
            Pick::Tag(t) => write!(f, "{}/{}:{t}", self.host, self.repo),
            Pick::Digest(d) => write!(f, "{}/{}@{d}", self.host, self.repo),
        }
    }
}

impl ImageRef {
    /// Parses `text`; relative file paths start at `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<ImageRef, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("is empty: name an image such as \"oci-archive:app.tar\" or \"docker://registry.example/app:1.0\"".into());
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("contains a space or a control character".into());
        }
        let file = |rest: &str| -> Result<(PathBuf, Option<String>), String> {
            let (path, tail) = match rest.split_once(':') {
                Some((p, t)) => (p, Some(t.to_string()).filter(|t| !t.is_empty())),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err("names no file or directory after the transport".into());
            }
            Ok((base_dir.join(path), tail))
        };
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = file(rest)?;
            return Ok(ImageRef::OciDir { dir, tag });
        }
        if let Some(rest) = text.strip_prefix("oci-archive:") {
            let (file, tag) = file(rest)?;
            return Ok(ImageRef::OciArchive { file, tag });
        }
        if let Some(rest) = text.strip_prefix("docker-archive:") {
            let (file, name) = file(rest)?;
            return Ok(ImageRef::DockerArchive { file, name });
        }
        if let Some(rest) = text.strip_prefix("docker://") {
            return parse_registry(rest).map(ImageRef::Registry);
        }
        if let Some((transport, _)) = text.split_once(':') {
            let known = [
                "containers-storage",
                "docker-daemon",
                "dir",
                "sif",
                "tarball",
            ];
            if known.contains(&transport) {
                return Err(format!(
                    "uses the `{transport}:` transport, which fledge does not read: copy the image \
                     with `skopeo copy {text} oci-archive:image.tar` and use \"oci-archive:image.tar\""
                ));
            }
        }
        parse_registry(text).map(ImageRef::Registry)
    }
}

/// `[HOST/]REPO[:TAG|@DIGEST]` with Docker's defaults.
fn parse_registry(text: &str) -> Result<RegistryRef, String> {
    let (name, pick) = match text.split_once('@') {
        Some((name, digest)) => {
            let d = Digest::parse(digest).map_err(|e| format!("has a bad digest: {e}"))?;
            // `name:tag@digest`: the digest decides.
            let name = match name.rsplit_once(':') {
                Some((n, tag)) if !tag.contains('/') => n,
                _ => name,
            };
            (name, Pick::Digest(d))
        }
        None => match text.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Pick::Tag(tag.to_string())),
            _ => (text, Pick::Tag("latest".into())),
        },
    };
    if let Pick::Tag(t) = &pick {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(format!("has the tag {t:?}, which is not a valid tag"));
        }
    }
    let (host, repo) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let repo = if host == DOCKER_HUB && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && !c.starts_with(['.', '_', '-'])
            && !c.ends_with(['.', '_', '-'])
    };
    if repo.is_empty() || !repo.split('/').all(component_ok) {
        return Err(format!(
            "has the repository name {repo:?}: names are lowercase letters, digits and . _ - between slashes"
        ));
    }
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    {
        return Err(format!(
            "has the registry host {host:?}, which is not a host name"
        ));
    }
    Ok(RegistryRef { host, repo, pick })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(host: &str, repo: &str, tag: &str) -> ImageRef {
        ImageRef::Registry(RegistryRef {
            host: host.into(),
            repo: repo.into(),
            pick: Pick::Tag(tag.into()),
        })
    }

    #[test]
    fn transports() {
        let base = Path::new("/cfg");
        let hex = "a".repeat(64);
        let cases: Vec<(&str, ImageRef)> = vec![
            (
                "oci:img",
                ImageRef::OciDir {
                    dir: "/cfg/img".into(),
                    tag: None,
                },
            ),
            (
                "oci:/abs/img:v1",
                ImageRef::OciDir {
                    dir: "/abs/img".into(),
                    tag: Some("v1".into()),
                },
            ),
            (
                "oci-archive:app.tar",
                ImageRef::OciArchive {
                    file: "/cfg/app.tar".into(),
                    tag: None,
                },
            ),
            (
                "oci-archive:app.tar:latest",
                ImageRef::OciArchive {
                    file: "/cfg/app.tar".into(),
                    tag: Some("latest".into()),
                },
            ),
            (
                "docker-archive:s.tar",
                ImageRef::DockerArchive {
                    file: "/cfg/s.tar".into(),
                    name: None,
                },
            ),
            (
                "docker-archive:s.tar:busybox:1.36",
                ImageRef::DockerArchive {
                    file: "/cfg/s.tar".into(),
                    name: Some("busybox:1.36".into()),
                },
            ),
            ("nginx", reg("docker.io", "library/nginx", "latest")),
            ("nginx:1.27", reg("docker.io", "library/nginx", "1.27")),
            ("user/app:2", reg("docker.io", "user/app", "2")),
            (
                "docker://localhost:5000/a/b:t",
                reg("localhost:5000", "a/b", "t"),
            ),
            (
                "docker://127.0.0.1:5000/app",
                reg("127.0.0.1:5000", "app", "latest"),
            ),
            ("ghcr.io/o/r:v", reg("ghcr.io", "o/r", "v")),
        ];
        for (text, want) in cases {
            assert_eq!(ImageRef::parse(text, base).unwrap(), want, "{text}");
        }
        let pinned =
            ImageRef::parse(&format!("docker://quay.io/x/y:t@sha256:{hex}"), base).unwrap();
        let ImageRef::Registry(r) = pinned else {
            panic!()
        };
        assert_eq!(
            r.pick,
            Pick::Digest(Digest::parse(&format!("sha256:{hex}")).unwrap())
        );
        assert_eq!(r.repo, "x/y");
        assert_eq!(r.to_string(), format!("quay.io/x/y@sha256:{hex}"));
    }

    #[test]
    fn bad_references() {
        let cases = [
            ("", "is empty"),
            ("oci:", "names no file"),
            ("docker://Upper/Case", "repository name"),
            ("nginx@sha256:abc", "bad digest"),
            ("nginx:bad/tag:", "not a valid tag"),
            ("containers-storage:app", "skopeo copy"),
            ("a b", "space"),
        ];
        for (text, needle) in cases {
            let err = ImageRef::parse(text, Path::new("/")).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for (host, want) in [
            ("localhost:5000", true),
            ("127.0.0.1", true),
            ("[::1]:80", true),
            ("docker.io", false),
            ("localhost.evil.com", false),
        ] {
            let r = RegistryRef {
                host: host.into(),
                repo: "a".into(),
                pick: Pick::Tag("t".into()),
            };
            assert_eq!(r.is_loopback(), want, "{host}");
        }
    }
}
