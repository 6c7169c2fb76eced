//! Fetching: busybox, the kestrel agent and image blobs onto this machine, verified.
//!
//! This module owns every byte that comes from outside the config's directory. A location is
//! `http(s)://`, `file://` (RFC 8089: `file:///abs`, `file://localhost/abs`; `file://rel` is
//! relative to the config) or a local path. Downloads go through a content-addressed cache
//! (`blobs/<sha256>`, plus `urls/<sha256 of the URL>` naming the blob a URL gave last time), so a
//! second build of the same config needs no network. Every file is hashed; when a digest is
//! expected, a mismatch fails the build naming both digests. A download is bounded in time and
//! size ([`net`], the builder's one HTTP client), tried twice when the failure may pass, and
//! written through the blob store ([`store`]) into a temporary file that is removed on failure
//! or a signal; one left by a killed build is removed by the next.

pub mod net;
pub mod store;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::AgentSource;
use net::{NetError, NetLimits};

/// Repository whose GitHub releases carry the `kestrel` agent.
pub const AGENT_REPO: &str = "volantvm/volant";
/// Asset name of the x86_64 agent in a release ([`crate::arch::Arch::agent_asset`] names each).
pub const AGENT_ASSET: &str = "kestrel";

/// How to build without the network, for download errors.
const OFFLINE_HINT: &str = "to build offline, use a local copy: a path or file:// URL for busybox, [agent] source_strategy = \"local\" (or a file:// url) for the agent";

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
    #[error(
        "{what}: cannot download {url}: {message}; check the URL and the network; {OFFLINE_HINT}"
    )]
    Download {
        what: String,
        url: String,
        message: String,
    },
    #[error("{what}: cannot download {url}: {message}")]
    Settings {
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
    /// Bounds of downloads, or why the environment's are wrong (reported on first use, so a
    /// build that needs no network is not stopped by them).
    limits: Result<NetLimits, String>,
    /// The release asset `[agent] source_strategy = "release"` downloads.
    agent_asset: &'static str,
}

impl Fetcher {
    pub fn new(cache: PathBuf) -> Self {
        let github_api = std::env::var("FLEDGE_GITHUB_API")
            .unwrap_or_else(|_| "https://api.github.com".to_string());
        Fetcher {
            cache,
            github_api,
            limits: NetLimits::from_env(),
            agent_asset: AGENT_ASSET,
        }
    }

    /// Downloads the agent release asset built for `arch`.
    pub fn for_arch(mut self, arch: crate::arch::Arch) -> Self {
        self.agent_asset = arch.agent_asset();
        self
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
        if is_remote(location) {
            return self.download(what, location, sha256);
        }
        let path = base_dir.join(local_path(location));
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

    /// Gets the kestrel agent as `[agent]` says; a relative `file://` URL starts at
    /// `base_dir`.
    pub fn agent(&self, src: &AgentSource, base_dir: &Path) -> Result<Fetched, SourceError> {
        const WHAT: &str = "kestrel agent";
        match src {
            // The config already resolved the path against its directory.
            AgentSource::Local { path, sha256 } => self.fetch(
                WHAT,
                &path.to_string_lossy(),
                sha256.as_deref(),
                Path::new(""),
            ),
            AgentSource::Http { url, sha256 } => self.fetch(WHAT, url, sha256.as_deref(), base_dir),
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
        let asked = match self.agent_asset {
            AGENT_ASSET => format!("{AGENT_REPO}@{version}"),
            other => format!("{AGENT_REPO}@{version}/{other}"),
        };
        let memo = self
            .cache
            .join("releases")
            .join(hex::encode(Sha256::digest(asked.as_bytes())));
        let fail = |message: String| SourceError::Release {
            version: version.to_string(),
            repo: AGENT_REPO.to_string(),
            message,
        };
        let answer = self.limits.clone().and_then(|limits| {
            let (r, _) = net::get(&api, &limits).map_err(|e| e.message)?;
            // A release description is a few KiB; more is not an answer to read.
            let mut body = String::new();
            r.take(RELEASE_JSON_MAX)
                .read_to_string(&mut body)
                .map_err(|e| net::body_error(e, &limits).message)?;
            Ok(body)
        });
        match answer {
            Ok(body) => {
                let url = release_asset(&body, version, self.agent_asset)
                    .map_err(|m| fail(format!("{m} ({api})")))?;
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

    /// The blob a known digest, or the digest this URL gave last time, names, when it is in
    /// the cache intact.
    fn cached(&self, what: &str, url: &str, sha256: Option<&str>) -> Option<Fetched> {
        let remembered = fs::read_to_string(self.url_index(url))
            .ok()
            .map(|s| s.trim().to_string());
        let digest = match sha256 {
            Some(want) => want.to_string(),
            None => remembered?,
        };
        let (path, size) = self.store().verified(&digest)?;
        log::debug!("{what}: {url} found in the cache");
        Some(Fetched {
            path,
            sha256: digest,
            size,
            origin: url.into(),
            cached: true,
        })
    }

    fn store(&self) -> store::BlobStore {
        store::BlobStore::new(&self.cache)
    }

    fn url_index(&self, url: &str) -> PathBuf {
        self.cache
            .join("urls")
            .join(hex::encode(Sha256::digest(url.as_bytes())))
    }

    fn download(
        &self,
        what: &str,
        url: &str,
        sha256: Option<&str>,
    ) -> Result<Fetched, SourceError> {
        if let Some(hit) = self.cached(what, url, sha256) {
            return Ok(hit);
        }
        let limits = self
            .limits
            .clone()
            .map_err(|message| SourceError::Settings {
                what: what.into(),
                url: url.into(),
                message,
            })?;
        log::info!("{what}: downloading {url}");
        let mut result = self.download_once(what, url, &limits);
        if let Err(Fail::Net(e)) = &result {
            if e.transient {
                log::warn!(
                    "{what}: {url}: {}; trying again in {} s",
                    e.message,
                    limits.retry_delay.as_secs_f64()
                );
                std::thread::sleep(limits.retry_delay);
                result = self.download_once(what, url, &limits).map_err(|f| match f {
                    Fail::Net(e) => Fail::Net(NetError {
                        message: format!("{} (tried twice)", e.message),
                        ..e
                    }),
                    other => other,
                });
            }
        }
        let blob = result.map_err(|f| match f {
            Fail::Net(e) => SourceError::Download {
                what: what.into(),
                url: url.into(),
                message: e.message,
            },
            Fail::Cache(e) => e,
        })?;
        let stored = blob.commit(sha256).map_err(|e| match e {
            store::CommitError::Mismatch { actual } => SourceError::ChecksumMismatch {
                what: what.into(),
                location: url.into(),
                expected: sha256.unwrap_or_default().into(),
                actual,
            },
            store::CommitError::Io(source) => SourceError::Cache {
                path: self.store().dir().to_path_buf(),
                source,
            },
        })?;
        write_atomic(&self.url_index(url), stored.hex.as_bytes())?;
        Ok(Fetched {
            path: stored.path,
            sha256: stored.hex,
            size: stored.size,
            origin: url.into(),
            cached: false,
        })
    }

    /// One GET into a blob writer of the store (nothing is kept when it is dropped unused).
    fn download_once(
        &self,
        what: &str,
        url: &str,
        limits: &NetLimits,
    ) -> Result<store::BlobWriter, Fail> {
        let (mut reader, length) = net::get(url, limits).map_err(Fail::Net)?;
        let blobs = self.store();
        let cache_err = |source| {
            Fail::Cache(SourceError::Cache {
                path: blobs.dir().to_path_buf(),
                source,
            })
        };
        let mut blob = blobs.writer().map_err(cache_err)?;
        let bar = crate::progress::Bar::bytes(&format!("{what}: downloading"), length);
        let copied = copy(&mut reader, &mut blob, |n| bar.inc(n));
        bar.finish();
        copied.map_err(|e| match e {
            CopyError::Read(e) => Fail::Net(net::body_error(e, limits)),
            CopyError::Write(e) => cache_err(e),
        })?;
        Ok(blob)
    }
}

/// Largest release description read from the GitHub API.
const RELEASE_JSON_MAX: u64 = 4 << 20;

/// The download URL of the asset named `asset` in a GitHub release description.
fn release_asset(body: &str, version: &str, asset: &str) -> Result<String, String> {
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("bad answer: {e}"))?;
    let tag = json["tag_name"].as_str().unwrap_or(version).to_string();
    let url = json["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"].as_str() == Some(asset))
        .and_then(|a| a["browser_download_url"].as_str())
        .ok_or_else(|| format!("release {tag} has no asset named `{asset}`"))?
        .to_string();
    log::info!("kestrel agent: release {tag} is {url}");
    Ok(url)
}

/// Why one download attempt failed.
enum Fail {
    Net(NetError),
    Cache(SourceError),
}

/// Whether `location` is fetched over the network (`http(s)://`), not read from this machine.
pub fn is_remote(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// The path a non-HTTP location names: `file:///abs` and `file://localhost/abs` (RFC 8089) are
/// absolute, `file://rel` and a plain path are relative (to the config's directory).
fn local_path(location: &str) -> PathBuf {
    match location.strip_prefix("file://") {
        Some(rest) => {
            let rest = match rest.strip_prefix("localhost") {
                Some(abs) if abs.starts_with('/') => abs,
                _ => rest,
            };
            percent_decode(rest)
        }
        None => PathBuf::from(location),
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
    let (digest, size) = crate::hashing::sha256_reader(&mut f).map_err(read_err)?;
    Ok((hex::encode(digest), size))
}

/// Why [`copy`] stopped.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `r` to `w`, telling `progress` each chunk's length.
fn copy(
    r: &mut impl Read,
    w: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        size += n as u64;
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        progress(n as u64);
    }
    Ok(size)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SourceError> {
    crate::output::write(path, bytes).map_err(|source| SourceError::Cache {
        path: path.to_path_buf(),
        source,
    })
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
    use std::time::Duration;

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
        let a = f.agent(&latest, Path::new("/")).unwrap();
        assert_eq!(fs::read(&a.path).unwrap(), b"the agent");
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // Offline: the API is gone, the last answer and the cached blob still serve.
        f.github_api = "http://127.0.0.1:1".into();
        let b = f.agent(&latest, Path::new("/")).unwrap();
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
            .agent(
                &AgentSource::Release {
                    version: "v9".into(),
                },
                Path::new("/"),
            )
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
            .agent(
                &AgentSource::Release {
                    version: "latest".into(),
                },
                Path::new("/"),
            )
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("\"local\"") && msg.contains("\"http\""),
            "{msg}"
        );
    }

    /// A fetcher with short limits, so the slow servers below fail fast.
    fn quick(cache: &Path) -> Fetcher {
        let mut f = Fetcher::new(cache.into());
        f.limits = Ok(NetLimits {
            connect: Duration::from_millis(500),
            header: Duration::from_millis(400),
            idle: Duration::from_millis(300),
            total: Duration::from_secs(5),
            max_bytes: 1 << 20,
            retry_delay: Duration::from_millis(50),
        });
        f
    }

    /// Accepts connections and hands each to `serve` on its own thread; returns the URL.
    fn server(serve: fn(std::net::TcpStream)) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/busybox", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                h.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve(s));
            }
        });
        (url, hits)
    }

    fn read_request(s: &mut std::net::TcpStream) {
        let _ = s.read(&mut [0u8; 4096]);
    }

    fn temps_left(cache: &Path) -> Vec<String> {
        fs::read_dir(cache.join("blobs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Each hostile server: the error names what timed out or the cap, says how to go offline,
    /// comes fast, and leaves nothing in the cache.
    #[test]
    fn hostile_servers_fail_fast_with_the_limit_named() {
        fn silent(mut s: std::net::TcpStream) {
            read_request(&mut s);
            std::thread::sleep(Duration::from_secs(30));
        }
        fn stalls(mut s: std::net::TcpStream) {
            read_request(&mut s);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial");
            std::thread::sleep(Duration::from_secs(30));
        }
        fn endless(mut s: std::net::TcpStream) {
            read_request(&mut s);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = [b'x'; 65536];
            while s.write_all(&chunk).is_ok() {}
        }
        fn trickles(mut s: std::net::TcpStream) {
            read_request(&mut s);
            for b in b"HTTP/1.1 200 OK\r\nX-Slow: 1111111111111111111111" {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        fn huge(mut s: std::net::TcpStream) {
            read_request(&mut s);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\nxx");
            std::thread::sleep(Duration::from_secs(30));
        }
        type Serve = fn(std::net::TcpStream);
        let cases: [(&str, Serve, &[&str], usize); 5] = [
            (
                "never answers",
                silent,
                &[
                    "timed out",
                    "FLEDGE_HTTP_",
                    "waiting for the response",
                    "tried twice",
                ],
                2,
            ),
            (
                "stalls mid-body",
                stalls,
                &[
                    "timed out",
                    "0.3 s",
                    "reading the body",
                    "FLEDGE_HTTP_IDLE_TIMEOUT",
                    "tried twice",
                ],
                2,
            ),
            (
                "trickles headers",
                trickles,
                &[
                    "no complete response headers within 0.4 s (FLEDGE_HTTP_HEADER_TIMEOUT)",
                    "tried twice",
                ],
                2,
            ),
            (
                "endless body",
                endless,
                &["larger than the download cap of 1 MiB (FLEDGE_HTTP_MAX_MIB)"],
                1,
            ),
            (
                "announces 10 GB",
                huge,
                &["announces 10000000000 bytes", "cap of 1 MiB"],
                1,
            ),
        ];
        for (name, serve, want, tries) in cases {
            let cache = tempfile::tempdir().unwrap();
            let (url, hits) = server(serve);
            let t = std::time::Instant::now();
            let msg = quick(cache.path())
                .fetch("busybox", &url, None, Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(
                t.elapsed() < Duration::from_secs(4),
                "{name}: took {:?}",
                t.elapsed()
            );
            for w in want
                .iter()
                .chain(&["file://", "source_strategy = \"local\""])
            {
                assert!(msg.contains(w), "{name}: no {w:?} in: {msg}");
            }
            assert_eq!(hits.load(Ordering::SeqCst), tries, "{name}: attempts");
            assert_eq!(temps_left(cache.path()), Vec::<String>::new(), "{name}");
        }
    }

    #[test]
    fn a_transient_failure_is_tried_once_more() {
        fn flaky(mut s: std::net::TcpStream) {
            static CALLS: AtomicUsize = AtomicUsize::new(0);
            read_request(&mut s);
            let answer: &[u8] = if CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
                b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            };
            let _ = s.write_all(answer);
        }
        let cache = tempfile::tempdir().unwrap();
        let (url, hits) = server(flaky);
        let got = quick(cache.path())
            .fetch("busybox", &url, None, Path::new("/"))
            .unwrap();
        assert_eq!(fs::read(&got.path).unwrap(), b"ok");
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // A 404 is not worth a second try.
        let (base, hits) = serve_routes(|_| Vec::new());
        let msg = quick(cache.path())
            .fetch("busybox", &format!("{base}/nope"), None, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("HTTP 404") && !msg.contains("tried twice"),
            "{msg}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn temp_files_of_stopped_builds_are_removed_and_live_ones_kept() {
        let cache = tempfile::tempdir().unwrap();
        let blobs = cache.path().join("blobs");
        fs::create_dir_all(&blobs).unwrap();
        // A build still writing holds its file locked; a stopped one's is not locked.
        let live = crate::output::Pending::create(&blobs.join("download")).unwrap();
        let live_name = fs::read_dir(&blobs).unwrap().flatten().next().unwrap();
        let live_name = live_name.file_name().to_string_lossy().into_owned();
        let stale = ".download.AbC123.tmp".to_string();
        for n in [&stale, &"unrelated".to_string()] {
            fs::write(blobs.join(n), b"partial").unwrap();
        }
        let (url, _) = serve(b"bytes");
        quick(cache.path())
            .fetch("busybox", &url, None, Path::new("/"))
            .unwrap();
        let left = temps_left(cache.path());
        assert!(!left.contains(&stale), "{left:?}");
        assert!(
            left.contains(&live_name) && left.contains(&"unrelated".to_string()),
            "{left:?}"
        );
        drop(live);
    }

    #[test]
    fn a_bad_limit_variable_fails_only_a_download() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bb"), b"abc").unwrap();
        let mut f = Fetcher::new(dir.path().join("cache"));
        f.limits = Err("FLEDGE_HTTP_IDLE_TIMEOUT=\"x\" is not a positive number".into());
        assert!(f.fetch("busybox", "bb", None, dir.path()).is_ok());
        let msg = f
            .fetch("busybox", "http://127.0.0.1:1/bb", None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("FLEDGE_HTTP_IDLE_TIMEOUT=\"x\""), "{msg}");
    }

    #[test]
    fn file_urls_follow_rfc_8089() {
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("bb");
        fs::write(&abs, b"abc").unwrap();
        let f = Fetcher::new(dir.path().join("cache"));
        for url in [
            format!("file://localhost{}", abs.display()),
            format!("file://{}", abs.display()),
        ] {
            let got = f.fetch("busybox", &url, None, Path::new("/elsewhere"));
            assert_eq!(got.map(|g| g.path).ok(), Some(abs.clone()), "{url}");
        }
        assert_eq!(local_path("file://localhost/a"), Path::new("/a"));
        assert_eq!(
            local_path("file://localhostfile"),
            Path::new("localhostfile")
        );
        assert_eq!(local_path("file://rel/x"), Path::new("rel/x"));
    }

    #[test]
    fn agent_checksums_apply_to_local_files_and_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("kestrel"), b"agent").unwrap();
        let f = Fetcher::new(dir.path().join("cache"));
        let wrong = Some("0".repeat(64));
        let local = AgentSource::Local {
            path: dir.path().join("kestrel"),
            sha256: wrong.clone(),
        };
        let msg = f.agent(&local, dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("sha256 mismatch") && msg.contains(&digest(b"agent")),
            "{msg}"
        );
        let http = |sha256| AgentSource::Http {
            url: "file://kestrel".into(),
            sha256,
        };
        assert!(f.agent(&http(wrong), dir.path()).is_err());
        let ok = f.agent(&http(Some(digest(b"agent"))), dir.path()).unwrap();
        assert_eq!(ok.path, dir.path().join("kestrel"));
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
