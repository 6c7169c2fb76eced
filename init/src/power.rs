//! The ACPI power button: a generic netlink socket subscribed to the kernel's ACPI event
//! family, and what its messages say (`fledge_init::acpi` parses them).

use alloc::vec;

use crate::sys::{Errno, Netlink};

/// Subscribed to the kernel's ACPI events; an arriving event raises `SIGIO` at PID 1, so the
/// signal loop notices it.
pub struct AcpiEvents {
    sock: Netlink,
    family: u16,
}

impl AcpiEvents {
    /// Opens and subscribes; `Err(ENOENT)` when the kernel has no ACPI event family (no ACPI).
    pub fn open() -> Result<AcpiEvents, Errno> {
        let sock = Netlink::open()?;
        sock.send(&fledge_init::acpi::family_request(1))?;
        // The kernel answers while `send` runs, so the reply is already queued: never block.
        let mut buf = vec![0u8; 8192];
        let n = sock.recv(&mut buf)?;
        let (family, group) = fledge_init::acpi::family_reply(&buf[..n])
            .map_err(|e| Errno(if e < 0 { -e } else { libc::ENOENT }))?;
        sock.join(group)?;
        sock.signal_on_arrival()?;
        Ok(AcpiEvents { sock, family })
    }

    /// Reads every event waiting; true when one of them is the power button.
    pub fn power_button_pressed(&self) -> bool {
        let mut buf = vec![0u8; 8192];
        let mut pressed = false;
        while let Ok(n) = self.sock.recv(&mut buf) {
            if n == 0 {
                break;
            }
            let events = fledge_init::acpi::events(&buf[..n], self.family);
            pressed |= events.iter().any(fledge_init::acpi::Event::is_power_button);
        }
        pressed
    }
}

/// The power key of a device-tree machine (QEMU's arm64 `virt`: `gpio-keys`, needing the
/// `gpio_keys` and `evdev` modules): the evdev devices `/dev/input/event0` to `event7`, each
/// raising `SIGIO` at PID 1 when an event arrives.
#[cfg(target_arch = "aarch64")]
pub struct PowerKeys {
    devices: alloc::vec::Vec<rustix::fd::OwnedFd>,
}

#[cfg(target_arch = "aarch64")]
impl PowerKeys {
    /// Opens every event device there is; `None` when there is none.
    pub fn open() -> Option<PowerKeys> {
        use rustix::fd::AsFd;
        let mut devices = alloc::vec::Vec::new();
        for n in 0..8u8 {
            let mut path = *b"/dev/input/event0\0";
            path[16] = b'0' + n;
            let path = core::ffi::CStr::from_bytes_with_nul(&path).expect("one NUL, at the end");
            match crate::sys::open_input(path) {
                Ok(fd) => match crate::sys::signal_on_input(fd.as_fd()) {
                    Ok(()) => devices.push(fd),
                    Err(e) => log::debug!("{}: {e}", path.to_str().unwrap_or("?")),
                },
                Err(_) => continue,
            }
        }
        (!devices.is_empty()).then_some(PowerKeys { devices })
    }

    /// Reads every event waiting on every device; true when one of them pressed the power key.
    pub fn pressed(&self) -> bool {
        let mut buf = [0u8; 64 * fledge_init::input::EVENT_SIZE];
        let mut pressed = false;
        for fd in &self.devices {
            while let Ok(n) = crate::sys::read_some(fd, &mut buf) {
                if n == 0 {
                    break;
                }
                pressed |= fledge_init::input::power_key_pressed(&buf[..n]);
            }
        }
        pressed
    }
}
