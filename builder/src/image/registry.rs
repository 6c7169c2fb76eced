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
//! has a connect and a per-read timeout, so a dead network fails instead of hanging.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::auth::{self, Credentials};
use super::reference::{is_loopback, Pick, RegistryRef};
use super::resolve::{self, Blobs, Resolved};
use super::{Digest, Problem, Spec, MAX_JSON};

/// What a manifest request accepts: OCI and Docker v2, indexes and manifests.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Resolves a registry image: the tag (asked again each build, the last answer used when the
/// registry cannot be reached) or digest, then manifests, config and layers through the cache.
pub fn resolve(r: &RegistryRef, spec: &Spec, cache: &Path) -> Result<Resolved, Problem> {
    let mut src = Cached {
        client: Client::new(r, spec.plain_http, &auth::files()),
        cache: cache.to_path_buf(),
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
            Err(e @ Problem::Unreachable { .. }) => {
                let remembered = std::fs::read_to_string(&memo)
                    .ok()
                    .and_then(|s| Digest::parse(s.trim()).ok())
                    .ok_or(e)?;
                log::warn!("image {r}: registry unreachable; using {remembered}, what the tag resolved to last time");
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

/// Registry blobs through the cache: manifests and configs are kept as `blobs/<hex>`.
struct Cached {
    client: Client,
    cache: PathBuf,
}

impl Cached {
    /// Asks for a tag's manifest; stores it and returns its digest.
    fn tag(&mut self, tag: &str) -> Result<Digest, Problem> {
        let bytes = self
            .client
            .small(&format!("manifests/{tag}"), Some(ACCEPT))?;
        let d = Digest::of(&bytes);
        crate::image::write_cache(&self.blob_path(&d), &bytes)?;
        Ok(d)
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.cache.join("blobs").join(d.hex())
    }

    /// A cached small blob, when present and intact.
    fn cached(&self, d: &Digest) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(d)).ok()?;
        (Digest::of(&bytes) == *d).then_some(bytes)
    }

    fn small(
        &mut self,
        path: String,
        d: &Digest,
        accept: Option<&str>,
    ) -> Result<Vec<u8>, Problem> {
        if let Some(b) = self.cached(d) {
            return Ok(b);
        }
        let bytes = self.client.small(&path, accept)?;
        resolve::check(&bytes, d, "blob")?;
        crate::image::write_cache(&self.blob_path(d), &bytes)?;
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

    fn blob(&mut self, d: &Digest) -> Result<Box<dyn Read>, Problem> {
        self.client.stream(&format!("blobs/{d}"))
    }
}

/// One repository of one registry, with the authorization it has earned so far.
pub struct Client {
    agent: ureq::Agent,
    /// `https://host` (or `http://` where allowed).
    base: String,
    repo: String,
    creds: Option<Credentials>,
    /// The `Authorization` value to send, once a challenge was answered.
    authorization: Option<String>,
    plain_http: bool,
    /// `source.image_plain_http` was set.
    plain_http_key: bool,
}

impl Client {
    pub fn new(r: &RegistryRef, plain_http_key: bool, auth_files: &[PathBuf]) -> Client {
        let plain_http = plain_http_key || r.is_loopback();
        let scheme = if plain_http { "http" } else { "https" };
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .user_agent(concat!("fledge/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
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
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repo)
    }

    /// A small body (at most [`MAX_JSON`]).
    fn small(&mut self, path: &str, accept: Option<&str>) -> Result<Vec<u8>, Problem> {
        let url = self.url(path);
        let resp = self.get(&url, accept)?;
        resp.into_body()
            .with_config()
            .limit(MAX_JSON)
            .read_to_vec()
            .map_err(|e| Problem::Registry {
                url,
                message: format!("cannot read the answer: {e}"),
            })
    }

    /// A blob as a stream.
    fn stream(&mut self, path: &str) -> Result<Box<dyn Read>, Problem> {
        let url = self.url(path);
        let resp = self.get(&url, None)?;
        Ok(Box::new(resp.into_body().into_reader()))
    }

    /// GET with the authorization earned so far; a 401 is answered once.
    fn get(
        &mut self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, Problem> {
        for attempt in 0..2 {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(a) = &self.authorization {
                req = req.header("Authorization", a);
            }
            let resp = req.call().map_err(|e| network(url, e))?;
            let status = resp.status().as_u16();
            if status == 200 {
                return Ok(resp);
            }
            let fail = |message: String| Problem::Registry {
                url: url.to_string(),
                message,
            };
            match status {
                401 if attempt == 0 => {
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    self.answer(url, &challenge)?;
                }
                401 | 403 => {
                    let who = match &self.creds {
                        Some(c) => {
                            format!("the credentials of {} from {}", c.user, c.from.display())
                        }
                        None => "anonymous access".to_string(),
                    };
                    return Err(fail(format!(
                        "the registry refused {who} (HTTP {status}): log in with `skopeo login` or `docker login`, or check the repository name"
                    )));
                }
                404 => {
                    return Err(fail(
                        "not found (HTTP 404): check the repository, tag or digest".into(),
                    ))
                }
                s => return Err(fail(format!("HTTP {s}"))),
            }
        }
        unreachable!("the second attempt returns")
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
        let mut req = self.agent.get(realm).query("scope", &scope);
        if let Some(service) = param(params, "service") {
            req = req.query("service", service);
        }
        if let Some(c) = &self.creds {
            req = req.header("Authorization", &c.basic());
        }
        let resp = req
            .call()
            .map_err(|e| format!("token service {realm}: {e}"))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(format!("the token service {realm} answered HTTP {status}: check the credentials (`skopeo login`)"));
        }
        let body = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| format!("token service {realm}: {e}"))?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("token service {realm}: not JSON: {e}"))?;
        json.get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("token service {realm} gave no token"))
    }
}

/// A failed request: `Unreachable` when nothing answered (so a cached answer may do).
fn network(url: &str, e: ureq::Error) -> Problem {
    match e {
        ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Timeout(_) => Problem::Unreachable {
            url: url.to_string(),
            message: e.to_string(),
        },
        e => Problem::Registry {
            url: url.to_string(),
            message: e.to_string(),
        },
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
