//! `[kernel] modules` end to end: a module tree made here (real ELF modules, depmod's index
//! files), `build --dry-run` explaining each module, the image holding them plain with the load
//! list, `inspect` printing that list, and a clear error for an unknown module.

use object::write::Object;
use object::{Architecture, BinaryFormat, Endianness, SectionKind};

use crate::common::{Project, DEFAULT_MODE};

const RELEASE: &str = "6.1.0-77-test";

/// A relocatable ELF with a `.modinfo` naming `name`, the release and its `depends`.
fn module(name: &str, depends: &str) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let info = format!("name={name}\0vermagic={RELEASE} SMP mod_unload \0depends={depends}\0");
    let sec = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
    obj.append_section_data(sec, info.as_bytes(), 1);
    obj.write().unwrap()
}

/// `guest/lib/modules/RELEASE` with `net` (needs `core`, compressed with zstd) and `core`.
fn tree(p: &Project) {
    let dir = format!("guest/lib/modules/{RELEASE}");
    p.file(&format!("{dir}/kernel/core.ko"), &module("core", ""), 0o644);
    let net = zstd::encode_all(&module("net", "core")[..], 3).unwrap();
    p.file(&format!("{dir}/kernel/drivers/net.ko.zst"), &net, 0o644);
    let dep = "kernel/drivers/net.ko.zst: kernel/core.ko\nkernel/core.ko:\n";
    p.file(&format!("{dir}/modules.dep"), dep.as_bytes(), 0o644);
    p.file(
        &format!("{dir}/modules.alias"),
        b"alias pci:v1234* net\n",
        0o644,
    );
    p.file(
        &format!("{dir}/modules.builtin"),
        b"kernel/fs/ext4/ext4.ko\n",
        0o644,
    );
}

fn config(p: &Project, modules: &str) {
    p.config(&format!(
        "{DEFAULT_MODE}[kernel]\nmodules = {modules}\nmodules_dir = \"guest/lib/modules/{RELEASE}\"\n"
    ));
}

#[test]
fn modules_are_explained_placed_listed_and_inspected() {
    let p = Project::new();
    tree(&p);
    config(&p, "[\"pci:v1234d0001\", \"ext4\", \"core debug=1\"]");

    let dry = p.ok(&["build", "--dry-run", "-o", "img.cpio"]);
    for want in [
        "core                     requested as core [debug=1]",
        "net                      requested as pci:v1234d0001",
        "ext4                     built in (requested as ext4), nothing to load",
        &format!("/lib/modules/{RELEASE}/kernel/drivers/net.ko  <- "),
    ] {
        assert!(dry.contains(want), "dry run lacks {want:?}:\n{dry}");
    }

    p.build("img.cpio", &[]);
    let shown = p.ok(&["inspect", "img.cpio"]);
    let list = format!(
        "kernel modules (/etc/fledge/modules.load, load order):\n  \
         /lib/modules/{RELEASE}/kernel/core.ko debug=1 (required)\n  \
         /lib/modules/{RELEASE}/kernel/drivers/net.ko (required)\n"
    );
    assert!(shown.contains(&list), "inspect lacks the list:\n{shown}");
    let check = p.fledge(&["inspect", "--check", "img.cpio"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn an_unknown_module_names_the_tree_and_the_closest_names() {
    let p = Project::new();
    tree(&p);
    config(&p, "[\"nett\"]");
    let o = p.fledge(&["build", "-o", "img.cpio"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no module or alias nett in ./guest/lib/modules/6.1.0-77-test (")
            && err.contains("closest: net, ext4, core"),
        "{err}"
    );
    assert!(!p.path("img.cpio").exists());
}

#[test]
fn on_a_merged_usr_image_modules_land_through_the_lib_symlink() {
    if !crate::images::have(&["umoci"]) {
        return;
    }
    let p = Project::new();
    tree(&p);
    crate::images::run(
        p.dir.path(),
        "umoci init --layout img && umoci new --image img:v1 \
         && umoci unpack --image img:v1 b >/dev/null && cd b/rootfs && mkdir -p usr/lib usr/bin \
         && ln -s usr/lib lib && ln -s usr/bin bin && cd ../.. && umoci repack --image img:v1 b",
    );
    p.config(&format!(
        "image = \"oci:img:v1\"\n{DEFAULT_MODE}[kernel]\nmodules = [\"net\"]\n\
         modules_dir = \"guest/lib/modules/{RELEASE}\"\n"
    ));
    p.build("img.cpio", &[]);
    let shown = p.ok(&["inspect", "img.cpio"]);
    for want in [
        format!(" /usr/lib/modules/{RELEASE}/kernel/drivers/net.ko\n"),
        format!("  /lib/modules/{RELEASE}/kernel/drivers/net.ko (required)\n"),
    ] {
        assert!(shown.contains(&want), "inspect lacks {want:?}:\n{shown}");
    }
    // The boot check resolves the list's /lib/modules paths through the symlink.
    let check = p.fledge(&["inspect", "--check", "img.cpio"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn an_output_onto_a_module_tree_file_is_refused_and_the_file_kept() {
    let p = Project::new();
    tree(&p);
    config(&p, "[\"net\"]");
    let dir = format!("guest/lib/modules/{RELEASE}");
    for (out, why) in [
        (
            format!("{dir}/modules.dep"),
            "modules.dep (kernel.modules_dir)",
        ),
        (
            format!("{dir}/kernel/drivers/net.ko.zst"),
            "net.ko ([kernel])",
        ),
        (format!("{dir}/kernel/core.ko"), "core.ko ([kernel])"),
    ] {
        let before = std::fs::read(p.path(&out)).unwrap();
        let o = p.fledge(&["build", "-o", &out]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "-o {out}: {err}");
        assert!(
            err.contains("-o/--output") && err.contains(why),
            "-o {out}: {err}"
        );
        assert_eq!(
            std::fs::read(p.path(&out)).unwrap(),
            before,
            "-o {out} unchanged"
        );
    }
}
