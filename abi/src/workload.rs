//! The workload spec ([`crate::paths::WORKLOAD`]): what `fledge-init` starts and how - argv,
//! environment, working directory, user and groups, the open-file limit and the hostname. The
//! builder encodes it from `[init]` keys (or a container image's config); the init decodes it.
//!
//! The format is text, one setting per line, `KEY VALUE` split at the first space:
//!
//! ```text
//! fledge-workload 1
//! arg /usr/bin/python3
//! arg -m
//! arg http.server
//! env PATH=/usr/local/bin:/usr/bin:/bin
//! cwd /srv
//! user 1000:1000
//! groups 27,100
//! nofile 1048576
//! hostname web
//! ```
//!
//! The first line is the header with the format version. `arg` and `env` repeat, in order; every
//! other key appears at most once. In values a backslash starts an escape: `\\` is a backslash,
//! `\n` a newline; nothing else may follow it. Every key is optional: without `arg` the init
//! starts its usual target (the custom init or the agent) with the other settings applied.
//! Unknown keys, a repeated key, a bad value or a missing header are errors naming the line, so a
//! spec that does not mean exactly what was written never starts anything.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

/// The header line: the format name and its version.
pub const HEADER: &str = "fledge-workload 1";
/// The longest hostname the kernel takes (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME: usize = 64;
/// The longest spec file the init reads.
pub const MAX_LEN: usize = 1024 * 1024;
/// The longest argument or environment string `execve` takes, its NUL included: the kernel's
/// `MAX_ARG_STRLEN` (32 pages); a longer one fails the exec with E2BIG.
pub const MAX_ARG_STRLEN: usize = 128 * 1024;
/// The largest user or group id: `u32::MAX` is `(uid_t)-1`, which `setuid` and `setgid` take
/// for "leave unchanged".
pub const MAX_ID: u32 = u32::MAX - 1;

/// One decoded workload spec; `Default` is the empty spec (every setting left as it is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The program and its arguments; empty: the init's usual target. A program name without
    /// `/` is looked up in `PATH` by the init.
    pub argv: Vec<String>,
    /// `NAME=VALUE` entries set on top of the environment the kernel gives PID 1, in order (a
    /// later entry for the same name wins).
    pub env: Vec<String>,
    /// The working directory (absolute); `None`: `/`.
    pub cwd: Option<String>,
    /// The numeric user and group the program runs as; `None`: root (0:0).
    pub user: Option<(u32, u32)>,
    /// Supplementary groups (numeric); only applied with `user`.
    pub groups: Vec<u32>,
    /// `RLIMIT_NOFILE` (soft and hard); `None`: the init's default.
    pub nofile: Option<u64>,
    /// The hostname; `None`: left as it is.
    pub hostname: Option<String>,
}

/// What is wrong with a spec, and for a decoded one on which line (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The line, when decoding.
    pub line: Option<usize>,
    pub what: Problem,
}

/// The one thing wrong with a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The first line is not [`HEADER`].
    Header,
    /// A key the format does not have.
    UnknownKey(String),
    /// A once-only key given again.
    Repeated(&'static str),
    /// A backslash not followed by `\` or `n`.
    BadEscape,
    /// A NUL byte in a value (C strings cannot carry it).
    Nul(&'static str),
    /// An `env` entry without `=` or with an empty or `=`-containing name.
    Env(String),
    /// `cwd` is not an absolute path.
    RelativeCwd(String),
    /// `user` is not `UID:GID` with two numbers.
    User(String),
    /// A number that does not parse (`groups`, `nofile`), or `nofile 0`.
    Number(&'static str, String),
    /// A hostname that is empty, longer than [`MAX_HOSTNAME`] or contains `/` or whitespace.
    Hostname(String),
    /// An `arg` or `env` string of this many bytes, over [`MAX_ARG_STRLEN`] with its NUL;
    /// the start of the string.
    ArgTooLong(&'static str, usize, String),
    /// A user or group id over [`MAX_ID`].
    Id(&'static str, u32),
    /// The encoded spec has this many bytes, over [`MAX_LEN`].
    TooLong(usize),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        match &self.what {
            Problem::Header => write!(f, "the first line must be `{HEADER}`"),
            Problem::UnknownKey(k) => write!(f, "unknown key `{k}`"),
            Problem::Repeated(k) => write!(f, "`{k}` given twice"),
            Problem::BadEscape => f.write_str("a backslash must be followed by `\\` or `n`"),
            Problem::Nul(k) => write!(f, "`{k}` contains a NUL byte"),
            Problem::Env(e) => write!(f, "env entry \"{e}\" is not NAME=VALUE"),
            Problem::RelativeCwd(c) => write!(f, "working directory \"{c}\" is not absolute"),
            Problem::User(v) => write!(f, "`user` value \"{v}\" is not numeric UID:GID"),
            Problem::Number(k, v) => write!(f, "`{k}` value \"{v}\" is not a valid number"),
            Problem::Hostname(h) => write!(
                f,
                "hostname \"{h}\" must be 1-{MAX_HOSTNAME} bytes without `/` or spaces"
            ),
            Problem::ArgTooLong(k, n, head) => write!(
                f,
                "`{k}` \"{head}...\" is {n} bytes, over the {} bytes exec takes for one string (E2BIG)",
                MAX_ARG_STRLEN - 1
            ),
            Problem::Id(k, n) => write!(
                f,
                "`{k}` id {n} is not a valid id (at most {MAX_ID}; {} means \"unchanged\" to setuid)",
                u32::MAX
            ),
            Problem::TooLong(n) => write!(
                f,
                "the spec is {n} bytes, over the {MAX_LEN} bytes fledge-init reads"
            ),
        }
    }
}

/// Fails for a string `execve` refuses (with its NUL, over [`MAX_ARG_STRLEN`]).
fn exec_size(key: &'static str, s: &str) -> Result<(), SpecError> {
    if s.len() < MAX_ARG_STRLEN {
        return Ok(());
    }
    let mut end = 40;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Err(problem(Problem::ArgTooLong(
        key,
        s.len(),
        String::from(&s[..end]),
    )))
}

fn check_id(key: &'static str, id: u32) -> Result<(), SpecError> {
    if id > MAX_ID {
        return Err(problem(Problem::Id(key, id)));
    }
    Ok(())
}

fn problem(what: Problem) -> SpecError {
    SpecError { line: None, what }
}

impl Workload {
    /// Checks every value the way [`Workload::decode`] does; the builder calls it (through
    /// [`Workload::encode`]) so a bad value fails the build, not the boot.
    pub fn validate(&self) -> Result<(), SpecError> {
        for a in &self.argv {
            no_nul("arg", a)?;
            exec_size("arg", a)?;
        }
        for e in &self.env {
            no_nul("env", e)?;
            exec_size("env", e)?;
            check_env(e)?;
        }
        if let Some((uid, gid)) = self.user {
            check_id("user", uid)?;
            check_id("user", gid)?;
        }
        for g in &self.groups {
            check_id("groups", *g)?;
        }
        if let Some(c) = &self.cwd {
            no_nul("cwd", c)?;
            if !c.starts_with('/') {
                return Err(problem(Problem::RelativeCwd(c.clone())));
            }
        }
        if self.nofile == Some(0) {
            return Err(problem(Problem::Number("nofile", String::from("0"))));
        }
        if let Some(h) = &self.hostname {
            check_hostname(h)?;
        }
        Ok(())
    }

    /// The spec file's text.
    pub fn encode(&self) -> Result<String, SpecError> {
        self.validate()?;
        let mut out = String::new();
        let mut line = |key: &str, value: &str| {
            out.push_str(key);
            out.push(' ');
            escape_into(&mut out, value);
            out.push('\n');
        };
        line("fledge-workload", "1");
        for a in &self.argv {
            line("arg", a);
        }
        for e in &self.env {
            line("env", e);
        }
        if let Some(c) = &self.cwd {
            line("cwd", c);
        }
        let mut num = String::new();
        if let Some((uid, gid)) = self.user {
            let _ = write!(num, "{uid}:{gid}");
            line("user", &num);
        }
        if !self.groups.is_empty() {
            num.clear();
            for (i, g) in self.groups.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(num, "{sep}{g}");
            }
            line("groups", &num);
        }
        if let Some(n) = self.nofile {
            num.clear();
            let _ = write!(num, "{n}");
            line("nofile", &num);
        }
        if let Some(h) = &self.hostname {
            line("hostname", h);
        }
        if out.len() > MAX_LEN {
            return Err(problem(Problem::TooLong(out.len())));
        }
        Ok(out)
    }

    /// Parses a spec file's text; the error names the line.
    pub fn decode(text: &str) -> Result<Workload, SpecError> {
        // Split at `\n` only: `lines()` would also drop a `\r` that ends a value, which the
        // encoder writes unescaped.
        let mut lines = text
            .split_terminator('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, HEADER)) => {}
            _ => {
                return Err(SpecError {
                    line: Some(1),
                    what: Problem::Header,
                })
            }
        }
        let mut w = Workload::default();
        for (n, raw) in lines {
            w.decode_line(raw).map_err(|what| SpecError {
                line: Some(n),
                what,
            })?;
        }
        w.validate()?;
        Ok(w)
    }

    fn decode_line(&mut self, raw: &str) -> Result<(), Problem> {
        let (key, value) = raw.split_once(' ').unwrap_or((raw, ""));
        let value = unescape(value)?;
        fn once<T>(slot: &mut Option<T>, key: &'static str, v: T) -> Result<(), Problem> {
            match slot.replace(v) {
                Some(_) => Err(Problem::Repeated(key)),
                None => Ok(()),
            }
        }
        let number = |key: &'static str, v: &str| -> Result<u64, Problem> {
            v.parse().map_err(|_| Problem::Number(key, String::from(v)))
        };
        match key {
            "arg" => self.argv.push(value),
            "env" => self.env.push(value),
            "cwd" => once(&mut self.cwd, "cwd", value)?,
            "hostname" => once(&mut self.hostname, "hostname", value)?,
            "nofile" => once(&mut self.nofile, "nofile", number("nofile", &value)?)?,
            "user" => {
                let user = parse_user(&value).ok_or_else(|| Problem::User(value.clone()))?;
                once(&mut self.user, "user", user)?
            }
            "groups" => {
                if !self.groups.is_empty() {
                    return Err(Problem::Repeated("groups"));
                }
                for g in value.split(',') {
                    let g = g
                        .parse()
                        .map_err(|_| Problem::Number("groups", value.clone()))?;
                    self.groups.push(g);
                }
            }
            other => return Err(Problem::UnknownKey(String::from(other))),
        }
        Ok(())
    }
}

fn no_nul(key: &'static str, v: &str) -> Result<(), SpecError> {
    if v.contains('\0') {
        return Err(problem(Problem::Nul(key)));
    }
    Ok(())
}

/// `NAME=VALUE` with a non-empty name (the value may be empty or contain `=`), no NUL.
pub fn valid_env(e: &str) -> bool {
    !e.contains('\0') && e.split_once('=').is_some_and(|(name, _)| !name.is_empty())
}

fn check_env(e: &str) -> Result<(), SpecError> {
    if valid_env(e) {
        return Ok(());
    }
    Err(problem(Problem::Env(String::from(e))))
}

/// 1 to [`MAX_HOSTNAME`] bytes, no `/`, whitespace or control characters.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= MAX_HOSTNAME
        && !h
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

fn check_hostname(h: &str) -> Result<(), SpecError> {
    if valid_hostname(h) {
        return Ok(());
    }
    Err(problem(Problem::Hostname(String::from(h))))
}

/// `UID:GID`, both numeric (the `user` value and `fledge.user`).
pub fn parse_user(v: &str) -> Option<(u32, u32)> {
    let (u, g) = v.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn unescape(value: &str) -> Result<String, Problem> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            _ => return Err(Problem::BadEscape),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec;

    fn s(v: &str) -> String {
        v.to_string()
    }

    /// Found by the `abi_workload` fuzz target: a value ending in `\r` lost it in a round trip.
    #[test]
    fn a_carriage_return_ending_a_value_survives_a_round_trip() {
        let w = Workload::decode("fledge-workload 1\nenv J=e\r").unwrap();
        assert_eq!(w.env, vec![s("J=e\r")]);
        assert_eq!(Workload::decode(&w.encode().unwrap()).unwrap(), w);
    }

    fn full() -> Workload {
        Workload {
            argv: vec![s("/usr/bin/python3"), s("-c"), s("print('a b')\n\\x")],
            env: vec![
                s("PATH=/usr/bin:/bin"),
                s("EMPTY="),
                s("EQ=a=b"),
                s("ML=x\ny"),
            ],
            cwd: Some(s("/srv/app dir")),
            user: Some((1000, 100)),
            groups: vec![27, 100],
            nofile: Some(1 << 20),
            hostname: Some(s("web-1")),
        }
    }

    #[test]
    fn round_trips_every_field_and_escape() {
        for (i, w) in [full(), Workload::default()].into_iter().enumerate() {
            let text = w.encode().unwrap();
            assert!(text.starts_with("fledge-workload 1\n"), "case {i}: {text}");
            assert_eq!(Workload::decode(&text), Ok(w), "case {i}: {text}");
        }
    }

    #[test]
    fn encodes_the_documented_text() {
        let text = full().encode().unwrap();
        assert_eq!(
            text,
            "fledge-workload 1\narg /usr/bin/python3\narg -c\narg print('a b')\\n\\\\x\n\
             env PATH=/usr/bin:/bin\nenv EMPTY=\nenv EQ=a=b\nenv ML=x\\ny\n\
             cwd /srv/app dir\nuser 1000:100\ngroups 27,100\nnofile 1048576\nhostname web-1\n"
        );
    }

    #[test]
    fn bad_specs_name_the_line_and_the_problem() {
        let cases = [
            ("", "line 1: the first line must be `fledge-workload 1`"),
            (
                "fledge-workload 2\n",
                "line 1: the first line must be `fledge-workload 1`",
            ),
            ("fledge-workload 1\nargv x\n", "line 2: unknown key `argv`"),
            (
                "fledge-workload 1\ncwd /a\ncwd /b\n",
                "line 3: `cwd` given twice",
            ),
            (
                "fledge-workload 1\narg a\\tb\n",
                "line 2: a backslash must be followed by `\\` or `n`",
            ),
            (
                "fledge-workload 1\nuser 1000\n",
                "line 2: `user` value \"1000\" is not numeric UID:GID",
            ),
            (
                "fledge-workload 1\nnofile lots\n",
                "line 2: `nofile` value \"lots\" is not a valid number",
            ),
            (
                "fledge-workload 1\ngroups 1,,2\n",
                "line 2: `groups` value \"1,,2\" is not a valid number",
            ),
            (
                "fledge-workload 1\nenv =x\n",
                "env entry \"=x\" is not NAME=VALUE",
            ),
            (
                "fledge-workload 1\nenv X\n",
                "env entry \"X\" is not NAME=VALUE",
            ),
            (
                "fledge-workload 1\ncwd srv\n",
                "working directory \"srv\" is not absolute",
            ),
            (
                "fledge-workload 1\nnofile 0\n",
                "`nofile` value \"0\" is not a valid number",
            ),
            (
                "fledge-workload 1\nhostname a b\n",
                "hostname \"a b\" must be 1-64 bytes without `/` or spaces",
            ),
        ];
        for (i, (text, want)) in cases.into_iter().enumerate() {
            let err = Workload::decode(text).expect_err(text);
            assert_eq!(err.to_string(), want, "case {i}: {text:?}");
        }
    }

    #[test]
    fn the_encoder_refuses_what_the_decoder_would() {
        let cases = [
            Workload {
                argv: vec![s("a\0b")],
                ..Workload::default()
            },
            Workload {
                env: vec![s("NOEQUALS")],
                ..Workload::default()
            },
            Workload {
                cwd: Some(s("rel")),
                ..Workload::default()
            },
            Workload {
                hostname: Some("h".repeat(MAX_HOSTNAME + 1)),
                ..Workload::default()
            },
            Workload {
                nofile: Some(0),
                ..Workload::default()
            },
        ];
        for (i, w) in cases.into_iter().enumerate() {
            assert!(w.encode().is_err(), "case {i}: {w:?}");
        }
    }

    #[test]
    fn what_exec_and_setuid_refuse_is_refused_when_encoding() {
        let err = |w: Workload| w.encode().unwrap_err().to_string();
        let mut w = full();
        w.env.push(format!("BIG={}", "x".repeat(200 << 10)));
        let e = err(w);
        assert!(
            e.contains("`env` \"BIG=xxx") && e.contains("(E2BIG)"),
            "{e}"
        );
        assert!(e.len() < 200, "the message is short: {}", e.len());
        let mut w = full();
        w.argv.push("y".repeat(MAX_ARG_STRLEN));
        assert!(err(w).contains("`arg`"));
        let mut w = full();
        w.argv.push("y".repeat(MAX_ARG_STRLEN - 1));
        assert!(w.encode().is_ok(), "the longest string exec takes");
        let mut w = full();
        w.user = Some((u32::MAX, u32::MAX));
        assert!(err(w).contains("`user` id 4294967295"));
        let mut w = full();
        w.groups.push(u32::MAX);
        assert!(err(w).contains("`groups` id 4294967295"));
        let mut w = full();
        w.env = (0..20)
            .map(|i| format!("V{i}={}", "z".repeat(100 << 10)))
            .collect();
        let e = err(w);
        assert!(
            e.contains("over the 1048576 bytes fledge-init reads"),
            "{e}"
        );
    }
}
