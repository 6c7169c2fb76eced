//! What PID 1 starts and how: the workload spec the builder baked
//! ([`fledge_abi::paths::WORKLOAD`]) with the `fledge.*` command-line overrides applied, turned
//! into one [`Plan`] - the program path (found in `PATH` when argv[0] has no `/`), argv, the
//! environment, working directory, user, open-file limit and hostname.
//!
//! Without a spec, or with a spec without `arg`, the program is the usual target: the custom
//! init named in `/.volant_init`, else the agent, with argv `[target]`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::CStr;

use fledge_abi::workload::{self, Workload};

use crate::error::Error;
use crate::options::Options;
use crate::sys::{self, Errno, Step};

/// `RLIMIT_NOFILE` when neither the spec nor the command line sets one: the kernel's default
/// `fs.nr_open`, the highest value that needs no sysctl.
pub const DEFAULT_NOFILE: u64 = 1 << 20;
/// The search path for argv[0] when the environment has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The workload, settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// What is executed.
    pub path: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<(u32, u32)>,
    pub groups: Vec<u32>,
    pub nofile: u64,
    /// Whether `nofile` was asked for (then failing to set it is fatal).
    pub nofile_set: bool,
    /// The spec's hostname (the command line and `ip=` take precedence).
    pub hostname: Option<String>,
}

/// Reads the spec; a missing file is the empty spec, an unreadable or malformed one an error.
pub fn load(path: &CStr) -> Result<Workload, Error> {
    match sys::read_to_string(path, workload::MAX_LEN) {
        Ok(text) => Workload::decode(&text).map_err(|cause| Error::Spec { cause }),
        Err(Errno(libc::ENOENT)) => Ok(Workload::default()),
        Err(cause) => Err(Error::SpecRead { cause }),
    }
}

/// Settles the plan: `target` is the usual program (used when the spec has no argv), `base_env`
/// the environment the kernel gave PID 1, `is_executable` the `PATH` probe.
pub fn plan(
    spec: Workload,
    opts: &Options,
    target: impl FnOnce() -> String,
    base_env: Vec<String>,
    is_executable: impl Fn(&str) -> bool,
) -> Plan {
    let argv = if spec.argv.is_empty() {
        vec![target()]
    } else {
        spec.argv
    };
    let mut env = base_env;
    for entry in spec.env.into_iter().chain(opts.env.iter().cloned()) {
        set_env(&mut env, entry);
    }
    let path = resolve(&argv[0], &env, is_executable);
    let nofile_set = opts.nofile.or(spec.nofile).is_some();
    Plan {
        path,
        argv,
        env,
        cwd: opts.cwd.clone().or(spec.cwd),
        user: opts.user.or(spec.user),
        groups: spec.groups,
        nofile: opts.nofile.or(spec.nofile).unwrap_or(DEFAULT_NOFILE),
        nofile_set,
        hostname: spec.hostname,
    }
}

/// Adds `NAME=VALUE` to `env`, replacing an entry of the same name in place.
fn set_env(env: &mut Vec<String>, entry: String) {
    fn name(e: &str) -> &str {
        e.split_once('=').map_or(e, |(n, _)| n)
    }
    match env.iter_mut().find(|e| name(e) == name(&entry)) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// argv[0] as a path: as it is with a `/`, else the first executable `DIR/argv0` in `PATH`; the
/// bare name when none is (the exec then fails with "not found", status 127).
fn resolve(argv0: &str, env: &[String], is_executable: impl Fn(&str) -> bool) -> String {
    if argv0.contains('/') || argv0.is_empty() {
        return argv0.to_string();
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| format!("{}/{argv0}", if dir.is_empty() { "." } else { dir }))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| argv0.to_string())
}

impl Plan {
    /// The C strings starting it takes.
    pub fn command(&self) -> Result<sys::Command, Error> {
        let cwd = self.cwd.as_deref();
        sys::Command::new(
            &self.path,
            &self.argv,
            &self.env,
            cwd,
            self.user,
            &self.groups,
        )
        .ok_or_else(|| Error::Start {
            what: self.failed(Step::Exec),
            cause: Errno(libc::EINVAL),
        })
    }

    /// What failed, for the fatal line: `failed to execute /bin/app`.
    pub fn failed(&self, step: Step) -> String {
        let (uid, gid) = self.user.unwrap_or((0, 0));
        match step {
            Step::Groups => {
                let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
                format!("failed to set the supplementary groups {}", list.join(","))
            }
            Step::Gid => format!("failed to set group id {gid}"),
            Step::Uid => format!("failed to set user id {uid}"),
            Step::Chdir => format!(
                "failed to change directory to {}",
                self.cwd.as_deref().unwrap_or("/")
            ),
            Step::Exec => format!("failed to execute {}", self.path),
        }
    }

    /// The child's message prefixes, one per [`Step`] (it cannot format after `fork`).
    pub fn messages(&self) -> [Vec<u8>; 5] {
        [Step::Groups, Step::Gid, Step::Uid, Step::Chdir, Step::Exec]
            .map(|s| format!("fledge-init: {}: ", self.failed(s)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn agent() -> String {
        "/bin/kestrel".into()
    }

    #[test]
    fn without_a_spec_the_usual_target_runs_with_the_kernels_environment() {
        let base = s(&["HOME=/", "TERM=linux"]);
        let p = plan(
            Workload::default(),
            &Options::default(),
            agent,
            base.clone(),
            |_| true,
        );
        assert_eq!(p.path, "/bin/kestrel");
        assert_eq!(p.argv, s(&["/bin/kestrel"]));
        assert_eq!(p.env, base);
        assert_eq!((p.cwd, p.user, p.nofile_set), (None, None, false));
        assert_eq!(p.nofile, DEFAULT_NOFILE);
    }

    #[test]
    fn the_spec_applies_and_the_command_line_overrides_it() {
        let spec = Workload {
            argv: s(&["python3", "-m", "http.server"]),
            env: s(&["PATH=/opt/bin:/usr/bin", "TERM=xterm", "A=1"]),
            cwd: Some("/srv".into()),
            user: Some((1000, 1000)),
            groups: vec![27],
            nofile: Some(4096),
            hostname: Some("web".into()),
        };
        let opts = Options {
            env: s(&["A=2", "B=3"]),
            user: Some((5, 6)),
            ..Options::default()
        };
        let found = |p: &str| p == "/usr/bin/python3";
        let p = plan(spec, &opts, agent, s(&["HOME=/", "TERM=linux"]), found);
        assert_eq!(p.path, "/usr/bin/python3", "PATH from the spec's env");
        assert_eq!(p.argv, s(&["python3", "-m", "http.server"]));
        assert_eq!(
            p.env,
            s(&[
                "HOME=/",
                "TERM=xterm",
                "PATH=/opt/bin:/usr/bin",
                "A=2",
                "B=3"
            ])
        );
        assert_eq!(p.cwd.as_deref(), Some("/srv"));
        assert_eq!(p.user, Some((5, 6)));
        assert_eq!(p.groups, vec![27]);
        assert_eq!((p.nofile, p.nofile_set), (4096, true));
        assert_eq!(p.hostname.as_deref(), Some("web"));
    }

    #[test]
    fn argv0_lookup() {
        let env = s(&["PATH=/a::/b"]);
        let cases = [
            ("/abs/prog", "/abs/prog", "/nothing"),
            ("./rel", "./rel", "/nothing"),
            ("prog", "/b/prog", "/b/prog"),
            ("prog", "./prog", "./prog"),
            ("prog", "prog", "/nothing"),
        ];
        for (i, (argv0, want, exists)) in cases.into_iter().enumerate() {
            assert_eq!(resolve(argv0, &env, |p| p == exists), want, "case {i}");
        }
        assert_eq!(
            resolve("sh", &[], |p| p == "/bin/sh"),
            "/bin/sh",
            "default PATH"
        );
    }

    #[test]
    fn set_env_replaces_by_whole_name_only() {
        let mut env = s(&["PATHX=1", "PATH=/bin"]);
        set_env(&mut env, "PATH=/usr/bin".into());
        set_env(&mut env, "PAT=2".into());
        assert_eq!(env, s(&["PATHX=1", "PATH=/usr/bin", "PAT=2"]));
    }

    #[test]
    fn failure_lines_name_the_step_and_value() {
        let p = Plan {
            path: "/bin/app".into(),
            argv: s(&["app"]),
            env: vec![],
            cwd: Some("/srv".into()),
            user: Some((7, 8)),
            groups: vec![1, 2],
            nofile: 1,
            nofile_set: false,
            hostname: None,
        };
        assert_eq!(p.failed(Step::Exec), "failed to execute /bin/app");
        assert_eq!(p.failed(Step::Chdir), "failed to change directory to /srv");
        assert_eq!(p.failed(Step::Uid), "failed to set user id 7");
        assert_eq!(p.failed(Step::Gid), "failed to set group id 8");
        assert_eq!(
            p.failed(Step::Groups),
            "failed to set the supplementary groups 1,2"
        );
        assert_eq!(
            p.messages()[Step::Chdir as usize],
            b"fledge-init: failed to change directory to /srv: "
        );
    }
}
