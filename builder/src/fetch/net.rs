//! The one HTTP client of the builder: every request fledge makes (busybox, the agent and its
//! release lookup, registry manifests, blobs and tokens) goes through an agent made by
//! [`agent`], with bounds on how long connecting, the response headers, each read and the whole
//! body may take, and a body read through [`Limited`], which bounds how many bytes it may have.
//! Every limit has a default and an environment variable; a failure names the limit that was
//! hit and its variable, and says whether trying again may help.

use std::io::Read;
use std::time::Duration;

/// Bounds of one download; [`NetLimits::from_env`] reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct NetLimits {
    /// Connecting, TLS included (`FLEDGE_HTTP_CONNECT_TIMEOUT`, seconds, default 15).
    pub connect: Duration,
    /// From the request to the complete response headers (`FLEDGE_HTTP_HEADER_TIMEOUT`,
    /// default 30).
    pub header: Duration,
    /// Longest wait for any next bytes (`FLEDGE_HTTP_IDLE_TIMEOUT`, default 30).
    pub idle: Duration,
    /// The whole body (`FLEDGE_HTTP_TOTAL_TIMEOUT`, default 1800).
    pub total: Duration,
    /// Largest body accepted, bytes (`FLEDGE_HTTP_MAX_MIB`, MiB, default 512).
    pub max_bytes: u64,
    /// Pause before the one retry of a transient failure.
    pub retry_delay: Duration,
}

impl NetLimits {
    /// Every phase of a request within `timeout`, a small body, no retry: a health probe.
    pub fn probe(timeout: Duration) -> NetLimits {
        NetLimits {
            connect: timeout,
            header: timeout,
            idle: timeout,
            total: timeout,
            max_bytes: 1 << 20,
            retry_delay: Duration::ZERO,
        }
    }
}

pub const CONNECT_VAR: &str = "FLEDGE_HTTP_CONNECT_TIMEOUT";
pub const HEADER_VAR: &str = "FLEDGE_HTTP_HEADER_TIMEOUT";
pub const IDLE_VAR: &str = "FLEDGE_HTTP_IDLE_TIMEOUT";
pub const TOTAL_VAR: &str = "FLEDGE_HTTP_TOTAL_TIMEOUT";
pub const MAX_VAR: &str = "FLEDGE_HTTP_MAX_MIB";

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            connect: Duration::from_secs(15),
            header: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(1800),
            max_bytes: 512 << 20,
            retry_delay: Duration::from_secs(2),
        }
    }
}

impl NetLimits {
    /// The defaults, with each variable that is set taking its place; a value that is not a
    /// positive number is an error naming the variable.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut l = NetLimits::default();
        let number = |var: &str| -> Result<Option<f64>, String> {
            let Some(v) = get(var) else { return Ok(None) };
            match v.trim().parse::<f64>() {
                Ok(n) if n > 0.0 && n.is_finite() && n < 1e9 => Ok(Some(n)),
                _ => Err(format!(
                    "{var}={v:?} is not a positive number; unset it for the default"
                )),
            }
        };
        for (var, slot) in [
            (CONNECT_VAR, &mut l.connect),
            (HEADER_VAR, &mut l.header),
            (IDLE_VAR, &mut l.idle),
            (TOTAL_VAR, &mut l.total),
        ] {
            if let Some(s) = number(var)? {
                *slot = Duration::from_secs_f64(s);
            }
        }
        if let Some(mib) = number(MAX_VAR)? {
            l.max_bytes = (mib * (1u64 << 20) as f64) as u64;
        }
        Ok(l)
    }

    /// The size cap for messages: `512 MiB (FLEDGE_HTTP_MAX_MIB)`.
    pub fn cap_text(&self) -> String {
        format!("{} ({MAX_VAR})", mib(self.max_bytes))
    }
}

fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1u64 << 20) as f64;
    if m >= 1.0 && m.fract() == 0.0 {
        format!("{m} MiB")
    } else {
        format!("{bytes} bytes")
    }
}

/// Why a GET failed, in words that end a sentence, and whether one more try may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError {
    pub message: String,
    pub transient: bool,
}

impl NetError {
    pub fn permanent(message: String) -> Self {
        NetError {
            message,
            transient: false,
        }
    }
}

/// A GET's body and its length when the server said it.
pub type Body = (Box<dyn Read + Send + Sync + 'static>, Option<u64>);

/// The HTTP agent with `limits`: the only place one is made. With `status_as_error` a status
/// other than 2xx is an error ([`request_error`] describes it); without it the caller reads the
/// status (a registry answering 401 with a challenge). Sending a body (a registry upload) is
/// bounded by the total timeout as receiving one is.
pub fn agent(limits: &NetLimits, status_as_error: bool) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(limits.connect))
        .timeout_send_request(Some(limits.header))
        .timeout_recv_response(Some(limits.header))
        .timeout_per_read(Some(limits.idle))
        .timeout_recv_body(Some(limits.total))
        .timeout_send_body(Some(limits.total))
        .http_status_as_error(status_as_error)
        .user_agent(concat!("fledge/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Sends a GET and waits for the response headers; a body announced as larger than the cap
/// is refused before any of it is read, and more than the cap is an error when read.
pub fn get(url: &str, limits: &NetLimits) -> Result<Body, NetError> {
    let resp = agent(limits, true)
        .get(url)
        .call()
        .map_err(|e| request_error(e, limits))?;
    let length = resp.body().content_length();
    let body = Limited::new(resp, limits, None)?;
    Ok((Box::new(body), length))
}

/// The body of a response read with the limits: a body announced or found larger than the
/// cap (the download cap, or a smaller one the caller knows, such as a descriptor's size) is an
/// error naming the cap, and a failed read is described as [`body_error`] does. Errors are
/// `io::Error`s wrapping a [`BodyFailure`].
pub struct Limited {
    inner: Box<dyn Read + Send + Sync + 'static>,
    limits: NetLimits,
    read: u64,
    cap: u64,
    cap_text: String,
}

impl Limited {
    /// `cap`: a bound below the download cap and how to name it ("its descriptor's size").
    pub fn new(
        resp: ureq::http::Response<ureq::Body>,
        limits: &NetLimits,
        cap: Option<(u64, String)>,
    ) -> Result<Limited, NetError> {
        let (cap, cap_text) = match cap {
            Some((n, text)) if n < limits.max_bytes => (n, text),
            _ => (
                limits.max_bytes,
                format!("the download cap of {}", limits.cap_text()),
            ),
        };
        if let Some(n) = resp.body().content_length().filter(|n| *n > cap) {
            return Err(NetError::permanent(format!(
                "the server announces {n} bytes, over {cap_text}"
            )));
        }
        Ok(Limited {
            inner: Box::new(resp.into_body().into_reader()),
            limits: limits.clone(),
            read: 0,
            cap,
            cap_text,
        })
    }
}

impl Read for Limited {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte past the cap is enough to know the body is too large.
        let room = (self.cap - self.read.min(self.cap)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want]).map_err(|e| {
            let NetError { message, transient } = body_error(e, &self.limits);
            BodyFailure { message, transient }.into_io()
        })?;
        self.read += n as u64;
        if self.read > self.cap {
            return Err(BodyFailure {
                message: format!("the body is larger than {}", self.cap_text),
                transient: false,
            }
            .into_io());
        }
        Ok(n)
    }
}

/// Why reading a body failed, carried inside an `io::Error` through decompressors, so the
/// stage that reads the stream can tell a download failure from bad data.
#[derive(Debug, Clone)]
pub struct BodyFailure {
    pub message: String,
    pub transient: bool,
}

impl BodyFailure {
    fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// The failure inside `e`, when `e` is one.
    pub fn of(e: &std::io::Error) -> Option<&BodyFailure> {
        e.get_ref()?.downcast_ref::<BodyFailure>()
    }
}

impl std::fmt::Display for BodyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BodyFailure {}

/// Describes an error of reading the body (`e` from the body reader, or from [`Limited`]).
pub fn body_error(e: std::io::Error, limits: &NetLimits) -> NetError {
    if let Some(f) = BodyFailure::of(&e) {
        return NetError {
            message: f.message.clone(),
            transient: f.transient,
        };
    }
    describe(ureq::Error::from(e), limits, "reading the body")
}

/// Describes an error of sending a request or waiting for its response.
pub fn request_error(e: ureq::Error, limits: &NetLimits) -> NetError {
    describe(e, limits, "waiting for the response")
}

/// Whether an HTTP status is worth one more try (5xx, 408, 429).
pub fn transient_status(code: u16) -> bool {
    code >= 500 || code == 408 || code == 429
}

/// Says what went wrong, naming the limit and its variable for a timeout.
fn describe(e: ureq::Error, l: &NetLimits, phase: &str) -> NetError {
    use ureq::Timeout as T;
    let secs = |d: Duration| format!("{} s", d.as_secs_f64());
    let (message, transient) = match e {
        ureq::Error::Timeout(t) => {
            let what = match t {
                T::Connect | T::Resolve => format!(
                    "connecting took longer than {} ({CONNECT_VAR})",
                    secs(l.connect)
                ),
                T::PerRead => format!(
                    "the server sent nothing for {} while {phase} (idle timeout, {IDLE_VAR})",
                    secs(l.idle)
                ),
                T::SendRequest | T::RecvResponse => format!(
                    "no complete response headers within {} ({HEADER_VAR})",
                    secs(l.header)
                ),
                T::RecvBody | T::Global | T::PerCall => format!(
                    "the body took longer than {} in all ({TOTAL_VAR})",
                    secs(l.total)
                ),
                other => format!("timed out ({other})"),
            };
            (format!("timed out: {what}"), true)
        }
        ureq::Error::StatusCode(code) => (
            format!("the server answered HTTP {code}"),
            transient_status(code),
        ),
        ureq::Error::ConnectionFailed => ("cannot connect".to_string(), true),
        // Offline, or a resolver that failed for a moment.
        ureq::Error::HostNotFound => ("host not found".to_string(), true),
        ureq::Error::Io(io) => {
            use std::io::ErrorKind as K;
            let transient = matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::UnexpectedEof
                    | K::BrokenPipe
                    | K::TimedOut
                    | K::Interrupted
            );
            let message = if io.kind() == K::ConnectionRefused {
                io.to_string()
            } else {
                format!("{io} while {phase}")
            };
            (message, transient)
        }
        other => (other.to_string(), false),
    };
    NetError { message, transient }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_environment_and_bad_values_name_the_variable() {
        let l = NetLimits::from_lookup(|k| match k {
            IDLE_VAR => Some("0.5".into()),
            MAX_VAR => Some("2".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(l.idle, Duration::from_millis(500));
        assert_eq!(l.max_bytes, 2 << 20);
        assert_eq!(l.connect, NetLimits::default().connect);
        assert_eq!(l.cap_text(), "2 MiB (FLEDGE_HTTP_MAX_MIB)");
        for bad in ["0", "-1", "soon", "inf"] {
            let e = NetLimits::from_lookup(|k| (k == CONNECT_VAR).then(|| bad.to_string()))
                .unwrap_err();
            assert!(e.contains(CONNECT_VAR) && e.contains(bad), "{bad}: {e}");
        }
    }
}
