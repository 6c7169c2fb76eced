//! Reading `manifest.toml`: the original Fledge's template format plus the Volant fields users
//! need, parsed into [`Raw`] with the line of every key kept for error messages.
//!
//! Parsing happens in two passes over the same text: `toml`'s span-keeping document parser
//! (syntax errors, the line of each key, unknown keys) and serde into [`Raw`] (type errors,
//! which are mapped back to the key whose value holds the error). Unknown keys are logged with
//! `log::warn!` and ignored, never fatal.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Deserializer};
use toml::de::{DeTable, DeValue};

/// `manifest.toml` as written. Every field is optional: defaults are applied when the manifest
/// is rendered (see [`super::render`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Raw {
    /// `$schema` written into the JSON; default [`super::volant::SCHEMA_URL`]; `""` omits it.
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    /// Template format version: `"v1"` (the original's), `"1"` or `"1.0"`; default `"1.0"`.
    pub schema_version: Option<String>,
    /// Plugin name. Required.
    pub name: Option<String>,
    /// Plugin version. Required.
    pub version: Option<String>,
    /// Runtime identifier; default: `name`.
    pub runtime: Option<String>,
    /// Whether Volant enables the plugin on install; default `true`.
    pub enabled: Option<bool>,
    /// Link to the plugin's OpenAPI document.
    pub openapi: Option<String>,
    /// Extra labels; `volant.plugin` and `volant.runtime` are always set from name and runtime.
    #[serde(default, deserialize_with = "string_map")]
    pub labels: BTreeMap<String, String>,
    /// `[resources]`: default 1 CPU, 512 MiB.
    pub resources: Option<RawResources>,
    /// `[workload]`.
    pub workload: Option<RawWorkload>,
    /// `[env]`: the workload's environment (Volant's `workload.env`).
    #[serde(default, deserialize_with = "string_map")]
    pub env: BTreeMap<String, String>,
    /// `[network]`: mode defaults to `bridged` when the table is present.
    pub network: Option<RawNetwork>,
    /// `[actions.<name>]`.
    #[serde(default)]
    pub actions: BTreeMap<String, RawAction>,
    /// `[health_check]`: endpoint default `/`, timeout_ms default 10000.
    pub health_check: Option<RawHealthCheck>,
    /// `[[disks]]`.
    #[serde(default)]
    pub disks: Vec<RawDisk>,
    /// `[cloud_init]`.
    pub cloud_init: Option<RawCloudInit>,
    /// `[devices]`.
    pub devices: Option<RawDevices>,
}

/// `[resources]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawResources {
    /// Default 1.
    pub cpu_cores: Option<i64>,
    /// Default 512.
    pub memory_mb: Option<i64>,
}

/// `workload.entrypoint`: the original's string form or Volant's array form.
#[derive(Debug, Clone, PartialEq)]
pub enum Entrypoint {
    /// `entrypoint = "/usr/bin/x"` (arguments in `args`).
    One(String),
    /// `entrypoint = ["/usr/bin/x", "--flag"]`.
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for Entrypoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entrypoint;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Entrypoint, E> {
                Ok(Entrypoint::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Entrypoint, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(Entrypoint::Argv(argv))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// `[workload]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawWorkload {
    /// Only `http`; default `http`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Default `http://127.0.0.1:<first exposed port, else 8080>`.
    pub base_url: Option<String>,
    /// Program to start (in the image); empty or absent means the agent, `/bin/kestrel`.
    pub entrypoint: Option<Entrypoint>,
    /// Appended to the entrypoint.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory of the workload.
    pub workdir: Option<String>,
    /// Volant's spelling of `[env]`; merged with it.
    #[serde(default, deserialize_with = "string_map")]
    pub env: BTreeMap<String, String>,
}

/// `[network]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawNetwork {
    /// `vsock`, `bridged` or `dhcp`; default `bridged`.
    pub mode: Option<String>,
    /// Bridged mode: CIDR of the VM subnet.
    pub subnet: Option<String>,
    /// Bridged mode: gateway IP; needed with `subnet` unless `auto_assign`.
    pub gateway: Option<String>,
    /// Bridged mode: let Volant assign IPs from `subnet`.
    pub auto_assign: Option<bool>,
    /// `[[network.expose]]`: not part of Volant's manifest; the first port sets the default
    /// `base_url`.
    #[serde(default)]
    pub expose: Vec<RawPort>,
}

/// `[[network.expose]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawPort {
    /// Guest port, 1-65535. Required.
    pub port: Option<i64>,
    /// `tcp` or `udp`; default `tcp`.
    pub protocol: Option<String>,
    /// Host port (kept for compatibility; not part of Volant's manifest).
    pub host_port: Option<i64>,
}

/// `[actions.<name>]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawAction {
    /// HTTP method. Required.
    pub method: Option<String>,
    /// HTTP path on the workload. Required.
    pub path: Option<String>,
    /// Human-readable description.
    pub description: Option<String>,
    /// Request timeout, >= 0.
    pub timeout_ms: Option<i64>,
}

/// `[health_check]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawHealthCheck {
    /// Path probed on `base_url`; default `/`.
    pub endpoint: Option<String>,
    /// Probe timeout, >= 0; default 10000.
    pub timeout_ms: Option<i64>,
}

/// `[[disks]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawDisk {
    /// Disk name. Required.
    pub name: Option<String>,
    /// Image path or URL. Required.
    pub source: Option<String>,
    /// `sha256:<hex>` (an algorithm prefix is required).
    pub checksum: Option<String>,
    /// `raw` or `qcow2` (any case); Volant's default is `raw`.
    pub format: Option<String>,
    /// Attach read-only.
    pub readonly: Option<bool>,
    /// Guest device name, e.g. `vdb`.
    pub target: Option<String>,
}

/// `[cloud_init]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawCloudInit {
    /// Default `NoCloud`.
    pub datasource: Option<String>,
    /// Only `vfat`; default `vfat`.
    pub seed_mode: Option<String>,
    /// User-data document.
    pub user_data: Option<RawDoc>,
    /// A document, or (the original's form) a table of meta-data keys, written out as inline
    /// content.
    pub meta_data: Option<toml::Table>,
    /// Network-config document.
    pub network_config: Option<RawDoc>,
}

/// A cloud-init document. `inline` defaults to true when `content` is given.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawDoc {
    /// Whether `content` holds the document (true) or `path` names it (false).
    pub inline: Option<bool>,
    /// The document itself.
    pub content: Option<String>,
    /// Host path of the document.
    pub path: Option<String>,
}

/// `[devices]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RawDevices {
    /// PCI addresses such as `0000:01:00.0`.
    #[serde(default)]
    pub pci_passthrough: Vec<String>,
    /// `vendor:device` patterns such as `10de:*`.
    #[serde(default)]
    pub allowlist: Vec<String>,
}

/// A string table whose values may also be written as numbers or booleans (`PORT = 8080`).
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            toml::Value::Integer(i) => Ok((k, i.to_string())),
            toml::Value::Float(f) => Ok((k, f.to_string())),
            toml::Value::Boolean(b) => Ok((k, b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "`{k}` must be a string, found a {}",
                other.type_str()
            ))),
        })
        .collect()
}

/// Why a template could not be parsed: a message and the byte span it concerns.
#[derive(Debug)]
pub struct ParseFailure {
    pub message: String,
    pub span: Option<Range<usize>>,
    /// The key holding the error, when known.
    pub field: Option<String>,
}

/// Every key of a document: dotted path (array elements as `[i]`), its key span and the span of
/// its value.
#[derive(Debug, Default, Clone)]
pub struct KeyIndex {
    keys: Vec<(String, Range<usize>, Range<usize>)>,
}

impl KeyIndex {
    /// Span of the key `field` itself.
    pub fn exact(&self, field: &str) -> Option<Range<usize>> {
        self.keys
            .iter()
            .find(|(p, _, _)| p == field)
            .map(|(_, k, _)| k.clone())
    }

    /// Span of the key `field`, or of its nearest listed parent (`env.X` falls back to `env`).
    pub fn span_of(&self, field: &str) -> Option<Range<usize>> {
        let mut f = field;
        loop {
            if let Some(span) = self.exact(f) {
                return Some(span);
            }
            let cut = f.rfind(['.', '['])?;
            f = &f[..cut];
        }
    }

    /// The deepest key whose value contains `offset`.
    fn key_at(&self, offset: usize) -> Option<&str> {
        self.keys
            .iter()
            .filter(|(_, k, v)| (k.start <= offset && offset < v.end) || v.contains(&offset))
            .max_by_key(|(p, _, _)| p.len())
            .map(|(p, _, _)| p.as_str())
    }

    fn walk(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (key, value) in table.iter() {
            let path = join(prefix, key.get_ref());
            self.keys.push((path.clone(), key.span(), value.span()));
            self.walk_value(value.get_ref(), &path);
        }
    }

    fn walk_value(&mut self, value: &DeValue<'_>, path: &str) {
        match value {
            DeValue::Table(t) => self.walk(t, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{path}[{i}]");
                    self.keys.push((at.clone(), item.span(), item.span()));
                    self.walk_value(item.get_ref(), &at);
                }
            }
            _ => {}
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Keys this format knows, `*` standing for any one key. A listed table whose children are not
/// listed (`cloud_init.meta_data`) accepts anything below it.
const KNOWN: &[&str] = &[
    "$schema",
    "schema_version",
    "name",
    "version",
    "runtime",
    "enabled",
    "openapi",
    "labels",
    "labels.*",
    "resources",
    "resources.cpu_cores",
    "resources.memory_mb",
    "workload",
    "workload.type",
    "workload.base_url",
    "workload.entrypoint",
    "workload.args",
    "workload.workdir",
    "workload.env",
    "workload.env.*",
    "env",
    "env.*",
    "network",
    "network.mode",
    "network.subnet",
    "network.gateway",
    "network.auto_assign",
    "network.expose",
    "network.expose.port",
    "network.expose.protocol",
    "network.expose.host_port",
    "actions",
    "actions.*",
    "actions.*.method",
    "actions.*.path",
    "actions.*.description",
    "actions.*.timeout_ms",
    "health_check",
    "health_check.endpoint",
    "health_check.timeout_ms",
    "disks",
    "disks.name",
    "disks.source",
    "disks.checksum",
    "disks.format",
    "disks.readonly",
    "disks.target",
    "cloud_init",
    "cloud_init.datasource",
    "cloud_init.seed_mode",
    "cloud_init.user_data",
    "cloud_init.user_data.inline",
    "cloud_init.user_data.content",
    "cloud_init.user_data.path",
    "cloud_init.meta_data",
    "cloud_init.network_config",
    "cloud_init.network_config.inline",
    "cloud_init.network_config.content",
    "cloud_init.network_config.path",
    "devices",
    "devices.pci_passthrough",
    "devices.allowlist",
];

fn matches(pattern: &str, segs: &[&str]) -> bool {
    let pat: Vec<&str> = pattern.split('.').collect();
    pat.len() == segs.len() && pat.iter().zip(segs).all(|(p, s)| *p == "*" || p == s)
}

fn is_known(segs: &[&str]) -> bool {
    KNOWN.iter().any(|p| matches(p, segs))
}

/// Whether any known key lies below `segs` (if not, the table is free-form).
fn has_known_children(segs: &[&str]) -> bool {
    KNOWN.iter().any(|p| {
        let pat: Vec<&str> = p.split('.').collect();
        pat.len() > segs.len() && matches(&pat[..segs.len()].join("."), segs)
    })
}

/// Unknown keys of a document: (dotted path, key span).
fn unknown_keys(
    table: &DeTable<'_>,
    segs: &mut Vec<String>,
    out: &mut Vec<(String, Range<usize>)>,
) {
    for (key, value) in table.iter() {
        segs.push(key.get_ref().to_string());
        let view: Vec<&str> = segs.iter().map(String::as_str).collect();
        if !is_known(&view) {
            out.push((view.join("."), key.span()));
        } else if has_known_children(&view) {
            match value.get_ref() {
                DeValue::Table(t) => unknown_keys(t, segs, out),
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let DeValue::Table(t) = item.get_ref() {
                            unknown_keys(t, segs, out);
                        }
                    }
                }
                _ => {}
            }
        }
        segs.pop();
    }
}

/// A parsed template: the values, where each key is, and the unknown keys found.
#[derive(Debug)]
pub struct Parsed {
    pub raw: Raw,
    pub index: KeyIndex,
    pub unknown: Vec<(String, Range<usize>)>,
}

/// Parses `manifest.toml` text.
pub fn parse(text: &str) -> Result<Parsed, ParseFailure> {
    let doc = DeTable::parse(text).map_err(|e| ParseFailure {
        message: e.message().trim().to_string(),
        span: e.span(),
        field: None,
    })?;
    let mut index = KeyIndex::default();
    index.walk(doc.get_ref(), "");
    let mut unknown = Vec::new();
    unknown_keys(doc.get_ref(), &mut Vec::new(), &mut unknown);
    let raw = Raw::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| {
        let span = e.span();
        let field = span
            .as_ref()
            .and_then(|s| index.key_at(s.start))
            .map(str::to_string);
        ParseFailure {
            message: e
                .message()
                .trim()
                .replace("expected i64", "expected an integer"),
            span,
            field,
        }
    })?;
    Ok(Parsed {
        raw,
        index,
        unknown,
    })
}

/// 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_array_entrypoints_parse() {
        let p = parse("[workload]\nentrypoint = \"/bin/x\"\n").unwrap();
        let w = p.raw.workload.unwrap();
        assert_eq!(w.entrypoint, Some(Entrypoint::One("/bin/x".into())));
        let p = parse("[workload]\nentrypoint = [\"/bin/x\", \"-v\"]\n").unwrap();
        let w = p.raw.workload.unwrap();
        assert_eq!(
            w.entrypoint,
            Some(Entrypoint::Argv(vec!["/bin/x".into(), "-v".into()]))
        );
    }

    #[test]
    fn a_wrong_entrypoint_type_says_what_is_expected() {
        let e = parse("[workload]\nentrypoint = 5\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("workload.entrypoint"), "{e:?}");
        assert!(
            e.message.contains("a string or an array of strings"),
            "{e:?}"
        );
    }

    #[test]
    fn env_numbers_become_strings() {
        let p = parse("[env]\nPORT = 8080\nDEBUG = true\n").unwrap();
        assert_eq!(p.raw.env["PORT"], "8080");
        assert_eq!(p.raw.env["DEBUG"], "true");
    }

    #[test]
    fn unknown_keys_are_listed_not_fatal() {
        let text = "name = \"a\"\nbogus = 1\n[workload]\nentrypoint = \"/x\"\nshell = \"sh\"\n\
                    [[network.expose]]\nport = 80\nweird = 1\n[cloud_init.meta_data]\nanything = 1\n";
        let p = parse(text).unwrap();
        let names: Vec<&str> = p.unknown.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["bogus", "network.expose.weird", "workload.shell"]);
        assert_eq!(line_of(text, p.unknown[0].1.start), 2);
    }

    #[test]
    fn type_errors_name_the_key_and_line() {
        let text = "name = \"a\"\n\n[resources]\ncpu_cores = \"two\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("resources.cpu_cores"), "{e:?}");
        assert_eq!(line_of(text, e.span.clone().unwrap().start), 4);
    }

    #[test]
    fn syntax_errors_carry_a_span() {
        let text = "name = \"a\"\nversion = \n";
        let e = parse(text).unwrap_err();
        assert_eq!(line_of(text, e.span.clone().unwrap().start), 2, "{e:?}");
    }

    #[test]
    fn key_index_falls_back_to_parents() {
        let text = "name = \"a\"\n[env]\nA = \"1\"\n[[disks]]\nname = \"d\"\n";
        let p = parse(text).unwrap();
        let line = |f: &str| p.index.span_of(f).map(|s| line_of(text, s.start));
        assert_eq!(line("env.A"), Some(3));
        assert_eq!(line("env.B"), Some(2));
        assert_eq!(line("disks[0].name"), Some(5));
        assert_eq!(line("disks[0].format"), Some(4), "the [[disks]] header");
        assert_eq!(line("workload.type"), None);
    }
}
