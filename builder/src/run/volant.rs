//! Default mode as Volant's orchestrator boots it (SPEC section 15): the `volant.*` kernel
//! parameters, the manifest's encoding for `volant.manifest=`, the 2047-byte limit of x86's
//! kernel command line, and the small HTTP API the agent fetches its manifest from when the
//! command line cannot carry it.
//!
//! Volant's `pluginspec.Encode`: the manifest's JSON, gzip-compressed, in base64's URL alphabet
//! without padding (Go's `base64.RawURLEncoding`). The API answers both paths the agent asks:
//! `GET /api/v1/plugins/<name>/manifest` (older Volant) and `/api/v1/images/<name>/manifest`
//! (newer), with the manifest's JSON. It listens on the host's loopback; the guest reaches it
//! as [`API_HOST`], the host's address on QEMU's user-mode network.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

/// The longest kernel command line x86 takes (`COMMAND_LINE_SIZE` 2048, NUL included); a longer
/// one is cut off silently.
pub const CMDLINE_MAX: usize = 2047;
/// The agent's port in the guest.
pub const AGENT_PORT: u16 = crate::manifest::volant::AGENT_PORT;
/// Where the guest reaches the host's loopback on QEMU's user-mode network.
pub const API_HOST: &str = super::machine::GATEWAY;

/// `json` as `volant.manifest=` carries it: gzip, then base64 URL alphabet without padding.
pub fn encode_manifest(json: &str) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.as_bytes())
        .expect("writing to memory cannot fail");
    let bytes = gz.finish().expect("writing to memory cannot fail");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the agent is told on the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub name: String,
    pub runtime: String,
    /// The API's port on the host, when the guest has a network to reach it.
    pub api_port: Option<u16>,
    /// The manifest's compact JSON, when there is one.
    pub manifest: Option<String>,
}

/// The `volant.*` parameters in Volant's order; `with_manifest` adds `volant.manifest=`.
pub fn params(p: &Params, with_manifest: bool) -> String {
    let mut out = vec![format!("volant.runtime={}", p.runtime)];
    if let Some(port) = p.api_port {
        out.push(format!("volant.api_host={API_HOST}"));
        out.push(format!("volant.api_port={port}"));
    }
    out.push(format!("volant.plugin={}", p.name));
    out.push(format!("volant.image={}", p.name));
    if let (true, Some(json)) = (with_manifest, &p.manifest) {
        out.push(format!("volant.manifest={}", encode_manifest(json)));
    }
    out.join(" ")
}

/// The kernel command line: `line(params)` with the manifest when that fits in
/// [`CMDLINE_MAX`] bytes, else without it and a note saying where the agent finds it.
pub fn fit(p: &Params, line: impl Fn(&str) -> String) -> (String, Option<String>) {
    let full = line(&params(p, true));
    if full.len() <= CMDLINE_MAX || p.manifest.is_none() {
        return (full, None);
    }
    let short = line(&params(p, false));
    let encoded = encode_manifest(p.manifest.as_deref().unwrap_or(""));
    let whence = match p.api_port {
        Some(port) => format!(
            "the agent fetches it from fledge run's API ({API_HOST}:{port}, GET \
             /api/v1/images/{}/manifest)",
            p.name
        ),
        None => "and the guest has no network to fetch it over: the agent starts no workload"
            .to_string(),
    };
    let note = format!(
        "the manifest ({} bytes as volant.manifest=) would make the kernel command line {} \
         bytes, over x86's {CMDLINE_MAX}: left off it; {whence}",
        encoded.len(),
        full.len()
    );
    (short, Some(note))
}

/// The manifest API on the host's loopback; stops when dropped.
pub struct Api {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Api {
    /// Serves `json` for plugin/image `name` on `127.0.0.1`, a free port.
    pub fn start(name: &str, json: Option<String>) -> std::io::Result<Api> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let paths = [
            format!("/api/v1/plugins/{name}/manifest"),
            format!("/api/v1/images/{name}/manifest"),
        ];
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = answer(conn, &paths, json.as_deref());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Api { port, stop })
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request: the manifest on either path, 404 otherwise.
fn answer(conn: TcpStream, paths: &[String], json: Option<&str>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers, up to the blank line.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body, kind) = match json {
        Some(j) if method == "GET" && paths.iter().any(|p| p == path) => {
            log::info!("the agent fetched its manifest from fledge run's API ({path})");
            ("200 OK", j.to_string(), "application/json")
        }
        _ => {
            log::debug!("API: {method} {path}: 404");
            (
                "404 Not Found",
                "{\"error\":\"not found\"}".to_string(),
                "application/json",
            )
        }
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Go's `base64.RawURLEncoding.DecodeString`: the URL alphabet, no padding (a `=` is an
    /// illegal byte), `\r` and `\n` skipped, a final group of one character illegal, and the
    /// unused low bits of a final partial group ignored (Go's non-strict mode).
    fn go_raw_url_decode(s: &str) -> Result<Vec<u8>, String> {
        let value = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => return None,
            } as u32)
        };
        let mut out = Vec::new();
        let mut group = Vec::with_capacity(4);
        for (i, &c) in s.as_bytes().iter().enumerate() {
            if c == b'\r' || c == b'\n' {
                continue;
            }
            group.push(value(c).ok_or(format!("illegal base64 data at input byte {i}"))?);
            if group.len() == 4 {
                let n = group.iter().fold(0u32, |n, v| n << 6 | v);
                out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
                group.clear();
            }
        }
        match group.len() {
            0 => {}
            1 => return Err("illegal base64 data: a final group of one character".into()),
            k => {
                let n = group.iter().fold(0u32, |n, v| n << 6 | v) << (6 * (4 - k));
                let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
                out.extend_from_slice(&bytes[..k - 1]);
            }
        }
        Ok(out)
    }

    /// Go's `gzip.NewReader` + `io.ReadAll` on one member: magic `1f 8b`, method 8 (deflate),
    /// no reserved flag bits, the optional FEXTRA/FNAME/FCOMMENT/FHCRC fields skipped, then
    /// raw deflate, then CRC-32 and ISIZE checked.
    fn go_gunzip(b: &[u8]) -> Result<Vec<u8>, String> {
        if b.len() < 18 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
            return Err("gzip: invalid header".into());
        }
        let flags = b[3];
        if flags & 0xe0 != 0 {
            return Err("gzip: invalid header (reserved flags)".into());
        }
        let mut at = 10;
        if flags & 0x04 != 0 {
            let n = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
            at += 2 + n;
        }
        for flag in [0x08, 0x10] {
            if flags & flag != 0 {
                at += b[at..]
                    .iter()
                    .position(|&c| c == 0)
                    .ok_or("gzip: unterminated")?
                    + 1;
            }
        }
        if flags & 0x02 != 0 {
            at += 2;
        }
        let mut inflate = flate2::bufread::DeflateDecoder::new(&b[at..]);
        let mut out = Vec::new();
        inflate.read_to_end(&mut out).map_err(|e| e.to_string())?;
        let used = inflate.total_in() as usize;
        let trailer = &b[at + used..];
        if trailer.len() < 8 {
            return Err("gzip: missing trailer".into());
        }
        let crc = u32::from_le_bytes(trailer[..4].try_into().unwrap());
        let size = u32::from_le_bytes(trailer[4..8].try_into().unwrap());
        let mut h = crc32fast::Hasher::new();
        h.update(&out);
        if h.finalize() != crc || size != out.len() as u32 {
            return Err("gzip: invalid checksum".into());
        }
        Ok(out)
    }

    fn manifest(bytes: usize) -> String {
        let filler = "x".repeat(bytes);
        serde_json::json!({
            "name": "web", "version": "0.1.0", "runtime": "web",
            "resources": {"cpu_cores": 1, "memory_mb": 128},
            "workload": {"type": "http", "base_url": "http://127.0.0.1:8081",
                         "entrypoint": ["/usr/bin/web"], "env": {"FILL": filler}},
        })
        .to_string()
    }

    #[test]
    fn the_manifest_round_trips_through_gos_decoders() {
        for size in [0, 1, 2, 3, 100, 5000] {
            let json = manifest(size);
            let encoded = encode_manifest(&json);
            assert!(
                encoded
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "URL alphabet, no padding: {encoded}"
            );
            let back = go_gunzip(&go_raw_url_decode(&encoded).unwrap()).unwrap();
            assert_eq!(String::from_utf8(back).unwrap(), json, "size {size}");
        }
    }

    /// The decoders used above must be able to fail: standard alphabet, padding, a bad CRC.
    #[test]
    fn the_go_style_decoders_reject_what_go_rejects() {
        assert!(go_raw_url_decode("ab+/").is_err());
        assert!(go_raw_url_decode("YQ==").is_err());
        assert!(go_raw_url_decode("Y").is_err());
        assert_eq!(go_raw_url_decode("YQ").unwrap(), b"a");
        let mut gz = go_raw_url_decode(&encode_manifest("{}")).unwrap();
        let n = gz.len();
        gz[n - 8] ^= 1;
        assert!(go_gunzip(&gz).is_err());
        assert!(go_gunzip(b"not gzip at all!!!").is_err());
    }

    fn p(manifest: Option<String>, api_port: Option<u16>) -> Params {
        Params {
            name: "web".into(),
            runtime: "web-rt".into(),
            api_port,
            manifest,
        }
    }

    #[test]
    fn params_are_volants_in_its_order() {
        let json = manifest(0);
        let line = params(&p(Some(json.clone()), Some(4000)), true);
        let want = format!(
            "volant.runtime=web-rt volant.api_host=10.0.2.2 volant.api_port=4000 \
             volant.plugin=web volant.image=web volant.manifest={}",
            encode_manifest(&json)
        );
        assert_eq!(line, want);
        assert_eq!(
            params(&p(None, None), true),
            "volant.runtime=web-rt volant.plugin=web volant.image=web"
        );
    }

    #[test]
    fn a_manifest_too_long_for_the_command_line_is_left_off_with_a_note() {
        let base = |v: &str| format!("console=ttyS0 {v}");
        let small = p(Some(manifest(10)), Some(4000));
        let (line, note) = fit(&small, base);
        assert!(line.contains("volant.manifest="), "{line}");
        assert!(line.len() <= CMDLINE_MAX);
        assert_eq!(note, None);
        // Random-looking content does not compress: far over 2047 bytes encoded.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noisy: String = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        let filled = manifest(0).replace("\"FILL\":\"\"", &format!("\"FILL\":\"{noisy}\""));
        let big = p(Some(filled), Some(4000));
        let (line, note) = fit(&big, base);
        assert!(!line.contains("volant.manifest="), "{line}");
        assert!(line.ends_with("volant.image=web"), "{line}");
        let note = note.unwrap();
        assert!(note.contains("over x86's 2047: left off it"), "{note}");
        assert!(note.contains("10.0.2.2:4000"), "{note}");
    }

    fn http_get(port: u16, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: Go-http-client/1.1\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn the_api_serves_the_manifest_on_both_paths() {
        let json = manifest(0);
        let api = Api::start("web", Some(json.clone())).unwrap();
        for path in [
            "/api/v1/plugins/web/manifest",
            "/api/v1/images/web/manifest",
        ] {
            let answer = http_get(api.port, path);
            assert!(
                answer.starts_with("HTTP/1.1 200 OK\r\n"),
                "{path}: {answer}"
            );
            assert!(answer.ends_with(&json), "{path}: {answer}");
        }
        let answer = http_get(api.port, "/api/v1/plugins/other/manifest");
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }
}
