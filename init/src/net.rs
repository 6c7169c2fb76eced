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

use alloc::string::String;
use core::time::Duration;

use fledge_init::ip::{first_device, parse_ip, resolv_conf, IpConfig};

use crate::options::Options;
use crate::sys::{self, NetSocket};

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
