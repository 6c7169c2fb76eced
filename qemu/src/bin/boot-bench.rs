//! `boot-bench`: how long fledge-init takes to hand over to the agent, measured on a real kernel.
//!
//! For each of N rounds it boots these images, one after the other, so all see the same machine
//! load; every image holds the same stand-in program as the agent (`/bin/kestrel`):
//! - `fledge-init`: default mode, fledge-init is `/init` and execs the stand-in;
//! - with `--init PATH`, `--init`: the same image with the fledge-init binary at `PATH` as
//!   `/init` (another build of it, to compare two in one run);
//! - with `--steps`, `steps`: the same image with fledge-init built with its `step-times` feature,
//!   which prints the monotonic clock at each step of the boot (the per-step medians are printed);
//! - `C init`: the same image with `qemu/bench/same-work-init.c` as `/init`, built at bench time
//!   with `$CC` (default `gcc`) `-static -O2`: a static C program that makes fledge-init's system
//!   calls in the same order (mounts, `/dev` links, stdio check, `/dev/kmsg`, options and spec
//!   reads, `lo` up, `/.volant_init`, `RLIMIT_NOFILE`) and execs the stand-in the same way - the
//!   floor for that work;
//! - `null init`: none mode, the stand-in itself is `/init`.
//!
//! The default-mode images are one `fledge build` (uncompressed, so `/init` can be replaced by
//! the harness's own newc code); the others differ only in `/init`.
//!
//! Two figures per boot, both starting at the kernel's `printk` timestamp of `Run /init as init
//! process`:
//! - to the agent's poweroff: the `printk` timestamp of `reboot: Power down`, which the stand-in
//!   triggers right after printing its report (same program, same path in every image, one
//!   clock: this is the figure to compare);
//! - to the agent's report: the stand-in's `CLOCK_BOOTTIME` in its report line. Under TCG the
//!   offset between the `printk` clock (sched_clock) and the timekeeping clocks moves from boot to
//!   boot by tens of milliseconds (the clocksource switches jiffies -> tsc-early -> tsc while the
//!   emulated TSC is calibrated), so this one is noisier; it is printed for reference.
//!
//! The median and quartiles of each are printed, and the differences of the medians against the
//! C init and the null init.
//!
//! With `--unpack`, it instead measures how long the kernel takes to unpack the build benchmark's
//! image (the input `bench/run.sh` gathers, with the stand-in as `/init`) for each compression:
//! from the start of unpacking (`Trying to unpack rootfs image as initramfs`, or `Unpacking
//! initramfs` on older kernels) to `Run /init`, the time the boot waits for the initramfs.
//!
//! Usage: `cargo run -p fledge-qemu --release --bin boot-bench -- [-n N] [--show] [--init PATH]
//! [--steps] [--unpack [--bench-dir DIR]]` (`--show` prints the serial log of the first boot of
//! each kind; `DIR` is `bench/run.sh`'s work directory, default `$TMPDIR/fledge-bench`). Needs
//! what the smoke tests need (`bash qemu/fetch-kernel.sh`, busybox-static) and, but for
//! `--unpack`, a C compiler with a static C library.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use fledge_qemu::host::{GuestTarget, Host};
use fledge_qemu::newc::Archive;
use fledge_qemu::project::{toml_str, Project};
use fledge_qemu::tools::{self, Tools};
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
    init: Option<PathBuf>,
    steps: bool,
}

const USAGE: &str =
    "usage: boot-bench [-n N] [--show] [--init PATH] [--steps] [--unpack [--bench-dir DIR]]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        rounds: 5,
        show: false,
        unpack: false,
        bench_dir: std::env::temp_dir().join("fledge-bench"),
        init: None,
        steps: false,
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
            "--init" => a.init = Some(it.next().ok_or("--init needs a path")?.into()),
            "--steps" => a.steps = true,
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

/// The images of the module doc, in boot order: (label, image), and the projects they are in
/// (removed on drop).
type Images = (Vec<Project>, Vec<(String, PathBuf)>);

fn images(host: &Host, tools: &Tools, a: &Args) -> Result<Images, String> {
    let with_init = Project::default_mode(host, tools, "").map_err(err)?;
    let built = with_init.build(tools, "none", &[]).map_err(err)?;
    let archive = Archive::read(&built).map_err(err)?;
    let dir = with_init.path().to_path_buf();
    let null_init = Project::none_mode(host, tools).map_err(err)?;
    let null_image = null_init.build(tools, "none", &[]).map_err(err)?;
    let mut kinds = vec![("fledge-init".to_string(), built)];
    let mut variant = |label: &str, init: &Path| -> Result<(), String> {
        let bytes = std::fs::read(init).map_err(|e| format!("{}: {e}", init.display()))?;
        let mut a = archive.clone();
        let entry = a
            .entries
            .iter_mut()
            .find(|e| e.name == "init")
            .ok_or("the default-mode image has no /init")?;
        entry.data = bytes;
        let image = dir.join(format!("{}.cpio", label.replace(' ', "-")));
        a.write(&image).map_err(err)?;
        kinds.push((label.to_string(), image));
        Ok(())
    };
    if let Some(init) = &a.init {
        variant("--init", init)?;
    }
    if a.steps {
        variant("steps", &step_times_init()?)?;
    }
    variant("C init", &same_work_init(&dir)?)?;
    kinds.push(("null init".to_string(), null_image));
    Ok((vec![with_init, null_init], kinds))
}

/// Builds `qemu/bench/same-work-init.c` into `dir` with `$CC -static -O2`.
fn same_work_init(dir: &Path) -> Result<PathBuf, String> {
    let src = fledge_qemu::repo_root().join("qemu/bench/same-work-init.c");
    let out = dir.join("same-work-init");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(["-static", "-O2", "-o"]).arg(&out).arg(&src);
    tools::run(cmd).map_err(err)?;
    Ok(out)
}

/// Builds fledge-init with the `step-times` feature (same target and profile as the images').
fn step_times_init() -> Result<PathBuf, String> {
    let root = fledge_qemu::repo_root();
    let target = GuestTarget::load().map_err(err)?;
    let target_dir = root.join("target/fledge-init-steps");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "fledge-init",
        "--features",
        "step-times",
    ])
    .args([
        "--target",
        &target.rust_target,
        "--profile",
        &target.profile,
    ])
    .arg("--manifest-path")
    .arg(root.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    tools::run(cmd).map_err(err)?;
    Ok(target_dir
        .join(&target.rust_target)
        .join(&target.profile)
        .join("fledge-init"))
}

/// The `fledge-init: step NAME NS` lines of a `step-times` boot: (step, ns since the previous).
fn steps(log: &BootLog) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut prev = None;
    for line in log.serial.lines() {
        let Some(rest) = line.split("fledge-init: step ").nth(1) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (Some(name), Some(Ok(ns))) = (f.next(), f.next().map(str::parse::<u64>)) else {
            continue;
        };
        if let Some(p) = prev {
            out.push((name.to_string(), ns.saturating_sub(p) as f64 / 1e6));
        }
        prev = Some(ns);
    }
    out
}

/// fledge-init against the C init and the null init, as the module doc says.
fn init_overhead(host: &Host, tools: &Tools, a: &Args) -> Result<(), String> {
    let (_projects, kinds) = images(host, tools, a)?;
    // [kind][figure]: figure 0 = to poweroff (printk), 1 = to report (CLOCK_BOOTTIME), 2 = wall.
    let mut samples: Vec<[Vec<f64>; 3]> = vec![Default::default(); kinds.len()];
    // Per step of a `--steps` boot, in order: (step, ms per boot).
    let mut step_samples: Vec<(String, Vec<f64>)> = Vec::new();
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
            if name == "steps" {
                for (i, (step, ms)) in steps(&log).into_iter().enumerate() {
                    if step_samples.len() <= i {
                        step_samples.push((step, Vec::new()));
                    }
                    step_samples[i].1.push(ms);
                }
            }
        }
    }
    let q = |k: usize, f: usize| quartiles(&samples[k][f]);
    println!(
        "{} boots of each under {}, from `{RUN_INIT}` (printk clock); median [Q1 .. Q3]:",
        a.rounds,
        mode(host)
    );
    println!("                     to agent's poweroff           to agent's report     QEMU wall");
    for (k, (name, _)) in kinds.iter().enumerate() {
        let (p, r) = (q(k, 0), q(k, 1));
        println!(
            "  {name:<12} {:7.2} ms [{:6.2} .. {:6.2}]  {:7.2} ms [{:6.2} .. {:6.2}] {:6.1} s",
            p[1],
            p[0],
            p[2],
            r[1],
            r[0],
            r[2],
            q(k, 2)[1]
        );
    }
    let c = kinds.len() - 2;
    let null = kinds.len() - 1;
    println!("difference of the medians, to agent's poweroff (to agent's report):");
    for (k, (name, _)) in kinds.iter().enumerate().take(c) {
        for (base, label) in [(c, "C init"), (null, "null init")] {
            println!(
                "  {name:<12} - {label:<9} {:7.2} ms ({:7.2} ms)",
                q(k, 0)[1] - q(base, 0)[1],
                q(k, 1)[1] - q(base, 1)[1]
            );
        }
    }
    println!(
        "  {:<12} - {:<9} {:7.2} ms ({:7.2} ms)",
        "C init",
        "null init",
        q(c, 0)[1] - q(null, 0)[1],
        q(c, 1)[1] - q(null, 1)[1]
    );
    if !step_samples.is_empty() {
        println!("steps of the `steps` boots (ms since the previous step), median [Q1 .. Q3]:");
        for (step, ms) in &step_samples {
            let s = quartiles(ms);
            println!("  {step:<12} {:7.3} [{:6.3} .. {:6.3}]", s[1], s[0], s[2]);
        }
    }
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
            quartiles(&samples[k])[1]
        );
    }
    Ok(())
}

/// Q1, median and Q3 of `v` (linear interpolation between the closest ranks); NaN when empty.
fn quartiles(v: &[f64]) -> [f64; 3] {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    [0.25, 0.5, 0.75].map(|p| {
        let Some(last) = v.len().checked_sub(1) else {
            return f64::NAN;
        };
        let at = p * last as f64;
        let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate_between_ranks() {
        assert_eq!(quartiles(&[3.0, 1.0, 2.0]), [1.5, 2.0, 2.5]);
        assert_eq!(quartiles(&[4.0, 1.0, 3.0, 2.0]), [1.75, 2.5, 3.25]);
        assert_eq!(quartiles(&[7.0]), [7.0; 3]);
        assert!(quartiles(&[]).iter().all(|x| x.is_nan()));
    }
}
