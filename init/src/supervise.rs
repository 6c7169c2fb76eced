//! Supervise mode: PID 1 stays, runs the target as a child and does a container init's job -
//! the way tini does it.
//!
//! All signals but the fault signals are blocked before the fork and read in one
//! `sigtimedwait` loop, so no handler ever runs. After every wake-up the loop reaps with
//! `waitpid(-1, WNOHANG)` until nothing is left to reap: SIGCHLDs coalesce, so one wake-up may
//! stand for many exits, orphans included. The target's exit, or SIGTERM/SIGINT to PID 1, starts
//! the shutdown: SIGTERM to what is left, a grace period, SIGKILL, and return once every child
//! is reaped.

use alloc::ffi::CString;
use alloc::format;
use alloc::string::ToString;
use core::ffi::c_int;
use core::time::Duration;

use crate::error::Error;
use crate::status::Outcome;
use crate::sys::{self, Errno, SigSet};

/// Signals PID 1 passes on to the target.
const FORWARDED: [c_int; 8] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Runs `target` as a child until it and every other process are gone; returns its status
/// (exit code or 128 + signal).
pub fn supervise(target: &str, grace: Duration) -> Result<i32, Error> {
    let exec_failed = |cause| Error::Fork {
        target: target.to_string(),
        cause,
    };
    let target_c = CString::new(target).map_err(|_| exec_failed(Errno(libc::EINVAL)))?;
    let exec_error = format!("fledge-init: failed to execute {target}: ").into_bytes();

    let blocked = SigSet::all_but_faults();
    let original = blocked.block().map_err(|cause| Error::Signals { cause })?;
    sys::disable_ctrl_alt_del();
    let main = sys::spawn(&target_c, &original, &exec_error).map_err(exec_failed)?;
    log::debug!("started {target} as pid {main}");

    let mut outcome: Option<Outcome> = None;
    let mut deadline: Option<Duration> = None;
    let mut killed = false;
    loop {
        let (ended, none_left) = reap(main);
        if let Some(o) = ended {
            outcome = Some(o);
            log::info!("{}", o.describe(target));
            // Whatever the target left behind gets the same warning it would have had.
            let _ = sys::kill(-1, libc::SIGTERM);
            deadline.get_or_insert_with(|| sys::now() + grace);
        }
        if none_left {
            break;
        }
        let timeout = match deadline {
            Some(d) if !killed => {
                let left = d.saturating_sub(sys::now());
                if left.is_zero() {
                    log::warn!("grace period over, killing what is left");
                    let _ = sys::kill(-1, libc::SIGKILL);
                    killed = true;
                    continue;
                }
                Some(left)
            }
            _ => None,
        };
        match blocked.wait(timeout) {
            Some(sig) if FORWARDED.contains(&sig) => {
                if outcome.is_none() {
                    let _ = sys::kill(main, sig);
                }
                if sig == libc::SIGTERM || sig == libc::SIGINT {
                    deadline.get_or_insert_with(|| sys::now() + grace);
                }
            }
            // SIGCHLD (reaped at the top), a timeout, or a signal not meant for the target.
            _ => {}
        }
    }
    // `outcome` is set: `none_left` only happens after the target has been reaped.
    Ok(outcome.map_or(0, Outcome::code))
}

/// Reaps every child that has exited. Returns the target's outcome if it was among them, and
/// whether no children are left at all.
fn reap(main: i32) -> (Option<Outcome>, bool) {
    let mut ended = None;
    loop {
        match sys::reap_one() {
            Ok(Some((pid, status))) if pid == main => ended = Outcome::from_wait(status),
            Ok(Some(_)) => {}
            Ok(None) => return (ended, false),
            Err(Errno(libc::ECHILD)) => return (ended, true),
            Err(e) => {
                log::warn!("waitpid failed: {e}");
                return (ended, false);
            }
        }
    }
}
