//! Pulls from a registry over the distribution API: `GET /v2/<repo>/manifests/<ref>` and
//! `GET /v2/<repo>/blobs/<digest>`, with anonymous, basic and bearer-token auth (the
//! `WWW-Authenticate` challenge of a 401 names the token service; credentials come from
//! [`super::auth`]).
//!
//! A small client on `ureq` rather than `oci-client`: the build already uses ureq (blocking,
//! rustls), while oci-client brings reqwest and a tokio runtime for what is, for a pull, four
//! kinds of request; every byte is checked against its digest here anyway. HTTPS always, except
//! for registries on this machine (`localhost`, `127.0.0.1`, `[::1]`) or with
//! `source.image_plain_http = true`; credentials never go to a token service over plain HTTP
//! unless one of those holds for it too, and never follow a redirect (to a CDN). Every request
//! goes through the builder's one HTTP client ([`crate::fetch::net`]) with its `FLEDGE_HTTP_*`
//! bounds; a blob is also bounded by its descriptor's size, and a timeout, refused connection
//! or 5xx is tried once more. Manifests and configs are kept in the blob store
//! ([`crate::fetch::store`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::auth::{self, Credentials};
use super::reference::{is_loopback, Pick, RegistryRef};
use super::resolve::{self, Blobs, Resolved};
use super::{Digest, Problem, Spec, MAX_JSON};
use crate::fetch::net::{self, NetLimits};
use crate::fetch::store::BlobStore;

/// What a manifest request accepts: OCI and Docker v2, indexes and manifests.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Resolves a registry image: the tag (asked again each build, the last answer used when the
/// registry cannot be reached) or digest, then manifests, config and layers through the cache.
/// Without `network`, only the cache answers.
pub fn resolve(
    r: &RegistryRef,
    spec: &Spec,
    cache: &Path,
    network: bool,
) -> Result<Resolved, Problem> {
    let mut client = Client::new(r, spec.plain_http, &auth::files(), NetLimits::from_env());
    client.offline = !network;
    let mut src = Cached {
        client,
        store: BlobStore::new(cache),
    };
    let memo = cache
        .join("images")
        .join(Digest::of(format!("{r}@{}", spec.platform).as_bytes()).hex());
    let root = match &r.pick {
        Pick::Digest(d) => d.clone(),
        Pick::Tag(tag) => match src.tag(tag) {
            Ok(d) => {
                log::info!("image {r}: the tag resolved to {d}");
                d
            }
            Err(e @ Problem::Offline { .. }) => std::fs::read_to_string(&memo)
                .ok()
                .and_then(|s| Digest::parse(s.trim()).ok())
                .ok_or(e)?,
            Err(e @ (Problem::Unreachable { .. } | Problem::Unavailable { .. })) => {
                let remembered = std::fs::read_to_string(&memo)
                    .ok()
                    .and_then(|s| Digest::parse(s.trim()).ok())
                    .ok_or(e)?;
                log::warn!("image {r}: the registry cannot be reached or answers with errors; using {remembered}, what the tag resolved to last time");
                remembered
            }
            Err(e) => return Err(e),
        },
    };
    let resolved = resolve::finish(&mut src, &root, &spec.platform, cache)?;
    if let Pick::Tag(_) = r.pick {
        crate::image::write_cache(&memo, root.to_string().as_bytes())?;
    }
    Ok(resolved)
}

/// Registry blobs through the cache: manifests and configs are kept in the blob store.
struct Cached {
    client: Client,
    store: BlobStore,
}

impl Cached {
    /// Asks for a tag's manifest; stores it and returns its digest.
    fn tag(&mut self, tag: &str) -> Result<Digest, Problem> {
        let bytes = self
            .client
            .small(&format!("manifests/{tag}"), Some(ACCEPT))?;
        self.put(&bytes)
    }

    fn put(&self, bytes: &[u8]) -> Result<Digest, Problem> {
        let stored = self.store.put(bytes).map_err(|source| Problem::Cache {
            path: self.store.dir().to_path_buf(),
            source,
        })?;
        Digest::parse(&format!("sha256:{}", stored.hex)).map_err(Problem::Invalid)
    }

    fn small(
        &mut self,
        path: String,
        d: &Digest,
        accept: Option<&str>,
    ) -> Result<Vec<u8>, Problem> {
        if let Some(b) = self.store.read(d.hex(), MAX_JSON) {
            return Ok(b);
        }
        let bytes = self.client.small(&path, accept)?;
        resolve::check(&bytes, d, "blob")?;
        self.put(&bytes)?;
        Ok(bytes)
    }
}

impl Blobs for Cached {
    fn manifest(&mut self, d: &Digest) -> Result<Vec<u8>, Problem> {
        self.small(format!("manifests/{d}"), d, Some(ACCEPT))
    }

    fn config(&mut self, d: &Digest) -> Result<Vec<u8>, Problem> {
        self.small(format!("blobs/{d}"), d, None)
    }

    fn blob(&mut self, d: &Digest, size: Option<u64>) -> Result<Box<dyn Read>, Problem> {
        self.client.stream(&format!("blobs/{d}"), size)
    }
}

/// One repository of one registry, with the authorization it has earned so far.
pub struct Client {
    /// The agent and its limits, or why the environment's limits are wrong (an error at the
    /// first request, so a build from the cache is not stopped by them).
    agent: Result<(ureq::Agent, NetLimits), String>,
    /// `https://host` (or `http://` where allowed).
    base: String,
    repo: String,
    creds: Option<Credentials>,
    /// The `Authorization` value to send, once a challenge was answered.
    authorization: Option<String>,
    plain_http: bool,
    /// `source.image_plain_http` was set.
    plain_http_key: bool,
    /// No request is made: each is [`Problem::Offline`].
    pub offline: bool,
}

impl Client {
    pub fn new(
        r: &RegistryRef,
        plain_http_key: bool,
        auth_files: &[PathBuf],
        limits: Result<NetLimits, String>,
    ) -> Client {
        let plain_http = plain_http_key || r.is_loopback();
        let scheme = if plain_http { "http" } else { "https" };
        let agent = limits.map(|l| (net::agent(&l, false), l));
        let creds = auth::find(auth_files, &r.host, &r.repo);
        if let Some(c) = &creds {
            log::debug!(
                "registry {}: credentials of {} from {}",
                r.host,
                c.user,
                c.from.display()
            );
        }
        Client {
            agent,
            base: format!("{scheme}://{}", r.api_host()),
            repo: r.repo.clone(),
            creds,
            authorization: None,
            plain_http,
            plain_http_key,
            offline: false,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repo)
    }

    fn agent(&self, url: &str) -> Result<(ureq::Agent, NetLimits), Problem> {
        self.agent.clone().map_err(|message| Problem::Registry {
            url: url.to_string(),
            message,
        })
    }

    /// A small body (at most [`MAX_JSON`]).
    fn small(&mut self, path: &str, accept: Option<&str>) -> Result<Vec<u8>, Problem> {
        let url = self.url(path);
        let (resp, limits) = self.get(&url, accept)?;
        let cap = Some((
            MAX_JSON,
            format!("{MAX_JSON} bytes, the most a manifest may have"),
        ));
        let mut body = net::Limited::new(resp, &limits, cap).map_err(|e| failure(&url, e))?;
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)
            .map_err(|e| failure(&url, net::body_error(e, &limits)))?;
        Ok(bytes)
    }

    /// A blob as a stream, bounded by its descriptor's `size` when known.
    fn stream(&mut self, path: &str, size: Option<u64>) -> Result<Box<dyn Read>, Problem> {
        let url = self.url(path);
        let (resp, limits) = self.get(&url, None)?;
        let cap = size.map(|n| (n, format!("its descriptor's size of {n} bytes")));
        let body = net::Limited::new(resp, &limits, cap).map_err(|e| failure(&url, e))?;
        Ok(Box::new(body))
    }

    /// GET with the authorization earned so far; a 401 is answered once, and a failure that
    /// may pass (no connection, a timeout, 5xx) is tried once more.
    fn get(
        &mut self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<(ureq::http::Response<ureq::Body>, NetLimits), Problem> {
        if self.offline {
            return Err(Problem::Offline {
                url: url.to_string(),
            });
        }
        let (agent, limits) = self.agent(url)?;
        let mut retried = false;
        let mut answered = false;
        loop {
            let mut req = agent.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(a) = &self.authorization {
                req = req.header("Authorization", a);
            }
            let transient = match req.call() {
                Err(e) => {
                    let e = net::request_error(e, &limits);
                    if !e.transient || retried {
                        return Err(network(url, e, retried));
                    }
                    e.message
                }
                Ok(resp) if resp.status().as_u16() == 200 => return Ok((resp, limits)),
                Ok(resp) if net::transient_status(resp.status().as_u16()) => {
                    let status = resp.status().as_u16();
                    if retried {
                        return Err(Problem::Unavailable {
                            url: url.to_string(),
                            message: format!("the registry answered HTTP {status} (tried twice)"),
                        });
                    }
                    format!("the registry answered HTTP {status}")
                }
                Ok(resp) => {
                    self.refused(url, resp, &mut answered)?;
                    continue;
                }
            };
            log::warn!(
                "{url}: {transient}; trying again in {} s",
                limits.retry_delay.as_secs_f64()
            );
            std::thread::sleep(limits.retry_delay);
            retried = true;
        }
    }

    /// A status that is neither success nor worth another try: a 401 is answered once (then
    /// `Ok` means ask again), anything else is the error.
    fn refused(
        &mut self,
        url: &str,
        resp: ureq::http::Response<ureq::Body>,
        answered: &mut bool,
    ) -> Result<(), Problem> {
        let status = resp.status().as_u16();
        let fail = |message: String| Problem::Registry {
            url: url.to_string(),
            message,
        };
        match status {
            401 if !*answered => {
                *answered = true;
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.answer(url, &challenge)
            }
            401 | 403 => {
                let who = match &self.creds {
                    Some(c) => {
                        format!("the credentials of {} from {}", c.user, c.from.display())
                    }
                    None => "anonymous access".to_string(),
                };
                Err(fail(format!(
                        "the registry refused {who} (HTTP {status}): log in with `skopeo login` or `docker login`, or check the repository name"
                    )))
            }
            404 => Err(fail(
                "not found (HTTP 404): check the repository, tag or digest".into(),
            )),
            s => Err(fail(format!("HTTP {s}"))),
        }
    }

    /// Answers a `WWW-Authenticate` challenge: basic with the credentials, or a bearer token.
    fn answer(&mut self, url: &str, challenge: &str) -> Result<(), Problem> {
        let fail = |message: String| Problem::Registry {
            url: url.to_string(),
            message,
        };
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let c = self.creds.as_ref().ok_or_else(|| {
                    fail("the registry wants a user name and password and none is configured: log in with `skopeo login HOST` (or docker login)".into())
                })?;
                self.authorization = Some(c.basic());
                Ok(())
            }
            "bearer" => {
                let realm = param(&params, "realm")
                    .ok_or_else(|| fail(format!("bad challenge {challenge:?}: no realm")))?;
                let token = self.token(realm, &params).map_err(fail)?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            _ => Err(fail(format!(
                "the registry asks for {challenge:?}, which fledge cannot answer"
            ))),
        }
    }

    /// Gets a pull token from the token service named by a bearer challenge.
    fn token(&self, realm: &str, params: &[(String, String)]) -> Result<String, String> {
        // Credentials go over plain HTTP only to this machine, or where the config allows it.
        let realm_host = realm
            .strip_prefix("http://")
            .map(|r| r.split(['/', '?']).next().unwrap_or_default());
        let plain_ok =
            realm_host.is_some_and(|h| self.plain_http_key || (self.plain_http && is_loopback(h)));
        if !realm.starts_with("https://") && !plain_ok {
            return Err(format!("the token service {realm:?} is not HTTPS; set `source.image_plain_http = true` to allow it"));
        }
        let scope = param(params, "scope")
            .map(str::to_string)
            .unwrap_or_else(|| format!("repository:{}:pull", self.repo));
        let (agent, limits) = self.agent.clone()?;
        let mut req = agent.get(realm).query("scope", &scope);
        if let Some(service) = param(params, "service") {
            req = req.query("service", service);
        }
        if let Some(c) = &self.creds {
            req = req.header("Authorization", &c.basic());
        }
        let resp = req.call().map_err(|e| {
            format!(
                "token service {realm}: {}",
                net::request_error(e, &limits).message
            )
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(format!("the token service {realm} answered HTTP {status}: check the credentials (`skopeo login`)"));
        }
        let cap = Some((
            1 << 20,
            "1 MiB, the most a token answer may have".to_string(),
        ));
        let mut body = Vec::new();
        net::Limited::new(resp, &limits, cap)
            .map_err(|e| format!("token service {realm}: {}", e.message))?
            .read_to_end(&mut body)
            .map_err(|e| {
                format!(
                    "token service {realm}: {}",
                    net::body_error(e, &limits).message
                )
            })?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("token service {realm}: not JSON: {e}"))?;
        json.get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("token service {realm} gave no token"))
    }
}

/// A failed request: `Unreachable` when nothing answered in time (so a cached answer may do).
fn network(url: &str, e: net::NetError, retried: bool) -> Problem {
    let message = if retried {
        format!("{} (tried twice)", e.message)
    } else {
        e.message
    };
    if e.transient {
        Problem::Unreachable {
            url: url.to_string(),
            message,
        }
    } else {
        Problem::Registry {
            url: url.to_string(),
            message,
        }
    }
}

/// A body that cannot be read.
fn failure(url: &str, e: net::NetError) -> Problem {
    Problem::Registry {
        url: url.to_string(),
        message: e.message,
    }
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// `Bearer realm="...",service="...",scope="a,b"` -> (`Bearer`, pairs); quoted values may
/// hold commas.
pub fn parse_challenge(text: &str) -> (String, Vec<(String, String)>) {
    let text = text.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_string();
        }
        params.push((key, value));
    }
    (scheme.to_string(), params)
}
