use super::check::lexical;
use super::format::{escape, Record};
use super::*;
use crate::archive::{Content, Entry, Kind, NewcWriter};
use std::io::Write;
use std::process::Command;
use std::sync::Arc;

fn entry(path: &str, kind: Kind, perm: u32, ino: u32) -> Entry {
    Entry::new(path, kind, perm, ino, 1, 7)
}

fn file(path: &str, body: &[u8], ino: u32) -> Entry {
    entry(
        path,
        Kind::File(Content::Bytes(Arc::from(body))),
        0o755,
        ino,
    )
}

fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut w = NewcWriter::new(Vec::new());
    for e in entries {
        w.append(e).unwrap();
    }
    w.finish().unwrap()
}

fn sample() -> Vec<u8> {
    archive(&[
        entry("bin", Kind::Dir, 0o755, 1),
        entry("bin/sh", Kind::Symlink("busybox".into()), 0o777, 2),
        entry("dev", Kind::Dir, 0o755, 3),
        entry(
            "dev/console",
            Kind::CharDev { major: 5, minor: 1 },
            0o600,
            4,
        ),
        file("init", b"hello", 5),
    ])
}

const SAMPLE_LISTING: &str = "drwxr-xr-x   0/0            0 /bin\n\
    lrwxrwxrwx   0/0            7 /bin/sh -> busybox\n\
    drwxr-xr-x   0/0            0 /dev\n\
    crw-------   0/0          5,1 /dev/console\n\
    -rwxr-xr-x   0/0            5 /init\n";

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zst(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}

fn xz(b: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// lz4 legacy frame, as `lz4 -l` writes it.
fn lz4(b: &[u8]) -> Vec<u8> {
    let mut out = 0x184C2102u32.to_le_bytes().to_vec();
    let block = lz4_flex::block::compress(b);
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    out.extend_from_slice(&block);
    out
}

/// Runs `view` of `bytes` (written to a file) and returns the output.
fn show(bytes: &[u8], view: View) -> Result<(String, Report), InspectError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    std::fs::write(&p, bytes).unwrap();
    let mut out = Vec::new();
    let r = run(&p, view, &mut out)?;
    Ok((String::from_utf8(out).unwrap(), r))
}

fn records(bytes: &[u8]) -> Vec<Record> {
    let (json, _) = show(bytes, View::Json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Record {
            path: i["path"].as_str().unwrap().as_bytes().into(),
            mode: i["mode"].as_u64().unwrap() as u32,
            uid: 0,
            gid: 0,
            size: i["size"].as_u64().unwrap(),
            ino: i["ino"].as_u64().unwrap() as u32,
            nlink: i["nlink"].as_u64().unwrap() as u32,
            mtime: 7,
            rdev: None,
            target: i["target"].as_str().map(|t| t.as_bytes().into()),
        })
        .collect()
}

#[test]
fn reads_back_what_the_writer_wrote_plain_and_gzip_and_concatenated() {
    let plain = sample();
    assert_eq!(plain.len() % 512, 0);
    let mut both = plain.clone();
    both.extend_from_slice(&gz(&plain));
    both.extend_from_slice(&gz(&plain));
    for (name, bytes, n, c) in [
        ("plain", plain.clone(), 5, "none"),
        ("gz", gz(&plain), 5, "gzip"),
        ("both", both, 15, "gzip"),
    ] {
        let (text, r) = show(&bytes, View::List).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.summary.entries, n, "{name}");
        assert!(text.starts_with(SAMPLE_LISTING), "{name}: {text}");
        let (json, _) = show(&bytes, View::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["compression"], c, "{name}");
    }
}

/// Every mix the kernel unpacks: segments found by their own magic, NUL padding anywhere
/// between them, compressed followed by plain, different compressions in one image.
#[test]
fn reads_every_segment_mix_the_kernel_boots() {
    let a = archive(&[file("a", b"first", 1)]);
    let b = archive(&[file("b", b"second", 1)]);
    let pad = |n: usize| vec![0u8; n];
    let cat = |parts: &[Vec<u8>]| parts.concat();
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "gz then plain",
            cat(&[gz(&a), b.clone()]),
            &["gzip", "none"],
        ),
        (
            "leading padding",
            cat(&[pad(512), gz(&a), b.clone()]),
            &["gzip", "none"],
        ),
        (
            "padding between and after",
            cat(&[gz(&a), pad(4), zst(&b), pad(1000)]),
            &["gzip", "zstd"],
        ),
        ("gz+zstd", cat(&[gz(&a), zst(&b)]), &["gzip", "zstd"]),
        ("xz+zstd", cat(&[xz(&a), zst(&b)]), &["xz", "zstd"]),
        (
            "xz with stream padding + gz",
            cat(&[xz(&a), pad(8), gz(&b)]),
            &["xz", "gzip"],
        ),
        (
            "lz4+gz (padded, as unlz4 needs)",
            cat(&[lz4(&a), pad(4), gz(&b)]),
            &["lz4", "gzip"],
        ),
        ("plain+lz4", cat(&[a.clone(), lz4(&b)]), &["none", "lz4"]),
        (
            "zstd+plain",
            cat(&[zst(&a), pad(3), b.clone()]),
            &["zstd", "none"],
        ),
    ];
    for (name, bytes, segments) in cases {
        let (text, r) = show(&bytes, View::List).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<&str> = r.summary.segments.iter().map(|c| c.name()).collect();
        assert_eq!(got, segments, "{name}");
        assert_eq!(r.summary.entries, 2, "{name}: {text}");
        assert!(
            text.contains(" /a\n") && text.contains(" /b\n"),
            "{name}: {text}"
        );
    }
    // The kernel's lz4 decoder reads on into the next segment when no zero size ends it.
    let msg = show(&cat(&[lz4(&a), gz(&b)]), View::List)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lz4 segment at byte 0"), "{msg}");
    // Compressed data that does not end between two entries is damage.
    let msg = show(&gz(&a[..115]), View::List).unwrap_err().to_string();
    assert!(
        msg.contains("gzip segment") && msg.contains("truncated"),
        "{msg}"
    );
}

/// The same mixes made by Debian's own tools (cpio, gzip, zstd, xz, lz4 -l), and Debian's
/// initramfs when this machine has one.
#[test]
fn reads_images_made_by_the_real_tools() {
    let tools = ["cpio", "gzip", "zstd", "xz", "lz4"];
    if let Some(t) = tools
        .iter()
        .find(|t| Command::new(t).arg("--version").output().is_err())
    {
        eprintln!("skipped: {t} is not installed (scripts/test-all installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for d in ["usr/bin", "usr/sbin", "dev", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("usr/bin/kmod"), b"#!/bin/sh\n").unwrap();
    std::fs::write(root.join("init"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
    std::os::unix::fs::symlink("/bin/kmod", root.join("usr/sbin/modprobe")).unwrap();
    let sh = |cmd: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    let cpio = sh("find . | LC_ALL=C sort | cpio -o -H newc --quiet");
    let paths = sh("find . | LC_ALL=C sort | cut -c2-").len();
    assert!(paths > 0);
    let z = |tool: &str| sh(&format!("find . | cpio -o -H newc --quiet | {tool}"));
    let cases = [
        ("gzip", z("gzip -n")),
        ("gzip+zstd", [z("gzip -n"), z("zstd -q")].concat()),
        ("xz+zstd", [z("xz --check=crc32"), z("zstd -q")].concat()),
        ("lz4+gzip", [z("lz4 -l -q"), vec![0; 4], z("gzip")].concat()),
        ("plain+gzip", [cpio.clone(), z("gzip")].concat()),
    ];
    for (name, bytes) in cases {
        let (text, r) = show(&bytes, View::List).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.contains("/usr/sbin/modprobe -> /bin/kmod"),
            "{name}: {text}"
        );
        assert!(r.summary.entries >= 10, "{name}: {}", r.summary.entries);
        // Merged /usr: /usr/sbin/modprobe -> /bin/kmod resolves through /bin -> usr/bin.
        let dangling: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.contains("modprobe"))
            .collect();
        assert!(dangling.is_empty(), "{name}: {dangling:?}");
    }
    let debian = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("initrd.img-"));
    match debian {
        Some(img) => {
            let mut out = Vec::new();
            let r = run(&img.path(), View::List, &mut out)
                .unwrap_or_else(|e| panic!("{}: {e}", img.path().display()));
            assert!(r.summary.entries > 100, "{:?}", r.summary);
            let false_alarms: Vec<_> = r
                .problems
                .iter()
                .filter(|p| p.contains("not in the image"))
                .collect();
            assert!(false_alarms.is_empty(), "{false_alarms:?}");
        }
        None => eprintln!("no /boot/initrd.img-* here: Debian's own initramfs not read"),
    }
}

#[test]
fn names_are_escaped_in_the_listing_and_the_tree() {
    let forged = "x\n-rwxr-xr-x   0/0        51016 /init";
    let bytes = archive(&[
        file(forged, b"1", 1),
        file("esc\x1b[31mred", b"2", 2),
        entry("l", Kind::Symlink("\u{202e}gnp.exe".into()), 0o777, 3),
        file("back\\slash", b"3", 4),
    ]);
    let (text, _) = show(&bytes, View::List).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        !text.contains('\x1b') && !text.contains('\u{202e}'),
        "{text}"
    );
    assert!(
        text.contains("/x\\n-rwxr-xr-x   0/0        51016 /init\n"),
        "{text}"
    );
    assert!(text.contains("/esc\\e[31mred\n"), "{text}");
    assert!(text.contains("/l -> \\u{202e}gnp.exe\n"), "{text}");
    assert!(text.contains("/back\\\\slash\n"), "{text}");
    let (tree, _) = show(&bytes, View::Tree).unwrap();
    assert_eq!(tree.lines().count(), 5, "{tree}");
    assert!(!tree.contains('\x1b'), "{tree}");
    assert_eq!(escape(b"\xff\x01ok\x7f"), "\\xff\\x01ok\\x7f");
}

#[test]
fn hardlinks_show_their_size_and_absurd_names_are_refused() {
    let mut a = entry("a", Kind::File(Content::Empty), 0o644, 9);
    let mut b = file("b", b"abc", 9);
    a.nlink = 2;
    b.nlink = 2;
    let bytes = archive(&[a, b]);
    let sizes: Vec<u64> = records(&bytes).iter().map(|i| i.size).collect();
    assert_eq!(sizes, [3, 3]);
    // The plain listing is written as it is read: each member shows its own header's size.
    let (text, _) = show(&bytes, View::List).unwrap();
    assert!(
        text.contains(" 0 /a\n") && text.contains(" 3 /b\n"),
        "{text}"
    );

    let mut bad = b"070701".to_vec();
    for v in [1u32, 0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x10000, 0] {
        bad.extend(format!("{v:08X}").bytes());
    }
    bad.resize(1024, b'x');
    let msg = show(&bad, View::List).unwrap_err().to_string();
    assert!(msg.contains("claims a 65536-byte name"), "{msg}");
}

#[test]
fn rejects_what_is_not_an_image() {
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "zip",
            b"PK\x03\x04 not an image".to_vec(),
            "not an initramfs",
        ),
        ("empty", Vec::new(), "holds no entries"),
        ("zeros", vec![0; 4096], "holds no entries"),
        (
            "bzip2",
            b"BZh91AY&SY".to_vec(),
            "is bzip2, which fledge inspect does not read",
        ),
        (
            "junk after",
            [sample(), b"junk".to_vec()].concat(),
            "junk after the last segment",
        ),
    ];
    for (name, bytes, want) in cases {
        let msg = show(&bytes, View::List).unwrap_err().to_string();
        assert!(msg.contains(want), "{name}: {msg}");
    }
    let mut cut = sample();
    cut.truncate(200);
    let msg = show(&cut, View::List).unwrap_err().to_string();
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn mode_strings() {
    assert_eq!(mode_string(0o041777), "drwxrwxrwt");
    assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
    assert_eq!(mode_string(0o100644), "-rw-r--r--");
}

#[test]
fn symlink_targets_read_lexically() {
    assert_eq!(lexical("/bin/sh", "busybox"), "/bin/busybox");
    assert_eq!(lexical("/etc/rc", "../bin/./rc"), "/bin/rc");
    assert_eq!(lexical("/init", "/sbin/../init2"), "/init2");
    assert_eq!(lexical("/a", "../../x"), "/x");
}

fn console() -> Entry {
    entry(
        "dev/console",
        Kind::CharDev { major: 5, minor: 1 },
        0o600,
        90,
    )
}

fn problems(entries: Vec<Entry>) -> Vec<String> {
    show(&archive(&entries), View::Check).unwrap().1.problems
}

#[test]
fn boot_check_follows_init_links_and_catches_loops() {
    let dev = entry("dev", Kind::Dir, 0o755, 89);
    let good = vec![
        entry("init", Kind::Symlink("sbin/init".into()), 0o777, 1),
        entry("sbin", Kind::Dir, 0o755, 2),
        file("sbin/init", b"x", 3),
        dev.clone(),
        console(),
    ];
    assert_eq!(problems(good), Vec::<String>::new());
    let looped = vec![
        entry("init", Kind::Symlink("/init".into()), 0o777, 1),
        dev,
        console(),
    ];
    assert_eq!(problems(looped), ["/init is a symlink loop"]);
}

/// Debian's merged /usr: `/bin -> usr/bin`, `/sbin -> usr/sbin`, links naming `/bin/...`.
#[test]
fn boot_check_resolves_every_component_of_a_merged_usr_image() {
    let image = |extra: Vec<Entry>| {
        let mut v = vec![
            entry("bin", Kind::Symlink("usr/bin".into()), 0o777, 1),
            entry("sbin", Kind::Symlink("usr/sbin".into()), 0o777, 2),
            entry("usr", Kind::Dir, 0o755, 3),
            entry("usr/bin", Kind::Dir, 0o755, 4),
            entry("usr/sbin", Kind::Dir, 0o755, 5),
            file("usr/bin/kmod", b"kmod", 6),
            entry(
                "usr/sbin/modprobe",
                Kind::Symlink("/bin/kmod".into()),
                0o777,
                7,
            ),
            entry(
                "init",
                Kind::Symlink("/sbin/../bin/busybox".into()),
                0o777,
                8,
            ),
            file("usr/bin/busybox", b"bb", 9),
            entry("dev", Kind::Dir, 0o755, 10),
            console(),
        ];
        v.extend(extra);
        problems(v)
    };
    assert_eq!(image(vec![]), Vec::<String>::new());
    let broken = image(vec![entry(
        "usr/sbin/depmod",
        Kind::Symlink("/sbin/nothing/kmod".into()),
        0o777,
        20,
    )]);
    assert_eq!(
        broken,
        ["/usr/sbin/depmod -> /sbin/nothing/kmod points to /usr/sbin/nothing/kmod, which is not in the image"]
    );
    let through_file = image(vec![entry(
        "usr/bin/x",
        Kind::Symlink("/bin/kmod/x".into()),
        0o777,
        21,
    )]);
    assert_eq!(
        through_file,
        ["/usr/bin/x -> /bin/kmod/x goes through /usr/bin/kmod, which is a regular file, not a directory"]
    );
}

/// Entries of `n` empty files, written straight to `path`.
fn big_image(path: &std::path::Path, n: u32) {
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = NewcWriter::new(f);
    w.append(&entry("d", Kind::Dir, 0o755, 1)).unwrap();
    for i in 0..n {
        let e = entry(
            &format!("d/f{i:07}"),
            Kind::File(Content::Empty),
            0o644,
            i + 2,
        );
        w.append(&e).unwrap();
    }
    w.finish().unwrap();
}

/// Peak resident memory of this process, KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const BIG_CHILD: &str = "FLEDGE_INSPECT_MEMORY_CHILD";

/// Run alone in a child process by the test below: prints how much the peak grew per view.
#[test]
#[ignore = "run by memory_stays_bounded_per_entry in a process of its own"]
fn memory_child() {
    let Ok(view) = std::env::var(BIG_CHILD) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big");
    big_image(&p, 200_000);
    let view = if view == "json" {
        View::Json
    } else {
        View::List
    };
    let before = peak_kib();
    let r = run(&p, view, &mut std::io::sink()).unwrap();
    assert_eq!(r.summary.entries, 200_001);
    println!("peak growth KiB: {}", peak_kib() - before);
}

/// 200,000 entries: the listing keeps a few bytes per entry, JSON one small record.
#[test]
fn memory_stays_bounded_per_entry() {
    for (view, max_kib) in [("list", 16 << 10), ("json", 64 << 10)] {
        let o = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "inspect::tests::memory_child",
                "--ignored",
                "--nocapture",
            ])
            .env(BIG_CHILD, view)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{view}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let grew: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("peak growth KiB: "))
            .unwrap_or_else(|| panic!("{view}: {out}"))
            .parse()
            .unwrap();
        eprintln!("{view}: peak grew {grew} KiB for 200,000 entries");
        assert!(grew < max_kib, "{view}: peak grew {grew} KiB");
    }
}

/// A full disk or a closed pipe on the output is an error naming the listing, in every view.
#[test]
fn a_failing_output_is_an_error() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    std::fs::write(&p, sample()).unwrap();
    for view in [View::List, View::Tree, View::Json] {
        let msg = run(&p, view, &mut Full).unwrap_err().to_string();
        assert!(
            msg.starts_with("cannot write the listing of") && msg.contains("No space left"),
            "{view:?}: {msg}"
        );
    }
}

#[test]
fn boot_check_wants_a_dynamic_init_with_its_loader_and_libraries() {
    let ls = std::fs::read("/usr/bin/ls").unwrap();
    let dev = entry("dev", Kind::Dir, 0o755, 89);
    let bare = vec![file("init", &ls, 1), dev.clone(), console()];
    let found = problems(bare);
    assert!(
        found.iter().any(|p| p.starts_with(
            "/init cannot start: /init needs the interpreter /lib64/ld-linux-x86-64.so.2, which is not in the image"
        )),
        "{found:?}"
    );
    // with the loader and libc (bodies not read back: present is enough) only what is still
    // missing is named
    let mut with_libc = vec![
        file("init", &ls, 1),
        entry("lib64", Kind::Dir, 0o755, 2),
        file("lib64/ld-linux-x86-64.so.2", b"loader", 3),
        entry("lib", Kind::Dir, 0o755, 4),
        file("lib/libc.so.6", b"libc", 5),
        dev,
        console(),
    ];
    let found = problems(with_libc.clone());
    assert!(
        found
            .iter()
            .all(|p| !p.contains("libc.so.6") && !p.contains("interpreter")),
        "{found:?}"
    );
    let needs =
        crate::libs::closure::read_elf(&crate::tree::HostTree { root: "/".into() }, "/usr/bin/ls")
            .unwrap()
            .dynamic
            .needed;
    for (i, n) in needs.iter().enumerate() {
        with_libc.push(file(&format!("lib/{n}"), b"lib", 10 + i as u32));
    }
    assert_eq!(problems(with_libc), Vec::<String>::new());
}

/// Default mode is read from the image: fledge-init as /init (it names its config file), the
/// agent, no custom init, no argv in the workload spec; supervision from the baked options.
#[test]
fn the_agent_start_is_read_from_the_image() {
    let init = file("init", b"\x7fELF.../etc/fledge-init.conf...", 1);
    let agent = file("bin/kestrel", b"\x7fELF agent", 2);
    let bin = entry("bin", Kind::Dir, 0o755, 3);
    let etc = entry("etc", Kind::Dir, 0o755, 4);
    let conf = |text: &str| file("etc/fledge-init.conf", text.as_bytes(), 5);
    let start = |entries: &[Entry]| show(&archive(entries), View::Check).unwrap().1.agent;
    assert_eq!(
        start(&[init.clone(), bin.clone(), agent.clone()]),
        Some(check::AgentStart { supervised: false })
    );
    assert_eq!(
        start(&[
            init.clone(),
            bin.clone(),
            agent.clone(),
            etc.clone(),
            conf("# baked\nfledge.supervise=1 fledge.grace_ms=100\n")
        ]),
        Some(check::AgentStart { supervised: true })
    );
    // Not fledge-init, no agent, or a custom init: not default mode.
    let other = file("init", b"#!/bin/sh\n", 1);
    assert_eq!(start(&[other, bin.clone(), agent.clone()]), None);
    assert_eq!(start(&[init.clone(), bin.clone()]), None);
    let custom = file(".volant_init", b"/sbin/custom-init\n", 6);
    assert_eq!(start(&[init, bin, agent, custom]), None);
}

#[test]
fn supervise_options_read_as_fledge_init_reads_them() {
    use check::supervise_option as s;
    assert_eq!(s(""), None);
    assert_eq!(s("fledge.supervise=1"), Some(true));
    assert_eq!(
        s("fledge.supervise=1 quiet fledge.supervise=0"),
        Some(false)
    );
    assert_eq!(s("# fledge.supervise=1\n"), None);
    assert_eq!(s("fledge.supervise=maybe"), None);
}
