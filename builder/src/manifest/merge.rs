//! Template + build facts -> [`Manifest`]: every default of the template format and the checks
//! the format adds (`[[network.expose]]`, `[env]` vs `[workload.env]`, `schema_version`, the
//! build digest). Rules Volant itself states are left to [`Manifest::validate`].
//!
//! Values are normalised the way Volant's `pluginspec.Manifest.Normalize` does before its
//! `Validate`, so a template Volant accepts is accepted here: strings trimmed, blank entrypoint
//! items, blank env keys and blank action names dropped, env values and label values trimmed.
//! Each change that alters what the user wrote is reported as a [`Note`], as are values Volant
//! takes as they are but that will not work as meant (a `base_url` that is not http(s), a disk
//! checksum without an algorithm, an env name with `=` or a space).

use std::collections::BTreeMap;

use serde::Deserialize as _;

use super::template::{Entrypoint, Raw, RawDoc};
use super::volant::{
    self, Action, CloudInit, CloudInitDoc, Devices, Disk, HealthCheck, Initramfs, Manifest,
    Network, Resources, Violation, Workload,
};
use super::{
    BuildFacts, DEFAULT_AGENT_MODE_PORT, DEFAULT_CPU_CORES, DEFAULT_ENTRYPOINT,
    DEFAULT_HEALTH_TIMEOUT_MS, DEFAULT_MEMORY_MB, DEFAULT_PORT,
};

fn violation(field: impl Into<String>, problem: impl Into<String>, fix: &str) -> Violation {
    Violation {
        field: field.into(),
        problem: problem.into(),
        fix: fix.to_string(),
    }
}

/// A value normalised or accepted with a caveat: the manifest field and one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub field: String,
    pub message: String,
}

fn note(notes: &mut Vec<Note>, field: impl Into<String>, message: impl Into<String>) {
    notes.push(Note {
        field: field.into(),
        message: message.into(),
    });
}

fn trimmed(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Template + facts -> manifest, applying every default. Rules that only Volant states are left
/// to [`Manifest::validate`]; this checks what the template format adds.
pub(super) fn build(
    raw: &Raw,
    facts: &BuildFacts,
    notes: &mut Vec<Note>,
) -> Result<Manifest, Violation> {
    let schema_version = schema_version(raw)?;
    let name = raw.name.as_deref().unwrap_or("").trim().to_string();
    let version = raw.version.as_deref().unwrap_or("").trim().to_string();
    let runtime = trimmed(&raw.runtime).unwrap_or_else(|| name.clone());
    let labels = build_labels(raw, &name, &runtime);
    let resources = Resources {
        cpu_cores: raw
            .resources
            .as_ref()
            .and_then(|r| r.cpu_cores)
            .unwrap_or(DEFAULT_CPU_CORES),
        memory_mb: raw
            .resources
            .as_ref()
            .and_then(|r| r.memory_mb)
            .unwrap_or(DEFAULT_MEMORY_MB),
    };
    let first_port = check_expose(raw)?;
    let workload = build_workload(raw, first_port, facts, notes)?;
    let health_check = raw.health_check.as_ref().map(|h| HealthCheck {
        endpoint: trimmed(&h.endpoint).unwrap_or_else(|| "/".to_string()),
        timeout_ms: h.timeout_ms.unwrap_or(DEFAULT_HEALTH_TIMEOUT_MS),
    });
    let (url, checksum) = boot_artifact(facts)?;
    let (initramfs, rootfs) = if facts.rootfs {
        (
            None,
            Some(volant::Rootfs {
                url,
                checksum: Some(checksum),
                format: "raw".into(),
            }),
        )
    } else {
        (
            Some(Initramfs {
                url,
                checksum: Some(checksum),
            }),
            None,
        )
    };
    Ok(Manifest {
        schema: match raw.schema.as_deref().map(str::trim) {
            None => Some(volant::SCHEMA_URL.to_string()),
            Some("") => None,
            Some(s) => Some(s.to_string()),
        },
        schema_version,
        name,
        version,
        runtime,
        enabled: raw.enabled.unwrap_or(true),
        labels,
        initramfs,
        rootfs,
        resources,
        workload,
        health_check,
        actions: build_actions(raw, notes),
        disks: build_disks(raw, notes),
        cloud_init: build_cloud_init(raw)?,
        network: build_network(raw),
        devices: build_devices(raw),
        openapi: trimmed(&raw.openapi),
    })
}

/// The template's `schema_version` as Volant's `"1.0"`.
fn schema_version(raw: &Raw) -> Result<String, Violation> {
    match raw.schema_version.as_deref().map(str::trim) {
        None | Some("v1") | Some("1") | Some("1.0") => Ok("1.0".to_string()),
        Some(other) => Err(violation(
            "schema_version",
            format!("{other:?} is not a known manifest version"),
            "use \"1.0\" (or the original's \"v1\"), or leave it out",
        )),
    }
}

/// Labels with values trimmed, and `volant.plugin`, `volant.image` and `volant.runtime` set as
/// Volant (older and newer) sets them.
fn build_labels(raw: &Raw, name: &str, runtime: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = raw
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.trim().to_string()))
        .collect();
    if !name.is_empty() {
        // Older Volant's label, and newer Volant's (which calls plugins images).
        labels.insert("volant.plugin".into(), name.to_string());
        labels.insert("volant.image".into(), name.to_string());
    }
    if !runtime.is_empty() {
        labels.insert("volant.runtime".into(), runtime.to_string());
    }
    labels
}

/// `[actions.<name>]`, names and fields trimmed; a blank name is dropped, as Volant does.
fn build_actions(raw: &Raw, notes: &mut Vec<Note>) -> BTreeMap<String, Action> {
    let mut actions = BTreeMap::new();
    for (name, a) in &raw.actions {
        if name.trim().is_empty() {
            let message = format!("action {name:?} has a blank name: dropped, as Volant does");
            note(notes, "actions", message);
            continue;
        }
        let action = Action {
            description: trimmed(&a.description),
            method: a.method.as_deref().unwrap_or("").trim().to_string(),
            path: a.path.as_deref().unwrap_or("").trim().to_string(),
            timeout_ms: a.timeout_ms,
        };
        actions.insert(name.trim().to_string(), action);
    }
    actions
}

/// `[[disks]]`, trimmed; a checksum without an algorithm is kept with a note.
fn build_disks(raw: &Raw, notes: &mut Vec<Note>) -> Vec<Disk> {
    let mut disks = Vec::new();
    for (i, d) in raw.disks.iter().enumerate() {
        let checksum = trimmed(&d.checksum);
        if let Some(c) = checksum.as_ref().filter(|c| !c.contains(':')) {
            let message = format!("{c:?} has no algorithm prefix; Volant passes it on as written (write \"sha256:<hex>\" to say which)");
            note(notes, format!("disks[{i}].checksum"), message);
        }
        disks.push(Disk {
            name: d.name.as_deref().unwrap_or("").trim().to_string(),
            source: d.source.as_deref().unwrap_or("").trim().to_string(),
            checksum,
            format: trimmed(&d.format).map(|f| f.to_ascii_lowercase()),
            readonly: d.readonly,
            target: trimmed(&d.target),
        });
    }
    disks
}

/// `[cloud_init]` with Volant's defaults (`NoCloud`, `vfat`).
fn build_cloud_init(raw: &Raw) -> Result<Option<CloudInit>, Violation> {
    let Some(c) = &raw.cloud_init else {
        return Ok(None);
    };
    Ok(Some(CloudInit {
        datasource: trimmed(&c.datasource).unwrap_or_else(|| "NoCloud".to_string()),
        seed_mode: trimmed(&c.seed_mode)
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_else(|| "vfat".to_string()),
        user_data: c.user_data.as_ref().map(doc),
        meta_data: c.meta_data.as_ref().map(meta_data).transpose()?,
        network_config: c.network_config.as_ref().map(doc),
    }))
}

/// `[network]`: the mode defaults to `bridged` when the table is there.
fn build_network(raw: &Raw) -> Option<Network> {
    raw.network.as_ref().map(|n| Network {
        mode: trimmed(&n.mode)
            .map(|m| m.to_ascii_lowercase())
            .unwrap_or_else(|| "bridged".to_string()),
        subnet: trimmed(&n.subnet),
        gateway: trimmed(&n.gateway),
        auto_assign: n.auto_assign,
    })
}

/// `[devices]`, left out when it lists nothing.
fn build_devices(raw: &Raw) -> Option<Devices> {
    raw.devices
        .as_ref()
        .map(|d| Devices {
            pci_passthrough: d.pci_passthrough.clone(),
            allowlist: d.allowlist.clone(),
        })
        .filter(|d| !d.pci_passthrough.is_empty() || !d.allowlist.is_empty())
}

/// Checks `[[network.expose]]` and returns the first port.
fn check_expose(raw: &Raw) -> Result<Option<u16>, Violation> {
    let Some(network) = &raw.network else {
        return Ok(None);
    };
    let mut first = None;
    for (i, p) in network.expose.iter().enumerate() {
        let port = p.port.unwrap_or(0);
        let port = u16::try_from(port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| {
                violation(
                    format!("network.expose[{i}].port"),
                    format!("{port} is not a port number"),
                    "give a port between 1 and 65535",
                )
            })?;
        if let Some(proto) = trimmed(&p.protocol) {
            if !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp") {
                return Err(violation(
                    format!("network.expose[{i}].protocol"),
                    format!("{proto:?} is not tcp or udp"),
                    "use protocol = \"tcp\" or \"udp\"",
                ));
            }
        }
        if let Some(hp) = p.host_port {
            if !(0..=65535).contains(&hp) {
                return Err(violation(
                    format!("network.expose[{i}].host_port"),
                    format!("{hp} is not a port number"),
                    "give a port between 1 and 65535",
                ));
            }
        }
        first.get_or_insert(port);
    }
    Ok(first)
}

fn build_workload(
    raw: &Raw,
    first_port: Option<u16>,
    facts: &BuildFacts,
    notes: &mut Vec<Note>,
) -> Result<Workload, Violation> {
    // A container image's config fills what the template leaves out.
    let image = facts.image.cloned().unwrap_or_default();
    let exposed = first_port.is_some();
    let first_port = first_port.or(image.port);
    let w = raw.workload.clone().unwrap_or_default();
    let mut entrypoint = build_entrypoint(&w, facts.program, notes)?;
    if w.entrypoint.is_none() && w.args.is_empty() && !image.argv.is_empty() {
        entrypoint = image.argv.clone();
    }
    let mut env = build_env(raw, &w, notes)?;
    for e in &image.env {
        if let Some((k, v)) = e.split_once('=') {
            env.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    let kind = match trimmed(&w.kind) {
        None => "http".to_string(),
        Some(k) => volant::WORKLOAD_TYPES
            .iter()
            .find(|t| k.eq_ignore_ascii_case(t))
            .map_or(k, |t| t.to_string()),
    };
    let written = trimmed(&w.base_url);
    // In default mode the agent holds 8080, so the workload's default port is another one.
    let default_port = if facts.agent {
        DEFAULT_AGENT_MODE_PORT
    } else {
        DEFAULT_PORT
    };
    let base_url = match (&written, first_port) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(port)) => Some(format!("http://127.0.0.1:{port}")),
        // Only an http workload needs one (newer Volant's exec and grpc do not).
        (None, None) if kind == "http" => Some(format!("http://127.0.0.1:{default_port}")),
        (None, None) => None,
    };
    if let Some(url) = &base_url {
        if volant::go_url_parse(url).is_ok() && !volant::is_http_base_url(url) {
            note(notes, "workload.base_url", format!("{url:?} is not an http(s)://host[:port] URL; Volant accepts it, but its agent sends HTTP requests to base_url"));
        }
    }
    if facts.agent {
        check_agent_port(base_url.as_deref(), written.is_some(), exposed)?;
    }
    Ok(Workload {
        kind,
        base_url,
        entrypoint,
        env,
        workdir: trimmed(&w.workdir).or(image.workdir),
    })
}

/// Default mode: the workload may not listen on the agent's port. Volant reaches the VM only
/// through the agent on 8080, and the agent, finding the port taken once the workload is up,
/// hangs as PID 1 (`pid1 cannot exit; halting`). The error names the key that set the port.
fn check_agent_port(base_url: Option<&str>, written: bool, exposed: bool) -> Result<(), Violation> {
    let agent = volant::AGENT_PORT;
    if base_url.and_then(volant::port_of) != Some(agent) {
        return Ok(());
    }
    let why = format!(
        "is port {agent}, the port Volant's agent listens on in default mode: Volant reaches the \
         VM only through the agent there, and a workload holding it leaves the agent unable to \
         listen (as PID 1 it then hangs)"
    );
    let (field, fix) = if written {
        (
            "workload.base_url",
            "serve the workload on another port and name it in workload.base_url, e.g. \
             \"http://127.0.0.1:8081\"",
        )
    } else if exposed {
        (
            "network.expose[0].port",
            "serve the workload on another port and expose that one (network.expose), e.g. \
             port = 8081",
        )
    } else {
        (
            "network.expose",
            "the container image exposes it: serve the workload on another port and name it \
             with [[network.expose]] port = <port> (or workload.base_url)",
        )
    };
    Err(violation(field, why, fix))
}

/// `entrypoint` (+ `args`) as Volant normalises it: every item trimmed, blank items dropped;
/// nothing left means the program the image starts.
fn build_entrypoint(
    w: &super::template::RawWorkload,
    program: Option<&str>,
    notes: &mut Vec<Note>,
) -> Result<Vec<String>, Violation> {
    let written: Vec<String> = match &w.entrypoint {
        Some(Entrypoint::One(s)) => vec![s.clone()],
        Some(Entrypoint::Argv(v)) => v.clone(),
        None => Vec::new(),
    };
    let mut entrypoint: Vec<String> = written
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if entrypoint.is_empty() && !w.args.is_empty() {
        return Err(violation(
            "workload.args",
            "is given without workload.entrypoint",
            "set workload.entrypoint to the program the arguments are for",
        ));
    }
    if entrypoint.len() != written.len() && !entrypoint.is_empty() {
        note(
            notes,
            "workload.entrypoint",
            format!("blank items dropped, as Volant does: {entrypoint:?}"),
        );
    } else if entrypoint != written && !entrypoint.is_empty() {
        note(
            notes,
            "workload.entrypoint",
            format!("items trimmed, as Volant does: {entrypoint:?}"),
        );
    }
    if entrypoint.is_empty() {
        entrypoint.push(program.unwrap_or(DEFAULT_ENTRYPOINT).to_string());
    }
    let args: Vec<String> = w
        .args
        .iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if args != w.args {
        note(
            notes,
            "workload.args",
            format!("items trimmed and blank ones dropped, as Volant does: {args:?}"),
        );
    }
    entrypoint.extend(args);
    Ok(entrypoint)
}

/// `[env]` and `[workload.env]` merged as Volant normalises them: keys and values trimmed,
/// blank keys dropped; a variable set twice to different values is an error.
fn build_env(
    raw: &Raw,
    w: &super::template::RawWorkload,
    notes: &mut Vec<Note>,
) -> Result<BTreeMap<String, String>, Violation> {
    let mut env = BTreeMap::new();
    for (table, vars) in [("env", &raw.env), ("workload.env", &w.env)] {
        for (k, v) in vars {
            let (key, value) = (k.trim(), v.trim());
            let field = format!("{table}.{k}");
            if key.is_empty() {
                note(notes, field, "is a blank name: dropped, as Volant does");
                continue;
            }
            if key != k || value != v {
                note(
                    notes,
                    &field,
                    format!("trimmed to {key}={value:?}, as Volant does"),
                );
            }
            if key.contains('=') || key.chars().any(char::is_whitespace) {
                note(notes, &field, format!("{key:?} holds '=' or a space: Volant accepts it, but the program cannot read it as one variable"));
            }
            match env.get(key) {
                Some(existing) if existing != value => {
                    return Err(violation(
                        format!("workload.env.{key}"),
                        format!("is set to {value:?} here and to {existing:?} in [env]"),
                        "set each variable once, in [env]",
                    ));
                }
                _ => {
                    env.insert(key.to_string(), value.to_string());
                }
            }
        }
    }
    Ok(env)
}

/// A flag's value, unless it is blank.
fn given(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The boot artifact's URL and checksum (`initramfs.*`, or `rootfs.*` for a disk).
fn boot_artifact(facts: &BuildFacts) -> Result<(String, String), Violation> {
    let key = if facts.rootfs { "rootfs" } else { "initramfs" };
    let digest = facts.sha256.trim().to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(violation(
            format!("{key}.checksum"),
            format!("digest {:?} is not a hex sha256", facts.sha256),
            "pass the artifact's sha256 as 64 hex digits",
        ));
    }
    let url = match (given(facts.url), given(facts.base_url)) {
        (Some(url), _) => url.to_string(),
        (None, Some(base)) => {
            let file = facts.artifact.file_name().ok_or_else(|| {
                violation(
                    format!("{key}.url"),
                    format!("artifact {} has no file name", facts.artifact.display()),
                    "write the artifact to a file",
                )
            })?;
            format!("{}/{}", base.trim_end_matches('/'), file.to_string_lossy())
        }
        (None, None) => facts.artifact.to_string_lossy().into_owned(),
    };
    Ok((url, format!("sha256:{digest}")))
}

fn doc(d: &RawDoc) -> CloudInitDoc {
    // Volant trims the content too.
    let content = trimmed(&d.content);
    let path = trimmed(&d.path);
    CloudInitDoc {
        inline: d.inline.unwrap_or(content.is_some()),
        content,
        path,
    }
}

/// `[cloud_init.meta_data]`: a document (`inline`/`content`/`path`), or the original's free
/// table of meta-data keys, which becomes inline content as JSON (valid YAML).
fn meta_data(table: &toml::Table) -> Result<CloudInitDoc, Violation> {
    let is_doc = !table.is_empty()
        && table
            .keys()
            .all(|k| matches!(k.as_str(), "inline" | "content" | "path"));
    if is_doc {
        if let Ok(d) = RawDoc::deserialize(toml::Value::Table(table.clone())) {
            return Ok(doc(&d));
        }
    }
    let content = serde_json::to_string_pretty(table).map_err(|e| {
        violation(
            "cloud_init.meta_data",
            format!("cannot be written as JSON ({e})"),
            "use strings, numbers, booleans, arrays and tables only",
        )
    })?;
    Ok(CloudInitDoc {
        inline: true,
        content: Some(content),
        path: None,
    })
}
