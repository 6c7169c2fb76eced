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
