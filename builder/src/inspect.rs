//! Reading initramfs images back: lists what any newc archive holds, plain or compressed with
//! gzip, zstd, xz or lz4, ours or not (an uncompressed archive in front, as early-microcode images
//! have, is read too).
//!
//! This module owns the newc *reader*; it shares nothing with the writer on purpose, so tests can
//! check one against the other.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::TRAILER;
use crate::compress::{self, Compression};
use fledge_abi::paths::VOLANT_INIT as VOLANT_INIT_PATH;

/// An image that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {problem}", path.display())]
    Format { path: PathBuf, problem: String },
}

/// One entry of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Path inside the image, with a leading `/`.
    pub path: String,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub ino: u32,
    pub nlink: u32,
    pub mtime: u32,
    /// Device numbers of a device node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// Target of a symlink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Body of a small file the boot check reads (`/.volant_init`); `None` for all others.
    #[serde(skip)]
    pub body: Option<Vec<u8>>,
}

impl Item {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & 0o170000 == 0o120000
    }
    pub fn is_char_device(&self) -> bool {
        self.mode & 0o170000 == 0o020000
    }
}

/// What an image holds.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// Compression of the (last) compressed part; `none` for a plain archive.
    #[serde(serialize_with = "compression_name")]
    pub compression: Compression,
    pub items: Vec<Item>,
}

/// Lists the entries of the image at `path`.
pub fn read(path: &Path) -> Result<Listing, InspectError> {
    let read_err = |source| InspectError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut items = Vec::new();
    let fmt = |problem: String| InspectError::Format {
        path: path.to_path_buf(),
        problem,
    };

    // A plain archive first (alone, or in front of a compressed one).
    let head = r.fill_buf().map_err(read_err)?;
    if head.is_empty() {
        return Err(fmt("is empty, not an initramfs".into()));
    }
    let mut compression = Compression::None;
    if compress::detect(head) == Some(Compression::None) {
        read_entries(&mut r, &mut items, true).map_err(|p| fmt(p.to_string()))?;
    }
    let head = r.fill_buf().map_err(read_err)?;
    if !head.is_empty() {
        let c = compress::detect(head).filter(|c| *c != Compression::None).ok_or_else(|| {
            fmt(format!(
                "not an initramfs: unknown data starting {:02x?} (expected a newc cpio archive, plain or compressed with gzip, zstd, xz or lz4)",
                &head[..head.len().min(6)]
            ))
        })?;
        compression = c;
        let mut d = BufReader::with_capacity(1 << 16, compress::decoder(c, Box::new(r)));
        read_entries(&mut d, &mut items, false)
            .map_err(|p| fmt(format!("in the {} data: {p}", c.name())))?;
    }
    if items.is_empty() {
        return Err(fmt("holds no entries".into()));
    }
    link_sizes(&mut items);
    Ok(Listing { compression, items })
}

/// Reads archives (each ended by a trailer, separated by NUL padding) until EOF, or, with
/// `stop_at_non_cpio`, until something that is not a cpio header follows a trailer.
fn read_entries<R: BufRead>(
    r: &mut R,
    items: &mut Vec<Item>,
    stop_at_non_cpio: bool,
) -> Result<(), String> {
    let io = |e: io::Error| e.to_string();
    let mut offset: u64 = 0;
    loop {
        // Skip the NUL padding between archives.
        loop {
            let buf = r.fill_buf().map_err(io)?;
            if buf.is_empty() {
                return Ok(());
            }
            let zeros = buf.iter().take_while(|b| **b == 0).count();
            let done = zeros < buf.len();
            r.consume(zeros);
            offset += zeros as u64;
            if done {
                break;
            }
        }
        if stop_at_non_cpio && !r.fill_buf().map_err(io)?.starts_with(b"0707") {
            return Ok(());
        }
        let mut h = [0u8; 110];
        r.read_exact(&mut h)
            .map_err(|e| format!("truncated header at offset {offset}: {e}"))?;
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return Err(format!(
                "bad cpio magic {:?} at offset {offset} (only newc is supported)",
                String::from_utf8_lossy(&h[..6])
            ));
        }
        let field = |i: usize| -> Result<u32, String> {
            let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).map_err(|e| e.to_string())?;
            u32::from_str_radix(s, 16)
                .map_err(|_| format!("bad header field {s:?} at offset {offset}"))
        };
        let (ino, mode, uid, gid, nlink, mtime, size) = (
            field(0)?,
            field(1)?,
            field(2)?,
            field(3)?,
            field(4)?,
            field(5)?,
            field(6)? as u64,
        );
        let (rmaj, rmin, namesize) = (field(9)?, field(10)?, field(11)? as usize);
        // Names and link targets are paths: a header claiming more is damage, not data.
        if namesize > PATH_MAX || (mode & 0o170000 == 0o120000 && size > PATH_MAX as u64) {
            return Err(format!(
                "entry at offset {offset} claims a {}-byte name or link target (at most {PATH_MAX})",
                namesize.max(size as usize)
            ));
        }
        let mut name = vec![0u8; namesize];
        r.read_exact(&mut name)
            .map_err(|e| format!("truncated name at offset {offset}: {e}"))?;
        name.pop();
        let name = String::from_utf8_lossy(&name).into_owned();
        let head_len = 110 + namesize as u64;
        skip(r, pad4(head_len) - head_len).map_err(io)?;
        offset += pad4(head_len);
        if name == TRAILER {
            continue;
        }
        let is_link = mode & 0o170000 == 0o120000;
        let path = format!("/{}", name.trim_start_matches("./").trim_start_matches('/'));
        let path = if path == "/." { "/".to_string() } else { path };
        let keep_body = !is_link && path == VOLANT_INIT_PATH && size <= 4096;
        let mut body = None;
        let target = if is_link {
            let mut t = vec![0u8; size as usize];
            r.read_exact(&mut t)
                .map_err(|e| format!("truncated symlink {name}: {e}"))?;
            Some(String::from_utf8_lossy(&t).into_owned())
        } else if keep_body {
            let mut b = vec![0u8; size as usize];
            r.read_exact(&mut b)
                .map_err(|e| format!("truncated body of {name}: {e}"))?;
            body = Some(b);
            None
        } else {
            let n = io::copy(&mut r.by_ref().take(size), &mut io::sink()).map_err(io)?;
            if n != size {
                return Err(format!("truncated body of {name} ({n} of {size} bytes)"));
            }
            None
        };
        skip(r, pad4(size) - size).map_err(io)?;
        offset += pad4(size);
        let is_dev = matches!(mode & 0o170000, 0o020000 | 0o060000);
        items.push(Item {
            path,
            mode,
            uid,
            gid,
            size,
            ino,
            nlink,
            mtime,
            rdev: is_dev.then_some((rmaj, rmin)),
            target,
            body,
        });
    }
}

fn compression_name<S: serde::Serializer>(c: &Compression, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.name())
}

/// Hardlinked files carry their body once (on the last member); every member is that file, so
/// each shows the body's size.
fn link_sizes(items: &mut [Item]) {
    let mut sizes: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for i in items.iter().filter(|i| i.is_file() && i.nlink > 1) {
        let s = sizes.entry(i.ino).or_default();
        *s = (*s).max(i.size);
    }
    for i in items.iter_mut().filter(|i| i.is_file() && i.nlink > 1) {
        i.size = sizes[&i.ino];
    }
}

/// Longest path Linux accepts, NUL included.
const PATH_MAX: usize = 4096;

fn pad4(n: u64) -> u64 {
    (n + 3) & !3
}

fn skip<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    io::copy(&mut r.take(n), &mut io::sink()).map(|_| ())
}

/// `ls -l` style mode string: `drwxr-xr-x`.
pub fn mode_string(mode: u32) -> String {
    let t = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        let set = mode & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

/// One line per entry: mode, owner, size (or device numbers), path, link target.
pub fn format_listing(items: &[Item]) -> String {
    let mut out = String::new();
    for i in items {
        let size = match i.rdev {
            Some((maj, min)) => format!("{maj},{min}"),
            None => i.size.to_string(),
        };
        let target = i
            .target
            .as_deref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{} {:>3}/{:<3} {:>10} {}{}\n",
            mode_string(i.mode),
            i.uid,
            i.gid,
            size,
            i.path,
            target
        ));
    }
    out
}

/// Sums the sizes of the regular files under each directory (recursively), keyed by path; `/`
/// holds the total.
pub fn dir_sizes(items: &[Item]) -> BTreeMap<String, u64> {
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    sums.insert("/".into(), 0);
    for i in items.iter().filter(|i| i.is_dir()) {
        sums.entry(i.path.clone()).or_insert(0);
    }
    for i in items.iter().filter(|i| i.is_file()) {
        let mut p = i.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            let parent = if parent.is_empty() { "/" } else { parent };
            *sums.entry(parent.to_string()).or_insert(0) += i.size;
            if parent == "/" {
                break;
            }
            p = parent;
        }
    }
    sums
}

/// An indented tree, children under their directory, each line `size  name`; a directory's size
/// is the sum of the files under it.
pub fn format_tree(items: &[Item]) -> String {
    let sums = dir_sizes(items);
    let mut sorted: Vec<&Item> = items.iter().filter(|i| i.path != "/").collect();
    sorted.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    sorted.dedup_by(|a, b| a.path == b.path);
    let mut out = format!("{:>10}  /\n", sums["/"]);
    for i in sorted {
        let depth = i.path.matches('/').count();
        let name = i.path.rsplit('/').next().unwrap_or_default();
        let (size, suffix) = if i.is_dir() {
            (
                sums.get(&i.path).copied().unwrap_or(0).to_string(),
                "/".to_string(),
            )
        } else if let Some((maj, min)) = i.rdev {
            (format!("{maj},{min}"), String::new())
        } else if let Some(t) = &i.target {
            (i.size.to_string(), format!(" -> {t}"))
        } else {
            (i.size.to_string(), String::new())
        };
        out.push_str(&format!(
            "{size:>10}  {}{name}{suffix}\n",
            "  ".repeat(depth)
        ));
    }
    out
}

/// Directories whose programs are linked to busybox applets or the agent: a dangling link here
/// breaks commands the guest runs.
const BIN_DIRS: &[&str] = &["/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/"];

/// What would break a boot of this image, one sentence each; empty when it looks bootable.
///
/// Checks: `/init` exists, is a regular file (or a symlink to one) and is executable;
/// `/dev/console` is a character device (the kernel opens it for PID 1's stdio); symlinks in or
/// into `/bin`, `/sbin`, `/usr/bin`, `/usr/sbin` resolve inside the image; `/.volant_init`
/// names a path that exists.
pub fn boot_check(items: &[Item]) -> Vec<String> {
    let by_path: BTreeMap<&str, &Item> = items.iter().map(|i| (i.path.as_str(), i)).collect();
    let mut problems = Vec::new();
    match by_path.get("/init") {
        None => problems.push(
            "/init is missing: the kernel has nothing to run as PID 1 (map your init program to /init, or use fledge's default or custom init mode)".to_string(),
        ),
        Some(init) => match resolve(&by_path, "/init") {
            Err(why) => problems.push(format!("/init {why}")),
            Ok(target) if !target.is_file() => problems.push(format!(
                "/init is not a regular file (it is {}): the kernel can only execute a file",
                kind_name(target)
            )),
            Ok(target) if target.mode & 0o111 == 0 => problems.push(format!(
                "/init is not executable (mode {}{}): the kernel cannot run it as PID 1; give it mode 0755",
                mode_string(target.mode),
                if init.is_symlink() { format!(", via {}", target.path) } else { String::new() }
            )),
            Ok(_) => {}
        },
    }
    match by_path.get("/dev/console") {
        Some(c) if c.is_char_device() => {}
        Some(c) => problems.push(format!(
            "/dev/console is {}, not a character device: PID 1 would start without a console; it should be c 5,1",
            kind_name(c)
        )),
        None => problems.push(
            "/dev/console is missing: PID 1 would start without a console (the kernel opens it before running /init); add a character device 5,1".to_string(),
        ),
    }
    for i in items.iter().filter(|i| i.is_symlink() && i.path != "/init") {
        let target = i.target.as_deref().unwrap_or_default();
        let absolute = absolute_target(&i.path, target);
        let in_bin = |p: &str| BIN_DIRS.iter().any(|d| p.starts_with(d));
        if !(in_bin(&i.path) || in_bin(&absolute)) {
            continue;
        }
        if let Err(why) = resolve(&by_path, &i.path) {
            problems.push(format!("{} -> {target} {why}", i.path));
        }
    }
    if let Some(v) = by_path.get(VOLANT_INIT_PATH) {
        let named = v
            .body
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
            .unwrap_or_default();
        if named.is_empty() {
            problems.push(format!(
                "{VOLANT_INIT_PATH} is empty: fledge-init reads the custom init's path from it"
            ));
        } else {
            match resolve(&by_path, &named) {
                Err(_) => problems.push(format!(
                    "{VOLANT_INIT_PATH} names {named}, which is not in the image: fledge-init would have no init to run; map your init program to {named}"
                )),
                Ok(t) if !t.is_file() || t.mode & 0o111 == 0 => problems.push(format!(
                    "{VOLANT_INIT_PATH} names {named}, which is not an executable file ({})",
                    mode_string(t.mode)
                )),
                Ok(_) => {}
            }
        }
    }
    problems
}

fn kind_name(i: &Item) -> &'static str {
    match i.mode & 0o170000 {
        0o040000 => "a directory",
        0o120000 => "a symlink",
        0o020000 => "a character device",
        0o060000 => "a block device",
        0o010000 => "a FIFO",
        0o140000 => "a socket",
        _ => "a regular file",
    }
}

/// The absolute, `.`/`..`-free path a symlink at `link` with `target` points to.
fn absolute_target(link: &str, target: &str) -> String {
    let base = if target.starts_with('/') {
        String::new()
    } else {
        link.rsplit_once('/')
            .map(|(d, _)| d)
            .unwrap_or("")
            .to_string()
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in base.split('/').chain(target.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Follows symlinks inside the image (up to 40) to the item `path` ends at; the error says why
/// it does not exist, as the end of a sentence starting with the path (`is missing`, ...).
fn resolve<'a>(by_path: &BTreeMap<&str, &'a Item>, path: &str) -> Result<&'a Item, String> {
    let mut cur = path.to_string();
    for _ in 0..40 {
        match by_path.get(cur.as_str()) {
            None if cur == path => return Err("is missing".into()),
            None => return Err(format!("points to {cur}, which is not in the image")),
            Some(i) if i.is_symlink() => {
                cur = absolute_target(&i.path, i.target.as_deref().unwrap_or_default());
            }
            Some(i) => return Ok(i),
        }
    }
    Err("is a symlink loop".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Content, Entry, Kind, NewcWriter};
    use std::sync::Arc;

    fn entry(path: &str, kind: Kind, perm: u32, ino: u32) -> Entry {
        Entry {
            path: path.into(),
            kind,
            perm,
            uid: 0,
            gid: 0,
            ino,
            nlink: 1,
            mtime: 7,
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new());
        for e in [
            entry("bin", Kind::Dir, 0o755, 1),
            entry("bin/sh", Kind::Symlink("busybox".into()), 0o777, 2),
            entry("dev", Kind::Dir, 0o755, 3),
            entry(
                "dev/console",
                Kind::CharDev { major: 5, minor: 1 },
                0o600,
                4,
            ),
            entry(
                "init",
                Kind::File(Content::Bytes(Arc::from(&b"hello"[..]))),
                0o755,
                5,
            ),
        ] {
            w.append(&e).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn hardlinks_show_their_size_and_absurd_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = NewcWriter::new(Vec::new());
        let mut a = entry("a", Kind::File(Content::Empty), 0o644, 9);
        let mut b = entry(
            "b",
            Kind::File(Content::Bytes(Arc::from(&b"abc"[..]))),
            0o644,
            9,
        );
        a.nlink = 2;
        b.nlink = 2;
        w.append(&a).unwrap();
        w.append(&b).unwrap();
        let p = dir.path().join("links");
        std::fs::write(&p, w.finish().unwrap()).unwrap();
        let sizes: Vec<u64> = read(&p).unwrap().items.iter().map(|i| i.size).collect();
        assert_eq!(sizes, [3, 3]);

        let mut bad = b"070701".to_vec();
        for v in [1u32, 0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x10000, 0] {
            bad.extend(format!("{v:08X}").bytes());
        }
        bad.resize(1024, b'x');
        std::fs::write(&p, &bad).unwrap();
        let msg = read(&p).unwrap_err().to_string();
        assert!(msg.contains("claims a 65536-byte name"), "{msg}");
    }

    #[test]
    fn reads_back_what_the_writer_wrote_plain_and_gzip_and_concatenated() {
        let dir = tempfile::tempdir().unwrap();
        let plain = sample();
        assert_eq!(plain.len() % 512, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut both = plain.clone();
        both.extend_from_slice(&gz);
        both.extend_from_slice(&gz);
        for (name, bytes, n, c) in [
            ("plain", &plain, 5, Compression::None),
            ("gz", &gz, 5, Compression::Gzip),
            ("both", &both, 15, Compression::Gzip),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let l = read(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(l.items.len(), n, "{name}");
            assert_eq!(l.compression, c, "{name}");
            let text = format_listing(&l.items[..5]);
            assert_eq!(
                text,
                "drwxr-xr-x   0/0            0 /bin\n\
                 lrwxrwxrwx   0/0            7 /bin/sh -> busybox\n\
                 drwxr-xr-x   0/0            0 /dev\n\
                 crw-------   0/0          5,1 /dev/console\n\
                 -rwxr-xr-x   0/0            5 /init\n",
                "{name}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk");
        std::fs::write(&p, b"PK\x03\x04 not an image").unwrap();
        let msg = read(&p).unwrap_err().to_string();
        assert!(
            msg.contains("junk") && msg.contains("not an initramfs"),
            "{msg}"
        );
        let mut cut = sample();
        cut.truncate(200);
        std::fs::write(&p, &cut).unwrap();
        let msg = read(&p).unwrap_err().to_string();
        assert!(msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn mode_strings() {
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
    }

    fn item(path: &str, mode: u32, size: u64, target: Option<&str>) -> Item {
        Item {
            path: path.into(),
            mode,
            uid: 0,
            gid: 0,
            size,
            ino: 0,
            nlink: 1,
            mtime: 0,
            rdev: None,
            target: target.map(str::to_string),
            body: None,
        }
    }

    #[test]
    fn symlink_targets_resolve_like_the_kernel_would() {
        assert_eq!(absolute_target("/bin/sh", "busybox"), "/bin/busybox");
        assert_eq!(absolute_target("/etc/rc", "../bin/./rc"), "/bin/rc");
        assert_eq!(absolute_target("/init", "/sbin/../init2"), "/init2");
        assert_eq!(absolute_target("/a", "../../x"), "/x");
    }

    #[test]
    fn boot_check_follows_init_links_and_catches_loops() {
        let console = Item {
            rdev: Some((5, 1)),
            ..item("/dev/console", 0o020600, 0, None)
        };
        let good = vec![
            item("/init", 0o120777, 9, Some("sbin/init")),
            item("/sbin/init", 0o100755, 3, None),
            console.clone(),
        ];
        assert_eq!(boot_check(&good), Vec::<String>::new());
        let looped = vec![item("/init", 0o120777, 5, Some("/init")), console];
        assert_eq!(boot_check(&looped), ["/init is a symlink loop"]);
    }

    #[test]
    fn dir_sizes_sum_files_only() {
        let items = vec![
            item("/a", 0o040755, 0, None),
            item("/a/f", 0o100644, 10, None),
            item("/a/b/g", 0o100644, 5, None),
            item("/a/l", 0o120777, 7, Some("f")),
        ];
        let s = dir_sizes(&items);
        assert_eq!((s["/"], s["/a"], s["/a/b"]), (15, 15, 5));
    }
}
