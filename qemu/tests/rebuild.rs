//! A rebuild from the segment cache boots: after one file is changed and one added, `fledge
//! build` takes every other segment from its cache, writes the same bytes as a build with an
//! empty cache, and the kernel unpacks the result whole.
//!
//! Same requirements and skip rules as the smoke runs (`bash qemu/fetch-kernel.sh`,
//! busybox-static; under `CI=true` a missing piece fails).

use std::path::Path;
use std::process::Command;

use fledge_qemu::host::Host;
use fledge_qemu::project::Project;
use fledge_qemu::tools::Tools;
use fledge_qemu::vm::{Boot, Check};

/// Text-like bytes (compressible, distinct per seed).
fn text(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(["def ", "self", " = ", "return ", "\n", "(x)", "    "][(x % 7) as usize]);
        out.push_str(&(x % 1000).to_string());
    }
    out
}

/// Runs `fledge build -v` for gzip into `out` with `cache`; returns the verbose log.
fn build(tools: &Tools, project: &Path, out: &Path, cache: &Path) -> String {
    let o = Command::new(&tools.fledge)
        .args(["build", "-v", "--compression", "gzip", "-c"])
        .arg(project.join("fledge.toml"))
        .arg("-o")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache)
        .current_dir(project)
        .output()
        .expect("fledge runs");
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "fledge build failed:\n{log}");
    log
}

/// `(from cache, total)` from the build's "N of M segments from the cache" line.
fn cached_segments(log: &str) -> (usize, usize) {
    let line = log
        .lines()
        .find(|l| l.contains("segments from the cache"))
        .unwrap_or_else(|| panic!("no cache line in:\n{log}"));
    let n: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

#[test]
fn a_rebuild_from_the_segment_cache_boots() {
    let Some(host) = Host::for_test("a_rebuild_from_the_segment_cache_boots") else {
        return;
    };
    let tools = Tools::get().unwrap_or_else(|e| panic!("{e}"));
    let p = Project::new(
        &host,
        "[init]\npath = \"./init.sh\"\n[mappings]\n\"./data\" = \"/data\"\n",
    )
    .unwrap();
    // About 12 MB of text in 600 files: about ten segments.
    for i in 0..600u64 {
        let path = p.path().join(format!("data/d{}/f{i:03}.py", i % 10));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text(20_000, i + 1)).unwrap();
    }
    let init = "#!/bin/sh\nn=0\nfor f in /data/*/*; do n=$((n + 1)); done\necho \"FILES $n\"\n\
                echo \"CHANGED $(cat /data/d5/f155.py)\"\necho \"ADDED $(cat /data/d3/new.txt)\"\n\
                poweroff -f\n";
    let script = p.path().join("init.sh");
    std::fs::write(&script, init).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let cache = p.path().join("cache");
    let first = build(tools, p.path(), &p.path().join("first.cpio.gz"), &cache);
    let (hits, total) = cached_segments(&first);
    assert!(hits == 0 && total >= 8, "a cold build: {hits} of {total}");

    std::fs::write(p.path().join("data/d5/f155.py"), "changed-body").unwrap();
    std::fs::write(p.path().join("data/d3/new.txt"), "added-body").unwrap();
    let warm_image = p.path().join("warm.cpio.gz");
    let warm = build(tools, p.path(), &warm_image, &cache);
    let (hits, total) = cached_segments(&warm);
    assert!(
        total - hits <= 4,
        "the rebuild compressed {} of {total} segments",
        total - hits
    );
    let cold_image = p.path().join("cold.cpio.gz");
    build(tools, p.path(), &cold_image, &p.path().join("empty-cache"));
    assert!(
        std::fs::read(&warm_image).unwrap() == std::fs::read(&cold_image).unwrap(),
        "the rebuild differs from a build with an empty cache"
    );

    let log = Boot::new("rebuild/gzip", &warm_image).run(&host).unwrap();
    log.assert(&[
        Check::contains("FILES 601"),
        Check::contains("CHANGED changed-body"),
        Check::contains("ADDED added-body"),
        Check::absent("junk"),
        Check::absent("Initramfs unpacking failed"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
}
