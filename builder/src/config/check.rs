//! The meaning of each table of `fledge.toml`: one short check per table, each taking the raw
//! shape and returning decided values or a [`ConfigError`] naming the file, line and key.

use std::path::Path;

use toml::Spanned;

use super::raw::{Ctx, Extra, RawAgent, RawBuild, RawConfig, RawFilesystem, RawInit, RawSource};
use super::{
    parse_sha256, AgentSource, Arch, ConfigError, CustomInit, Fetch, InitMode, Libraries, Location,
    Mapping, Rootfs, WorkloadKeys, DEFAULT_BUSYBOX_SHA256, DEFAULT_BUSYBOX_URL,
};
use crate::compress::Compression;

/// A `[mappings]` entry as written: key, destination, line.
pub(super) struct RawMapping {
    key: String,
    dest: String,
    line: Option<usize>,
}

/// The top level: `version`, `strategy` and `[filesystem]`; the disk's settings for
/// `strategy = "oci_rootfs"`.
pub(super) fn header(
    cx: &Ctx,
    raw: &RawConfig,
    warnings: &mut Vec<String>,
) -> Result<Option<Rootfs>, ConfigError> {
    match &raw.version {
        None => return Err(cx.invalid(None, "version", "is missing: add `version = \"1\"`")),
        Some(v) if v.get_ref() != "1" => {
            return Err(cx.invalid(
                Some(v.span()),
                "version",
                format!("is \"{}\" but only \"1\" is supported", v.get_ref()),
            ));
        }
        Some(_) => {}
    }
    let rootfs = match &raw.strategy {
        None => {
            return Err(cx.invalid(
                None,
                "strategy",
                "is missing: add `strategy = \"initramfs\"` (or \"oci_rootfs\" for a root file system disk)",
            ));
        }
        Some(s) if s.get_ref() == "oci_rootfs" => true,
        Some(s) if s.get_ref() == "initramfs" => false,
        Some(s) => {
            return Err(cx.invalid(
                Some(s.span()),
                "strategy",
                format!(
                    "is \"{}\": use \"initramfs\" or \"oci_rootfs\"",
                    s.get_ref()
                ),
            ));
        }
    };
    if !rootfs {
        if let Some(f) = &raw.filesystem {
            warnings.push(format!(
                "{}: `[filesystem]` applies to strategy = \"oci_rootfs\" builds and is ignored",
                cx.at(Some(f.span()))
            ));
        }
        return Ok(None);
    }
    let Some(f) = &raw.filesystem else {
        return Ok(Some(Rootfs::default()));
    };
    filesystem(cx, f.get_ref(), warnings).map(Some)
}

/// `[filesystem]` of an `oci_rootfs` build.
fn filesystem(
    cx: &Ctx,
    f: &RawFilesystem,
    warnings: &mut Vec<String>,
) -> Result<Rootfs, ConfigError> {
    let mut out = Rootfs::default();
    if let Some(t) = &f.kind {
        match t.get_ref().as_str() {
            "squashfs" => {}
            "ext4" | "xfs" | "btrfs" => {
                return Err(cx.invalid(
                    Some(t.span()),
                    "filesystem.type",
                    format!(
                        "is \"{}\", a disk only root can make (losetup, mount); fledge writes \"squashfs\" disks, without root and reproducibly: use type = \"squashfs\"",
                        t.get_ref()
                    ),
                ));
            }
            other => {
                return Err(cx.invalid(
                    Some(t.span()),
                    "filesystem.type",
                    format!("is \"{other}\": use \"squashfs\""),
                ));
            }
        }
    }
    out.compression_level = f.compression_level.as_ref().map(|l| *l.get_ref());
    if let Some(o) = &f.overlay_size {
        let text = o.get_ref().trim();
        let ok = crate::compress::parse_size(text).is_some_and(|n| n >= 1 << 20);
        if !ok {
            return Err(cx.invalid(
                Some(o.span()),
                "filesystem.overlay_size",
                format!(
                    "is \"{}\": give the size of the writable layer over the disk, at least 1M (e.g. \"1G\", \"512M\")",
                    o.get_ref()
                ),
            ));
        }
        out.overlay_size = text.to_string();
    }
    for (key, span) in [
        (
            "size_buffer_mb",
            f.size_buffer_mb.as_ref().map(|v| v.span()),
        ),
        ("preallocate", f.preallocate.as_ref().map(|v| v.span())),
    ] {
        if let Some(span) = span {
            warnings.push(format!(
                "{}: `filesystem.{key}` sizes an ext4/xfs/btrfs disk; a squashfs disk is as large as its content, so it is ignored",
                cx.at(Some(span))
            ));
        }
    }
    cx.unknown_keys("filesystem", &f.extra, warnings);
    Ok(out)
}

/// The `[mappings]` entries, including ones TOML scoped into another table by mistake.
pub(super) fn gather_mappings(
    cx: &Ctx,
    raw: &mut RawConfig,
    warnings: &mut Vec<String>,
) -> Result<Vec<RawMapping>, ConfigError> {
    let mut found: Vec<RawMapping> = raw
        .mappings
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|(key, v)| RawMapping {
            key,
            line: Some(cx.line(v.span())),
            dest: v.into_inner(),
        })
        .collect();
    if let Some(init) = raw.init.as_mut() {
        adopt(cx, "init", &mut init.get_mut().extra, warnings, &mut found)?;
    }
    if let Some(agent) = raw.agent.as_mut() {
        adopt(
            cx,
            "agent",
            &mut agent.get_mut().extra,
            warnings,
            &mut found,
        )?;
    }
    if let Some(source) = raw.source.as_mut() {
        adopt(cx, "source", &mut source.extra, warnings, &mut found)?;
    }
    if let Some(build) = raw.build.as_mut() {
        adopt(cx, "build", &mut build.extra, warnings, &mut found)?;
    }
    Ok(found)
}

/// `mappings = { ... }` written after `[table]`: used as [mappings], with a warning.
fn adopt(
    cx: &Ctx,
    table: &str,
    extra: &mut Extra,
    warnings: &mut Vec<String>,
    found: &mut Vec<RawMapping>,
) -> Result<(), ConfigError> {
    let Some(v) = extra.remove("mappings") else {
        return Ok(());
    };
    let line = cx.key_line("mappings");
    let at = Location {
        file: cx.file.to_path_buf(),
        line,
    };
    let toml::Value::Table(t) = v else {
        return Err(ConfigError::Invalid {
            at,
            key: format!("{table}.mappings"),
            problem: "must be a table of \"host source\" = \"/image/destination\"".into(),
        });
    };
    warnings.push(format!(
        "{at}: `mappings = {{ ... }}` written after `[{table}]` belongs to [{table}] in \
         TOML; it is used as [mappings], but move it above the first [table] header or \
         write a [mappings] table"
    ));
    for (key, v) in t {
        let toml::Value::String(dest) = v else {
            return Err(ConfigError::Invalid {
                at,
                key: format!("mappings.\"{key}\""),
                problem: "must be a string destination path".into(),
            });
        };
        found.push(RawMapping { key, dest, line });
    }
    Ok(())
}

/// `[init]` and `[agent]`: the init mode and whether to supervise.
pub(super) fn init(
    cx: &Ctx,
    init: Option<Spanned<RawInit>>,
    agent: Option<Spanned<RawAgent>>,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<(InitMode, bool, WorkloadKeys), ConfigError> {
    let (init_span, mut init) = match init {
        Some(i) => (Some(i.span()), Some(i.into_inner())),
        None => (None, None),
    };
    let none = init.as_ref().and_then(|i| i.none.clone());
    let path = init.as_ref().and_then(|i| i.path.clone());
    let supervise = init.as_ref().and_then(|i| i.supervise.clone());
    if let Some(i) = &init {
        cx.unknown_keys("init", &i.extra, warnings);
    }
    let mode_none = none.as_ref().is_some_and(|n| *n.get_ref());
    if mode_none && path.is_some() {
        return Err(cx.invalid(
            init_span,
            "init",
            "sets both `path` and `none = true`: keep `path` for a custom init that \
             fledge-init starts, or `none = true` for your own /init",
        ));
    }
    if let Some(s) = &supervise {
        if mode_none && *s.get_ref() {
            return Err(cx.invalid(
                Some(s.span()),
                "init.supervise",
                "needs fledge-init, which `none = true` leaves out: remove one of them",
            ));
        }
    }
    let has_path = path.is_some();
    let (workload, command_span) = match init.as_mut() {
        Some(i) => super::workload::keys(cx, i)?,
        None => (WorkloadKeys::default(), None),
    };
    if mode_none && workload.is_set() {
        return Err(cx.invalid(
            init_span,
            "init",
            "sets workload keys (`command`, `env`, `workdir`, `user`, `hostname`, `nofile`), \
             which fledge-init applies and `none = true` leaves out: remove one of them",
        ));
    }
    if let (Some(_), Some(span)) = (&path, &command_span) {
        return Err(cx.invalid(
            Some(span.clone()),
            "init.command",
            "is set together with `init.path`: keep `path` for one program without \
             arguments, or `command` for argv",
        ));
    }
    let custom = match path {
        _ if command_span.is_some() => Some(CustomInit::Command),
        p => p.map(|p| custom_init(cx, p, base_dir)).transpose()?,
    };
    let from_image = init.as_ref().and_then(|i| i.from_image.as_ref());
    let custom = from_image_mode(cx, custom, has_path, from_image, mode_none)?;
    let command = command_span.is_some();
    let mode = init_mode(cx, agent, mode_none, command, custom, base_dir, warnings)?;
    Ok((mode, supervise.is_some_and(|s| s.into_inner()), workload))
}

/// The init mode `[init]` and `[agent]` choose together.
fn init_mode(
    cx: &Ctx,
    agent: Option<Spanned<RawAgent>>,
    mode_none: bool,
    command: bool,
    custom: Option<CustomInit>,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<InitMode, ConfigError> {
    Ok(match (agent, mode_none, custom) {
        (Some(a), true, _) | (Some(a), false, Some(_)) => {
            let which = if mode_none {
                "`none = true`"
            } else if command {
                "`init.command` (custom init)"
            } else {
                "`init.path` (custom init)"
            };
            return Err(cx.invalid(
                Some(a.span()),
                "agent",
                format!(
                    "is not allowed with {which}: the kestrel agent runs only in default \
                     mode; remove [agent], or remove [init] to use the agent"
                ),
            ));
        }
        (_, true, _) => InitMode::None,
        (None, false, Some(init)) => InitMode::Custom { init },
        (Some(a), false, None) => InitMode::Default {
            agent: agent_source(cx, a, base_dir, warnings)?,
        },
        (None, false, None) => InitMode::Default {
            agent: AgentSource::Release {
                version: "latest".into(),
            },
        },
    })
}

/// `init.path`: an in-image path (absolute) or a host file (relative to the config).
fn custom_init(cx: &Ctx, p: Spanned<String>, base_dir: &Path) -> Result<CustomInit, ConfigError> {
    let bad = |problem: String| Err(cx.invalid(Some(p.span()), "init.path", problem));
    let path = p.get_ref();
    if path.chars().any(char::is_control) {
        return bad(format!("is {path:?}, which contains a control character"));
    }
    if path.trim().is_empty() {
        return bad(
            "is empty: name your init (\"./my-init\" on this machine, or an absolute \
             path inside the image)"
                .into(),
        );
    }
    if path == "/init" {
        return bad(
            "is /init, where fledge-init goes: to run your own program as /init use \
             `none = true` and a mapping to /init"
                .into(),
        );
    }
    if !path.starts_with('/') {
        return Ok(CustomInit::Host(base_dir.join(path)));
    }
    if path.split('/').any(|c| c == "..") {
        return bad("must not contain `..`: write the absolute image path it means".into());
    }
    Ok(CustomInit::InImage(path.clone()))
}

/// `init.from_image = true`: custom mode running the image's program; it goes with neither
/// `path` nor `none`, and the other workload keys (`command`, `env`, ...) override the
/// image's values.
fn from_image_mode(
    cx: &Ctx,
    custom: Option<CustomInit>,
    has_path: bool,
    from_image: Option<&Spanned<bool>>,
    mode_none: bool,
) -> Result<Option<CustomInit>, ConfigError> {
    let Some(f) = from_image.filter(|f| *f.get_ref()) else {
        return Ok(custom);
    };
    if mode_none || has_path {
        return Err(cx.invalid(
            Some(f.span()),
            "init.from_image",
            "starts the image's own program, so it cannot go with `path` or `none = true`: keep one",
        ));
    }
    Ok(Some(CustomInit::FromImage))
}

/// `init.from_image` needs `source.image`.
pub(super) fn from_image_has_image(
    cx: &Ctx,
    mode: &InitMode,
    image: Option<&crate::image::Spec>,
) -> Result<(), ConfigError> {
    match (mode, image) {
        (
            InitMode::Custom {
                init: CustomInit::FromImage,
            },
            None,
        ) => Err(ConfigError::Invalid {
            at: Location {
                file: cx.file.to_path_buf(),
                line: cx.key_line("from_image"),
            },
            key: "init.from_image".into(),
            problem: "is true, but there is no image: set [source] image = \"...\"".into(),
        }),
        _ => Ok(()),
    }
}

/// `[source] image`, `image_platform` and `image_plain_http`.
pub(super) fn image(
    cx: &Ctx,
    src: Option<&mut RawSource>,
    base_dir: &Path,
    arch: Arch,
) -> Result<Option<crate::image::Spec>, ConfigError> {
    use crate::image::{ImageRef, Platform, Spec};
    let Some(src) = src else { return Ok(None) };
    let Some(text) = src.image.take() else {
        let platform = src.image_platform.as_ref().map(|v| v.span());
        let http = src.image_plain_http.as_ref().map(|v| v.span());
        for (key, span) in [
            ("source.image_platform", platform),
            ("source.image_plain_http", http),
        ] {
            if span.is_some() {
                return Err(cx.invalid(span, key, "applies to `source.image`, which is not set"));
            }
        }
        return Ok(None);
    };
    let reference = ImageRef::parse(text.get_ref(), base_dir)
        .map_err(|p| cx.invalid(Some(text.span()), "source.image", p))?;
    let platform = match src.image_platform.take() {
        Some(p) => Platform::parse(p.get_ref())
            .map_err(|e| cx.invalid(Some(p.span()), "source.image_platform", e))?,
        None => Platform {
            arch: arch.oci().into(),
            ..Platform::default()
        },
    };
    Ok(Some(Spec {
        text: text.get_ref().trim().to_string(),
        reference,
        platform,
        plain_http: src.image_plain_http.take().is_some_and(|v| v.into_inner()),
    }))
}

/// `[build] arch`: the guest architecture, x86_64 unless set.
pub(super) fn arch(cx: &Ctx, b: Option<&RawBuild>) -> Result<Arch, ConfigError> {
    match b.and_then(|b| b.arch.as_ref()) {
        Some(a) => {
            Arch::parse(a.get_ref()).map_err(|e| cx.invalid(Some(a.span()), "build.arch", e))
        }
        None => Ok(Arch::default()),
    }
}

/// The busybox used without `source.busybox_url`: the pinned download of `arch`, or an error
/// naming the key to set when it has none.
fn default_busybox(cx: &Ctx, arch: Arch, sha: Option<String>) -> Result<Fetch, ConfigError> {
    match arch.default_busybox() {
        Some((url, digest)) => Ok(Fetch {
            location: url.to_string(),
            sha256: sha.or(Some(digest.to_string())),
        }),
        None => Err(cx.invalid(
            None,
            "source.busybox_url",
            format!(
                "is needed for {arch} guests (there is no pinned default busybox for {arch}): give a static {arch} busybox, e.g. /bin/busybox of Debian's busybox-static:{}",
                arch.oci()
            ),
        )),
    }
}

/// `[source]`: busybox and extra applets; `dockerfile` is refused.
pub(super) fn source(
    cx: &Ctx,
    src: Option<RawSource>,
    arch: Arch,
    warnings: &mut Vec<String>,
) -> Result<(Fetch, Vec<String>), ConfigError> {
    let Some(src) = src else {
        return Ok((default_busybox(cx, arch, None)?, Vec::new()));
    };
    if let Some(v) = &src.dockerfile {
        return Err(cx.invalid(
            Some(v.span()),
            "source.dockerfile",
            "needs a container engine, which this fledge does not run: build the image \
             (`podman build -t app .` then `podman save -o app.tar app`) and set \
             `image = \"docker-archive:app.tar\"`",
        ));
    }
    let known_elsewhere = ["context", "target", "build_args"];
    let extra: Extra = src
        .extra
        .into_iter()
        .filter(|(k, _)| !known_elsewhere.contains(&k.as_str()))
        .collect();
    cx.unknown_keys("source", &extra, warnings);
    let sha = digest(cx, src.busybox_sha256, "source.busybox_sha256", warnings)?;
    let busybox = match src.busybox_url {
        Some(u) if u.get_ref().trim().is_empty() => {
            return Err(cx.invalid(
                Some(u.span()),
                "source.busybox_url",
                "is empty: remove it to use the default busybox, or give a URL or path",
            ));
        }
        Some(u) => {
            check_location(cx, &u, "source.busybox_url")?;
            let default_sha =
                (u.get_ref() == DEFAULT_BUSYBOX_URL).then(|| DEFAULT_BUSYBOX_SHA256.to_string());
            Fetch {
                location: u.into_inner(),
                sha256: sha.or(default_sha),
            }
        }
        None => default_busybox(cx, arch, sha)?,
    };
    Ok((busybox, applets(cx, src.busybox_applets)?))
}

/// `source.busybox_applets`: plain applet names.
fn applets(cx: &Ctx, a: Option<Spanned<Vec<String>>>) -> Result<Vec<String>, ConfigError> {
    let Some(a) = a else { return Ok(Vec::new()) };
    for name in a.get_ref() {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(cx.invalid(
                Some(a.span()),
                "source.busybox_applets",
                format!("has \"{name}\", which is not an applet name"),
            ));
        }
    }
    Ok(a.into_inner())
}

/// `[build]`: compression and level.
pub(super) fn build(
    cx: &Ctx,
    b: Option<RawBuild>,
    warnings: &mut Vec<String>,
) -> Result<(Option<Compression>, Option<i32>), ConfigError> {
    let Some(b) = b else { return Ok((None, None)) };
    cx.unknown_keys("build", &b.extra, warnings);
    let compression = match &b.compression {
        Some(c) => Some(Compression::from_name(c.get_ref()).ok_or_else(|| {
            cx.invalid(
                Some(c.span()),
                "build.compression",
                format!(
                    "is \"{}\": use one of gzip, zstd, xz, lz4, none",
                    c.get_ref()
                ),
            )
        })?),
        None => None,
    };
    // Checked here when the config names both; a --compression given on the command line is
    // checked with this level before the build starts.
    if let (Some(c), Some(l)) = (compression, &b.compression_level) {
        crate::compress::check_level(c, Some(*l.get_ref())).map_err(|e| {
            cx.invalid(
                Some(l.span()),
                "build.compression_level",
                format!("does not fit: {e}"),
            )
        })?;
    }
    Ok((compression, b.compression_level.map(Spanned::into_inner)))
}

/// `[kernel]`: which modules, from which tree ([`crate::kmod::settings`] decides).
pub(super) fn kernel(
    cx: &Ctx,
    k: Option<crate::kmod::RawKernel>,
    base_dir: &Path,
    rootfs: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<crate::kmod::Settings>, ConfigError> {
    let Some(k) = k else {
        return Ok(None);
    };
    cx.unknown_keys("kernel", &k.extra, warnings);
    // A disk's boot initramfs carries the disk's drivers too.
    let also: &[&str] = if rootfs { &crate::boot::DRIVERS } else { &[] };
    crate::kmod::settings(k, base_dir, also).map_err(|e| ConfigError::Invalid {
        at: cx.at(e.span),
        key: e.key.into(),
        problem: e.problem,
    })
}

/// `[build]`: `libraries`, `sysroot` and `extra_libraries`.
pub(super) fn libraries(
    cx: &Ctx,
    b: Option<&RawBuild>,
    base_dir: &Path,
) -> Result<Libraries, ConfigError> {
    let mut out = Libraries::default();
    let Some(b) = b else { return Ok(out) };
    if let Some(l) = &b.libraries {
        out.auto = match l.get_ref().as_str() {
            "auto" => true,
            "off" => false,
            other => {
                return Err(cx.invalid(
                    Some(l.span()),
                    "build.libraries",
                    format!("is \"{other}\": use \"auto\" (add the shared libraries programs need) or \"off\""),
                ))
            }
        };
    }
    if let Some(s) = &b.sysroot {
        if s.get_ref().is_empty() {
            return Err(cx.invalid(
                Some(s.span()),
                "build.sysroot",
                "is empty: name the directory libraries come from, or leave it out for /",
            ));
        }
        out.sysroot = base_dir.join(s.get_ref());
    }
    if let Some(e) = &b.extra_libraries {
        if let Some(bad) = e
            .get_ref()
            .iter()
            .find(|n| n.is_empty() || n.contains('\0'))
        {
            return Err(cx.invalid(
                Some(e.span()),
                "build.extra_libraries",
                format!("has the entry {bad:?}: give a soname (libnss_dns.so.2) or an absolute path in the sysroot"),
            ));
        }
        out.extra = e.get_ref().clone();
    }
    Ok(out)
}

/// Every mapping: a source key and an absolute, clean destination.
pub(super) fn mappings(
    cx: &Ctx,
    found: Vec<RawMapping>,
    base_dir: &Path,
) -> Result<Vec<Mapping>, ConfigError> {
    found
        .into_iter()
        .map(|m| mapping(cx, m, base_dir))
        .collect()
}

fn mapping(cx: &Ctx, m: RawMapping, base_dir: &Path) -> Result<Mapping, ConfigError> {
    let RawMapping { key, dest, line } = m;
    let name = format!("mappings.\"{key}\"");
    let bad = |key: &str, problem: String| ConfigError::Invalid {
        at: Location {
            file: cx.file.to_path_buf(),
            line,
        },
        key: key.to_string(),
        problem,
    };
    if key.trim().is_empty() {
        return Err(bad("mappings", "has an empty source path".into()));
    }
    if dest.trim().is_empty() {
        return Err(bad(&name, "has an empty destination".into()));
    }
    if !dest.starts_with('/') {
        return Err(bad(
            &name,
            format!("has destination \"{dest}\", which must be absolute: write \"/{dest}\""),
        ));
    }
    if dest.chars().any(char::is_control) {
        return Err(bad(
            &name,
            format!("has destination {dest:?}, which contains a control character"),
        ));
    }
    if dest.split('/').any(|c| c == "..") {
        return Err(bad(
            &name,
            format!("has destination \"{dest}\", which must not contain `..`: write the absolute image path it means"),
        ));
    }
    Ok(Mapping {
        source: base_dir.join(&key),
        key,
        dest,
        line,
    })
}

/// An optional digest: empty means none; a `<placeholder>` (as the documentation's examples
/// have) means none with a warning; anything else must be a sha256.
fn digest(
    cx: &Ctx,
    v: Option<Spanned<String>>,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    let text = v.get_ref().trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.starts_with('<') && text.ends_with('>') {
        warnings.push(format!(
            "{}: `{key}` is the placeholder {text}, so the download is not verified: put the real digest there",
            cx.at(Some(v.span()))
        ));
        return Ok(None);
    }
    parse_sha256(text)
        .map(Some)
        .ok_or_else(|| cx.invalid(Some(v.span()), key, SHA_HELP))
}

const SHA_HELP: &str = "must be a sha256 digest: 64 hex digits, optionally prefixed `sha256:`";

fn check_location(cx: &Ctx, v: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
    let s = v.get_ref();
    if let Some((scheme, _)) = s.split_once("://") {
        if !matches!(scheme, "http" | "https" | "file") {
            return Err(cx.invalid(
                Some(v.span()),
                key,
                format!("uses `{scheme}://`: use http://, https://, file:// or a local path"),
            ));
        }
    }
    Ok(())
}

fn agent_source(
    cx: &Ctx,
    a: Spanned<RawAgent>,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<AgentSource, ConfigError> {
    let span = a.span();
    let a = a.into_inner();
    cx.unknown_keys("agent", &a.extra, warnings);
    let Some(strategy) = a.source_strategy else {
        return Err(cx.invalid(
            Some(span),
            "agent.source_strategy",
            "is missing: use \"release\", \"local\" or \"http\"",
        ));
    };
    let need = |v: Option<Spanned<String>>, key: &str, example: &str| match v {
        Some(v) if !v.get_ref().trim().is_empty() => Ok(v),
        Some(v) => Err(cx.invalid(Some(v.span()), key, format!("is empty: {example}"))),
        None => Err(cx.invalid(
            Some(strategy.span()),
            key,
            format!(
                "is required with source_strategy = \"{}\": {example}",
                strategy.get_ref()
            ),
        )),
    };
    match strategy.get_ref().as_str() {
        "release" => {
            let v = need(
                a.version,
                "agent.version",
                "add `version = \"latest\"` or a tag",
            )?;
            Ok(AgentSource::Release {
                version: v.into_inner(),
            })
        }
        "local" => {
            let p = need(a.path, "agent.path", "add `path = \"./kestrel\"`")?;
            Ok(AgentSource::Local {
                path: base_dir.join(p.get_ref()),
                sha256: digest(cx, a.checksum, "agent.checksum", warnings)?,
            })
        }
        "http" => {
            let u = need(a.url, "agent.url", "add `url = \"https://.../kestrel\"`")?;
            if !["http://", "https://", "file://"]
                .iter()
                .any(|s| u.get_ref().starts_with(s))
            {
                return Err(cx.invalid(
                    Some(u.span()),
                    "agent.url",
                    "must start with http://, https:// or file:// (or use source_strategy = \"local\")",
                ));
            }
            let sha256 = digest(cx, a.checksum, "agent.checksum", warnings)?;
            Ok(AgentSource::Http {
                url: u.into_inner(),
                sha256,
            })
        }
        other => Err(cx.invalid(
            Some(strategy.span()),
            "agent.source_strategy",
            format!("is \"{other}\": use \"release\", \"local\" or \"http\""),
        )),
    }
}
