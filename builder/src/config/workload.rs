//! The workload keys of `[init]` (`command`, `env`, `workdir`, `user`, `hostname`, `nofile`):
//! each checked here; [`crate::plan`] writes the spec from them.

use toml::Spanned;

use super::raw::{Ctx, RawInit};
use super::{ConfigError, WorkloadKeys};

/// The workload keys of `[init]`, checked; and the span of `command` when it is set.
pub(super) fn keys(
    cx: &Ctx,
    init: &mut RawInit,
) -> Result<(WorkloadKeys, Option<std::ops::Range<usize>>), ConfigError> {
    use fledge_abi::workload;
    let mut keys = WorkloadKeys::default();
    let command_span = init.command.as_ref().map(Spanned::span);
    if let Some(c) = init.command.take() {
        let span = c.span();
        keys.command = c.into_inner();
        if keys.command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(cx.invalid(
                Some(span),
                "init.command",
                "needs the program first: `command = [\"/usr/bin/app\", \"--flag\"]`",
            ));
        }
        if keys.command.iter().any(|a| a.contains('\0')) {
            return Err(cx.invalid(Some(span), "init.command", "contains a NUL character"));
        }
    }
    if let Some(env) = init.env.take() {
        let span = env.span();
        for (name, value) in env.into_inner() {
            if value.contains('\0') {
                return Err(cx.invalid(
                    Some(span),
                    "init.env",
                    format!("has a NUL character in the value of {name:?}: environment values are C strings"),
                ));
            }
            let entry = format!("{name}={value}");
            if name.contains('=') || !workload::valid_env(&entry) {
                return Err(cx.invalid(
                    Some(span),
                    "init.env",
                    format!("has the name {name:?}: names are non-empty, without `=` or NUL"),
                ));
            }
            keys.env.push((name, value));
        }
    }
    if let Some(w) = init.workdir.take() {
        let ok = w.get_ref().starts_with('/') && !w.get_ref().contains(['\0', '\n']);
        if !ok {
            return Err(cx.invalid(
                Some(w.span()),
                "init.workdir",
                format!("is {:?}: give an absolute path in the image", w.get_ref()),
            ));
        }
        keys.workdir = Some(w.into_inner());
    }
    if let Some(u) = init.user.take() {
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        let text = u.get_ref();
        let (user, group) = text.split_once(':').unwrap_or((text, "0"));
        if !valid(user) || !valid(group) {
            return Err(cx.invalid(
                Some(u.span()),
                "init.user",
                format!("is {text:?}: use \"UID\", \"UID:GID\", \"name\" or \"name:group\""),
            ));
        }
        keys.user = Some(u.into_inner());
    }
    if let Some(h) = init.hostname.take() {
        if !workload::valid_hostname(h.get_ref()) {
            return Err(cx.invalid(
                Some(h.span()),
                "init.hostname",
                format!(
                    "is {:?}: 1-{} characters without `/`, spaces or control characters",
                    h.get_ref(),
                    workload::MAX_HOSTNAME
                ),
            ));
        }
        keys.hostname = Some(h.into_inner());
    }
    if let Some(n) = init.nofile.take() {
        const MAX: i64 = 1 << 30;
        if !(1..=MAX).contains(n.get_ref()) {
            return Err(cx.invalid(
                Some(n.span()),
                "init.nofile",
                format!("is {}: give a number from 1 to {MAX}", n.get_ref()),
            ));
        }
        keys.nofile = Some(*n.get_ref() as u64);
    }
    Ok((keys, command_span))
}
