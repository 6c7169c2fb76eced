//! `boot-bench`: how long fledge-init takes to hand over to the agent, measured on a real kernel.
//!
//! For each of N rounds it boots two images built by `fledge build` from the same stand-in
//! program, alternating so both see the same machine load:
//! - `fledge-init`: default mode, fledge-init is `/init` and execs the stand-in as `/bin/kestrel`;
//! - `null init`: none mode, the stand-in itself is `/init`.
//!
//! Two figures per boot, both starting at the kernel's `printk` timestamp of `Run /init as init
//! process`:
//! - to the agent's poweroff: the `printk` timestamp of `reboot: Power down`, which the stand-in
//!   triggers right after printing its report (same program, same path in both images, one clock:
//!   this is the figure to compare);
//! - to the agent's report: the stand-in's `CLOCK_BOOTTIME` in its report line. Under TCG the
//!   offset between the `printk` clock (sched_clock) and the timekeeping clocks moves from boot to
//!   boot by tens of milliseconds (the clocksource switches jiffies -> tsc-early -> tsc while the
//!   emulated TSC is calibrated), so this one is noisier; it is printed for reference.
//!
//! The medians of each and the differences (the init's overhead) are printed.
//!
//! Usage: `cargo run -p fledge-qemu --release --bin boot-bench -- [-n N] [--show]`
//! (`--show` prints the serial log of the first boot of each kind). Needs what the smoke tests
//! need (`bash qemu/fetch-kernel.sh`, busybox-static).

use std::process::ExitCode;

use fledge_qemu::host::Host;
use fledge_qemu::project::Project;
use fledge_qemu::tools::Tools;
use fledge_qemu::vm::{fields, Boot, Check, POWER_DOWN, RUN_INIT};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut rounds = 5usize;
    let mut show = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("-n needs a positive number of rounds")?
            }
            "--show" => show = true,
            _ => {
                return Err(format!(
                    "unknown argument `{a}` (usage: boot-bench [-n N] [--show])"
                ))
            }
        }
    }
    let host = Host::probe()?;
    let tools = Tools::get()?;
    let err = |e: fledge_qemu::Error| e.to_string();
    let with_init = Project::default_mode(&host, tools, "").map_err(err)?;
    let null_init = Project::none_mode(&host, tools).map_err(err)?;
    let kinds = [
        (
            "fledge-init",
            with_init.build(tools, "gzip", &[]).map_err(err)?,
        ),
        (
            "null init",
            null_init.build(tools, "gzip", &[]).map_err(err)?,
        ),
    ];
    eprintln!(
        "boot-bench: {rounds} rounds, {} ({})",
        if host.kvm { "KVM" } else { "TCG" },
        host.kernel.display()
    );

    // [kind][figure]: figure 0 = to poweroff (printk), 1 = to report (CLOCK_BOOTTIME), 2 = wall.
    let mut samples: [[Vec<f64>; 3]; 2] = Default::default();
    for round in 0..rounds {
        for (k, (name, image)) in kinds.iter().enumerate() {
            let log = Boot::new(name, image)
                .param("STANDIN=report")
                .run(&host)
                .map_err(err)?;
            if show && round == 0 {
                println!("----- {name}: serial log -----\n{}", log.serial.trim_end());
            }
            log.verify(&[
                Check::contains("STANDIN-REPORT"),
                Check::NoPanic,
                Check::PowerOff,
            ])
            .map_err(|e| e.to_string())?;
            let start = log.kernel_time(RUN_INIT);
            let off = log.kernel_time(POWER_DOWN);
            let report = log.line("STANDIN-REPORT").map(fields);
            let ns = report.and_then(|f| f.get("boottime_ns").and_then(|n| n.parse::<u64>().ok()));
            let (Some(start), Some(off), Some(ns)) = (start, off, ns) else {
                return Err(log
                    .fail_if(vec![format!(
                        "need `{RUN_INIT}` and `{POWER_DOWN}` timestamps and a boottime_ns in the \
                         report"
                    )])
                    .unwrap_err()
                    .to_string());
            };
            let figures = [
                (off - start) * 1e3,
                (ns as f64 / 1e9 - start) * 1e3,
                log.elapsed.as_secs_f64(),
            ];
            eprintln!(
                "round {}: {name:<11} /init -> poweroff {:7.2} ms, -> report {:7.2} ms, wall {:.1} s",
                round + 1,
                figures[0],
                figures[1],
                figures[2]
            );
            for (f, v) in figures.into_iter().enumerate() {
                samples[k][f].push(v);
            }
        }
    }
    let med = |k: usize, f: usize| median(&mut samples[k][f].clone());
    let mode = if host.kvm { "KVM" } else { "TCG" };
    println!("median of {rounds} boots under {mode}, from `{RUN_INIT}` (printk clock):");
    println!("                        to agent's poweroff   to agent's report   QEMU wall");
    for (k, name) in ["fledge-init (default)", "null init (none)"]
        .iter()
        .enumerate()
    {
        println!(
            "  {name:<21} {:10.2} ms {:17.2} ms {:10.1} s",
            med(k, 0),
            med(k, 1),
            med(k, 2)
        );
    }
    println!(
        "  {:<21} {:10.2} ms {:17.2} ms",
        "fledge-init overhead",
        med(0, 0) - med(1, 0),
        med(0, 1) - med(1, 1)
    );
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
