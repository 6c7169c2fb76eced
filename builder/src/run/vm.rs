//! Starting QEMU: the command line for one guest, and the spawn rules that keep QEMU from
//! outliving `fledge run`.
//!
//! QEMU gets its own process group, so a Ctrl-C on the terminal reaches only `fledge run`
//! (which turns it into an ACPI power-down) instead of killing QEMU on the spot. When Debian's
//! `setpriv` (util-linux) is on `PATH`, QEMU is started through `setpriv --pdeathsig KILL`, so
//! the kernel kills it even if `fledge run` itself is killed with SIGKILL; every other way out of
//! `fledge run` kills and reaps QEMU through [`Guarded`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::machine::{Accel, Machine};

/// One guest to boot.
#[derive(Debug, Clone)]
pub struct Guest {
    pub machine: Machine,
    pub accel: Accel,
    pub memory_mb: u64,
    pub cpus: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// A root file system disk, attached read-only as the first virtio disk (`/dev/vda`).
    pub disk: Option<PathBuf>,
    pub cmdline: String,
    /// `(host port, guest port)` TCP forwards on the user-mode network; none: no network.
    pub forwards: Vec<(u16, u16)>,
    pub network: bool,
    /// The QMP socket QEMU listens on.
    pub qmp: PathBuf,
}

impl Guest {
    /// The QEMU command (stdio: the serial console on stdout).
    pub fn command(&self, qemu: &Path) -> Command {
        let mut cmd = guarded_command(qemu);
        match (self.accel, self.machine) {
            (Accel::Kvm, _) => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            // virt's default CPU is a 32-bit Cortex-A15: an aarch64 guest needs a 64-bit one.
            (Accel::Tcg, Machine::Virt) => cmd.args(["-accel", "tcg", "-cpu", "max"]),
            (Accel::Tcg, _) => cmd.args(["-accel", "tcg"]),
        };
        match self.machine {
            // The PIT, PIC and RTC give the kernel timers it can calibrate against.
            Machine::Microvm => cmd.args(["-M", "microvm,pit=on,pic=on,rtc=on,isa-serial=on"]),
            Machine::Q35 => cmd.args(["-M", "q35"]),
            Machine::Virt => cmd.args(["-M", "virt"]),
        };
        cmd.args([
            "-m",
            &self.memory_mb.to_string(),
            "-smp",
            &self.cpus.to_string(),
        ])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", self.qmp.display()));
        if self.network {
            let mut netdev = String::from("user,id=net0");
            for (host, guest) in &self.forwards {
                netdev += &format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}");
            }
            let nic = match self.machine {
                Machine::Microvm => "virtio-net-device,netdev=net0",
                Machine::Q35 | Machine::Virt => "virtio-net-pci,netdev=net0",
            };
            cmd.args(["-netdev", &netdev, "-device", nic]);
        }
        if let Some(disk) = &self.disk {
            let blk = match self.machine {
                Machine::Microvm => "virtio-blk-device,drive=root",
                Machine::Q35 | Machine::Virt => "virtio-blk-pci,drive=root",
            };
            let drive = format!(
                "file={},format=raw,if=none,id=root,readonly=on",
                disk.display()
            );
            cmd.args(["-drive", &drive, "-device", blk]);
        }
        cmd.arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(&self.cmdline);
        cmd
    }
}

/// A command for `program` in its own process group, run through `setpriv --pdeathsig KILL`
/// when available. Spawn it from the thread that lives for the whole run: the death signal
/// follows the thread that forked.
pub fn guarded_command(program: &Path) -> Command {
    let mut cmd = match which("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

/// A child that is killed and reaped when dropped, whatever path the run leaves by.
pub struct Guarded(pub Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The command as a shell would show it (for `-v` and error messages).
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.contains([' ', '"', '\'']) {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(machine: Machine) -> Guest {
        Guest {
            machine,
            accel: Accel::Tcg,
            memory_mb: 256,
            cpus: 2,
            kernel: "/k".into(),
            initrd: "/i".into(),
            disk: None,
            cmdline: "console=ttyS0 quiet".into(),
            forwards: vec![(4000, 8080)],
            network: true,
            qmp: "/run/q.sock".into(),
        }
    }

    #[test]
    fn command_lines_per_machine() {
        // Without the `setpriv ... --` prefix, which depends on this machine.
        let plain = |c: &Command| {
            let d = describe(c);
            d.split_once(" -- ")
                .map_or(d.clone(), |(_, r)| r.to_owned())
        };
        let q = plain(&guest(Machine::Q35).command(Path::new("qemu")));
        assert_eq!(
            q,
            "qemu -accel tcg -M q35 -m 256 -smp 2 -nodefaults -no-user-config -display none \
             -serial stdio -no-reboot -qmp unix:/run/q.sock,server=on,wait=off \
             -netdev user,id=net0,hostfwd=tcp:127.0.0.1:4000-:8080 -device virtio-net-pci,netdev=net0 \
             -kernel /k -initrd /i -append 'console=ttyS0 quiet'"
        );
        let mut m = guest(Machine::Microvm);
        m.accel = Accel::Kvm;
        m.network = false;
        let m = plain(&m.command(Path::new("qemu")));
        assert!(
            m.starts_with("qemu -accel kvm -cpu host -M microvm,pit=on"),
            "{m}"
        );
        assert!(!m.contains("netdev"), "{m}");
    }

    #[test]
    fn a_disk_is_attached_read_only_on_the_machine_s_virtio_transport() {
        let plain = |c: &Command| describe(c);
        for (machine, device) in [
            (Machine::Q35, "-device virtio-blk-pci,drive=root"),
            (Machine::Microvm, "-device virtio-blk-device,drive=root"),
        ] {
            let mut g = guest(machine);
            g.disk = Some("/d.squashfs".into());
            let c = plain(&g.command(Path::new("qemu")));
            assert!(
                c.contains("-drive file=/d.squashfs,format=raw,if=none,id=root,readonly=on")
                    && c.contains(device),
                "{c}"
            );
        }
    }

    #[test]
    fn guarded_children_are_reaped_and_free_ports_bind() {
        let mut cmd = guarded_command(Path::new("sleep"));
        cmd.arg("30");
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        drop(Guarded(child));
        // Reaped: the pid no longer names our child.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)") || stat.contains(") Z"), "{stat}");
        let p = free_port().unwrap();
        assert!(p > 0);
        TcpListener::bind(("127.0.0.1", p)).unwrap();
    }
}
