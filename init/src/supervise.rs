//! Supervise mode: PID 1 stays, runs the target as a child and does a container init's job -
//! the way tini does it.
//!
//! All signals but the fault signals are blocked before the fork and read in one
//! `sigtimedwait` loop, so no handler ever runs. After every wake-up the loop reaps with
//! `waitpid(-1, WNOHANG)` until nothing is left to reap: SIGCHLDs coalesce, so one wake-up may
//! stand for many exits, orphans included. Every signal but SIGCHLD is passed on to the target
//! (see [`action`]). The target's exit, or SIGTERM, SIGINT (Ctrl-Alt-Del) or SIGPWR to PID 1,
//! or the ACPI power button (the kernel's ACPI events, read from a netlink socket that raises
//! SIGIO; the hypervisor's "power down", for guests without a keyboard), starts the shutdown:
//! SIGTERM to what is left, a grace period, SIGKILL, and return once every child is reaped.

use alloc::string::ToString;
use core::ffi::c_int;
use core::time::Duration;

use crate::error::Error;
use crate::status::Outcome;
use crate::sys::{self, Errno, SigSet};
use crate::workload::Plan;

/// What PID 1 does with a signal it receives while the target runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Not for the target: SIGCHLD (the reaping runs after every wake-up anyway).
    Ignore,
    /// Pass it on as it is.
    Forward(c_int),
    /// Pass on this signal and start the orderly shutdown (grace period, then SIGKILL).
    Shutdown(c_int),
    /// `SIGIO` from the ACPI event socket: read it, shut down if the power button was pressed.
    Acpi,
}

/// Every signal is passed on but SIGCHLD (the fault signals are never blocked, so never read;
/// SIGKILL and SIGSTOP never reach a process). SIGTERM and SIGINT - what Ctrl-Alt-Del becomes
/// once `RB_DISABLE_CAD` is set - start the shutdown and are passed on; SIGPWR (power failing)
/// starts it too and reaches the target as SIGTERM, the signal programs handle. With the ACPI
/// event socket open (`acpi`), SIGIO is its and stays with PID 1.
fn action(sig: c_int, acpi: bool) -> Action {
    match sig {
        libc::SIGCHLD => Action::Ignore,
        libc::SIGTERM | libc::SIGINT => Action::Shutdown(sig),
        libc::SIGPWR => Action::Shutdown(libc::SIGTERM),
        libc::SIGIO if acpi => Action::Acpi,
        _ => Action::Forward(sig),
    }
}

/// Runs the plan as a child until it and every other process are gone; returns its status
/// (exit code or 128 + signal).
pub fn supervise(plan: &Plan, grace: Duration) -> Result<i32, Error> {
    let target = plan.path.as_str();
    let cmd = plan.command()?;
    let messages = plan.messages();

    let blocked = SigSet::all_but_faults();
    let original = blocked.block().map_err(|cause| Error::Signals { cause })?;
    sys::disable_ctrl_alt_del();
    let acpi = match crate::power::AcpiEvents::open() {
        Ok(a) => Some(a),
        Err(e) => {
            log::debug!("no ACPI events (the power button will not shut down): {e}");
            None
        }
    };
    // On arm64 `virt` the power button is a key of an input device, not an ACPI event.
    #[cfg(target_arch = "aarch64")]
    let keys = crate::power::PowerKeys::open();
    #[cfg(not(target_arch = "aarch64"))]
    let keys: Option<()> = None;
    let main = sys::spawn(&cmd, &original, &messages).map_err(|cause| Error::Fork {
        target: target.to_string(),
        cause,
    })?;
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
        let Some(sig) = blocked.wait(timeout) else {
            continue; // a timeout
        };
        let (forward, shutdown) = match action(sig, acpi.is_some() || keys.is_some()) {
            Action::Ignore => continue,
            // Both sources are drained, whichever raised the signal.
            Action::Acpi
                if acpi
                    .as_ref()
                    .is_some_and(crate::power::AcpiEvents::power_button_pressed)
                    | power_key(&keys) =>
            {
                log::info!("power button pressed: shutting down");
                (libc::SIGTERM, true)
            }
            Action::Acpi => continue,
            Action::Forward(s) => (s, false),
            Action::Shutdown(s) => {
                log::info!("{}: shutting down", shutdown_cause(sig));
                (s, true)
            }
        };
        if outcome.is_none() {
            let _ = sys::kill(main, forward);
        }
        if shutdown {
            deadline.get_or_insert_with(|| sys::now() + grace);
        }
    }
    // `outcome` is set: `none_left` only happens after the target has been reaped.
    Ok(outcome.map_or(0, Outcome::code))
}

/// Whether the power key of an input device was pressed (arm64 `virt`; never elsewhere).
#[cfg(target_arch = "aarch64")]
fn power_key(keys: &Option<crate::power::PowerKeys>) -> bool {
    keys.as_ref().is_some_and(crate::power::PowerKeys::pressed)
}
#[cfg(not(target_arch = "aarch64"))]
fn power_key(_: &Option<()>) -> bool {
    false
}

/// Reaps every child that has exited. Returns the target's outcome if it was among them, and
/// whether no children are left at all.
/// What a shutdown signal to PID 1 usually means, for the log.
fn shutdown_cause(sig: c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT (Ctrl-Alt-Del)",
        libc::SIGPWR => "SIGPWR (power failing)",
        _ => "SIGTERM",
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_but_sigchld_reaches_the_target() {
        for sig in 1..=libc::SIGRTMAX() {
            let want = match sig {
                libc::SIGCHLD => Action::Ignore,
                libc::SIGTERM | libc::SIGINT => Action::Shutdown(sig),
                libc::SIGPWR => Action::Shutdown(libc::SIGTERM),
                s => Action::Forward(s),
            };
            assert_eq!(action(sig, false), want, "signal {sig}");
            let with_acpi = if sig == libc::SIGIO {
                Action::Acpi
            } else {
                want
            };
            assert_eq!(
                action(sig, true),
                with_acpi,
                "signal {sig} with ACPI events"
            );
        }
        assert_eq!(
            action(libc::SIGRTMIN() + 2, true),
            Action::Forward(libc::SIGRTMIN() + 2)
        );
    }
}
