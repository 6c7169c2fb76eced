//! Root file system disks on Debian's kernel: a `strategy = "oci_rootfs"` build gives a squashfs
//! disk and a boot initramfs (fledge-init and the disk's drivers, which Debian builds as
//! modules). Booted with the disk as `/dev/vda` and Volant's `root=` keys, fledge-init mounts
//! it read-only under a tmpfs overlay, switches to it and runs the disk's custom init; with a
//! corrupt disk or none attached it prints its fatal line and powers off instead of hanging.

use fledge_qemu::host::Host;
use fledge_qemu::project::Project;
use fledge_qemu::tools::Tools;
use fledge_qemu::vm::{Boot, Check};

/// The disk's custom init: show what `/` is, prove it writable, report and power off.
const DISK_INIT: &str = r#"#!/bin/sh
echo "ROOTFS-MOUNT $(grep ' / ' /proc/mounts | cut -d' ' -f1,3)"
echo written > /proof && echo "ROOTFS-WRITE $(cat /proof)"
test -e /etc/fledge/boot-rootfs && echo "ROOTFS-MARKER present" || echo "ROOTFS-MARKER absent"
/bin/busybox poweroff -f
"#;

#[test]
fn a_squashfs_disk_boots_under_an_overlay_and_a_missing_one_fails_clearly() {
    let test = "a_squashfs_disk_boots_under_an_overlay_and_a_missing_one_fails_clearly";
    let Some(host) = Host::for_test(test) else {
        return;
    };
    let Some(tree) = host.module_tree(test) else {
        return;
    };
    let tools = Tools::get().unwrap_or_else(|e| panic!("{test}: {e}"));
    let p = Project::rootfs(
        &host,
        &format!(
            "[filesystem]\ntype = \"squashfs\"\noverlay_size = \"64M\"\n\n[init]\npath = \"./disk-init\"\n\n[kernel]\nmodules_dir = {:?}\n",
            tree.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(p.path().join("disk-init"), DISK_INIT).unwrap();
    let (disk, boot) = p.build_disk(tools, "zstd").unwrap();

    let log = Boot::new("rootfs/squashfs", &boot)
        .disk(&disk)
        .param("root=/dev/vda rootfstype=squashfs overlay_size=64M")
        .run(&host)
        .unwrap();
    log.assert(&[
        Check::contains("ROOTFS-MOUNT overlay overlay"),
        Check::contains("ROOTFS-WRITE written"),
        Check::absent("fledge-init: failed"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
    let marker = log.line("ROOTFS-MARKER").unwrap_or_default();
    assert!(
        marker.contains("absent"),
        "the disk is the root, not the boot initramfs: `{marker}`\n{}",
        log.serial
    );

    // A disk whose superblock is gone: the mount fails, named, and the guest powers off.
    let corrupt = p.path().join("corrupt.squashfs");
    let mut bytes = std::fs::read(&disk).unwrap();
    bytes[..4096].fill(0);
    std::fs::write(&corrupt, bytes).unwrap();
    Boot::new("rootfs/corrupt", &boot)
        .disk(&corrupt)
        .param("root=/dev/vda rootfstype=squashfs")
        .run(&host)
        .unwrap()
        .assert(&[
            Check::contains("fledge-init: failed to mount the root file system disk /dev/vda (squashfs) read-only"),
            Check::absent("ROOTFS-MOUNT"),
            Check::PowerOff,
        ]);

    let missing = Boot::new("rootfs/missing", &boot)
        .param("root=/dev/vda fledge.root_wait_ms=1500")
        .run(&host)
        .unwrap();
    missing.assert(&[
        Check::contains("the root file system disk /dev/vda did not appear within 1500 ms"),
        Check::PowerOff,
    ]);
}
