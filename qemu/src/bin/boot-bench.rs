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
//! With `--unpack`, it instead measures how long the kernel takes to unpack the build benchmark's
//! image (the input `bench/run.sh` gathers, with the stand-in as `/init`) for each compression:
//! from the start of unpacking (`Trying to unpack rootfs image as initramfs`, or `Unpacking
//! initramfs` on older kernels) to `Run /init`, the time the boot waits for the initramfs.
//!
//! Usage: `cargo run -p fledge-qemu --release --bin boot-bench -- [-n N] [--show]
//! [--unpack [--bench-dir DIR]]` (`--show` prints the serial log of the first boot of each kind;
//! `DIR` is `bench/run.sh`'s work directory, default `$TMPDIR/fledge-bench`). Needs what the
//! smoke tests need (`bash qemu/fetch-kernel.sh`, busybox-static).

use std::path::PathBuf;
use std::process::ExitCode;

use fledge_qemu::host::Host;
use fledge_qemu::project::{toml_str, Project};
use fledge_qemu::tools::Tools;
use fledge_qemu::vm::{fields, Boot, BootLog, Check, POWER_DOWN, RUN_INIT};

/// Where the kernel starts unpacking the initramfs (6.x first, then older kernels).
const UNPACK_STARTS: [&str; 2] = [
    "Trying to unpack rootfs image as initramfs",
    "Unpacking initramfs",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Args {
    rounds: usize,
    show: bool,
    unpack: bool,
    bench_dir: PathBuf,
}

const USAGE: &str = "usage: boot-bench [-n N] [--show] [--unpack [--bench-dir DIR]]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        rounds: 5,
        show: false,
        unpack: false,
        bench_dir: std::env::temp_dir().join("fledge-bench"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-n" => {
                a.rounds = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("-n needs a positive number of rounds")?
            }
            "--show" => a.show = true,
            "--unpack" => a.unpack = true,
            "--bench-dir" => a.bench_dir = it.next().ok_or("--bench-dir needs a directory")?.into(),
            _ => return Err(format!("unknown argument `{arg}` ({USAGE})")),
        }
    }
    Ok(a)
}

fn run() -> Result<(), String> {
    let a = args()?;
    let host = Host::probe()?;
    let tools = Tools::get()?;
    eprintln!(
        "boot-bench: {} rounds, {} ({})",
        a.rounds,
        mode(&host),
        host.kernel.display()
    );
    if a.unpack {
        unpack(&host, tools, &a)
    } else {
        init_overhead(&host, tools, &a)
    }
}

fn mode(host: &Host) -> &'static str {
    if host.kvm {
        "KVM"
    } else {
        "TCG"
    }
}

fn err(e: fledge_qemu::Error) -> String {
    e.to_string()
}

/// Boots `image` once with the stand-in reporting; checks the boot ended well.
fn boot(host: &Host, name: &str, image: &std::path::Path, memory: u32) -> Result<BootLog, String> {
    let log = Boot::new(name, image)
        .param("STANDIN=report")
        .memory_mb(memory)
        .run(host)
        .map_err(err)?;
    log.verify(&[
        Check::contains("STANDIN-REPORT"),
        Check::NoPanic,
        Check::PowerOff,
    ])
    .map_err(|e| e.to_string())?;
    Ok(log)
}

/// fledge-init against a null init, as the module doc says.
fn init_overhead(host: &Host, tools: &Tools, a: &Args) -> Result<(), String> {
    let with_init = Project::default_mode(host, tools, "").map_err(err)?;
    let null_init = Project::none_mode(host, tools).map_err(err)?;
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
    // [kind][figure]: figure 0 = to poweroff (printk), 1 = to report (CLOCK_BOOTTIME), 2 = wall.
    let mut samples: [[Vec<f64>; 3]; 2] = Default::default();
    for round in 0..a.rounds {
        for (k, (name, image)) in kinds.iter().enumerate() {
            let log = boot(host, name, image, 256)?;
            if a.show && round == 0 {
                println!("----- {name}: serial log -----\n{}", log.serial.trim_end());
            }
            let start = log.kernel_time(RUN_INIT);
            let off = log.kernel_time(POWER_DOWN);
            let report = log.line("STANDIN-REPORT").map(fields);
            let ns = report.and_then(|f| f.get("boottime_ns").and_then(|n| n.parse::<u64>().ok()));
            let (Some(start), Some(off), Some(ns)) = (start, off, ns) else {
                return Err(missing(
                    &log,
                    &format!("`{RUN_INIT}` and `{POWER_DOWN}` timestamps and a boottime_ns"),
                ));
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
    println!(
        "median of {} boots under {}, from `{RUN_INIT}` (printk clock):",
        a.rounds,
        mode(host)
    );
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

fn missing(log: &BootLog, what: &str) -> String {
    log.fail_if(vec![format!("need {what} in the boot log")])
        .unwrap_err()
        .to_string()
}

/// The kernel's unpack time of the benchmark image, per compression. Libraries are left out,
/// as in `bench/run.sh`, so the image holds the same files as the build benchmark's.
fn unpack(host: &Host, tools: &Tools, a: &Args) -> Result<(), String> {
    let input = a.bench_dir.join("input");
    if !input.join("tree").is_dir() {
        return Err(format!(
            "no benchmark input in {}: run bench/run.sh first (or give --bench-dir)",
            input.display()
        ));
    }
    let project = Project::new(
        host,
        &format!(
            "[init]\nnone = true\n\n[build]\nlibraries = \"off\"\n\n[mappings]\n\"app\" = \"/init\"\n{} = \"/usr/bin/big-elf\"\n{} = \"/usr/lib/tree\"\n",
            toml_str(&input.join("big-elf")),
            toml_str(&input.join("tree"))
        ),
    )
    .map_err(err)?;
    project
        .copy_executable(&tools.standin, "app")
        .map_err(err)?;
    let kinds = ["gzip", "zstd", "xz", "lz4", "none"];
    let mut images = Vec::new();
    for c in kinds {
        let image = project.build(tools, c, &[]).map_err(err)?;
        let size = std::fs::metadata(&image).map_err(|e| e.to_string())?.len();
        // Every image is renamed so the next build does not replace it.
        let kept = image.with_file_name(format!("bench-image.{c}"));
        std::fs::rename(&image, &kept).map_err(|e| e.to_string())?;
        images.push((c, kept, size));
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for round in 0..a.rounds {
        for (k, (c, image, _)) in images.iter().enumerate() {
            // The uncompressed image and its unpacked copy are both in guest memory at once.
            let log = boot(host, c, image, 1024)?;
            if a.show && round == 0 {
                println!("----- {c}: serial log -----\n{}", log.serial.trim_end());
            }
            let start = UNPACK_STARTS.iter().find_map(|m| log.kernel_time(m));
            let (Some(start), Some(end)) = (start, log.kernel_time(RUN_INIT)) else {
                return Err(missing(
                    &log,
                    &format!("`{}` and `{RUN_INIT}`", UNPACK_STARTS[0]),
                ));
            };
            let ms = (end - start) * 1e3;
            eprintln!("round {}: {c:<5} unpack {ms:8.1} ms", round + 1);
            samples[k].push(ms);
        }
    }
    println!(
        "kernel unpack of the benchmark image, median of {} boots under {}, from `{}` to `{RUN_INIT}`:",
        a.rounds,
        mode(host),
        UNPACK_STARTS[0]
    );
    println!("  compression   image (MB)   unpack (ms)");
    for (k, (c, _, size)) in images.iter().enumerate() {
        println!(
            "  {c:<11} {:12.3} {:13.1}",
            *size as f64 / 1e6,
            median(&mut samples[k])
        );
    }
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
