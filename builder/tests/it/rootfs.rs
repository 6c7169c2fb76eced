//! Root file system disks (`strategy = "oci_rootfs"`) read by squashfs-tools: `unsquashfs -lln`
//! lists exactly the paths of the initramfs of the same config, and `unsquashfs` extracts the
//! same tree `cpio` extracts from it - types, modes (setuid), owners (an image's 1000:1000),
//! sizes, link targets, device numbers, hardlinks and every byte - for every compressor; two
//! builds are byte-identical whatever the thread count.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::{Project, DEFAULT_MODE};
use crate::images::{have, run};

/// A project: the umoci image of the images tests, and mappings that make fragments, holes,
/// runs of more than 256 names in one directory and a hardlink (two equal files).
fn project(strategy: &str) -> Project {
    let p = Project::new();
    crate::images::umoci_image(p.dir.path());
    let mut maps = String::new();
    for i in 0..700 {
        p.file(
            &format!("many/f{i:03}"),
            format!("file {i}\n").as_bytes(),
            0o644,
        );
    }
    maps += "\"many\" = \"/srv/many\"\n";
    let big: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    p.file("big", &big, 0o755);
    p.file("zeros", &vec![0u8; 300_000], 0o644);
    p.file("twin-a", b"the same bytes\n", 0o644);
    p.file("twin-b", b"the same bytes\n", 0o644);
    for (from, to) in [
        ("big", "/opt/big"),
        ("zeros", "/opt/zeros"),
        ("twin-a", "/opt/twin-a"),
        ("twin-b", "/opt/twin-b"),
    ] {
        maps += &format!("\"{from}\" = \"{to}\"\n");
    }
    p.config(&format!(
        "image = \"oci:img:v1\"\n{DEFAULT_MODE}[mappings]\n{maps}"
    ));
    let cfg = std::fs::read_to_string(p.path("fledge.toml")).unwrap();
    let cfg = cfg.replace(
        "strategy = \"initramfs\"",
        &format!("strategy = \"{strategy}\""),
    );
    std::fs::write(p.path("fledge.toml"), cfg).unwrap();
    p
}

/// What a tree holds, path by path: kind and mode, owner, size, link target, device, the
/// sha256 of a file's bytes, and for files the set of names sharing its inode.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mut what = format!("{:o} {}:{}", m.mode(), m.uid(), m.gid());
            if m.file_type().is_symlink() {
                what += &format!(" -> {}", std::fs::read_link(&p).unwrap().display());
            } else if m.is_file() {
                what += &format!(
                    " {} {}",
                    m.len(),
                    crate::common::hex(&std::fs::read(&p).unwrap())
                );
                inodes.entry(m.ino()).or_default().push(rel.clone());
            } else if m.is_dir() {
                stack.push(p.clone());
            } else {
                what += &format!(" dev {:x}", m.rdev());
            }
            out.insert(rel, what);
        }
    }
    for names in inodes.values().filter(|n| n.len() > 1) {
        for n in names {
            *out.get_mut(n).unwrap() += &format!(" links {}", names.len());
        }
    }
    out
}

#[test]
fn a_squashfs_disk_holds_what_the_initramfs_holds_read_by_squashfs_tools() {
    if !have(&["unsquashfs", "umoci", "cpio"]) {
        return;
    }
    // Extracting owners and device nodes needs root (CI runs as root).
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let initramfs = project("initramfs");
    initramfs.ok(&["build", "-q", "--compression", "none", "-o", "image.cpio"]);
    let listed = |p: &Project, args: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", args])
            .current_dir(p.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let want: Vec<String> = listed(&initramfs, "cpio -it --quiet < image.cpio")
        .lines()
        .filter(|l| *l != ".")
        .map(str::to_string)
        .collect();
    assert!(want.len() > 750, "{}", want.len());
    if root {
        run(
            initramfs.dir.path(),
            "mkdir x && cd x && cpio -idm --quiet < ../image.cpio",
        );
    }

    // `fledge inspect` lists mode, owner and path alike (sizes differ where newc leaves the
    // first names of a hardlink group without a body).
    let inspected = |p: &Project, image: &str| {
        let mut v: Vec<String> = p
            .ok(&["inspect", image])
            .lines()
            .filter(|l| l.starts_with(['-', 'd', 'l', 'c', 'b', 'p']))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} {}", f[0], f[1], f[3..].join(" "))
            })
            .collect();
        v.sort();
        v
    };
    let want_inspected = inspected(&initramfs, "image.cpio");
    let disk = project("oci_rootfs");
    for c in ["gzip", "xz", "lz4", "zstd"] {
        let out = format!("{c}.squashfs");
        disk.ok(&["build", "-q", "--compression", c, "-o", &out]);
        // unsquashfs -lln: "MODE UID/GID SIZE DATE TIME squashfs-root/PATH[ -> TARGET]".
        let mut got: Vec<String> = listed(&disk, &format!("unsquashfs -lln {out}"))
            .lines()
            .filter_map(|l| l.split_once(" squashfs-root/").map(|(_, p)| p))
            .map(|p| p.split(" -> ").next().unwrap().to_string())
            .collect();
        got.sort();
        // The disk also has /sbin/init, a link to fledge-init (where an init that switched to
        // the disk looks first).
        let mut sorted = want.clone();
        sorted.push("sbin/init".into());
        sorted.sort();
        assert_eq!(
            got, sorted,
            "{c}: unsquashfs -lln lists the initramfs's paths"
        );
        let mut on_disk = inspected(&disk, &out);
        let link = on_disk
            .iter()
            .position(|l| l.ends_with("/sbin/init -> /init"))
            .unwrap_or_else(|| panic!("{c}: no /sbin/init -> /init in {on_disk:?}"));
        on_disk.remove(link);
        assert_eq!(on_disk, want_inspected, "{c}: fledge inspect");
        assert!(disk
            .ok(&["inspect", "--check", &out])
            .contains("boot check passed"));
        let setuid = listed(&disk, &format!("unsquashfs -lln {out} usr/bin/app"));
        assert!(setuid.contains("-rwsr-xr-x 0/0"), "{c}: {setuid}");
        let owned = listed(&disk, &format!("unsquashfs -lln {out} srv"));
        assert!(owned.contains("1000/1000"), "{c}: {owned}");
        if root {
            run(
                disk.dir.path(),
                &format!("unsquashfs -q -d x-{c} {out} >/dev/null"),
            );
            let mut extracted = tree(&disk.path(&format!("x-{c}")));
            assert!(extracted
                .remove("sbin/init")
                .is_some_and(|l| l.ends_with("-> /init")));
            assert_eq!(
                extracted,
                tree(&initramfs.path("x")),
                "{c}: the disk extracts to the initramfs's tree"
            );
        }
    }
    if root {
        let twin = tree(&disk.path("x-zstd"));
        assert!(
            twin["opt/twin-a"].ends_with("links 2"),
            "{}",
            twin["opt/twin-a"]
        );
    }

    // `fledge verify` reads the disk's files against its SBOM; one changed byte fails it.
    assert!(disk.ok(&["verify", "zstd.squashfs"]).contains("verified"));
    let mut bytes = std::fs::read(disk.path("zstd.squashfs")).unwrap();
    bytes[300] ^= 0x20;
    std::fs::write(disk.path("tampered.squashfs"), &bytes).unwrap();
    for f in ["manifest.json", "spdx.json", "provenance.json"] {
        std::fs::copy(
            disk.path(&format!("zstd.{f}")),
            disk.path(&format!("tampered.{f}")),
        )
        .unwrap();
    }
    let o = disk.fledge(&["verify", "tampered.squashfs", "-m", "zstd.manifest.json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Pushed as an artifact: the disk, its manifest, SBOM, provenance and boot initramfs.
    let pushed = disk.ok(&[
        "push",
        "zstd.squashfs",
        "oci:pushed:v1",
        "-m",
        "zstd.manifest.json",
    ]);
    assert!(pushed.trim().starts_with("sha256:"), "{pushed}");
    disk.ok(&["pull", "oci:pushed:v1", "pulled"]);
    for f in [
        "squashfs",
        "manifest.json",
        "spdx.json",
        "provenance.json",
        "boot.cpio.gz",
    ] {
        assert!(
            std::fs::read(disk.path(&format!("pulled/zstd.{f}"))).unwrap()
                == std::fs::read(disk.path(&format!("zstd.{f}"))).unwrap(),
            "zstd.{f} pulled back"
        );
    }

    // Reproducible: the same bytes again, with one thread or two.
    disk.ok(&[
        "build",
        "-q",
        "--compression",
        "zstd",
        "-j",
        "1",
        "-o",
        "again.squashfs",
    ]);
    assert!(
        std::fs::read(disk.path("again.squashfs")).unwrap()
            == std::fs::read(disk.path("zstd.squashfs")).unwrap(),
        "two builds are byte-identical"
    );
}

#[test]
fn an_initramfs_larger_than_half_the_memory_warns_and_names_the_disk() {
    let p = Project::new();
    p.config(&format!(
        "{DEFAULT_MODE}[mappings]\n\"data\" = \"/srv/data\"\n"
    ));
    p.file(
        "manifest.toml",
        b"name = \"big\"\nversion = \"1\"\n[resources]\ncpu_cores = 1\nmemory_mb = 16\n",
        0o644,
    );
    let data: Vec<u8> = (0..9u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    p.file("data", &data, 0o644);
    let o = p.fledge(&["build", "--compression", "lz4", "-o", "big.cpio.lz4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("more than half of resources.memory_mb = 16")
            && err.contains("strategy = \"oci_rootfs\""),
        "{err}"
    );
    // Within the bound: no warning.
    p.file("data", &data[..1 << 20], 0o644);
    let o = p.fledge(&["build", "--compression", "lz4", "-o", "big.cpio.lz4"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("more than half"));
}

#[test]
fn a_disk_keeps_an_images_extended_attributes_which_an_initramfs_drops_naming_them() {
    use crate::hostile::{image_of, layout};
    if !have(&["unsquashfs", "python3"]) {
        return;
    }
    // A layer whose ping carries a file capability and a user attribute (PAX SCHILY.xattr).
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_pax_extensions([
        (
            "SCHILY.xattr.security.capability",
            &b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"[..],
        ),
        ("SCHILY.xattr.user.note", &b"kept"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(5);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "usr/bin/ping", &b"ping\n"[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let p = Project::new();
    layout(&p, &image_of(tar.clone(), &tar, None));
    p.config(&format!("image = \"oci:layout\"\n{DEFAULT_MODE}"));
    let o = p.fledge(&["build", "-o", "image.cpio.gz"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("newc archives cannot store extended attributes")
            && err.contains("/usr/bin/ping (security.capability, user.note)"),
        "{err}"
    );
    let cfg = std::fs::read_to_string(p.path("fledge.toml"))
        .unwrap()
        .replace("strategy = \"initramfs\"", "strategy = \"oci_rootfs\"");
    std::fs::write(p.path("fledge.toml"), cfg).unwrap();
    let o = p.fledge(&["build", "-o", "disk.squashfs"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && !err.contains("extended attributes"),
        "{err}"
    );
    assert!(p
        .ok(&["inspect", "--check", "disk.squashfs"])
        .contains("passed"));
    // Extracting attributes other than user. needs root (CI runs as root).
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        run(p.dir.path(), "unsquashfs -q -d x disk.squashfs >/dev/null");
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import os; p='x/usr/bin/ping'; print(os.getxattr(p,'user.note').decode(), os.getxattr(p,'security.capability').hex())",
            ])
            .current_dir(p.dir.path())
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            got.trim(),
            "kept 0100000200200000000000000000000000000000",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
