//! Sourcing: gets busybox and the kestrel agent onto this machine, verified.
//!
//! This module owns every byte that comes from outside the config's directory. A location is
//! `http(s)://`, `file://` or a local path. Downloads go through a content-addressed cache
//! (`blobs/<sha256>`, plus `urls/<sha256 of the URL>` naming the blob a URL gave last time), so a
//! second build of the same config needs no network. Every file is hashed; when a digest is
//! expected, a mismatch fails the build naming both digests.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::AgentSource;

/// Repository whose GitHub releases carry the `kestrel` agent.
pub const AGENT_REPO: &str = "volantvm/volant";
/// Asset name of the agent in a release.
pub const AGENT_ASSET: &str = "kestrel";

/// Errors while getting an input.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}: cannot read {}: {source}; check the path in the config (relative paths start at the config's directory)", crate::util::shown(path))]
    Read {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{what}: {} is not a regular file; point the config at the file itself",
        crate::util::shown(path)
    )]
    NotAFile { what: String, path: PathBuf },
    #[error("{what} from {location}: sha256 mismatch: expected {expected}, got {actual}; check the digest in your config or the file it points to")]
    ChecksumMismatch {
        what: String,
        location: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: cannot download {url}: {message}; check the URL and the network, or point the config at a local file")]
    Download {
        what: String,
        url: String,
        message: String,
    },
    #[error("kestrel agent: cannot resolve release `{version}` of {repo}: {message}; without network access use [agent] source_strategy = \"local\" (path = ...) or \"http\" (url = ...)")]
    Release {
        version: String,
        repo: String,
        message: String,
    },
    #[error("cache {}: {source}", path.display())]
    Cache { path: PathBuf, source: io::Error },
}

/// A file ready to be read by the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where it is now (the original local file, or a cache blob).
    pub path: PathBuf,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    pub size: u64,
    /// Where it came from, for messages.
    pub origin: String,
    /// Whether it came from the cache rather than the network.
    pub cached: bool,
}

/// Fetches inputs through a cache directory.
#[derive(Debug, Clone)]
pub struct Fetcher {
    cache: PathBuf,
    /// Base of the GitHub API (`FLEDGE_GITHUB_API` overrides it, for mirrors and tests).
    github_api: String,
}

impl Fetcher {
    pub fn new(cache: PathBuf) -> Self {
        let github_api = std::env::var("FLEDGE_GITHUB_API")
            .unwrap_or_else(|_| "https://api.github.com".to_string());
        Fetcher { cache, github_api }
    }

    /// `$FLEDGE_CACHE_DIR`, else `$XDG_CACHE_HOME/fledge`, else `~/.cache/fledge`.
    pub fn default_cache_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("FLEDGE_CACHE_DIR") {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("fledge");
        }
        match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".cache/fledge"),
            None => std::env::temp_dir().join("fledge-cache"),
        }
    }

    /// Gets `location` (URL or path relative to `base_dir`) and checks `sha256` when given.
    pub fn fetch(
        &self,
        what: &str,
        location: &str,
        sha256: Option<&str>,
        base_dir: &Path,
    ) -> Result<Fetched, SourceError> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return self.download(what, location, sha256);
        }
        let path = match location.strip_prefix("file://") {
            // A relative file:// path starts at the config's directory, like a plain path.
            Some(p) => base_dir.join(percent_decode(p)),
            None => base_dir.join(location),
        };
        let (digest, size) = hash_file(what, &path)?;
        verify(what, location, sha256, &digest)?;
        Ok(Fetched {
            path,
            sha256: digest,
            size,
            origin: location.to_string(),
            cached: false,
        })
    }

    /// Gets the kestrel agent as `[agent]` says.
    pub fn agent(&self, src: &AgentSource) -> Result<Fetched, SourceError> {
        const WHAT: &str = "kestrel agent";
        match src {
            // The config already resolved the path against its directory.
            AgentSource::Local { path } => {
                self.fetch(WHAT, &path.to_string_lossy(), None, Path::new(""))
            }
            AgentSource::Http { url, sha256 } => self.download(WHAT, url, sha256.as_deref()),
            AgentSource::Release { version } => {
                let url = self.resolve_release(version)?;
                self.download(WHAT, &url, None)
            }
        }
    }

    /// Finds the download URL of the agent in a release; remembers it so an offline build can
    /// reuse the last answer.
    fn resolve_release(&self, version: &str) -> Result<String, SourceError> {
        let api = if version == "latest" {
            format!("{}/repos/{AGENT_REPO}/releases/latest", self.github_api)
        } else {
            format!(
                "{}/repos/{AGENT_REPO}/releases/tags/{version}",
                self.github_api
            )
        };
        // Keyed by what was asked, not where: a mirror answers for the same release.
        let memo = self.cache.join("releases").join(hex::encode(Sha256::digest(
            format!("{AGENT_REPO}@{version}").as_bytes(),
        )));
        let fail = |message: String| SourceError::Release {
            version: version.to_string(),
            repo: AGENT_REPO.to_string(),
            message,
        };
        let answer = http_get(&api).and_then(|(mut r, _)| {
            let mut body = String::new();
            r.read_to_string(&mut body).map_err(|e| e.to_string())?;
            Ok(body)
        });
        match answer {
            Ok(body) => {
                let json: serde_json::Value = serde_json::from_str(&body)
                    .map_err(|e| fail(format!("bad answer from {api}: {e}")))?;
                let tag = json["tag_name"].as_str().unwrap_or(version).to_string();
                let url = json["assets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["name"].as_str() == Some(AGENT_ASSET))
                    .and_then(|a| a["browser_download_url"].as_str())
                    .ok_or_else(|| {
                        fail(format!("release {tag} has no asset named `{AGENT_ASSET}`"))
                    })?
                    .to_string();
                log::info!("kestrel agent: release {tag} is {url}");
                write_atomic(&memo, url.as_bytes())?;
                Ok(url)
            }
            Err(message) => match fs::read_to_string(&memo) {
                Ok(url) => {
                    log::warn!(
                        "kestrel agent: cannot reach {api} ({message}); using the release found last time: {url}"
                    );
                    Ok(url)
                }
                Err(_) => Err(fail(message)),
            },
        }
    }

    fn download(
        &self,
        what: &str,
        url: &str,
        sha256: Option<&str>,
    ) -> Result<Fetched, SourceError> {
        let blobs = self.cache.join("blobs");
        let index = self
            .cache
            .join("urls")
            .join(hex::encode(Sha256::digest(url.as_bytes())));
        // A known digest, or the one this URL gave last time, may already be in the cache.
        let remembered = fs::read_to_string(&index)
            .ok()
            .map(|s| s.trim().to_string());
        for digest in sha256.map(str::to_string).into_iter().chain(remembered) {
            if sha256.is_some_and(|want| want != digest) {
                continue;
            }
            let blob = blobs.join(&digest);
            if let Ok((actual, size)) = hash_file(what, &blob) {
                if actual == digest {
                    log::debug!("{what}: {url} found in the cache");
                    return Ok(Fetched {
                        path: blob,
                        sha256: digest,
                        size,
                        origin: url.into(),
                        cached: true,
                    });
                }
            }
        }

        log::info!("{what}: downloading {url}");
        fs::create_dir_all(&blobs).map_err(|source| SourceError::Cache {
            path: blobs.clone(),
            source,
        })?;
        let (mut reader, length) = http_get(url).map_err(|message| SourceError::Download {
            what: what.into(),
            url: url.into(),
            message,
        })?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&blobs).map_err(|source| SourceError::Cache {
                path: blobs.clone(),
                source,
            })?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let bar = crate::progress::Bar::bytes(&format!("{what}: downloading"), length);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(SourceError::Download {
                        what: what.into(),
                        url: url.into(),
                        message: e.to_string(),
                    })
                }
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|source| SourceError::Cache {
                    path: blobs.clone(),
                    source,
                })?;
            size += n as u64;
            bar.inc(n as u64);
        }
        bar.finish();
        let digest = hex::encode(hasher.finalize());
        verify(what, url, sha256, &digest)?;
        let blob = blobs.join(&digest);
        tmp.persist(&blob).map_err(|e| SourceError::Cache {
            path: blob.clone(),
            source: e.error,
        })?;
        write_atomic(&index, digest.as_bytes())?;
        Ok(Fetched {
            path: blob,
            sha256: digest,
            size,
            origin: url.into(),
            cached: false,
        })
    }
}

fn verify(
    what: &str,
    location: &str,
    expected: Option<&str>,
    actual: &str,
) -> Result<(), SourceError> {
    match expected {
        Some(want) if want != actual => Err(SourceError::ChecksumMismatch {
            what: what.into(),
            location: location.into(),
            expected: want.into(),
            actual: actual.into(),
        }),
        _ => Ok(()),
    }
}

/// sha256 (hex) and size of a regular file.
pub fn hash_file(what: &str, path: &Path) -> Result<(String, u64), SourceError> {
    let read_err = |source| SourceError::Read {
        what: what.into(),
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(read_err)?;
    if !f.metadata().map_err(read_err)?.is_file() {
        return Err(SourceError::NotAFile {
            what: what.into(),
            path: path.to_path_buf(),
        });
    }
    let (digest, size) = sha256_reader(&mut f).map_err(read_err)?;
    Ok((hex::encode(digest), size))
}

/// sha256 and length of everything `r` yields.
pub fn sha256_reader(r: &mut impl Read) -> io::Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hasher.finalize().into(), size))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SourceError> {
    let cache_err = |source| SourceError::Cache {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(cache_err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(cache_err)?;
    tmp.write_all(bytes).map_err(cache_err)?;
    tmp.persist(path).map_err(|e| cache_err(e.error))?;
    Ok(())
}

/// GET with sane timeouts; the body as a reader, or the reason in one line.
/// A GET's body and its length when the server said it.
type Body = (Box<dyn Read + Send + Sync + 'static>, Option<u64>);

fn http_get(url: &str) -> Result<Body, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_body(Some(Duration::from_secs(300)))
        .user_agent(concat!("fledge/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let length = resp.body().content_length();
    Ok((Box::new(resp.into_body().into_reader()), length))
}

/// Decodes `%XX` escapes in a `file://` path.
fn percent_decode(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escape = b
            .get(i + 1..i + 3)
            .filter(|h| b[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        if let Some(h) = escape {
            out.push(hex::decode(h).expect("two hex digits")[0]);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Serves `body` at `/busybox` on loopback; counts requests.
    fn serve(body: &'static [u8]) -> (String, Arc<AtomicUsize>) {
        let (base, hits) = serve_routes(|_| vec![("/busybox".into(), body.to_vec())]);
        (format!("{base}/busybox"), hits)
    }

    /// Serves routes (request path -> body, made from the server's own base URL) on loopback,
    /// 404 for anything else; counts requests.
    fn serve_routes(
        routes: impl FnOnce(&str) -> Vec<(String, Vec<u8>)>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = routes(&base);
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(16) {
                let mut s = stream.unwrap();
                let mut req = [0u8; 4096];
                let n = s.read(&mut req).unwrap_or(0);
                let text = String::from_utf8_lossy(&req[..n]).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                h.fetch_add(1, Ordering::SeqCst);
                let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                    Some((_, b)) => ("200 OK", b.clone()),
                    None => ("404 Not Found", Vec::new()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
        });
        (base, hits)
    }

    #[test]
    fn release_resolves_the_kestrel_asset_and_works_offline_afterwards() {
        let cache = tempfile::tempdir().unwrap();
        let (base, hits) = serve_routes(|base| {
            let json = format!(
                r#"{{"tag_name":"v1.2.3","assets":[{{"name":"kestrel.sha256","browser_download_url":"{base}/x"}},{{"name":"kestrel","browser_download_url":"{base}/dl/kestrel"}}]}}"#
            );
            vec![
                (
                    "/repos/volantvm/volant/releases/latest".into(),
                    json.into_bytes(),
                ),
                ("/dl/kestrel".into(), b"the agent".to_vec()),
            ]
        });
        let mut f = Fetcher::new(cache.path().into());
        f.github_api = base;
        let latest = AgentSource::Release {
            version: "latest".into(),
        };
        let a = f.agent(&latest).unwrap();
        assert_eq!(fs::read(&a.path).unwrap(), b"the agent");
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // Offline: the API is gone, the last answer and the cached blob still serve.
        f.github_api = "http://127.0.0.1:1".into();
        let b = f.agent(&latest).unwrap();
        assert!(b.cached);
        assert_eq!(b.sha256, a.sha256);

        // A tag without the asset is an error naming the release.
        let (base, _) = serve_routes(|_| {
            vec![(
                "/repos/volantvm/volant/releases/tags/v9".into(),
                br#"{"tag_name":"v9","assets":[]}"#.to_vec(),
            )]
        });
        f.github_api = base;
        let msg = f
            .agent(&AgentSource::Release {
                version: "v9".into(),
            })
            .unwrap_err()
            .to_string();
        assert!(msg.contains("v9") && msg.contains("`kestrel`"), "{msg}");
    }

    fn digest(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[test]
    fn download_is_cached_and_second_fetch_is_offline() {
        let cache = tempfile::tempdir().unwrap();
        let (url, hits) = serve(b"busybox bytes");
        let f = Fetcher::new(cache.path().to_path_buf());
        let a = f.fetch("busybox", &url, None, Path::new("/")).unwrap();
        assert_eq!(a.sha256, digest(b"busybox bytes"));
        assert!(!a.cached);
        let b = f
            .fetch("busybox", &url, Some(&a.sha256), Path::new("/"))
            .unwrap();
        assert!(b.cached);
        assert_eq!(fs::read(&b.path).unwrap(), b"busybox bytes");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "second fetch must not touch the network"
        );
    }

    #[test]
    fn checksum_mismatch_names_both_digests_and_caches_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let (url, _) = serve(b"tampered");
        let want = "0".repeat(64);
        let err = Fetcher::new(cache.path().into())
            .fetch("busybox", &url, Some(&want), Path::new("/"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&want) && msg.contains(&digest(b"tampered")),
            "{msg}"
        );
        let blobs: Vec<_> = fs::read_dir(cache.path().join("blobs")).unwrap().collect();
        assert!(
            blobs.is_empty(),
            "nothing may be left in the cache: {blobs:?}"
        );
    }

    #[test]
    fn local_paths_and_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("my file"), b"abc").unwrap();
        let f = Fetcher::new(dir.path().join("cache"));
        let a = f
            .fetch("x", "my file", Some(&digest(b"abc")), dir.path())
            .unwrap();
        assert_eq!(a.path, dir.path().join("my file"));
        let url = format!("file://{}/my%20file", dir.path().display());
        assert_eq!(
            f.fetch("x", &url, None, Path::new("/")).unwrap().sha256,
            digest(b"abc")
        );
        let missing = f
            .fetch("x", "nope", None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("nope") && missing.starts_with("x: cannot read"),
            "{missing}"
        );
    }

    #[test]
    fn unreachable_release_suggests_local_or_http() {
        let cache = tempfile::tempdir().unwrap();
        let mut f = Fetcher::new(cache.path().into());
        f.github_api = "http://127.0.0.1:1".into();
        let msg = f
            .agent(&AgentSource::Release {
                version: "latest".into(),
            })
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("\"local\"") && msg.contains("\"http\""),
            "{msg}"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%20b/c%2"), Path::new("/a b/c%2"));
        assert_eq!(percent_decode("/plain"), Path::new("/plain"));
        assert_eq!(
            percent_decode("/%aé%zz%"),
            Path::new("/%aé%zz%"),
            "no panic on odd escapes"
        );
        assert_eq!(percent_decode("/%C3%A9"), Path::new("/é"));
    }
}
