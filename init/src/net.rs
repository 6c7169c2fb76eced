//! The network step: `lo` up, always; then, when the command line has the kernel's own
//! `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>` (what
//! Volant passes) and the kernel did not configure that device itself (a kernel without
//! `CONFIG_IP_PNP`, such as Debian's, leaves it down), it sets the address and netmask, brings
//! the device up and adds the default route, and writes `/etc/resolv.conf` from the dns fields
//! (or from the kernel's `/proc/net/pnp`). Only static configuration: `ip=dhcp` and the like are
//! left to a kernel that does them.
//!
//! It waits for the named device at most `fledge.net_wait_ms` (default 5000 ms), polling every
//! 10 ms; an unnamed device is the first non-loopback one present. Failures are warnings: the
//! workload still starts.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use crate::options::Options;
use crate::sys::{self, NetSocket};

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
fn first_device(proc_net_dev: &str) -> Option<String> {
    proc_net_dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim())
        .find(|n| *n != "lo" && !n.contains(' ') && !n.contains('|'))
        .map(ToString::to_string)
}

/// Runs the step; returns the hostname `ip=` names, if any.
pub fn setup(opts: &Options) -> Option<String> {
    let sock = match NetSocket::open() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("no network set up: cannot open a socket: {e}");
            return None;
        }
    };
    if let Err(e) = sock.up("lo") {
        log::warn!("failed to bring lo up: {e}");
    }
    let cfg = match parse_ip(opts.ip.as_deref()?) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => return None,
        Err(why) => {
            log::info!("{why}");
            return None;
        }
    };
    if let Some(dev) = device(&cfg, opts.net_wait) {
        configure(&sock, &dev, &cfg);
    }
    write_resolv_conf(&cfg.dns);
    cfg.hostname
}

/// The device to configure, once it exists.
fn device(cfg: &IpConfig, wait: Duration) -> Option<String> {
    let Some(name) = &cfg.device else {
        let text = sys::read_to_string(c"/proc/net/dev", 64 * 1024).unwrap_or_default();
        let dev = first_device(&text);
        if dev.is_none() {
            log::warn!("ip=: no network device to configure");
        }
        return dev;
    };
    let deadline = sys::now() + wait;
    while !sys::interface_exists(name) {
        if sys::now() >= deadline {
            log::warn!(
                "ip=: device {name} did not appear within {} ms",
                wait.as_millis() as u64
            );
            return None;
        }
        sys::sleep(Duration::from_millis(10));
    }
    Some(name.clone())
}

fn configure(sock: &NetSocket, dev: &str, cfg: &IpConfig) {
    if sock.flags(dev).is_ok_and(|f| f & libc::IFF_UP != 0) {
        log::info!("{dev} is already up; leaving its configuration as it is");
        return;
    }
    let result = sock
        .set_address(dev, cfg.client, cfg.netmask)
        .map_err(|e| ("set the address of", e))
        .and_then(|()| sock.up(dev).map_err(|e| ("bring up", e)))
        .and_then(|()| match cfg.gateway {
            Some(gw) => sock
                .default_route(gw)
                .map_err(|e| ("add the default route for", e)),
            None => Ok(()),
        });
    match result {
        Ok(()) => log::info!("{dev} configured from ip="),
        Err((what, e)) => log::warn!("ip=: failed to {what} {dev}: {e}"),
    }
}

/// From the dns fields, else from the kernel's `/proc/net/pnp` (its own `ip=` result, already
/// in resolv.conf syntax); nothing when neither has a server.
fn write_resolv_conf(dns: &[[u8; 4]]) {
    let text = if dns.is_empty() {
        match sys::read_to_string(c"/proc/net/pnp", 4096) {
            Ok(t) if t.contains("nameserver") => t,
            _ => return,
        }
    } else {
        resolv_conf(dns)
    };
    if let Err(e) = sys::write_file(c"/etc/resolv.conf", text.as_bytes()) {
        log::warn!("failed to write /etc/resolv.conf: {e}");
    }
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
        assert_eq!(classful([172, 16, 0, 1]), [255, 255, 0, 0]);
        assert_eq!(classful([192, 168, 0, 1]), [255, 255, 255, 0]);
    }
}
