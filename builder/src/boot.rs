//! The boot initramfs of a root file system disk (`strategy = "oci_rootfs"`): fledge-init as
//! `/init`, the kernel modules the disk needs (the drivers of [`DRIVERS`] and whatever else
//! `[kernel]` asks for, with the load list) and the marker ([`rootfs::BOOT_MARKER`]) that makes
//! fledge-init mount the disk, put the overlay on it and switch to it. A kernel with those
//! drivers built in (Volant's) boots the disk without it; Debian's needs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fledge_abi::{paths, rootfs};

use crate::archive::{Content, Entry, Kind};
use crate::kmod::Modules;

/// The drivers a disk boot needs: the file system, the overlay, the virtio disk and its two
/// transports (PCI on q35 and `virt`, MMIO on microvm). Built-in ones are skipped.
pub const DRIVERS: [&str; 5] = [
    "squashfs",
    "overlay",
    "virtio_blk",
    "virtio_pci",
    "virtio_mmio",
];

/// `<dir of the disk>/<name>.boot.cpio.gz`.
pub fn boot_path(artifact: &Path, name: &str) -> PathBuf {
    let dir = artifact.parent().unwrap_or(Path::new(""));
    dir.join(format!("{name}.boot.cpio.gz"))
}

/// The entries of the boot initramfs, in the order the newc writer wants (parents first).
pub fn entries(
    init: &[u8],
    modules: Option<&Modules>,
    overlay_size: &str,
    mtime: u32,
) -> Vec<Entry> {
    let bytes = |b: &[u8]| Kind::File(Content::Bytes(Arc::from(b)));
    let mut files: BTreeMap<String, (Kind, u32)> = BTreeMap::new();
    for d in ["dev", "proc", "sys", "run", "tmp", "etc/fledge"] {
        files.insert(d.into(), (Kind::Dir, 0o755));
    }
    files.insert(
        "dev/console".into(),
        (Kind::CharDev { major: 5, minor: 1 }, 0o600),
    );
    files.insert(rel(paths::INIT), (bytes(init), 0o755));
    let marker = format!(
        "# a fledge boot initramfs: fledge-init mounts the disk under a tmpfs overlay and\n\
         # switches to it; the kernel command line (root=, rootfstype=, overlay_size=) wins\n\
         overlay_size={overlay_size}\n"
    );
    files.insert(rel(rootfs::BOOT_MARKER), (bytes(marker.as_bytes()), 0o644));
    if let Some(m) = modules {
        for f in m.files.iter().chain(&m.firmware) {
            files.insert(
                rel(&f.path),
                (Kind::File(Content::Bytes(f.bytes.clone())), 0o644),
            );
        }
        files.insert(
            rel(paths::MODULES_LOAD),
            (bytes(m.load_list.as_bytes()), 0o644),
        );
    }
    // Every parent directory.
    let parents: Vec<String> = files
        .keys()
        .flat_map(|p| {
            p.match_indices('/')
                .map(|(i, _)| p[..i].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for p in parents {
        files.entry(p).or_insert((Kind::Dir, 0o755));
    }
    files
        .into_iter()
        .enumerate()
        .map(|(i, (path, (kind, perm)))| {
            let nlink = if matches!(kind, Kind::Dir) { 2 } else { 1 };
            Entry::new(&path, kind, perm, i as u32 + 1, nlink, mtime)
        })
        .collect()
}

fn rel(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_initramfs_holds_the_init_the_marker_and_every_parent() {
        let e = entries(b"\x7fELF init", None, "1G", 7);
        let paths: Vec<&str> = e.iter().map(|e| &*e.path).collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "etc",
                "etc/fledge",
                "etc/fledge/boot-rootfs",
                "init",
                "proc",
                "run",
                "sys",
                "tmp"
            ]
        );
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "parents come first in byte order");
        assert!(e.iter().all(|e| e.mtime == 7 && e.uid == 0));
        let init = e.iter().find(|e| e.path == "init").unwrap();
        assert_eq!(init.perm, 0o755);
    }
}
