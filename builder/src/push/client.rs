//! The distribution API for pushing and pulling artifacts: blob existence (HEAD), uploads
//! (POST, then one PUT `?digest=`, or PATCHes of `chunk` bytes for large blobs), cross-repository
//! mounts, manifests by tag or digest, and blobs streamed back.
//!
//! Authorization: a 401's `WWW-Authenticate` challenge is answered with basic credentials or a
//! bearer token for the scopes this client needs (`repository:REPO:pull,push`, plus
//! `repository:FROM:pull` for a mount); tokens are kept per realm, service and scope for the
//! rest of the run. Credentials and tokens go only to the registry's own scheme, host and port:
//! redirects are followed here (GET and HEAD only), and one to another origin gets no
//! `Authorization` header. Every request goes through the agent of [`crate::fetch::net`], so
//! the `FLEDGE_HTTP_*` bounds hold for every request, pull and push.

use std::io::Read;
use std::sync::Mutex;

use crate::fetch::net::{self, NetLimits};
use crate::image::auth::{self, Credentials};
use crate::image::reference::{is_loopback, RegistryRef};
use crate::image::registry::parse_challenge;
use crate::image::Digest;

use super::PushError;

type Response = ureq::http::Response<ureq::Body>;

/// Tokens earned in this run, by realm, service and scope.
static TOKENS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Largest JSON answer read (manifests, errors, tokens).
const MAX_SMALL: u64 = 8 << 20;
/// Redirects followed for one GET or HEAD.
const MAX_REDIRECTS: usize = 5;

/// A body to send.
pub enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a reader.
    Reader(&'a mut dyn Read, u64),
}

/// One repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    limits: NetLimits,
    /// `https://host[:port]` (or `http://` where allowed).
    pub base: String,
    pub host: String,
    pub repo: String,
    /// Looked up (files, credential helpers) at the first challenge, not before: a registry
    /// that asks for nothing never runs a helper.
    creds: Option<Credentials>,
    creds_looked_up: bool,
    scopes: Vec<String>,
    /// The `Authorization` value, once a challenge was answered.
    authorization: Option<String>,
    plain_http_key: bool,
}

impl Client {
    /// A client for `r` wanting `push` (or only pull) access, and pull access to `mount_from`.
    pub fn new(
        r: &RegistryRef,
        push: bool,
        mount_from: Option<&str>,
        plain_http_key: bool,
    ) -> Result<Client, PushError> {
        let limits = NetLimits::from_env().map_err(PushError)?;
        let plain_http = plain_http_key || r.is_loopback();
        let scheme = if plain_http { "http" } else { "https" };
        let mut scopes = vec![format!(
            "repository:{}:{}",
            r.repo,
            if push { "pull,push" } else { "pull" }
        )];
        scopes.extend(mount_from.map(|m| format!("repository:{m}:pull")));
        Ok(Client {
            agent: net::agent(&limits, false),
            limits,
            base: format!("{scheme}://{}", r.api_host()),
            host: r.host.clone(),
            repo: r.repo.clone(),
            creds: None,
            creds_looked_up: false,
            scopes,
            authorization: None,
            plain_http_key,
        })
    }

    /// `BASE/v2/REPO/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repo)
    }

    /// Whether the repository has blob `d` (HEAD).
    pub fn has_blob(&mut self, d: &Digest) -> Result<bool, PushError> {
        let url = self.url(&format!("blobs/{d}"));
        let resp = self.call("HEAD", &url, &[], Payload::Empty)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused(&url, resp, "HEAD")),
        }
    }

    /// Mounts blob `d` from repository `from` of the same registry; `Ok(None)` when it was
    /// mounted, else the upload the registry started instead.
    pub fn mount(&mut self, d: &Digest, from: &str) -> Result<Option<String>, PushError> {
        let url = format!(
            "{}/v2/{}/blobs/uploads/?mount={d}&from={from}",
            self.base, self.repo
        );
        let resp = self.call("POST", &url, &[], Payload::Empty)?;
        match resp.status().as_u16() {
            201 => Ok(None),
            202 => self.location(&url, &resp).map(Some),
            _ => Err(self.refused(&url, resp, "POST")),
        }
    }

    /// Starts an upload; returns its location.
    pub fn start_upload(&mut self) -> Result<String, PushError> {
        let url = self.url("blobs/uploads/");
        let resp = self.call("POST", &url, &[], Payload::Empty)?;
        if resp.status().as_u16() != 202 {
            return Err(self.refused(&url, resp, "POST"));
        }
        self.location(&url, &resp)
    }

    /// Uploads `len` bytes of `body` as blob `d` to the upload at `location`: one PUT when
    /// `len` is at most `chunk`, else PATCHes of `chunk` bytes and a closing PUT.
    pub fn upload(
        &mut self,
        mut location: String,
        d: &Digest,
        body: &mut dyn Read,
        len: u64,
        chunk: u64,
    ) -> Result<(), PushError> {
        let with_digest = |loc: &str| {
            let sep = if loc.contains('?') { '&' } else { '?' };
            format!("{loc}{sep}digest={d}")
        };
        if len <= chunk {
            let url = with_digest(&location);
            let octet = [("Content-Type", "application/octet-stream".to_string())];
            let resp = self.call("PUT", &url, &octet, Payload::Reader(body, len))?;
            return self.created(&url, resp, "PUT");
        }
        let mut sent = 0u64;
        while sent < len {
            let n = chunk.min(len - sent);
            let headers = [
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Range", format!("{sent}-{}", sent + n - 1)),
            ];
            let mut part = (&mut *body).take(n);
            let resp = self.call("PATCH", &location, &headers, Payload::Reader(&mut part, n))?;
            if resp.status().as_u16() != 202 {
                return Err(self.refused(&location, resp, "PATCH"));
            }
            location = self.location(&location, &resp)?;
            sent += n;
        }
        let url = with_digest(&location);
        let resp = self.call("PUT", &url, &[], Payload::Empty)?;
        self.created(&url, resp, "PUT")
    }

    /// Puts a manifest under `reference` (a tag or digest); returns the digest the registry
    /// reports, when it does.
    pub fn put_manifest(
        &mut self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, PushError> {
        let url = self.url(&format!("manifests/{reference}"));
        let headers = [("Content-Type", media_type.to_string())];
        let resp = self.call("PUT", &url, &headers, Payload::Bytes(bytes))?;
        let digest = header(&resp, "docker-content-digest");
        self.created(&url, resp, "PUT")?;
        Ok(digest)
    }

    /// Gets a manifest by tag or digest (at most 8 MiB).
    pub fn manifest(&mut self, reference: &str, accept: &str) -> Result<Vec<u8>, PushError> {
        let url = self.url(&format!("manifests/{reference}"));
        let resp = self.call(
            "GET",
            &url,
            &[("Accept", accept.to_string())],
            Payload::Empty,
        )?;
        if resp.status().as_u16() != 200 {
            return Err(self.refused(&url, resp, "GET"));
        }
        resp.into_body()
            .with_config()
            .limit(MAX_SMALL)
            .read_to_vec()
            .map_err(|e| PushError(format!("{url}: cannot read the manifest: {e}")))
    }

    /// A blob as a stream; the caller checks its size and digest.
    pub fn blob(&mut self, d: &Digest) -> Result<Box<dyn Read + Send + Sync>, PushError> {
        let url = self.url(&format!("blobs/{d}"));
        let resp = self.call("GET", &url, &[], Payload::Empty)?;
        if resp.status().as_u16() != 200 {
            return Err(self.refused(&url, resp, "GET"));
        }
        Ok(Box::new(resp.into_body().into_reader()))
    }

    /// Sends one request with the authorization earned so far; a 401 is answered once (for a
    /// body that can be sent again), and GET and HEAD follow redirects.
    fn call(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        mut body: Payload,
    ) -> Result<Response, PushError> {
        let mut url = url.to_string();
        let mut answered = false;
        let mut hops = 0;
        loop {
            let own = same_origin(&url, &self.base);
            let auth = self.authorization.as_deref().filter(|_| own);
            let resp = self.send(method, &url, headers, auth, &mut body)?;
            let status = resp.status().as_u16();
            if status == 401 && own && !answered && !matches!(body, Payload::Reader(..)) {
                let challenge = header(&resp, "www-authenticate").unwrap_or_default();
                self.answer(&url, &challenge)?;
                answered = true;
                continue;
            }
            if matches!(status, 301 | 302 | 303 | 307 | 308) && matches!(method, "GET" | "HEAD") {
                hops += 1;
                let next = self.location(&url, &resp)?;
                if hops > MAX_REDIRECTS {
                    return Err(PushError(format!(
                        "{url}: more than {MAX_REDIRECTS} redirects"
                    )));
                }
                if !own || !same_origin(&next, &self.base) {
                    log::debug!("{url}: redirected to {next}, which gets no credentials");
                }
                url = next;
                continue;
            }
            return Ok(resp);
        }
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        auth: Option<&str>,
        body: &mut Payload,
    ) -> Result<Response, PushError> {
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|e| PushError(format!("{url:?} is not a URL: {e}")))?;
        let mut b = ureq::http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        let fail = |e: ureq::Error| {
            PushError(format!(
                "{method} {url}: {}",
                net::request_error(e, &self.limits).message
            ))
        };
        let bad = |e: ureq::http::Error| PushError(format!("{method} {url}: {e}"));
        match body {
            Payload::Empty => {
                if !matches!(method, "GET" | "HEAD") {
                    b = b.header("Content-Length", "0");
                }
                let req = b.body(()).map_err(bad)?;
                self.go(req).map_err(fail)
            }
            Payload::Bytes(bytes) => {
                let req = b.body(bytes.to_vec()).map_err(bad)?;
                self.go(req).map_err(fail)
            }
            Payload::Reader(r, len) => {
                let req = b
                    .header("Content-Length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut **r))
                    .map_err(bad)?;
                self.go(req).map_err(fail)
            }
        }
    }

    /// Runs a request without following redirects ([`Client::call`] follows them itself).
    fn go<S: ureq::AsSendBody>(
        &self,
        req: ureq::http::Request<S>,
    ) -> Result<Response, ureq::Error> {
        let req = self.agent.configure_request(req).max_redirects(0).build();
        self.agent.run(req)
    }

    fn look_up_creds(&mut self) -> Result<(), PushError> {
        if self.creds_looked_up {
            return Ok(());
        }
        self.creds_looked_up = true;
        self.creds = auth::lookup(&auth::files(), &self.host, &self.repo)
            .map_err(|e| PushError(format!("registry {}: {e}", self.host)))?;
        if let Some(c) = &self.creds {
            log::debug!(
                "registry {}: credentials of {} from {}",
                self.host,
                c.user,
                c.from.display()
            );
        }
        Ok(())
    }

    /// Answers a `WWW-Authenticate` challenge: basic with the credentials, or a bearer token
    /// (from this run's tokens when one was earned for the same scopes).
    fn answer(&mut self, url: &str, challenge: &str) -> Result<(), PushError> {
        self.look_up_creds()?;
        let fail = |m: String| PushError(format!("{url}: {m}"));
        let (scheme, params) = parse_challenge(challenge);
        let param = |k: &str| {
            params
                .iter()
                .find(|(p, _)| p.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let c = self.creds.as_ref().ok_or_else(|| {
                    fail(format!("the registry {} wants a user name and password and none is configured: log in with `docker login {}` (or skopeo login), or configure a credential helper", self.host, self.host))
                })?;
                self.authorization = Some(c.basic());
                Ok(())
            }
            "bearer" => {
                let realm = param("realm")
                    .ok_or_else(|| fail(format!("bad challenge {challenge:?}: no realm")))?;
                let mut scopes = self.scopes.clone();
                if let Some(s) = param("scope").filter(|s| !scopes.contains(s)) {
                    scopes.push(s);
                }
                let service = param("service").unwrap_or_default();
                let key = format!("{realm} {service} {}", scopes.join(" "));
                let cached = TOKENS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, t)| t.clone());
                let token = match cached {
                    Some(t) => t,
                    None => {
                        let t = self.token(&realm, &service, &scopes).map_err(fail)?;
                        TOKENS
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((key, t.clone()));
                        t
                    }
                };
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            _ => Err(fail(format!(
                "the registry asks for {challenge:?}, which fledge cannot answer"
            ))),
        }
    }

    /// A token from the service a bearer challenge names.
    fn token(&self, realm: &str, service: &str, scopes: &[String]) -> Result<String, String> {
        let realm_host = realm
            .strip_prefix("http://")
            .map(|r| r.split(['/', '?']).next().unwrap_or_default());
        let plain_ok = realm_host.is_some_and(|h| {
            self.plain_http_key || (self.base.starts_with("http://") && is_loopback(h))
        });
        if !realm.starts_with("https://") && !plain_ok {
            return Err(format!(
                "the token service {realm:?} is not HTTPS; pass --plain-http to allow it"
            ));
        }
        let mut req = self.agent.get(realm);
        for s in scopes {
            req = req.query("scope", s);
        }
        if !service.is_empty() {
            req = req.query("service", service);
        }
        if let Some(c) = &self.creds {
            req = req.header("Authorization", &c.basic());
        }
        let resp = req.config().max_redirects(0).build().call().map_err(|e| {
            format!(
                "token service {realm}: {}",
                net::request_error(e, &self.limits).message
            )
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            let who = match &self.creds {
                Some(c) => format!("the credentials of {} from {}", c.user, c.from.display()),
                None => "anonymous access".to_string(),
            };
            return Err(format!(
                "the token service {realm} refused {who} for {} (HTTP {status})",
                scopes.join(" ")
            ));
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
            .ok_or_else(|| format!("the token service {realm} gave no token"))
    }

    /// The absolute URL of a response's `Location`.
    fn location(&self, url: &str, resp: &Response) -> Result<String, PushError> {
        let loc = header(resp, "location").ok_or_else(|| {
            PushError(format!(
                "{url}: the registry answered HTTP {} without a Location",
                resp.status().as_u16()
            ))
        })?;
        Ok(resolve(url, &loc))
    }

    fn created(&self, url: &str, resp: Response, method: &str) -> Result<(), PushError> {
        match resp.status().as_u16() {
            200..=204 => Ok(()),
            _ => Err(self.refused(url, resp, method)),
        }
    }

    /// An unexpected answer, with the registry's own error code and message.
    fn refused(&self, url: &str, resp: Response, method: &str) -> PushError {
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .unwrap_or_default();
        let said = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|j| {
                let e = j.get("errors")?.get(0)?.clone();
                Some(format!(
                    ": {} {}",
                    e.get("code")?.as_str()?,
                    e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                ))
            })
            .unwrap_or_default();
        let hint = match status {
            401 | 403 => {
                let who = match &self.creds {
                    Some(c) => format!("the credentials of {} from {}", c.user, c.from.display()),
                    None => "anonymous access".to_string(),
                };
                format!(
                    " (refused {who}: log in with `docker login {}` or check the repository)",
                    self.host
                )
            }
            404 => " (not found: check the repository, tag or digest)".to_string(),
            _ => String::new(),
        };
        PushError(format!(
            "{method} {url}: the registry answered HTTP {status}{said}{hint}"
        ))
    }
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `scheme://host[:port]` of a URL, the port made explicit.
fn origin(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?.to_ascii_lowercase();
    let scheme = scheme.to_ascii_lowercase();
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && !authority.ends_with(']');
    let authority = if has_port {
        authority
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{authority}:{port}")
    };
    Some((scheme, authority))
}

/// Whether two URLs share scheme, host and port: only then do credentials go along.
pub fn same_origin(a: &str, b: &str) -> bool {
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x == y)
}

/// `loc` (absolute, or a path on `base`'s origin) as an absolute URL.
fn resolve(base: &str, loc: &str) -> String {
    if loc.contains("://") {
        return loc.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if let Some(p) = loc.strip_prefix("//") {
        return format!("{scheme}://{p}");
    }
    if loc.starts_with('/') {
        return format!("{scheme}://{authority}{loc}");
    }
    let path = &rest[authority.len()..];
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{scheme}://{authority}{dir}/{loc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_locations() {
        assert!(same_origin(
            "http://127.0.0.1:5000/v2/x",
            "http://127.0.0.1:5000"
        ));
        assert!(same_origin(
            "https://r.example/v2/",
            "https://r.example:443"
        ));
        assert!(!same_origin(
            "http://127.0.0.1:5001/b",
            "http://127.0.0.1:5000"
        ));
        assert!(!same_origin(
            "https://127.0.0.1:5000/b",
            "http://127.0.0.1:5000"
        ));
        assert!(!same_origin("http://cdn.example/b", "http://r.example"));
        assert!(!same_origin("http://r.example.evil/b", "http://r.example"));
        assert!(!same_origin("http://r.example@evil/b", "http://r.example"));
        assert_eq!(
            resolve(
                "http://h:1/v2/r/blobs/uploads/",
                "/v2/r/blobs/uploads/u?x=1"
            ),
            "http://h:1/v2/r/blobs/uploads/u?x=1"
        );
        assert_eq!(resolve("http://h:1/a/b", "http://o/c"), "http://o/c");
        assert_eq!(resolve("http://h:1/a/b", "c"), "http://h:1/a/c");
    }
}
