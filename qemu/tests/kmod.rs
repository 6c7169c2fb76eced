//! Kernel modules on Debian's kernel: an image built with `[kernel] modules` from the module
//! tree `qemu/fetch-kernel.sh` keeps brings up the NIC of `-device virtio-net-pci`; the same
//! image without them has no NIC.
//!
//! Debian builds `virtio_pci` (the PCI transport) and `virtio_net` as modules, so neither boot
//! has a NIC from the kernel alone. fledge-init loads the list fledge wrote (`finit_module`, in
//! order) before it starts the custom init, which prints what `/sys/class/net` holds.

use fledge_qemu::host::Host;
use fledge_qemu::project::Project;
use fledge_qemu::tools::Tools;
use fledge_qemu::vm::{Boot, BootLog, Check};

/// The custom init: report the interfaces and power off.
const NET_INIT: &str = r#"#!/bin/sh
echo "KMOD-NET $(ls /sys/class/net | tr '\n' ' ')"
/bin/busybox poweroff -f
"#;

/// Builds an image whose custom init is [`NET_INIT`], with `kernel` as its `[kernel]` table,
/// and boots it with a virtio NIC.
fn boot(host: &Host, tools: &Tools, name: &str, kernel: &str) -> BootLog {
    let p = Project::new(host, &format!("[init]\npath = \"./net-init\"\n\n{kernel}")).unwrap();
    std::fs::write(p.path().join("net-init"), NET_INIT).unwrap();
    let image = p.build(tools, "gzip", &[]).unwrap();
    Boot::new(name, &image)
        .qemu_args(&["-nic", "none", "-device", "virtio-net-pci"])
        .run(host)
        .unwrap()
}

#[test]
fn virtio_net_module_brings_up_eth0_and_without_it_there_is_none() {
    let test = "virtio_net_module_brings_up_eth0_and_without_it_there_is_none";
    let Some(host) = Host::for_test(test) else {
        return;
    };
    let Some(tree) = host.module_tree(test) else {
        return;
    };
    let tools = Tools::get().unwrap_or_else(|e| panic!("{test}: {e}"));
    let kernel = format!(
        "[kernel]\nmodules = [\"virtio_net\", \"virtio_pci\"]\nmodules_dir = {:?}\n",
        tree.display().to_string()
    );
    let with = boot(&host, tools, "kmod/virtio_net", &kernel);
    with.assert(&[
        Check::absent("failed to load module"),
        Check::absent("fledge-init: failed"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
    let net = with.line("KMOD-NET").unwrap_or_default().to_string();
    assert!(
        net.contains("eth0"),
        "no eth0 with the modules: `{net}`\n{}",
        with.serial
    );

    let without = boot(&host, tools, "kmod/none", "");
    without.assert(&[Check::NoPanic, Check::PowerOff, Check::contains("KMOD-NET")]);
    let net = without.line("KMOD-NET").unwrap_or_default().to_string();
    assert!(
        !net.contains("eth0"),
        "eth0 without the modules: `{net}`\n{}",
        without.serial
    );
    assert!(net.contains("lo"), "lo is always there: `{net}`");
    eprintln!(
        "kmod boots: {:.1}s with the modules, {:.1}s without, under TCG",
        with.elapsed.as_secs_f64(),
        without.elapsed.as_secs_f64()
    );
}
