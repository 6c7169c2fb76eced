//! Volant's plugin manifest as typed data, and the checks Volant runs before it installs one.
//!
//! [`Manifest`] serialises to exactly the JSON shape of Volant's
//! `docs/schemas/plugin-manifest-v1.json` (fields in a readable order, optional parts omitted).
//! [`Manifest::validate`] re-states the rules of Volant's `pluginspec.Manifest.Validate` (read in
//! volantvm/volant `internal/pluginspec/spec.go`), plus the few places where the schema is
//! stricter than that function (`health_check`, `timeout_ms >= 0`) and one of Fledge's own: the
//! name becomes a file name and a kernel command-line value, so it may hold no `/` or whitespace.
//! The initramfs checksum, which fledge writes itself, always carries its algorithm. Every
//! failure names the manifest field. What Volant's `Normalize` changes (trimming, dropping blank
//! entrypoint items, env keys and action names) is done before, in [`super::merge`].

use std::collections::BTreeMap;

use serde::Serialize;

/// The `$schema` Volant's documentation puts in its examples.
pub const SCHEMA_URL: &str =
    "https://raw.githubusercontent.com/volantvm/volant/main/docs/schemas/plugin-manifest-v1.json";

/// A Volant plugin manifest (`plugin-manifest-v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    #[serde(rename = "$schema", skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub schema_version: String,
    pub name: String,
    pub version: String,
    pub runtime: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The boot artifact: an initramfs, or (`strategy = "oci_rootfs"`) a root file system disk
    /// in `rootfs`; exactly one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<Initramfs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<Rootfs>,
    pub resources: Resources,
    pub workload: Workload,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, Action>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Devices>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openapi: Option<String>,
}

/// The boot artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Initramfs {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// A root file system disk (a squashfs image, attached as a raw disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rootfs {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// `raw`: the disk is the file as it is.
    pub format: String,
}

/// Default VM size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resources {
    pub cpu_cores: i64,
    pub memory_mb: i64,
}

/// What the agent starts and where it reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// `http`, `exec` or `grpc` (newer Volant's three); only `http` needs `base_url`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub entrypoint: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

/// The agent's readiness probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub endpoint: String,
    pub timeout_ms: i64,
}

/// An API route the plugin exposes through Volant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
}

/// An extra block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub name: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Cloud-init seed settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudInit {
    pub datasource: String,
    pub seed_mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<CloudInitDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<CloudInitDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_config: Option<CloudInitDoc>,
}

/// One cloud-init document: inline content or a path on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudInitDoc {
    pub inline: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Network defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
}

/// Device passthrough.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Devices {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pci_passthrough: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<String>,
}

/// The TCP port Volant's agent listens on in the guest (`:8080`, and vsock port 8080): Volant
/// reaches every VM only through it.
pub const AGENT_PORT: u16 = 8080;

/// The port of an `http(s)://host[:port][/path]` URL (80/443 when it names none).
pub fn port_of(url: &str) -> Option<u16> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let after_host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.1,
        None => host_port.split_once(':').map_or("", |(_, p)| p),
    };
    let port = after_host.strip_prefix(':').unwrap_or(after_host);
    if port.is_empty() {
        return Some(default);
    }
    port.parse().ok().filter(|&p| p > 0)
}

/// The workload types Volant's `Workload.Validate` accepts (newer Volant added `exec` and
/// `grpc`, which need no `base_url`).
pub const WORKLOAD_TYPES: [&str; 3] = ["http", "exec", "grpc"];

/// A rule a manifest breaks: the field (a dotted path, e.g. `workload.base_url`), what is wrong,
/// and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub problem: String,
    pub fix: String,
}

fn violation(
    field: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> Violation {
    Violation {
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Volant's accepted boot-media locations: `http(s)://`, `file://` or an absolute path.
pub fn is_volant_url(url: &str) -> bool {
    let url = url.trim();
    url.starts_with("http://")
        || url.starts_with("https://")
        || url.starts_with("file://")
        || url.starts_with('/')
}

/// Whether `url` is an absolute `http(s)://host[:port][/path]` URL that Go's `url.Parse` reads
/// and the agent can proxy to.
pub fn is_http_base_url(url: &str) -> bool {
    let rest = match url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    {
        Some(rest) => rest,
        None => return false,
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, tail)) => match tail {
                "" => (host, None),
                t => match t.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return false,
                },
            },
            None => return false,
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let port_ok = port.is_none_or(|p| p.is_empty() || p.parse::<u16>().is_ok());
    !host.is_empty() && port_ok
}

/// Whether Go's `net/url.Parse` (which Volant's `Workload.Validate` calls on `base_url`) accepts
/// `url`; the error is Go's reason. It follows `parse` in Go's `net/url/url.go`: control bytes,
/// the scheme, a colon in the first segment of a scheme-less URL, the authority's port and host
/// characters, and `%` escapes.
pub fn go_url_parse(url: &str) -> Result<(), String> {
    if url.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("invalid control character in URL".into());
    }
    let (url, fragment) = url.split_once('#').unwrap_or((url, ""));
    check_escapes(fragment)?;
    if url == "*" {
        return Ok(());
    }
    let (scheme, rest) = go_scheme(url)?;
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    if !rest.starts_with('/') {
        if scheme.is_some() {
            return Ok(());
        }
        if rest.split('/').next().is_some_and(|seg| seg.contains(':')) {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    let mut path = rest;
    if rest.starts_with("//") && (scheme.is_some() || !rest.starts_with("///")) {
        let (authority, tail) = match rest[2..].find('/') {
            Some(i) => (&rest[2..2 + i], &rest[2 + i..]),
            None => (&rest[2..], ""),
        };
        go_host(authority.rsplit_once('@').map_or(authority, |(_, h)| h))?;
        path = tail;
    }
    check_escapes(path)
}

/// The scheme (`None` when there is none) and the rest, as Go's `getScheme` splits them.
fn go_scheme(url: &str) -> Result<(Option<&str>, &str), String> {
    for (i, c) in url.char_indices() {
        match c {
            c if c.is_ascii_alphabetic() => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' if i == 0 => return Err("missing protocol scheme".into()),
            ':' => return Ok((Some(&url[..i]), &url[i + 1..])),
            _ => return Ok((None, url)),
        }
    }
    Ok((None, url))
}

/// Go's `parseHost`: brackets of an IPv6 literal, digits after the port's colon, and only the
/// characters a host may hold.
fn go_host(host: &str) -> Result<(), String> {
    let port_ok = |p: &str| {
        p.is_empty()
            || p.strip_prefix(':')
                .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
    };
    let name = if let Some(v6) = host.strip_prefix('[') {
        let end = v6.rfind(']').ok_or("missing ']' in host")?;
        if !port_ok(&v6[end + 1..]) {
            return Err(format!("invalid port {:?} after host", &v6[end + 1..]));
        }
        &v6[..end]
    } else if let Some(i) = host.rfind(':') {
        if !port_ok(&host[i..]) {
            return Err(format!("invalid port {:?} after host", &host[i..]));
        }
        &host[..i]
    } else {
        host
    };
    const ALLOWED: &str = "-._~!$&'()*+,;=:[]<>\"%";
    if let Some(c) = name
        .chars()
        .find(|c| c.is_ascii() && !c.is_ascii_alphanumeric() && !ALLOWED.contains(*c))
    {
        return Err(format!("invalid character {c:?} in host name"));
    }
    check_escapes(name)
}

/// Every `%` starts two hex digits.
fn check_escapes(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        if !b
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        {
            return Err(format!(
                "invalid URL escape {:?}",
                &s[i..(i + 3).min(s.len())]
            ));
        }
    }
    Ok(())
}

/// `algo:value` with a known-looking algorithm and a non-empty value.
fn has_algorithm_prefix(checksum: &str) -> bool {
    match checksum.split_once(':') {
        Some((algo, value)) => {
            !algo.is_empty() && algo.chars().all(|c| c.is_ascii_alphanumeric()) && !value.is_empty()
        }
        None => false,
    }
}

fn check_checksum(field: &str, checksum: Option<&str>) -> Result<(), Violation> {
    match checksum {
        Some(c) if !has_algorithm_prefix(c.trim()) => Err(violation(
            field,
            format!("{c:?} has no algorithm prefix"),
            "write it as \"sha256:<hex digest>\"",
        )),
        _ => Ok(()),
    }
}

fn check_timeout(field: &str, timeout: Option<i64>) -> Result<(), Violation> {
    match timeout {
        Some(t) if t < 0 => Err(violation(
            field,
            format!("is {t}, below 0"),
            "give a timeout in milliseconds of 0 or more",
        )),
        _ => Ok(()),
    }
}

impl CloudInitDoc {
    fn validate(&self, field: &str) -> Result<(), Violation> {
        let content = self.content.as_deref().is_some_and(|c| !blank(c));
        let path = self.path.as_deref().is_some_and(|p| !blank(p));
        if content && path {
            return Err(violation(
                format!("{field}.content"),
                "and path cannot both be set",
                "keep either the inline content or the path",
            ));
        }
        if content && !self.inline {
            return Err(violation(
                format!("{field}.inline"),
                "must be true when content is given",
                "set inline = true (or leave it out)",
            ));
        }
        if path && self.inline {
            return Err(violation(
                format!("{field}.inline"),
                "must be false when path is given",
                "set inline = false (or leave it out)",
            ));
        }
        Ok(())
    }
}

impl Manifest {
    /// Checks every rule of Volant's `Manifest.Validate` and the schema's extra constraints.
    pub fn validate(&self) -> Result<(), Violation> {
        self.validate_identity()?;
        self.validate_resources()?;
        self.validate_actions()?;
        self.validate_workload()?;
        self.validate_boot_media()?;
        self.validate_disks()?;
        self.validate_cloud_init()?;
        self.validate_network()?;
        Ok(())
    }

    fn validate_identity(&self) -> Result<(), Violation> {
        if blank(&self.schema_version) {
            return Err(violation(
                "schema_version",
                "is empty",
                "set schema_version = \"1.0\" or leave it out",
            ));
        }
        if blank(&self.name) {
            return Err(violation(
                "name",
                "is required",
                "set name = \"<plugin name>\", e.g. name = \"myapp\"",
            ));
        }
        if self
            .name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(violation(
                "name",
                format!("{:?} contains '/' or whitespace", self.name),
                "use a plain identifier such as \"my-app\": it names the manifest file and is passed on the kernel command line",
            ));
        }
        if blank(&self.version) {
            return Err(violation(
                "version",
                "is required",
                "set version = \"<version>\", e.g. version = \"0.1.0\"",
            ));
        }
        if blank(&self.runtime) {
            return Err(violation(
                "runtime",
                "is empty",
                "set runtime to a name or leave it out to use the plugin name",
            ));
        }
        Ok(())
    }

    fn validate_resources(&self) -> Result<(), Violation> {
        if self.resources.cpu_cores <= 0 {
            return Err(violation(
                "resources.cpu_cores",
                format!("is {}, must be greater than 0", self.resources.cpu_cores),
                "set resources.cpu_cores to 1 or more",
            ));
        }
        if self.resources.memory_mb <= 0 {
            return Err(violation(
                "resources.memory_mb",
                format!("is {}, must be greater than 0", self.resources.memory_mb),
                "set resources.memory_mb to the VM's memory in MiB, e.g. 512",
            ));
        }
        Ok(())
    }

    fn validate_actions(&self) -> Result<(), Violation> {
        for (name, action) in &self.actions {
            if blank(name) {
                return Err(violation(
                    "actions",
                    "has an action with an empty name",
                    "name every [actions.<name>] table",
                ));
            }
            if blank(&action.method) {
                return Err(violation(
                    format!("actions.{name}.method"),
                    "is required",
                    "set method = \"GET\" (or POST, PUT, ...)",
                ));
            }
            if blank(&action.path) {
                return Err(violation(
                    format!("actions.{name}.path"),
                    "is required",
                    "set path = \"/<route>\", the HTTP path the action calls",
                ));
            }
            check_timeout(&format!("actions.{name}.timeout_ms"), action.timeout_ms)?;
        }
        Ok(())
    }

    fn validate_workload(&self) -> Result<(), Violation> {
        let w = &self.workload;
        let kind = w.kind.trim().to_ascii_lowercase();
        if !WORKLOAD_TYPES.contains(&kind.as_str()) {
            return Err(violation(
                "workload.type",
                format!("{:?} is not supported by Volant", w.kind),
                "set workload.type = \"http\", \"exec\" or \"grpc\", or leave it out (http)",
            ));
        }
        let base_url = w.base_url.as_deref().unwrap_or("");
        if kind == "http" && blank(base_url) {
            return Err(violation(
                "workload.base_url",
                "is required for an http workload",
                "set workload.base_url = \"http://127.0.0.1:<port>\" or expose a port",
            ));
        }
        // Volant parses base_url only for an http workload.
        if let (true, Err(why)) = (kind == "http", go_url_parse(base_url.trim())) {
            return Err(violation(
                "workload.base_url",
                format!("{base_url:?} is not a URL ({why})"),
                "write it as \"http://127.0.0.1:<port>\"",
            ));
        }
        if w.entrypoint.first().is_none_or(|e| blank(e)) {
            return Err(violation(
                "workload.entrypoint",
                format!(
                    "is required for {} {kind} workload",
                    if kind == "grpc" { "a" } else { "an" }
                ),
                "set workload.entrypoint = \"/path/to/program\" (in the image)",
            ));
        }
        if let Some(h) = &self.health_check {
            if blank(&h.endpoint) {
                return Err(violation(
                    "health_check.endpoint",
                    "is empty",
                    "set health_check.endpoint = \"/\" (a path on base_url)",
                ));
            }
            check_timeout("health_check.timeout_ms", Some(h.timeout_ms))?;
        }
        Ok(())
    }

    fn validate_boot_media(&self) -> Result<(), Violation> {
        let (key, url, checksum) = match (&self.initramfs, &self.rootfs) {
            (Some(i), None) => ("initramfs", i.url.trim(), i.checksum.as_deref()),
            (None, Some(r)) => ("rootfs", r.url.trim(), r.checksum.as_deref()),
            (None, None) => {
                return Err(violation(
                    "initramfs.url",
                    "is missing (Volant needs initramfs.url or rootfs.url)",
                    "pass the artifact path or --url",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(violation(
                    "rootfs",
                    "is set beside initramfs: a plugin boots one of them",
                    "keep one",
                ))
            }
        };
        if url.is_empty() {
            return Err(violation(
                format!("{key}.url"),
                "is empty (Volant needs initramfs.url or rootfs.url)",
                "pass the artifact path or --url",
            ));
        }
        if !is_volant_url(url) {
            return Err(violation(
                format!("{key}.url"),
                format!("{url:?} is not http(s)://, file:// or an absolute path"),
                "give an absolute path or an http(s):// or file:// URL",
            ));
        }
        if let Some(r) = &self.rootfs {
            if !matches!(r.format.as_str(), "raw" | "qcow2") {
                return Err(violation(
                    "rootfs.format",
                    format!("is {:?}", r.format),
                    "use \"raw\" or \"qcow2\"",
                ));
            }
        }
        check_checksum(&format!("{key}.checksum"), checksum)
    }

    fn validate_disks(&self) -> Result<(), Violation> {
        for (i, d) in self.disks.iter().enumerate() {
            let at = format!("disks[{i}]");
            if blank(&d.name) {
                return Err(violation(
                    format!("{at}.name"),
                    "is required",
                    "give every [[disks]] a name",
                ));
            }
            if blank(&d.source) {
                return Err(violation(
                    format!("{at}.source"),
                    "is required",
                    "set source to the disk image's path or URL",
                ));
            }
            if let Some(f) = &d.format {
                let f = f.trim().to_ascii_lowercase();
                if !f.is_empty() && f != "raw" && f != "qcow2" {
                    return Err(violation(
                        format!("{at}.format"),
                        format!("{f:?} is not supported"),
                        "use format = \"raw\" or \"qcow2\"",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_cloud_init(&self) -> Result<(), Violation> {
        let Some(c) = &self.cloud_init else {
            return Ok(());
        };
        if blank(&c.datasource) {
            return Err(violation(
                "cloud_init.datasource",
                "is empty",
                "set datasource = \"NoCloud\" or leave it out",
            ));
        }
        if !c.seed_mode.trim().eq_ignore_ascii_case("vfat") {
            return Err(violation(
                "cloud_init.seed_mode",
                format!("{:?} is not supported", c.seed_mode),
                "use seed_mode = \"vfat\" or leave it out",
            ));
        }
        for (name, doc) in [
            ("cloud_init.user_data", &c.user_data),
            ("cloud_init.meta_data", &c.meta_data),
            ("cloud_init.network_config", &c.network_config),
        ] {
            if let Some(doc) = doc {
                doc.validate(name)?;
            }
        }
        Ok(())
    }

    fn validate_network(&self) -> Result<(), Violation> {
        let Some(n) = &self.network else {
            return Ok(());
        };
        match n.mode.trim().to_ascii_lowercase().as_str() {
            "vsock" | "dhcp" => Ok(()),
            "bridged" => {
                let subnet = n.subnet.as_deref().is_some_and(|s| !blank(s));
                let gateway = n.gateway.as_deref().is_some_and(|g| !blank(g));
                if subnet && !gateway && n.auto_assign != Some(true) {
                    Err(violation(
                        "network.subnet",
                        "is set in bridged mode without a gateway or auto_assign",
                        "add network.gateway = \"<ip>\" or network.auto_assign = true",
                    ))
                } else {
                    Ok(())
                }
            }
            other => Err(violation(
                "network.mode",
                format!("{other:?} is not supported"),
                "use mode = \"vsock\", \"bridged\" or \"dhcp\"",
            )),
        }
    }
}
