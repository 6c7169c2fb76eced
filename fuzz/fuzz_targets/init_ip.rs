//! The kernel's `ip=` value as fledge-init reads it: a static configuration prints back to an
//! `ip=` value that reads to the same configuration, its resolv.conf has one line per server,
//! and the device chosen from `/proc/net/dev` text is never `lo`.
#![no_main]

use fledge_init::ip::{first_device, parse_ip, resolv_conf, IpConfig};
use libfuzzer_sys::fuzz_target;

fn addr([a, b, c, d]: [u8; 4]) -> String {
    format!("{a}.{b}.{c}.{d}")
}

/// `IpConfig` as the kernel's nine-field syntax.
fn print(cfg: &IpConfig) -> String {
    let dns: Vec<String> = cfg.dns.iter().map(|&d| addr(d)).collect();
    format!(
        "{}::{}:{}:{}:{}:off:{}",
        addr(cfg.client),
        cfg.gateway.map(addr).unwrap_or_default(),
        addr(cfg.netmask),
        cfg.hostname.as_deref().unwrap_or(""),
        cfg.device.as_deref().unwrap_or(""),
        dns.join(":"),
    )
}

fuzz_target!(|value: &str| {
    if let Ok(Some(cfg)) = parse_ip(value) {
        assert!(cfg.dns.len() <= 2);
        for field in [&cfg.hostname, &cfg.device].into_iter().flatten() {
            assert!(!field.is_empty() && !field.contains(':'), "{field:?}");
        }
        let printed = print(&cfg);
        assert_eq!(
            parse_ip(&printed),
            Ok(Some(cfg.clone())),
            "{value:?} -> {printed:?}"
        );
        assert_eq!(resolv_conf(&cfg.dns).lines().count(), cfg.dns.len());
    }
    if let Some(dev) = first_device(value) {
        assert!(
            dev != "lo" && !dev.is_empty() && !dev.contains(' '),
            "{dev:?}"
        );
        assert!(value.contains(dev.as_str()));
    }
});
