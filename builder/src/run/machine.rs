//! What the guest runs on: the acceleration (KVM only when a short probe boot shows it works),
//! the machine type (`microvm` when the guest can use it, else `q35`, with the reason) and
//! Volant's kernel command line for it.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::vm;

/// Which acceleration to use (`fledge run --accel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM, without probing (fails if it does not work).
    Kvm,
    /// QEMU's emulator.
    Tcg,
    /// KVM when `/dev/kvm` opens and a probe boot prints the kernel banner, else TCG.
    Auto,
}

impl AccelChoice {
    /// Every choice by name, as the command line spells them.
    pub const NAMES: [&'static str; 3] = ["auto", "kvm", "tcg"];
}

impl std::str::FromStr for AccelChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<AccelChoice, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(format!(
                "`{s}` is not one of {}",
                AccelChoice::NAMES.join(", ")
            )),
        }
    }
}

/// The acceleration in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }
}

/// How long the KVM probe may take. A working KVM guest prints the kernel's banner on the early
/// console within a few hundred milliseconds; where KVM is present but broken (these build
/// machines: QEMU hangs after the firmware, or aborts on an MSR with `-cpu host`) nothing comes.
pub const PROBE_BOUND: Duration = Duration::from_secs(3);

/// Decides the acceleration; the note says why when it is not what was asked for.
pub fn accel(choice: AccelChoice, qemu: &Path, kernel: &Path) -> (Accel, Option<String>) {
    match choice {
        AccelChoice::Tcg => (Accel::Tcg, None),
        AccelChoice::Kvm => (Accel::Kvm, None),
        AccelChoice::Auto => match probe_kvm(qemu, kernel) {
            Ok(()) => (Accel::Kvm, None),
            Err(why) => (Accel::Tcg, Some(format!("KVM not used: {why}; using TCG"))),
        },
    }
}

/// Boots `kernel` under KVM with an early console and waits up to [`PROBE_BOUND`] for its
/// `Linux version` banner; QEMU is killed either way.
pub fn probe_kvm(qemu: &Path, kernel: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Err(format!("/dev/kvm cannot be opened ({e})"));
    }
    let mut cmd = vm::guarded_command(qemu);
    cmd.args(["-accel", "kvm", "-cpu", "host", "-M", "q35", "-m", "128"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(kernel)
        .args(["-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(13).any(|w| w == b"Linux version") || seen.len() > 1 << 20 {
                break;
            }
        }
        seen
    });
    let start = Instant::now();
    let banner = loop {
        if reader.is_finished() {
            break true;
        }
        if start.elapsed() >= PROBE_BOUND {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let seen = reader.join().unwrap_or_default();
    let mut stderr = String::new();
    let _ = err.read_to_string(&mut stderr);
    if banner && seen.windows(13).any(|w| w == b"Linux version") {
        return Ok(());
    }
    match stderr.lines().find(|l| !l.trim().is_empty()) {
        Some(first) if !banner || !stderr.is_empty() => {
            Err(format!("the probe boot failed: {}", first.trim()))
        }
        _ => Err(format!(
            "a probe boot printed no kernel banner within {} s (KVM hangs here)",
            PROBE_BOUND.as_secs()
        )),
    }
}

/// The machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `-M microvm`: no firmware tables to walk, no PCI; devices on virtio-mmio.
    Microvm,
    /// `-M q35`: PCI devices, a PS/2 keyboard controller.
    Q35,
    /// `-M virt` (aarch64 guests): a device tree, a PL011 UART, PCI devices, and the power
    /// button as a GPIO key.
    Virt,
}

impl Machine {
    pub fn name(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
            Machine::Virt => "virt",
        }
    }
}

/// What the guest can drive: the kernel's built-in drivers (when its `modules.builtin` was
/// found) and the modules the image carries.
#[derive(Debug, Clone, Default)]
pub struct GuestDrivers {
    pub builtin: Option<BTreeSet<String>>,
    pub image: BTreeSet<String>,
}

impl GuestDrivers {
    fn has(&self, module: &str) -> bool {
        self.image.contains(module) || self.builtin.as_ref().is_some_and(|b| b.contains(module))
    }
}

/// `microvm` when QEMU has it and the guest has the virtio-mmio transport (and virtio-net when
/// the run needs a network): microvm has no PCI, so without those the guest has no devices to
/// talk through. Else `q35`, and the reason.
pub fn choose(
    qemu_has_microvm: bool,
    drivers: &GuestDrivers,
    network: bool,
) -> (Machine, Option<String>) {
    if !qemu_has_microvm {
        return (
            Machine::Q35,
            Some("this QEMU has no microvm machine".into()),
        );
    }
    let mut missing: Vec<&str> = Vec::new();
    if !drivers.has("virtio_mmio") {
        missing.push("virtio_mmio");
    }
    if network && !drivers.has("virtio_net") {
        missing.push("virtio_net");
    }
    if missing.is_empty() {
        return microvm_or_q35(drivers, network);
    }
    let known = if drivers.builtin.is_some() {
        "neither built into the kernel nor in the image"
    } else {
        "not in the image, and the kernel's modules.builtin was not found"
    };
    (
        Machine::Q35,
        Some(format!(
            "microvm needs {} for its devices ({known})",
            missing.join(" and ")
        )),
    )
}

/// microvm has no keyboard: Ctrl-C reaches fledge-init only as the ACPI power button, which needs
/// the kernel's `button` driver. Without it (known from the kernel's built-ins and the image),
/// q35 - whose Ctrl-Alt-Del needs no module - when it can drive the network card, else microvm
/// with the reason Ctrl-C will not work.
fn microvm_or_q35(drivers: &GuestDrivers, network: bool) -> (Machine, Option<String>) {
    if drivers.builtin.is_none() || drivers.has(POWER_BUTTON_DRIVER) {
        return (Machine::Microvm, None);
    }
    let why = format!(
        "the guest has no ACPI power button driver ({POWER_BUTTON_DRIVER}: neither built into the \
         kernel nor in the image), and microvm has no keyboard for Ctrl-Alt-Del"
    );
    if !network || drivers.has("virtio_pci") {
        return (
            Machine::Q35,
            Some(format!("Ctrl-C could not stop microvm: {why}")),
        );
    }
    (
        Machine::Microvm,
        Some(format!(
            "Ctrl-C will not reach fledge-init ({why}; add \"{POWER_BUTTON_DRIVER}\" to \
             [kernel] modules)"
        )),
    )
}

/// The kernel module of the ACPI power button (`drivers/acpi/button.c`).
const POWER_BUTTON_DRIVER: &str = "button";

/// The modules the guest needs for its network card on `machine` that it is known not to have:
/// empty when it has them, or when the kernel's built-ins are unknown (it may have them).
pub fn missing_nic_drivers(machine: Machine, drivers: &GuestDrivers) -> Vec<&'static str> {
    if drivers.builtin.is_none() {
        return Vec::new();
    }
    let transport = match machine {
        Machine::Microvm => "virtio_mmio",
        Machine::Q35 | Machine::Virt => "virtio_pci",
    };
    ["virtio_net", transport]
        .into_iter()
        .filter(|m| !drivers.has(m))
        .collect()
}

/// True when `qemu -M help` lists microvm.
pub fn qemu_has_microvm(qemu: &Path) -> bool {
    Command::new(qemu)
        .args(["-M", "help"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("microvm "))
        })
}

/// The guest's address on QEMU's user-mode network, its gateway, netmask and DNS server.
pub const GUEST_IP: &str = "10.0.2.15";
pub const GATEWAY: &str = "10.0.2.2";
pub const NETMASK: &str = "255.255.255.0";
pub const DNS: &str = "10.0.2.3";

/// Volant's kernel command line (`buildKernelCmdline` in volantvm/volant
/// `internal/server/orchestrator/orchestrator.go`) for this machine, with `ip=` for the
/// user-mode network when there is one, then `append`.
///
/// Two changes from Volant's: on q35 `i8042.nokbd` is left out, because the PS/2 keyboard is
/// how Ctrl-Alt-Del reaches PID 1 (the ACPI power button needs a module and a listener in the
/// guest; the keyboard driver is built into common kernels); and `ip=` names the DNS server
/// (the field after `off` in the kernel's syntax) so the guest can write `resolv.conf`. Under
/// TCG on microvm, `tsc_early_khz` spares the kernel a TSC calibration against the PIT that
/// fails on a loaded host and leaves the boot hanging.
pub fn cmdline(
    machine: Machine,
    accel: Accel,
    hostname: &str,
    network: bool,
    tsc_khz: Option<u64>,
    append: &str,
) -> String {
    let mut parts = vec![
        if machine == Machine::Virt {
            "console=ttyAMA0"
        } else {
            "console=ttyS0"
        },
        "reboot=k",
        "panic=1",
        "quiet",
        "loglevel=1",
    ];
    // The PC's keyboard controller and PCI bus options mean nothing to an arm64 kernel.
    if machine != Machine::Virt {
        parts.push("i8042.noaux");
    }
    if machine == Machine::Microvm {
        parts.push("i8042.nokbd");
    }
    if machine != Machine::Virt {
        parts.push("pci=lastbus=0");
    }
    let mut line = parts.join(" ");
    if network {
        line += &format!(" ip={GUEST_IP}::{GATEWAY}:{NETMASK}:{hostname}:eth0:off:{DNS}");
    }
    if let (Machine::Microvm, Accel::Tcg, Some(khz)) = (machine, accel, tsc_khz) {
        line += &format!(" tsc_early_khz={khz}");
    }
    let append = append.trim();
    if !append.is_empty() {
        line.push(' ');
        line.push_str(append);
    }
    line
}

/// A host name from a plugin name, as Volant makes one: lower case, `[a-z0-9-]` only, `vm` if
/// nothing is left.
pub fn hostname(name: &str) -> String {
    let h: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .collect();
    if h.is_empty() {
        "vm".into()
    } else {
        h
    }
}

/// The host CPU's clock in kHz (`cpu MHz` in `/proc/cpuinfo`), the rate TCG's TSC runs at.
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    (mhz > 0.0).then_some((mhz * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn machine_follows_the_guests_drivers() {
        let none = GuestDrivers::default();
        let (m, why) = choose(true, &none, true);
        assert_eq!(m, Machine::Q35);
        let why = why.unwrap();
        assert!(why.contains("virtio_mmio and virtio_net"), "{why}");
        assert!(why.contains("modules.builtin was not found"), "{why}");

        let debian = GuestDrivers {
            builtin: Some(set(&["i8042", "atkbd"])),
            image: BTreeSet::new(),
        };
        let (m, why) = choose(true, &debian, false);
        assert_eq!(m, Machine::Q35);
        let why = why.unwrap();
        assert!(
            why.contains("needs virtio_mmio for its devices (neither built into"),
            "{why}"
        );

        let modules = GuestDrivers {
            builtin: None,
            image: set(&["virtio_mmio", "virtio_net"]),
        };
        assert_eq!(choose(true, &modules, true), (Machine::Microvm, None));
        let builtin = GuestDrivers {
            builtin: Some(set(&["virtio_mmio", "button"])),
            image: BTreeSet::new(),
        };
        assert_eq!(choose(true, &builtin, false), (Machine::Microvm, None));
        assert_eq!(choose(false, &modules, true).0, Machine::Q35);
    }

    #[test]
    fn microvm_needs_the_power_button_for_ctrl_c() {
        let debian = |image: &[&str]| GuestDrivers {
            builtin: Some(set(&["i8042", "atkbd"])),
            image: set(image),
        };
        let with_button = debian(&["virtio_mmio", "virtio_net", "button"]);
        assert_eq!(choose(true, &with_button, true), (Machine::Microvm, None));

        // No button, q35 can drive the card: q35, saying why.
        let (m, why) = choose(
            true,
            &debian(&["virtio_mmio", "virtio_net", "virtio_pci"]),
            true,
        );
        assert_eq!(m, Machine::Q35);
        let why = why.unwrap();
        assert!(why.starts_with("Ctrl-C could not stop microvm"), "{why}");
        assert!(
            why.contains("(button: neither built into the kernel nor in the image)"),
            "{why}"
        );
        let (m, _) = choose(true, &debian(&["virtio_mmio"]), false);
        assert_eq!(m, Machine::Q35, "no network: q35 needs nothing");

        // No button and no PCI transport: microvm, with a warning and the fix.
        let (m, why) = choose(true, &debian(&["virtio_mmio", "virtio_net"]), true);
        assert_eq!(m, Machine::Microvm);
        assert!(why.unwrap().contains("add \"button\" to [kernel] modules"));
    }

    #[test]
    fn nic_drivers_known_missing() {
        let unknown = GuestDrivers::default();
        assert!(missing_nic_drivers(Machine::Q35, &unknown).is_empty());
        let debian = GuestDrivers {
            builtin: Some(set(&["atkbd"])),
            image: set(&["virtio_net"]),
        };
        assert_eq!(missing_nic_drivers(Machine::Q35, &debian), ["virtio_pci"]);
        assert_eq!(
            missing_nic_drivers(Machine::Microvm, &debian),
            ["virtio_mmio"]
        );
        let loaded = GuestDrivers {
            builtin: Some(BTreeSet::new()),
            image: set(&["virtio_net", "virtio_pci"]),
        };
        assert!(missing_nic_drivers(Machine::Q35, &loaded).is_empty());
    }

    #[test]
    fn cmdline_is_volants_with_the_network_and_extras() {
        let q = cmdline(
            Machine::Q35,
            Accel::Tcg,
            "web",
            true,
            Some(2_600_000),
            " fledge.supervise=1 ",
        );
        assert_eq!(
            q,
            "console=ttyS0 reboot=k panic=1 quiet loglevel=1 i8042.noaux pci=lastbus=0 \
             ip=10.0.2.15::10.0.2.2:255.255.255.0:web:eth0:off:10.0.2.3 fledge.supervise=1"
        );
        let m = cmdline(
            Machine::Microvm,
            Accel::Tcg,
            "web",
            false,
            Some(2_600_000),
            "",
        );
        assert_eq!(
            m,
            "console=ttyS0 reboot=k panic=1 quiet loglevel=1 i8042.noaux i8042.nokbd \
             pci=lastbus=0 tsc_early_khz=2600000"
        );
        let k = cmdline(Machine::Microvm, Accel::Kvm, "web", false, Some(1), "");
        assert!(!k.contains("tsc_early_khz"), "{k}");
    }

    #[test]
    fn hostnames_as_volant_makes_them() {
        assert_eq!(hostname("Example_HTTP-service.2"), "examplehttp-service2");
        assert_eq!(hostname("__"), "vm");
    }
}
