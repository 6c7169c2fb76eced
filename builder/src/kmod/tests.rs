//! The resolver against a fixture tree (depmod's files, real ELF modules, every compression)
//! and, when `qemu/fetch-kernel.sh` has run, against Debian's kernel tree.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use object::write::Object;
use object::{Architecture, BinaryFormat, Endianness, SectionKind};

use super::resolve::Reason;
use super::*;

const REL: &str = "6.1.0-9-test";

/// [`super::prepare`] for an x86_64 guest, the machine [`module_elf`] builds for.
fn prepare(s: &Settings) -> Result<Modules, KmodError> {
    super::prepare(s, crate::arch::Arch::X86_64)
}

/// A relocatable ELF whose `.modinfo` holds `records`.
fn module_elf(records: &[&str]) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let data: Vec<u8> = records
        .iter()
        .flat_map(|r| [r.as_bytes(), b"\0"].concat())
        .collect();
    let sec = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
    obj.append_section_data(sec, &data, 1);
    obj.write().unwrap()
}

fn compress(bytes: &[u8], suffix: &str) -> Vec<u8> {
    match suffix {
        "" => bytes.to_vec(),
        ".xz" => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        ".zst" => zstd::encode_all(bytes, 3).unwrap(),
        ".gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        _ => unreachable!(),
    }
}

/// (path in the tree, depends=, vermagic release)
const MODULES: &[(&str, &str, &str)] = &[
    ("kernel/drivers/virtio/virtio.ko", "", REL),
    ("kernel/drivers/virtio/virtio_ring.ko.xz", "virtio", REL),
    ("kernel/net/core/failover.ko.zst", "", REL),
    ("kernel/drivers/net/net_failover.ko.gz", "failover", REL),
    (
        "kernel/drivers/net/virtio_net.ko",
        "net_failover,virtio,virtio_ring",
        REL,
    ),
    ("kernel/crypto/crc32c_generic.ko", "", REL),
    ("kernel/fs/ext9/ext9.ko", "", REL),
    ("kernel/drivers/misc/fw_user.ko", "", REL),
    ("kernel/drivers/misc/old.ko", "", "5.10.0-1-amd64"),
];

const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko.zst:
kernel/drivers/net/net_failover.ko.gz: kernel/net/core/failover.ko.zst
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko.gz kernel/net/core/failover.ko.zst kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko
kernel/crypto/crc32c_generic.ko:
kernel/fs/ext9/ext9.ko:
kernel/drivers/misc/fw_user.ko:
kernel/drivers/misc/old.ko:
";

/// `<tmp>/lib/modules/REL` with the fixture modules, indexes and one firmware file.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib/modules").join(REL);
    for (rel, depends, release) in MODULES {
        let name = tree::name_of(rel).unwrap();
        let vermagic = format!("vermagic={release} SMP preempt mod_unload ");
        let depends = format!("depends={depends}");
        let mut records = vec![format!("name={name}"), vermagic, depends];
        if name == "fw_user" {
            records.push("firmware=acme/fw.bin".into());
            records.push("firmware=acme/absent.bin".into());
        }
        let refs: Vec<&str> = records.iter().map(String::as_str).collect();
        let suffix = [".xz", ".zst", ".gz"]
            .into_iter()
            .find(|s| rel.ends_with(s))
            .unwrap_or("");
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, compress(&module_elf(&refs), suffix)).unwrap();
    }
    fs::write(dir.join("modules.dep"), DEP).unwrap();
    fs::write(
        dir.join("modules.softdep"),
        "# Soft dependencies extracted from modules themselves.\n\
         softdep ext9 pre: crypto-crc32c crc32 post: virtio\n\
         softdep ext9 ignored-before-pre\n",
    )
    .unwrap();
    fs::write(
        dir.join("modules.alias"),
        "# Aliases extracted from modules themselves.\n\
         alias virtio:d00000001v* virtio_net\n\
         alias crypto-crc32c crc32c_generic\n\
         alias fs-ext9 ext9\n",
    )
    .unwrap();
    fs::write(
        dir.join("modules.builtin"),
        "kernel/fs/ext4/ext4.ko\nkernel/lib/crc32.ko\n",
    )
    .unwrap();
    fs::write(
        dir.join("modules.builtin.modinfo"),
        b"ext4.alias=fs-ext4\0ext4.license=GPL\0",
    )
    .unwrap();
    let fw = tmp.path().join("lib/firmware/acme");
    fs::create_dir_all(&fw).unwrap();
    fs::write(
        fw.join("fw.bin.zst"),
        zstd::encode_all(&b"FIRMWARE"[..], 3).unwrap(),
    )
    .unwrap();
    (tmp, dir)
}

fn req(name: &str) -> Request {
    let (name, params) = match name.split_once(' ') {
        Some((n, p)) => (n, Some(p.to_string())),
        None => (name, None),
    };
    Request {
        name: name.into(),
        params,
    }
}

fn fixture_settings(dir: &Path, names: &[&str]) -> Settings {
    Settings {
        modules: names.iter().map(|n| req(n)).collect(),
        version: None,
        dir: dir.to_path_buf(),
    }
}

fn order(m: &Modules) -> Vec<&str> {
    m.resolution
        .modules
        .iter()
        .map(|r| r.name.as_str())
        .collect()
}

#[test]
fn closure_in_load_order_with_reasons() {
    let (_t, dir) = fixture();
    let m = prepare(&fixture_settings(&dir, &["virtio_net"])).unwrap();
    assert_eq!(
        order(&m),
        [
            "virtio",
            "virtio_ring",
            "failover",
            "net_failover",
            "virtio_net"
        ]
    );
    let reasons: Vec<String> = m
        .resolution
        .modules
        .iter()
        .map(|r| r.reason.to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "dependency of virtio_net",
            "dependency of virtio_net",
            "dependency of virtio_net",
            "dependency of virtio_net",
            "requested as virtio_net",
        ]
    );
}

#[test]
fn compressed_modules_are_stored_plain_under_their_release() {
    let (_t, dir) = fixture();
    let m = prepare(&fixture_settings(&dir, &["virtio_net"])).unwrap();
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/lib/modules/6.1.0-9-test/kernel/drivers/virtio/virtio.ko",
            "/lib/modules/6.1.0-9-test/kernel/drivers/virtio/virtio_ring.ko",
            "/lib/modules/6.1.0-9-test/kernel/net/core/failover.ko",
            "/lib/modules/6.1.0-9-test/kernel/drivers/net/net_failover.ko",
            "/lib/modules/6.1.0-9-test/kernel/drivers/net/virtio_net.ko",
        ]
    );
    for f in &m.files {
        assert_eq!(&f.bytes[..4], b"\x7fELF", "{} is not a plain ELF", f.path);
    }
    let want: String = paths.iter().map(|p| format!("!{p}\n")).collect();
    assert_eq!(m.load_list, want);
    let parsed: Vec<&str> = fledge_abi::modules::parse(&m.load_list)
        .map(|l| l.unwrap().path)
        .collect();
    assert_eq!(parsed, paths);
}

#[test]
fn the_release_is_the_version_or_the_name_the_tree_leads_to() {
    let (t, dir) = fixture();
    let link = t.path().join("guest-modules");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let m = prepare(&fixture_settings(&link, &["virtio"])).unwrap();
    assert_eq!(m.release, REL);
    assert!(
        m.files[0].path.starts_with("/lib/modules/6.1.0-9-test/"),
        "{}",
        m.files[0].path
    );
    let s = Settings {
        version: Some("6.1.0-10-test".into()),
        ..fixture_settings(&dir, &["virtio"])
    };
    let e = prepare(&s).unwrap_err().to_string();
    assert!(
        e.contains("built for kernel 6.1.0-9-test, not 6.1.0-10-test"),
        "{e}"
    );
}

#[test]
fn an_explicit_request_wins_over_a_dependency_and_keeps_its_parameters() {
    let (_t, dir) = fixture();
    let m = prepare(&fixture_settings(&dir, &["virtio_net", "virtio debug=1"])).unwrap();
    assert_eq!(m.resolution.modules.len(), 5);
    let virtio = &m.resolution.modules[0];
    assert_eq!(
        virtio.reason,
        Reason::Requested {
            asked: "virtio".into()
        }
    );
    assert_eq!(
        m.load_list.lines().next(),
        Some("!/lib/modules/6.1.0-9-test/kernel/drivers/virtio/virtio.ko debug=1")
    );
}

#[test]
fn aliases_and_dashes_resolve() {
    let (_t, dir) = fixture();
    let m = prepare(&fixture_settings(
        &dir,
        &["virtio:d00000001v00001AF4", "fs-ext9"],
    ))
    .unwrap();
    assert_eq!(order(&m).last(), Some(&"ext9"));
    assert!(order(&m).contains(&"virtio_net"));
    let net = m
        .resolution
        .modules
        .iter()
        .find(|r| r.name == "virtio_net")
        .unwrap();
    assert_eq!(
        net.reason.to_string(),
        "requested as virtio:d00000001v00001AF4"
    );
    let m = prepare(&fixture_settings(&dir, &["virtio-ring"])).unwrap();
    assert_eq!(order(&m), ["virtio", "virtio_ring"]);
}

#[test]
fn softdeps_come_first_and_builtins_load_nothing() {
    let (_t, dir) = fixture();
    let m = prepare(&fixture_settings(&dir, &["ext9", "ext4", "fs-ext4"])).unwrap();
    assert_eq!(order(&m), ["crc32c_generic", "ext9"]);
    assert_eq!(
        m.resolution.modules[0].reason,
        Reason::Softdep { of: "ext9".into() }
    );
    // A soft dependency is loaded but may fail; the requested module may not.
    let required: Vec<bool> = fledge_abi::modules::parse(&m.load_list)
        .map(|l| l.unwrap().required)
        .collect();
    assert_eq!(required, [false, true]);
    let builtin: Vec<(&str, String)> = m
        .resolution
        .builtin
        .iter()
        .map(|b| (b.name.as_str(), b.reason.to_string()))
        .collect();
    assert_eq!(
        builtin,
        [
            ("crc32", "softdep of ext9".to_string()),
            ("ext4", "requested as ext4".to_string()),
        ]
    );
    let text = explain(&m);
    assert!(
        text.contains("crc32c_generic") && text.contains("softdep of ext9"),
        "{text}"
    );
    assert!(text.contains("ext4") && text.contains("built in"), "{text}");
}

#[test]
fn firmware_is_placed_when_present_and_warned_about_when_not() {
    let (_t, dir) = fixture();
    let m = prepare(&fixture_settings(&dir, &["fw_user"])).unwrap();
    assert_eq!(m.firmware.len(), 1);
    assert_eq!(m.firmware[0].path, "/lib/firmware/acme/fw.bin");
    assert_eq!(&m.firmware[0].bytes[..], b"FIRMWARE");
    assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
    assert!(
        m.warnings[0].contains("acme/absent.bin"),
        "{:?}",
        m.warnings
    );
}

#[test]
fn errors_name_what_is_wrong() {
    let (t, dir) = fixture();
    let err = |names: &[&str], dir: &Path| {
        prepare(&fixture_settings(dir, names))
            .unwrap_err()
            .to_string()
    };

    let e = err(&["virtio_nett"], &dir);
    assert!(
        e.contains("virtio_nett") && e.contains(&dir.display().to_string()),
        "{e}"
    );
    assert!(e.contains("closest: virtio_net"), "{e}");

    let e = err(&["old"], &dir);
    assert!(
        e.contains("old.ko") && e.contains("5.10.0-1-amd64") && e.contains(REL),
        "{e}"
    );

    fs::remove_file(dir.join("kernel/net/core/failover.ko.zst")).unwrap();
    let e = err(&["virtio_net"], &dir);
    assert!(
        e.contains("failover.ko.zst") && e.contains("missing"),
        "{e}"
    );

    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let e = err(&["virtio"], &empty);
    assert!(
        e.contains("modules.dep is missing") && e.contains("depmod"),
        "{e}"
    );
}

#[test]
fn a_stale_index_and_an_escaping_symlink_are_refused() {
    let (t, dir) = fixture();
    // ext9 says it needs virtio, which modules.dep does not list for it.
    let ext9 = dir.join("kernel/fs/ext9/ext9.ko");
    fs::write(
        &ext9,
        module_elf(&[
            "name=ext9",
            &format!("vermagic={REL} SMP"),
            "depends=virtio",
        ]),
    )
    .unwrap();
    let e = prepare(&fixture_settings(&dir, &["ext9"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ext9.ko") && e.contains("virtio") && e.contains("stale"),
        "{e}"
    );

    let outside = t.path().join("outside.ko");
    fs::write(
        &outside,
        module_elf(&["name=virtio", &format!("vermagic={REL}")]),
    )
    .unwrap();
    let virtio = dir.join("kernel/drivers/virtio/virtio.ko");
    fs::remove_file(&virtio).unwrap();
    std::os::unix::fs::symlink(&outside, &virtio).unwrap();
    let e = prepare(&fixture_settings(&dir, &["virtio"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside the tree"), "{e}");
}

#[test]
fn malformed_indexes_are_refused_with_their_line() {
    let cases: &[(&str, &[&str])] = &[
        ("kernel/a.ko\n", &["modules.dep:1", "no `:`"]),
        (
            "kernel/a.ko: ../../etc/b.ko\n",
            &["modules.dep:1", "not a path inside"],
        ),
        (
            "kernel/a.ko:\n/abs/b.ko:\n",
            &["modules.dep:2", "not a path inside"],
        ),
        (
            "kernel/a.ko: kernel/b.ko\n",
            &["modules.dep:1", "dependency b"],
        ),
        ("kernel/a.txt:\n", &["modules.dep:1", "not a .ko"]),
    ];
    for (i, (dep, want)) in cases.iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("modules.dep"), dep).unwrap();
        let e = tree::ModuleTree::open(tmp.path()).unwrap_err().to_string();
        for w in *want {
            assert!(e.contains(w), "case {i}: {e:?} lacks {w:?}");
        }
    }
}

#[test]
fn a_dependency_cycle_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("modules.dep"), "a.ko: b.ko\nb.ko: a.ko\n").unwrap();
    let tree = tree::ModuleTree::open(tmp.path()).unwrap();
    let e = resolve::resolve(&tree, &[req("a")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("cycle") && e.contains("a -> b -> a"), "{e}");
}

/// The tree `qemu/fetch-kernel.sh` keeps (Debian's kernel, indexed by depmod), if it has run.
fn debian_tree() -> Option<PathBuf> {
    let cache = std::env::var_os("FLEDGE_QEMU_KERNEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/qemu-kernel"));
    let dir = cache.join("modules");
    dir.join("modules.dep").is_file().then_some(dir)
}

#[test]
fn debian_kernel_tree() {
    let Some(dir) = debian_tree() else {
        eprintln!("skipped: no module tree; run qemu/fetch-kernel.sh");
        return;
    };
    // `modules` is a symlink to lib/modules/<release>: the release is the name it leads to.
    let real = dir.canonicalize().unwrap();
    let release = real.file_name().unwrap().to_str().unwrap().to_string();
    let s = Settings {
        modules: vec![req("virtio_net"), req("virtio_pci"), req("crc32c")],
        version: None,
        dir: dir.clone(),
    };
    let m = prepare(&s).unwrap();
    eprintln!("{}", explain(&m));
    assert_eq!(m.release, release);
    // Every expectation below comes from this tree's own index files, so it holds for whatever
    // kernel Debian ships today: which modules `crc32c` stands for, and which way each
    // dependency points, are read from modules.alias and modules.dep.
    let tree = tree::ModuleTree::open(&dir).unwrap();
    let names = order(&m);
    let loaded = |n: &str| m.resolution.modules.iter().find(|r| r.name == n);
    let virtio_net =
        loaded("virtio_net").unwrap_or_else(|| panic!("virtio_net missing from {names:?}"));
    assert!(virtio_net.required, "virtio_net was asked for by name");
    match tree.lookup("crc32c") {
        // One name: required like any module asked for by name.
        tree::Lookup::Modules(found) if found.len() == 1 => {
            assert!(
                loaded(&found[0]).is_some_and(|r| r.required),
                "{found:?} in {names:?}"
            );
        }
        // One alias, several modules (crc32c_generic, crc32c_intel on 6.1): all loaded, none
        // required on its own account.
        tree::Lookup::Modules(found) => {
            for n in &found {
                let r = loaded(n).unwrap_or_else(|| panic!("{n} missing from {names:?}"));
                let needed_by_other = m
                    .resolution
                    .modules
                    .iter()
                    .any(|o| o.required && tree.modules[&o.name].deps.contains(n));
                assert_eq!(r.required, needed_by_other, "{n} in {names:?}");
            }
        }
        // Built in: nothing to load for it.
        tree::Lookup::Builtin(_) => {
            assert!(!names.iter().any(|n| n.starts_with("crc32c")), "{names:?}");
        }
        tree::Lookup::Unknown => panic!("crc32c is neither a module, an alias nor builtin"),
    }
    // Each module's dependencies (modules.dep lists the whole closure) are loaded before it,
    // and a required module's dependencies are required too.
    for (i, r) in m.resolution.modules.iter().enumerate() {
        for d in &tree.modules[&r.name].deps {
            assert!(
                names[..i].contains(&d.as_str()),
                "{} before its dependency {d} in {names:?}",
                r.name
            );
            if r.required {
                assert!(
                    loaded(d).is_some_and(|x| x.required),
                    "{d} of {} not required",
                    r.name
                );
            }
        }
    }
    // The closure is complete: every dependency of virtio_net and virtio_pci is in the image.
    for top in ["virtio_net", "virtio_pci"] {
        if let Some(ix) = tree.modules.get(top) {
            for d in &ix.deps {
                assert!(loaded(d).is_some(), "{d} (of {top}) missing from {names:?}");
            }
        }
    }
    for f in &m.files {
        assert!(
            f.path
                .starts_with(&format!("/lib/modules/{release}/kernel/")),
            "{}",
            f.path
        );
        assert_eq!(&f.bytes[..4], b"\x7fELF", "{}", f.path);
    }
    let e = prepare(&Settings {
        version: Some("6.1.0-1-amd64".into()),
        ..s.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&format!("built for kernel {release}, not 6.1.0-1-amd64")),
        "{e}"
    );
    let e = prepare(&Settings {
        modules: vec![req("virtio_nte")],
        ..s
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("closest: virtio_net"), "{e}");
}

#[test]
fn compressed_modules_and_index_files_share_one_bound() {
    let tmp = tempfile::tempdir().unwrap();
    // Small compressed files that decompress to 600 KiB each.
    let big = [module_elf(&["name=big"]), vec![0u8; 600 << 10]].concat();
    let (xz, zst) = (tmp.path().join("a.ko.xz"), tmp.path().join("b.ko.zst"));
    fs::write(&xz, compress(&big, ".xz")).unwrap();
    fs::write(&zst, compress(&big, ".zst")).unwrap();
    assert!(fs::metadata(&xz).unwrap().len() < 4096);
    let mut budget = Budget::new(1 << 20);
    let read = |b: &mut Budget, p: &Path| {
        b.read(p, modinfo::MODULE_LIMIT, |cap| modinfo::read_module(p, cap))
    };
    assert_eq!(read(&mut budget, &xz).unwrap().len(), big.len());
    let e = read(&mut budget, &zst).unwrap_err().to_string();
    assert!(
        e.contains("b.ko.zst") && e.contains("1048576 bytes in all (FLEDGE_MODULES_MAX_SIZE)"),
        "{e}"
    );
    // Index files count too: a tree whose modules.alias is over what is left is refused.
    let (_t, dir) = fixture();
    let mut alias = fs::read_to_string(dir.join("modules.alias")).unwrap_or_default();
    while alias.len() < 300 << 10 {
        alias.push_str("alias pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_net\n");
    }
    fs::write(dir.join("modules.alias"), &alias).unwrap();
    let e = tree::ModuleTree::open_within(&dir, &mut Budget::new(200 << 10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("modules.alias") && e.contains(BUDGET_VAR), "{e}");
    assert!(tree::ModuleTree::open_within(&dir, &mut Budget::new(1 << 20)).is_ok());
}

#[test]
fn modules_of_another_machine_are_refused() {
    let (_t, dir) = fixture();
    let s = fixture_settings(&dir, &["virtio_net"]);
    let e = super::prepare(&s, crate::arch::Arch::Aarch64)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is built for x86_64 (64-bit), and the guest is aarch64"),
        "{e}"
    );
    assert!(e.contains("virtio"), "{e}");
}
