//! The workload spec ([`fledge_abi::paths::WORKLOAD`]) from the `[init]` workload keys: the
//! command's program found in the planned image, the user and group resolved to numbers from
//! the image's `/etc/passwd` and `/etc/group`, and the spec encoded with the format both sides
//! share ([`fledge_abi::workload`]). Part of the top layer, so it sees the whole image.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use fledge_abi::paths;
use fledge_abi::workload::Workload;

use super::{Origin, PlanError, Planned, Stack};
use crate::archive::{Content, Kind};
use crate::config::WorkloadKeys;

/// Where argv[0] is looked for when the workload's environment has no `PATH` (fledge-init's
/// own default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The longest `/etc/passwd` or `/etc/group` read.
const MAX_ACCOUNTS_FILE: u64 = 4 << 20;

/// The in-image path of `init.command`'s program: argv[0] when absolute, else the first
/// `DIR/argv0` of the workload's `PATH` that the image has.
pub(super) fn program(keys: &WorkloadKeys, stack: &Stack) -> Result<String, PlanError> {
    let argv0 = &keys.command[0];
    // Through the image's directory links (`/bin -> usr/bin`).
    let exists = |p: &str| {
        matches!(
            stack
                .plan()
                .nodes
                .get(stack.resolved(p).as_str())
                .map(|n| &n.kind),
            Some(Kind::File(_) | Kind::Symlink(_))
        )
    };
    if argv0.contains('/') {
        if !argv0.starts_with('/') || argv0.split('/').any(|c| c == "..") {
            return Err(stack.invalid(
                None,
                "init.command",
                format!("starts with {argv0:?}: give the program as an absolute image path, or a name found in PATH"),
            ));
        }
        if !exists(argv0) {
            return Err(stack.invalid(None, "init.command", format!("starts with {argv0}, but nothing in the image provides it: add a [mappings] entry whose destination is \"{argv0}\"")));
        }
        return Ok(argv0.clone());
    }
    let path = keys
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
        .find(|p| exists(p))
        .ok_or_else(|| {
            stack.invalid(
                None,
                "init.command",
                format!("starts with {argv0:?}, which is in none of the image's PATH directories ({path}): map the program into one, or give its absolute path"),
            )
        })
}

/// Writes the spec when any workload key is set.
pub(super) fn add(keys: &WorkloadKeys, stack: &mut Stack) -> Result<(), PlanError> {
    if !keys.is_set() {
        return Ok(());
    }
    let (user, groups) = match &keys.user {
        Some(u) => {
            let (ids, groups) = resolve_user(
                u,
                &accounts(stack, "/etc/passwd")?,
                &accounts(stack, "/etc/group")?,
            )
            .map_err(|why| stack.invalid(None, "init.user", why))?;
            (Some(ids), groups)
        }
        None => (None, Vec::new()),
    };
    let spec = spec(keys, user, groups);
    let text = spec.encode().map_err(|e| {
        use fledge_abi::workload::Problem as P;
        // The key whose value the init would refuse (or exec, or setuid).
        let key = match &e.what {
            P::ArgTooLong("arg", ..) => "init.command",
            P::ArgTooLong(..) | P::Env(_) => "init.env",
            P::Id(..) | P::User(_) => "init.user",
            _ => "init",
        };
        stack.invalid(None, key, format!("makes an invalid workload spec: {e}"))
    })?;
    let node = Planned::new(
        Kind::File(Content::Bytes(Arc::from(text.into_bytes()))),
        0o644,
        Origin::Workload,
    );
    stack.put(paths::WORKLOAD, node)
}

fn spec(keys: &WorkloadKeys, user: Option<(u32, u32)>, groups: Vec<u32>) -> Workload {
    Workload {
        argv: keys.command.clone(),
        env: keys.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: keys.workdir.clone(),
        user,
        groups,
        nofile: keys.nofile,
        hostname: keys.hostname.clone(),
    }
}

/// The text of an accounts file of the planned image; empty when the image has none.
fn accounts(stack: &Stack, path: &str) -> Result<String, PlanError> {
    let bytes: Vec<u8> = match stack
        .plan()
        .nodes
        .get(stack.resolved(path).as_str())
        .map(|n| &n.kind)
    {
        Some(Kind::File(Content::Bytes(b))) => b.to_vec(),
        // A host file, or a container image's file (a slice of its cached layer).
        Some(Kind::File(c @ (Content::Path { size, .. } | Content::Slice { size, .. })))
            if *size <= MAX_ACCOUNTS_FILE =>
        {
            let mut bytes = Vec::new();
            c.open()
                .and_then(|mut body| body.read_to_end(&mut bytes))
                .map_err(|e| {
                    stack.invalid(
                        None,
                        "init.user",
                        format!(
                            "needs the image's {path}, but {} cannot be read: {e}",
                            c.source().unwrap_or(Path::new("?")).display()
                        ),
                    )
                })?;
            bytes
        }
        Some(Kind::File(Content::Path { .. } | Content::Slice { .. })) => {
            return Err(stack.invalid(
                None,
                "init.user",
                format!("needs the image's {path}, which is over {MAX_ACCOUNTS_FILE} bytes"),
            ))
        }
        _ => Vec::new(),
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A user and group as numbers, and supplementary groups.
type Ids = ((u32, u32), Vec<u32>);

/// `user[:group]` as numbers, and the user's supplementary groups (from `/etc/group`
/// membership). A number stays as it is; a name must be in the files. Without a group, the
/// user's primary group from `/etc/passwd` (0 for a number the file does not list).
fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<Ids, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // name:password:uid:gid:...
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let (uid, primary, name) = match user.parse::<u32>() {
        Ok(uid) => {
            let e = entries.iter().find(|f| f[2].parse() == Ok(uid));
            (uid, e.and_then(|f| f[3].parse().ok()), e.map(|f| f[0]))
        }
        Err(_) => {
            let f = entries
                .iter()
                .find(|f| f[0] == user)
                .ok_or_else(|| format!("names the user {user:?}, who is not in the image's /etc/passwd: use a number or add the user"))?;
            let id = |v: &str| {
                v.parse::<u32>().map_err(|_| {
                    format!("names the user {user:?}, whose /etc/passwd entry is malformed")
                })
            };
            (id(f[2])?, Some(id(f[3])?), Some(f[0]))
        }
    };
    // name:password:gid:member,member
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let gid = match grp {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("names the group {g:?}, which is not in the image's /etc/group: use a number or add the group"))?,
        },
    };
    let supplementary = match name {
        Some(n) => groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .filter(|&g| g != gid)
            .collect(),
        None => Vec::new(),
    };
    Ok(((uid, gid), supplementary))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,root\nappgrp:x:1001:\ndocker:x:999:app\n";

    #[test]
    fn users_resolve_from_the_images_accounts() {
        let cases: [(&str, Result<Ids, &str>); 7] = [
            ("1000", Ok(((1000, 1001), vec![10, 999]))),
            ("4242", Ok(((4242, 0), vec![]))),
            ("4242:7", Ok(((4242, 7), vec![]))),
            ("app", Ok(((1000, 1001), vec![10, 999]))),
            ("app:wheel", Ok(((1000, 10), vec![999]))),
            (
                "nobody",
                Err("names the user \"nobody\", who is not in the image's /etc/passwd"),
            ),
            (
                "app:staff",
                Err("names the group \"staff\", which is not in the image's /etc/group"),
            ),
        ];
        for (i, (spec, want)) in cases.into_iter().enumerate() {
            let got = resolve_user(spec, PASSWD, GROUP);
            match want {
                Ok(w) => assert_eq!(got, Ok(w), "case {i}: {spec}"),
                Err(prefix) => {
                    let e = got.expect_err(spec);
                    assert!(e.starts_with(prefix), "case {i}: {e}");
                }
            }
        }
        assert_eq!(resolve_user("0", "", ""), Ok(((0, 0), vec![])), "no files");
    }

    #[test]
    fn the_spec_carries_every_key() {
        let keys = WorkloadKeys {
            command: vec!["app".into(), "--port".into(), "80".into()],
            env: vec![("A".into(), "1".into()), ("PATH".into(), "/opt".into())],
            workdir: Some("/srv".into()),
            user: Some("app".into()),
            hostname: Some("web".into()),
            nofile: Some(4096),
        };
        let s = spec(&keys, Some((1, 2)), vec![3]);
        let back = Workload::decode(&s.encode().unwrap()).unwrap();
        assert_eq!(back.argv, ["app", "--port", "80"]);
        assert_eq!(back.env, ["A=1", "PATH=/opt"]);
        assert_eq!(
            (back.cwd.as_deref(), back.user),
            (Some("/srv"), Some((1, 2)))
        );
        assert_eq!((back.groups, back.nofile), (vec![3], Some(4096)));
        assert_eq!(back.hostname.as_deref(), Some("web"));
    }
}
