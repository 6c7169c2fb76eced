//! The kernel's `ip=` value
//! (`<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>`), the
//! `/etc/resolv.conf` made from it and the device choice from `/proc/net/dev`: the text side of
//! the init's network step.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// What the `ip=` value asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpConfig {
    pub client: [u8; 4],
    pub gateway: Option<[u8; 4]>,
    pub netmask: [u8; 4],
    pub hostname: Option<String>,
    pub device: Option<String>,
    pub dns: Vec<[u8; 4]>,
}

/// Parses an `ip=` value: `Ok(None)` when there is nothing static to do (`off`, `none`, no
/// client address), `Err` with the reason for what this init does not do.
pub fn parse_ip(value: &str) -> Result<Option<IpConfig>, String> {
    if matches!(value, "off" | "none" | "") {
        return Ok(None);
    }
    let f: Vec<&str> = value.split(':').collect();
    let field = |i: usize| f.get(i).copied().unwrap_or("");
    let protocol = f.len() == 1 && parse_addr(value).is_none(); // `ip=dhcp`
    if protocol || !matches!(field(6), "" | "off" | "none") {
        return Err(format!(
            "ip={value}: only static configuration is done by fledge-init"
        ));
    }
    if field(0).is_empty() {
        return Ok(None);
    }
    let addr = |name: &str, v: &str| parse_addr(v).ok_or(format!("ip=: bad {name} \"{v}\""));
    let optional = |name: &str, v: &str| match v {
        "" => Ok(None),
        v => addr(name, v).map(Some),
    };
    let client = addr("client address", field(0))?;
    let netmask = optional("netmask", field(3))?.unwrap_or(classful(client));
    let text = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let mut dns = Vec::new();
    for i in [7, 8] {
        dns.extend(optional("dns server", field(i))?);
    }
    Ok(Some(IpConfig {
        client,
        gateway: optional("gateway", field(2))?,
        netmask,
        hostname: text(field(4)),
        device: text(field(5)),
        dns,
    }))
}

fn parse_addr(v: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = v.split('.');
    for o in &mut out {
        *o = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The kernel's default netmask for an empty field: by the address class.
fn classful(a: [u8; 4]) -> [u8; 4] {
    match a[0] {
        0..=127 => [255, 0, 0, 0],
        128..=191 => [255, 255, 0, 0],
        _ => [255, 255, 255, 0],
    }
}

/// `/etc/resolv.conf` for the dns servers.
pub fn resolv_conf(dns: &[[u8; 4]]) -> String {
    dns.iter()
        .map(|[a, b, c, d]| format!("nameserver {a}.{b}.{c}.{d}\n"))
        .collect()
}

/// The first interface in `/proc/net/dev` text that is not `lo`.
pub fn first_device(proc_net_dev: &str) -> Option<String> {
    proc_net_dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim())
        .find(|n| !n.is_empty() && *n != "lo" && !n.contains(' ') && !n.contains('|'))
        .map(ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_volant_passes_and_the_kernels_forms() {
        let volant = parse_ip("192.168.127.10::192.168.127.1:255.255.255.0:vm1:eth0:off")
            .unwrap()
            .unwrap();
        assert_eq!(
            volant,
            IpConfig {
                client: [192, 168, 127, 10],
                gateway: Some([192, 168, 127, 1]),
                netmask: [255, 255, 255, 0],
                hostname: Some("vm1".into()),
                device: Some("eth0".into()),
                dns: vec![],
            }
        );
        let full = parse_ip("10.0.2.15:10.0.2.2:10.0.2.2::::none:10.0.2.3:1.1.1.1")
            .unwrap()
            .unwrap();
        assert_eq!(full.netmask, [255, 0, 0, 0], "classful default");
        assert_eq!(full.device, None);
        assert_eq!(full.dns, vec![[10, 0, 2, 3], [1, 1, 1, 1]]);
        let bare = parse_ip("172.16.0.2").unwrap().unwrap();
        assert_eq!(
            (bare.client, bare.netmask),
            ([172, 16, 0, 2], [255, 255, 0, 0])
        );
        assert_eq!(
            parse_ip("dhcp").unwrap_err(),
            "ip=dhcp: only static configuration is done by fledge-init"
        );
        for nothing in ["off", "none", "", "::10.0.2.2:::eth0:off"] {
            assert_eq!(parse_ip(nothing), Ok(None), "{nothing:?}");
        }
        for bad in ["dhcp", "10.0.2.15:::::eth0:dhcp", "on"] {
            assert!(parse_ip(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_ip("10.0.2.300::::::off").unwrap_err(),
            "ip=: bad client address \"10.0.2.300\""
        );
        assert!(parse_ip("10.0.2.15::10.0.2:::eth0:off").is_err());
    }

    #[test]
    fn resolv_conf_and_device_choice() {
        assert_eq!(
            resolv_conf(&[[10, 0, 2, 3], [8, 8, 8, 8]]),
            "nameserver 10.0.2.3\nnameserver 8.8.8.8\n"
        );
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 1 2\n  eth0: 3 4\n";
        assert_eq!(first_device(dev).as_deref(), Some("eth0"));
        assert_eq!(first_device("    lo: 1 2\n"), None);
        // A line with nothing before its colon names no device (a fuzzed input).
        assert_eq!(first_device("1ne\n :10.0.2.3:1.1.1.1"), None);
        assert_eq!(classful([172, 16, 0, 1]), [255, 255, 0, 0]);
        assert_eq!(classful([192, 168, 0, 1]), [255, 255, 255, 0]);
    }
}
