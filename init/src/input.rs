//! Linux input events (`struct input_event` of `<linux/input.h>`, as an evdev device hands them
//! out on a 64-bit machine): whether a batch holds a press of the power key. On a device-tree
//! machine (QEMU's arm64 `virt`) the hypervisor's "power down" arrives that way, as `KEY_POWER`
//! from the `gpio-keys` driver, instead of as an ACPI event.

/// Size of one event on 64-bit Linux: a `struct timeval` (two 64-bit words), `type` (u16),
/// `code` (u16), `value` (i32).
pub const EVENT_SIZE: usize = 24;
/// `EV_KEY`: a key or button changed.
const EV_KEY: u16 = 1;
/// `KEY_POWER`.
const KEY_POWER: u16 = 116;

/// True when `bytes` (whole events, in the machine's byte order; a partial tail is ignored)
/// hold a press (value 1) of `KEY_POWER`. Releases and autorepeat (0 and 2) do not count.
pub fn power_key_pressed(bytes: &[u8]) -> bool {
    bytes.chunks_exact(EVENT_SIZE).any(|e| {
        let kind = u16::from_ne_bytes([e[16], e[17]]);
        let code = u16::from_ne_bytes([e[18], e[19]]);
        let value = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut e = [0u8; EVENT_SIZE];
        e[..8].copy_from_slice(&7u64.to_ne_bytes());
        e[16..18].copy_from_slice(&kind.to_ne_bytes());
        e[18..20].copy_from_slice(&code.to_ne_bytes());
        e[20..24].copy_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn only_a_power_key_press_counts() {
        let press = event(EV_KEY, KEY_POWER, 1);
        let sync = event(0, 0, 0);
        assert!(power_key_pressed(&[sync, press, sync].concat()));
        assert!(
            !power_key_pressed(&event(EV_KEY, KEY_POWER, 0)),
            "a release"
        );
        assert!(
            !power_key_pressed(&event(EV_KEY, KEY_POWER, 2)),
            "autorepeat"
        );
        assert!(
            !power_key_pressed(&event(EV_KEY, 28, 1)),
            "another key (Enter)"
        );
        assert!(!power_key_pressed(&event(2, KEY_POWER, 1)), "not EV_KEY");
        assert!(
            !power_key_pressed(&press[..EVENT_SIZE - 1]),
            "a partial event"
        );
        assert!(!power_key_pressed(&[]));
    }
}
