//! Round trips through independent tools (gzip, zstd, xz, lz4, GNU cpio), determinism across
//! thread counts, and shutdown on errors.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::*;
use crate::archive::{Content, Kind};
use plan::Limits;
use sha2::{Digest, Sha256};

const ALL: [Compression; 5] = [
    Compression::Gzip,
    Compression::Zstd,
    Compression::Xz,
    Compression::Lz4,
    Compression::None,
];

/// Small sizes so a test image has many segments and a member split into several pieces.
const SMALL: Tuning = Tuning {
    limits: Limits {
        min: 4 << 10,
        average: 16 << 10,
        max: 64 << 10,
    },
    zstd: Limits {
        min: 16 << 10,
        average: 32 << 10,
        max: 256 << 10,
    },
    xz: Limits {
        min: 8 << 10,
        average: 16 << 10,
        max: 64 << 10,
    },
    chunk: 64 << 10,
    zstd_chunk: 64 << 10,
};

/// Deterministic text-like bytes: compressible, but not trivially.
fn text(seed: u32, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "def ", "return ", "self", ".value", " = ", "import ", "os\n", "(x, y)", "    ", "if ",
        "None", ":\n",
    ];
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(WORDS[(x % 12) as usize].as_bytes());
        if x % 7 == 0 {
            out.push((x >> 8) as u8);
        }
    }
    out.truncate(len);
    out
}

fn entry(path: &str, kind: Kind, ino: u32, nlink: u32) -> Entry {
    let perm = if matches!(kind, Kind::Dir) {
        0o755
    } else {
        0o644
    };
    Entry {
        path: crate::archive::Name::new(path),
        kind,
        perm,
        uid: 0,
        gid: 0,
        ino,
        nlink,
        mtime: 1_704_067_200,
    }
}

fn bytes(b: Vec<u8>) -> Kind {
    Kind::File(Content::Bytes(Arc::from(b)))
}

/// A test image: directories, ~120 small files, a host file bigger than several pieces, a
/// hardlinked pair and a symlink. Returns the entries and the expected file contents.
fn image(dir: &Path) -> (Vec<Entry>, BTreeMap<String, Vec<u8>>) {
    let mut e = Vec::new();
    let mut files = BTreeMap::new();
    let mut ino = 1;
    for d in ["bin", "etc", "usr", "usr/lib", "usr/lib/py"] {
        e.push(entry(d, Kind::Dir, ino, 2));
        ino += 1;
    }
    let big = text(99, 300_000);
    let big_path = dir.join("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    e.push(entry(
        "bin/big",
        Kind::File(Content::Path {
            path: big_path,
            size: big.len() as u64,
        }),
        ino,
        1,
    ));
    ino += 1;
    files.insert("bin/big".to_string(), big);
    e.push(entry("bin/sh", Kind::Symlink("big".into()), ino, 1));
    ino += 1;
    // Hardlinked pair: the first member carries no body, the last one does.
    let linked = text(7, 5000);
    e.push(entry("etc/a-link", Kind::File(Content::Empty), ino, 2));
    e.push(entry(
        "etc/passwd",
        bytes(b"root:x:0:0::/:/bin/sh\n".to_vec()),
        500,
        1,
    ));
    e.push(entry("etc/z-link", bytes(linked.clone()), ino, 2));
    for i in 0..120u32 {
        let body = text(i, 200 + (i as usize * 37) % 3000);
        let path = format!("usr/lib/py/m{i:03}.py");
        files.insert(path.clone(), body.clone());
        e.push(entry(&path, bytes(body), ino + 1 + i, 1));
    }
    files.insert("etc/a-link".to_string(), linked.clone());
    files.insert("etc/z-link".to_string(), linked);
    (e, files)
}

fn build(entries: &[Entry], c: Compression, threads: usize, tuning: Tuning) -> Vec<u8> {
    build_cached(entries, c, threads, tuning, None).0
}

/// Builds with `cache`; returns the image and what the build did.
fn build_cached(
    entries: &[Entry],
    c: Compression,
    threads: usize,
    tuning: Tuning,
    cache: Option<&SegmentCache>,
) -> (Vec<u8>, Stats) {
    let opts = Options {
        compression: c,
        level: None,
        threads,
        cache: cache.cloned(),
        body_sha1: false,
    };
    // Every build checks the digests are handed on once, complete, and before the last member
    // is written.
    let written = std::cell::Cell::new(0);
    let mut out = Counted(Vec::new(), &written);
    let mut told = Vec::new();
    let stats = write_image_tuned(entries, &opts, tuning, &mut out, &mut |b| {
        told.push((b.to_vec(), written.get()))
    })
    .expect("image is written");
    let out = out.0;
    assert_eq!(told.len(), 1, "digests handed on once");
    let (bodies, at) = told.pop().unwrap();
    assert_eq!(
        bodies, stats.bodies,
        "the digests handed on are the build's"
    );
    assert!(at < out.len(), "handed on at {at} of {} bytes", out.len());
    (out, stats)
}

/// A `Write` into a buffer that tells how much it holds.
struct Counted<'a>(Vec<u8>, &'a std::cell::Cell<usize>);

impl Write for Counted<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        self.1.set(self.0.len());
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The uncompressed bytes an image for `c` must decompress to: each planned segment rendered
/// straight through `NewcWriter`, concatenated.
fn plain_image(entries: &[Entry], c: Compression, tuning: Tuning) -> Vec<u8> {
    let mut out = Vec::new();
    for seg in plan::plan(entries, tuning.limits_for(c)) {
        let mut w = NewcWriter::new(&mut out);
        for e in &entries[seg.range] {
            w.append(e).unwrap();
        }
        w.finish().unwrap();
    }
    out
}

/// True when `tool` runs; otherwise says why the test skips (or fails when CI=true).
fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required when CI=true"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    ok
}

/// Runs `cmd` with `input` on stdin; returns (stdout, stderr) and asserts success.
fn pipe(cmd: &mut Command, input: &[u8]) -> (Vec<u8>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tool starts");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // cpio stops reading at a trailer: a broken pipe is expected then.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {err}");
    (out.stdout, err)
}

fn system_decompress(c: Compression, data: &[u8]) -> Vec<u8> {
    let tool = match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::Xz => "xz",
        Compression::Lz4 => "lz4",
        Compression::None => return data.to_vec(),
    };
    pipe(Command::new(tool).arg("-dc"), data).0
}

/// Extracts concatenated newc archives with GNU cpio, one run per archive (cpio stops at a
/// trailer and reports the 512-byte blocks it read); returns how many archives there were.
fn cpio_extract_all(raw: &[u8], dir: &Path) -> usize {
    let mut off = 0;
    let mut archives = 0;
    while off < raw.len() {
        let (_, err) = pipe(
            Command::new("cpio")
                .args(["-idm", "--no-absolute-filenames"])
                .current_dir(dir),
            &raw[off..],
        );
        let blocks: usize = err
            .lines()
            .find_map(|l| l.strip_suffix(" blocks").or(l.strip_suffix(" block")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("cpio did not report its block count: {err}"));
        assert!(blocks > 0, "cpio read nothing at offset {off}");
        off += blocks * 512;
        archives += 1;
    }
    assert_eq!(off, raw.len(), "archives end on 512-byte boundaries");
    archives
}

fn check_tree(dir: &Path, files: &BTreeMap<String, Vec<u8>>, label: &str) {
    for (path, want) in files {
        let got = std::fs::read(dir.join(path)).unwrap_or_else(|e| panic!("{label}: {path}: {e}"));
        assert!(got == *want, "{label}: {path} differs after unpacking");
    }
    let a = std::fs::metadata(dir.join("etc/a-link")).unwrap();
    let b = std::fs::metadata(dir.join("etc/z-link")).unwrap();
    assert_eq!(
        a.ino(),
        b.ino(),
        "{label}: hardlinked pair unpacks as one inode"
    );
    let target = std::fs::read_link(dir.join("bin/sh")).unwrap();
    assert_eq!(target, Path::new("big"), "{label}: symlink target");
}

#[test]
fn every_compression_round_trips_through_system_tools() {
    if !["gzip", "zstd", "xz", "lz4", "cpio"]
        .iter()
        .all(|t| have(t))
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (entries, files) = image(tmp.path());
    let segments = |c| plan::plan(&entries, SMALL.limits_for(c)).len();
    assert!(
        segments(Compression::Gzip) > 3,
        "the test image spans several segments"
    );
    assert_eq!(
        segments(Compression::None),
        1,
        "an uncompressed image is one archive"
    );
    for c in ALL {
        let label = c.name();
        let plain = plain_image(&entries, c, SMALL);
        let one = build(&entries, c, 1, SMALL);
        let four = build(&entries, c, 4, SMALL);
        assert!(one == four, "{label}: 1 and 4 threads give different bytes");
        assert_eq!(detect(&one), Some(c), "{label}: detect");

        let raw = system_decompress(c, &one);
        assert!(raw == plain, "{label}: decompresses to the plain image");
        let mut ours = Vec::new();
        decoder(c, Box::new(&one[..]))
            .read_to_end(&mut ours)
            .unwrap();
        assert!(ours == plain, "{label}: our decoder reads every member");

        let out = tmp.path().join(format!("x-{label}"));
        std::fs::create_dir(&out).unwrap();
        assert_eq!(
            cpio_extract_all(&raw, &out),
            segments(c),
            "{label}: archives"
        );
        check_tree(&out, &files, label);
    }
}

#[test]
fn default_sizes_round_trip_with_many_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, _) = image(tmp.path());
    for c in ALL {
        let plain = plain_image(&entries, c, Tuning::default());
        let opts = Options {
            compression: c,
            level: None,
            threads: 3,
            cache: None,
            body_sha1: false,
        };
        let mut out = Vec::new();
        write_image(&entries, &opts, &mut out).unwrap();
        let mut back = Vec::new();
        decoder(c, Box::new(&out[..]))
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == plain, "{}: round trip", c.name());
    }
}

#[test]
fn a_zstd_member_of_one_piece_finds_repeats_past_its_levels_window_within_8_mib() {
    // 3 MiB of noise twice: the copy lies 3 MiB back, beyond level 3's 2 MiB window.
    let mut x = 0x9e37_79b9_u32;
    let noise: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let entries = vec![entry(
        "data",
        bytes([&noise[..], &noise[..]].concat()),
        2,
        1,
    )];
    let tuning = Tuning::default();
    let image = build(&entries, Compression::Zstd, 2, tuning);
    assert!(
        image.len() < (4 << 20),
        "the repeat was found: {} bytes",
        image.len()
    );
    // A decoder that allows no window over 8 MiB reads it.
    let mut d = zstd::stream::read::Decoder::new(&image[..]).unwrap();
    d.window_log_max(23).unwrap();
    let mut raw = Vec::new();
    d.read_to_end(&mut raw).unwrap();
    assert_eq!(raw, plain_image(&entries, Compression::Zstd, tuning));
}

#[test]
fn gzip_header_has_no_name_and_zero_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, _) = image(tmp.path());
    let out = build(&entries, Compression::Gzip, 2, SMALL);
    assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
}

#[test]
fn empty_entry_list_is_a_trailer_only_archive() {
    for c in ALL {
        let out = build(&[], c, 2, SMALL);
        let mut back = Vec::new();
        decoder(c, Box::new(&out[..]))
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), 512, "{}", c.name());
        assert!(back.starts_with(b"070701"), "{}", c.name());
    }
}

#[test]
fn a_missing_host_file_fails_cleanly_on_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut entries, _) = image(tmp.path());
    entries.push(entry(
        "usr/lib/gone",
        Kind::File(Content::Path {
            path: tmp.path().join("does-not-exist"),
            size: 10,
        }),
        9999,
        1,
    ));
    for threads in [1, 4] {
        let opts = Options {
            compression: Compression::Gzip,
            level: None,
            threads,
            cache: None,
            body_sha1: false,
        };
        let err =
            write_image_tuned(&entries, &opts, SMALL, &mut Vec::new(), &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, CompressError::Archive(ArchiveError::Read { .. })),
            "threads {threads}: {err}"
        );
    }
}

/// A sink that fails after a few bytes, like a full disk.
struct Full(usize);

impl Write for Full {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.0 < b.len() {
            return Err(io::Error::other("disk full"));
        }
        self.0 -= b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_output_stops_every_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, _) = image(tmp.path());
    for c in [Compression::Zstd, Compression::Lz4] {
        let opts = Options {
            compression: c,
            level: None,
            threads: 2,
            cache: None,
            body_sha1: false,
        };
        let err =
            write_image_tuned(&entries, &opts, SMALL, &mut Full(1000), &mut |_| {}).unwrap_err();
        assert!(matches!(err, CompressError::Io(_)), "{}: {err}", c.name());
    }
}

#[test]
fn a_bad_level_is_rejected_before_any_output() {
    let opts = Options {
        compression: Compression::Zstd,
        level: Some(22),
        threads: 1,
        cache: None,
        body_sha1: false,
    };
    let mut out = Vec::new();
    let err = write_image(&[], &opts, &mut out).unwrap_err();
    assert!(err.to_string().contains("zstd"), "{err}");
    assert!(out.is_empty());
}

#[test]
fn names_match_the_command_line_and_config_spelling() {
    #[derive(serde::Deserialize)]
    struct Cfg {
        c: Compression,
    }
    for c in ALL {
        let parsed = Compression::from_name(c.name()).expect("the name is known");
        assert_eq!(parsed, c, "from_name: {}", c.name());
        let cfg: Cfg = toml::from_str(&format!("c = \"{}\"", c.name())).expect("serde knows it");
        assert_eq!(cfg.c, c, "serde: {}", c.name());
    }
    assert_eq!(Compression::default(), Compression::Gzip);
}

/// The segment cache kept in `dir`, roomy.
fn roomy(dir: &Path) -> SegmentCache {
    SegmentCache::new(dir, 1 << 30)
}

#[test]
fn warm_builds_are_byte_identical_to_cold_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, _) = image(tmp.path());
    for c in ALL {
        let label = c.name();
        let cache = roomy(&tmp.path().join(label));
        let cold = build(&entries, c, 2, SMALL);
        let (filled, first) = build_cached(&entries, c, 1, SMALL, Some(&cache));
        assert!(filled == cold, "{label}: filling the cache changes nothing");
        assert_eq!(first.cached, 0, "{label}: nothing is cached at first");
        let several = c != Compression::None; // an uncompressed image is one archive
        assert_eq!(first.segments > 1, several, "{label}: segments");
        for threads in [1, 4] {
            let (warm, stats) = build_cached(&entries, c, threads, SMALL, Some(&cache));
            assert!(warm == cold, "{label}: warm build on {threads} threads");
            // An uncompressed image has nothing worth caching.
            let want = if c == Compression::None {
                0
            } else {
                stats.segments
            };
            assert_eq!(stats.cached, want, "{label}: segments from the cache");
        }
    }
}

#[test]
fn a_changed_file_recompresses_only_the_segments_around_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, _) = image(tmp.path());
    let mid = entries
        .iter()
        .position(|e| e.path == "usr/lib/py/m060.py")
        .expect("the test image has m060");
    for c in [Compression::Gzip, Compression::Zstd] {
        let label = c.name();
        let cache = roomy(&tmp.path().join(label));
        build_cached(&entries, c, 2, SMALL, Some(&cache));
        for (how, body) in [("same size", text(1000, 800)), ("grown", text(1001, 2500))] {
            let mut changed = entries.clone();
            changed[mid].kind = bytes(body);
            let (warm, stats) = build_cached(&changed, c, 2, SMALL, Some(&cache));
            assert!(
                warm == build(&changed, c, 1, SMALL),
                "{label} {how}: as cold"
            );
            let redone = stats.segments - stats.cached;
            assert!(
                (1..=2).contains(&redone),
                "{label} {how}: {redone} of {} segments compressed again",
                stats.segments
            );
        }
    }
}

/// Cache entries on disk, largest first.
fn cache_files(cache: &SegmentCache) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    files
}

#[test]
fn a_corrupted_cached_segment_is_detected_and_compressed_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, _) = image(tmp.path());
    for c in [Compression::Gzip, Compression::Xz] {
        let label = c.name();
        let cache = roomy(&tmp.path().join(label));
        let (cold, stats) = build_cached(&entries, c, 2, SMALL, Some(&cache));
        // The largest entry holds the big file, replayed in several pieces.
        let victim = cache_files(&cache).remove(0);
        let mut b = std::fs::read(&victim).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0x40;
        std::fs::write(&victim, &b).unwrap();
        let (warm, again) = build_cached(&entries, c, 2, SMALL, Some(&cache));
        assert!(
            warm == cold,
            "{label}: the damaged segment is compressed again"
        );
        assert_eq!(
            again.cached,
            stats.segments - 1,
            "{label}: one segment redone"
        );
        let (_, repaired) = build_cached(&entries, c, 2, SMALL, Some(&cache));
        assert_eq!(
            repaired.cached, stats.segments,
            "{label}: the entry is rewritten"
        );
    }
}

#[test]
fn a_full_cache_is_pruned_to_its_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, _) = image(tmp.path());
    let root = tmp.path().join("cache");
    let c = Compression::Gzip;
    let (cold, _) = build_cached(&entries, c, 2, SMALL, Some(&roomy(&root)));
    let full = roomy(&root).usage().unwrap();
    assert!(full.entries > 2, "{full:?}");
    let bounded = SegmentCache::new(&root, full.bytes / 2);
    bounded.prune().unwrap();
    let (warm, _) = build_cached(&entries, c, 2, SMALL, Some(&bounded));
    assert!(warm == cold, "a pruned cache changes nothing");
    bounded.prune().unwrap();
    let left = bounded.usage().unwrap();
    assert!(
        left.bytes <= full.bytes / 2 && left.entries > 0,
        "{left:?} of {full:?}"
    );
    // A limit of 0 turns the cache off: nothing is read or written.
    let off = SegmentCache::new(&tmp.path().join("off"), 0);
    let (image, stats) = build_cached(&entries, c, 2, SMALL, Some(&off));
    assert!(image == cold && stats.cached == 0);
    assert!(!off.dir().exists(), "no cache directory when off");
}

#[test]
fn a_forged_cached_segment_is_detected_and_the_image_stays_a_cold_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, _) = image(tmp.path());
    for c in [Compression::Gzip, Compression::Zstd] {
        let label = c.name();
        let cache = roomy(&tmp.path().join(label));
        let (cold, stats) = build_cached(&entries, c, 2, SMALL, Some(&cache));
        // What anyone who can write the cache can do: a member of their own making, framed
        // with the magic, its length and the digest computed from the public key and bytes.
        let mut forged_archive = Vec::new();
        let mut w = crate::archive::NewcWriter::new(&mut forged_archive);
        w.append(&entry("PWNED", bytes(b"owned\n".to_vec()), 999, 1))
            .unwrap();
        w.finish().unwrap();
        let member = match c {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&forged_archive).unwrap();
                e.finish().unwrap()
            }
            _ => zstd::encode_all(&forged_archive[..], 1).unwrap(),
        };
        let victims = cache_files(&cache);
        for victim in &victims {
            let key = hex::decode(victim.file_name().unwrap().to_str().unwrap()).unwrap();
            let mut h = Sha256::new();
            h.update(&key);
            h.update(&member);
            let mut file = cache::MAGIC.to_vec();
            file.extend(&member);
            file.extend((member.len() as u64).to_le_bytes());
            file.extend(h.finalize());
            std::fs::write(victim, &file).unwrap();
        }
        let (warm, again) = build_cached(&entries, c, 2, SMALL, Some(&cache));
        assert!(
            warm == cold,
            "{label}: the image is a cold build's, no /PWNED"
        );
        assert_eq!(again.cached, 0, "{label}: every forged segment redone");
        let (_, repaired) = build_cached(&entries, c, 2, SMALL, Some(&cache));
        assert_eq!(
            repaired.cached, stats.segments,
            "{label}: the entries are rewritten"
        );
    }
}
