//! The kernel's ACPI event messages as fledge-init reads them from its netlink socket: the
//! family lookup reply and the events never panic, and an event whose names fit prints back to
//! a message that reads to the same event.
#![no_main]

use fledge_init::acpi::{event_message, events, family_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = family_reply(data);
    let family = data
        .get(4..6)
        .map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
    let found = events(data, family);
    assert!(
        found.len() <= data.len() / 48 + 1,
        "{} events in {} bytes",
        found.len(),
        data.len()
    );
    for e in found {
        let fits = e.device_class.len() < 20 && e.bus_id.len() < 15;
        let plain = !e.device_class.contains('\u{fffd}') && !e.bus_id.contains('\u{fffd}');
        if fits && plain {
            assert_eq!(events(&event_message(family, &e), family), vec![e]);
        }
    }
});
