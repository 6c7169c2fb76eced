//! The kernel's ACPI event messages over generic netlink (family `acpi_event`, multicast group
//! `acpi_mc_group`, `drivers/acpi/event.c`): the request that looks the family up, its reply,
//! and the events. The power button's event (`button/power`, sent by the ACPI button driver when
//! the hypervisor presses the button, as QEMU's `system_powerdown` does on q35 and microvm) is
//! how a host asks a guest without a keyboard to shut down.
//!
//! Netlink integers are in the host's byte order. Every length is checked against the buffer:
//! a message or attribute that does not fit ends the parse.

use alloc::string::String;
use alloc::vec::Vec;

/// The generic netlink family the ACPI core registers.
pub const FAMILY: &str = "acpi_event";
/// Its multicast group.
pub const GROUP: &str = "acpi_mc_group";
/// `device_class` of the power button's events.
pub const POWER_BUTTON: &str = "button/power";

const NLMSG_HDR: usize = 16;
const GENL_HDR: usize = 4;
const NLA_HDR: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;
const ACPI_GENL_CMD_EVENT: u8 = 1;
const ACPI_GENL_ATTR_EVENT: u16 = 1;
/// `struct acpi_genl_event`: `char device_class[20]`, `char bus_id[15]`, a pad byte, `u32 type`,
/// `u32 data`.
const EVENT_LEN: usize = 44;
/// Attribute types carry two flag bits (nested, byte order) above the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// One ACPI event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub device_class: String,
    pub bus_id: String,
    pub kind: u32,
    pub data: u32,
}

impl Event {
    /// Whether this is the power button being pressed.
    pub fn is_power_button(&self) -> bool {
        self.device_class == POWER_BUTTON
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The netlink messages in `buf`: (type, payload after the netlink header).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    core::iter::from_fn(move || {
        let len = usize::try_from(u32_at(rest, 0)?).ok()?;
        if len < NLMSG_HDR || len > rest.len() {
            return None;
        }
        let kind = u16_at(rest, 4)?;
        let payload = &rest[NLMSG_HDR..len];
        rest = rest.get(align4(len)..).unwrap_or_default();
        Some((kind, payload))
    })
}

/// The attributes in `buf`: (type without flags, value).
fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    core::iter::from_fn(move || {
        let len = usize::from(u16_at(rest, 0)?);
        if len < NLA_HDR || len > rest.len() {
            return None;
        }
        let kind = u16_at(rest, 2)? & NLA_TYPE_MASK;
        let value = &rest[NLA_HDR..len];
        rest = rest.get(align4(len)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// The C string at the start of `b` (up to its first NUL), lossily.
fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The netlink and generic netlink headers of a message of `len` bytes (port id 0: the
/// kernel's), with room for the rest.
fn header(len: usize, kind: u16, flags: u16, seq: u32, cmd: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[cmd, 1, 0, 0]);
    m
}

/// The request for the family's id and groups (`CTRL_CMD_GETFAMILY`).
pub fn family_request(seq: u32) -> Vec<u8> {
    let name_attr = NLA_HDR + FAMILY.len() + 1;
    let len = NLMSG_HDR + GENL_HDR + align4(name_attr);
    let mut m = header(len, GENL_ID_CTRL, NLM_F_REQUEST, seq, CTRL_CMD_GETFAMILY);
    m.extend_from_slice(&(name_attr as u16).to_ne_bytes());
    m.extend_from_slice(&CTRL_ATTR_FAMILY_NAME.to_ne_bytes());
    m.extend_from_slice(FAMILY.as_bytes());
    m.resize(len, 0);
    m
}

/// The family id and the id of [`GROUP`] from the reply to [`family_request`]; `Err` with the
/// kernel's error number (negative, as it sends it) or 0 when the reply names neither.
pub fn family_reply(buf: &[u8]) -> Result<(u16, u32), i32> {
    for (kind, payload) in messages(buf) {
        match kind {
            NLMSG_ERROR => return Err(u32_at(payload, 0).map_or(0, |e| e as i32)),
            GENL_ID_CTRL => {}
            _ => continue,
        }
        let (mut id, mut group) = (None, None);
        for (attr, value) in attributes(payload.get(GENL_HDR..).unwrap_or_default()) {
            match attr {
                CTRL_ATTR_FAMILY_ID => id = u16_at(value, 0),
                CTRL_ATTR_MCAST_GROUPS => group = group.or(group_id(value)),
                _ => {}
            }
        }
        if let (Some(id), Some(group)) = (id, group) {
            return Ok((id, group));
        }
    }
    Err(0)
}

/// The id of [`GROUP`] in a `CTRL_ATTR_MCAST_GROUPS` list.
fn group_id(groups: &[u8]) -> Option<u32> {
    attributes(groups).find_map(|(_, group)| {
        let (mut name, mut id) = (None, None);
        for (attr, value) in attributes(group) {
            match attr {
                CTRL_ATTR_MCAST_GRP_NAME => name = Some(c_str(value)),
                CTRL_ATTR_MCAST_GRP_ID => id = u32_at(value, 0),
                _ => {}
            }
        }
        id.filter(|_| name.as_deref() == Some(GROUP))
    })
}

/// The ACPI events in `buf` (what one receive returned) from the family `family`.
pub fn events(buf: &[u8], family: u16) -> Vec<Event> {
    let mut out = Vec::new();
    for (_, payload) in messages(buf).filter(|(kind, _)| *kind == family) {
        if payload.first() != Some(&ACPI_GENL_CMD_EVENT) {
            continue;
        }
        let attrs = attributes(payload.get(GENL_HDR..).unwrap_or_default());
        for (_, e) in attrs.filter(|(kind, _)| *kind == ACPI_GENL_ATTR_EVENT) {
            if e.len() < EVENT_LEN {
                continue;
            }
            out.push(Event {
                device_class: c_str(&e[..20]),
                bus_id: c_str(&e[20..35]),
                kind: u32_at(e, 36).unwrap_or(0),
                data: u32_at(e, 40).unwrap_or(0),
            });
        }
    }
    out
}

/// An event message as the kernel sends it (`device_class` and `bus_id` cut to fit).
pub fn event_message(family: u16, event: &Event) -> Vec<u8> {
    let mut body = [0u8; EVENT_LEN];
    for (d, s) in body[..19].iter_mut().zip(event.device_class.bytes()) {
        *d = s;
    }
    for (d, s) in body[20..34].iter_mut().zip(event.bus_id.bytes()) {
        *d = s;
    }
    body[36..40].copy_from_slice(&event.kind.to_ne_bytes());
    body[40..44].copy_from_slice(&event.data.to_ne_bytes());
    let len = NLMSG_HDR + GENL_HDR + NLA_HDR + EVENT_LEN;
    let mut m = header(len, family, 0, 0, ACPI_GENL_CMD_EVENT);
    m.extend_from_slice(&((NLA_HDR + EVENT_LEN) as u16).to_ne_bytes());
    m.extend_from_slice(&ACPI_GENL_ATTR_EVENT.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((NLA_HDR + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m
    }

    /// A reply shaped like the kernel's: family id, name, then the groups list.
    fn reply(id: u16, groups: &[(&str, u32)]) -> Vec<u8> {
        let mut payload = vec![1, 2, 0, 0];
        payload.extend(attr(CTRL_ATTR_FAMILY_ID, &id.to_ne_bytes()));
        payload.extend(attr(CTRL_ATTR_FAMILY_NAME, b"acpi_event\0"));
        let mut list = Vec::new();
        for (i, (name, gid)) in groups.iter().enumerate() {
            let mut g = attr(CTRL_ATTR_MCAST_GRP_ID, &gid.to_ne_bytes());
            g.extend(attr(
                CTRL_ATTR_MCAST_GRP_NAME,
                &[name.as_bytes(), b"\0"].concat(),
            ));
            list.extend(attr(i as u16 + 1, &g));
        }
        payload.extend(attr(CTRL_ATTR_MCAST_GROUPS | 0x8000, &list));
        message(GENL_ID_CTRL, &payload)
    }

    #[test]
    fn the_request_names_the_family() {
        let r = family_request(7);
        assert_eq!(r.len() % 4, 0);
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32));
        let (kind, payload) = messages(&r).next().unwrap();
        assert_eq!(kind, GENL_ID_CTRL);
        assert_eq!(payload[0], CTRL_CMD_GETFAMILY);
        let (a, v) = attributes(&payload[GENL_HDR..]).next().unwrap();
        assert_eq!((a, c_str(v).as_str()), (CTRL_ATTR_FAMILY_NAME, FAMILY));
    }

    #[test]
    fn the_reply_gives_the_family_and_its_group() {
        let r = reply(27, &[("other", 3), (GROUP, 9)]);
        assert_eq!(family_reply(&r), Ok((27, 9)));
        assert_eq!(family_reply(&reply(27, &[("other", 3)])), Err(0));
        let mut err = (-2i32).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        assert_eq!(family_reply(&message(NLMSG_ERROR, &err)), Err(-2));
        for cut in 0..r.len() {
            assert!(family_reply(&r[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn power_button_events_are_found_among_others() {
        let power = Event {
            device_class: POWER_BUTTON.into(),
            bus_id: "LNXPWRBN:00".into(),
            kind: 0x80,
            data: 1,
        };
        let lid = Event {
            device_class: "button/lid".into(),
            ..power.clone()
        };
        let mut buf = event_message(27, &lid);
        buf.extend(event_message(27, &power));
        buf.extend(event_message(28, &power)); // another family
        let got = events(&buf, 27);
        assert_eq!(got, vec![lid, power]);
        assert_eq!(
            got.iter().map(Event::is_power_button).collect::<Vec<_>>(),
            [false, true]
        );
        assert!(events(&buf[..buf.len() / 2 - 1], 27).len() < 2);
    }
}
