//! How a child ended, as PID 1 reports it: the shell's convention of the exit code, or 128 plus
//! the signal number for a death by signal (127 and 126 come from the child itself when `exec`
//! fails: not found, not executable).

use alloc::format;
use alloc::string::String;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Killed(i32),
}

impl Outcome {
    /// Decodes a `waitpid` status; `None` for stop/continue reports.
    pub fn from_wait(status: i32) -> Option<Outcome> {
        if libc::WIFEXITED(status) {
            Some(Outcome::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Outcome::Killed(libc::WTERMSIG(status)))
        } else {
            None
        }
    }

    /// The status a shell would give: the exit code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Exited(c) => c,
            Outcome::Killed(s) => 128 + s,
        }
    }

    /// The line PID 1 prints (after `fledge-init: `) when the target ends.
    pub fn describe(self, target: &str) -> String {
        match self {
            Outcome::Exited(c) => format!("{target} exited with status {c}"),
            Outcome::Killed(s) => {
                format!("{target} killed by signal {s} (status {})", 128 + s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a wait status the way the kernel encodes it.
    fn exited(code: i32) -> i32 {
        (code & 0xff) << 8
    }
    fn killed(sig: i32) -> i32 {
        sig & 0x7f
    }

    #[test]
    fn maps_wait_statuses_to_shell_codes_and_messages() {
        let cases = [
            (exited(0), 0, "/bin/kestrel exited with status 0"),
            (exited(1), 1, "/bin/kestrel exited with status 1"),
            (exited(127), 127, "/bin/kestrel exited with status 127"),
            (exited(255), 255, "/bin/kestrel exited with status 255"),
            (
                killed(libc::SIGTERM),
                143,
                "/bin/kestrel killed by signal 15 (status 143)",
            ),
            (
                killed(libc::SIGKILL),
                137,
                "/bin/kestrel killed by signal 9 (status 137)",
            ),
            (
                killed(libc::SIGUSR1) | 0x80, // core dumped flag
                138,
                "/bin/kestrel killed by signal 10 (status 138)",
            ),
        ];
        for (i, (status, code, text)) in cases.into_iter().enumerate() {
            let o = Outcome::from_wait(status).unwrap_or_else(|| panic!("case {i}: no outcome"));
            assert_eq!(o.code(), code, "case {i}");
            assert_eq!(o.describe("/bin/kestrel"), text, "case {i}");
        }
    }

    #[test]
    fn stop_reports_are_not_outcomes() {
        let stopped = (libc::SIGSTOP << 8) | 0x7f;
        assert_eq!(Outcome::from_wait(stopped), None);
        assert_eq!(Outcome::from_wait(0xffff), None, "continued");
    }
}
