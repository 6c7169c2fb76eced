//! How `fledge inspect` prints an image: the `ls -l` style listing (one line per entry, written
//! as the entry is read), the indented tree and the JSON document (both from one small
//! [`Record`] per entry).
//!
//! Names come from the image and may hold any byte: in the listing and the tree every control
//! character, bidirectional override, backslash and invalid UTF-8 byte is escaped (`\n`, `\e`,
//! `\u{202e}`, `\\`, `\xff`), so a name can neither forge a line nor reach the terminal as an
//! escape sequence. JSON strings are escaped by JSON itself.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::reader::{Entry, LinkGroup, Summary};
use super::{file_type, FileType};
use crate::compress::Compression;

/// `name` with every byte that could disturb a terminal or the line structure escaped.
pub fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\x1b' => out.push_str("\\e"),
                c if (c as u32) < 0x100 && c.is_control() => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() || is_bidi_control(c) => {
                    out.push_str(&format!("\\u{{{:04x}}}", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Characters that reorder how a line is displayed (the "Trojan source" set).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `ls -l` style mode string: `drwxr-xr-x`.
pub fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(file_type(mode).letter());
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

/// One listing line: mode, owner, size (or device numbers), path, link target. A hardlink
/// member shows the size its own header carries (the body travels with one member), as
/// `cpio -tv` does.
pub fn line(out: &mut dyn Write, e: &Entry<'_>) -> io::Result<()> {
    let size = match e.rdev {
        Some((maj, min)) => format!("{maj},{min}"),
        None => e.size.to_string(),
    };
    let target = e
        .target
        .map(|t| format!(" -> {}", escape(t)))
        .unwrap_or_default();
    writeln!(
        out,
        "{} {:>3}/{:<3} {:>10} {}{}",
        mode_string(e.mode),
        e.uid,
        e.gid,
        size,
        escape(e.path),
        target
    )
}

/// What `--tree` and `--json` keep of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    #[serde(serialize_with = "lossy")]
    pub path: Box<[u8]>,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Body size; for a hardlink member, the size of the body its group shares.
    pub size: u64,
    pub ino: u32,
    pub nlink: u32,
    pub mtime: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "lossy_opt")]
    pub target: Option<Box<[u8]>>,
}

fn lossy<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn lossy_opt<S: serde::Serializer>(b: &Option<Box<[u8]>>, s: S) -> Result<S::Ok, S::Error> {
    lossy(b.as_deref().unwrap_or_default(), s)
}

/// Collects one [`Record`] per entry and gives each hardlink member its group's size.
#[derive(Debug, Default)]
pub struct Records {
    pub items: Vec<Record>,
    /// Per hardlink group: the largest body seen and the members' indices.
    groups: std::collections::HashMap<LinkGroup, (u64, Vec<u32>)>,
}

impl Records {
    pub fn add(&mut self, e: &Entry<'_>) {
        if let Some(g) = e.link_group {
            let (size, members) = self.groups.entry(g).or_default();
            *size = (*size).max(e.size);
            members.push(self.items.len() as u32);
        }
        self.items.push(Record {
            path: e.path.into(),
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            ino: e.ino,
            nlink: e.nlink,
            mtime: e.mtime,
            rdev: e.rdev,
            target: e.target.map(Into::into),
        });
    }

    /// The records, each hardlink member showing its group's body size.
    pub fn finish(mut self) -> Vec<Record> {
        for (size, members) in self.groups.into_values() {
            for i in members {
                self.items[i as usize].size = size;
            }
        }
        self.items
    }
}

/// Sums the sizes of the regular files under each directory (recursively), keyed by path; `/`
/// holds the total.
pub fn dir_sizes(items: &[Record]) -> BTreeMap<Vec<u8>, u64> {
    let mut sums: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    sums.insert(b"/".to_vec(), 0);
    for i in items.iter().filter(|i| file_type(i.mode) == FileType::Dir) {
        sums.entry(i.path.to_vec()).or_insert(0);
    }
    for i in items.iter().filter(|i| file_type(i.mode) == FileType::File) {
        let mut p: &[u8] = &i.path;
        while let Some(cut) = p.iter().rposition(|b| *b == b'/') {
            let parent = if cut == 0 { &b"/"[..] } else { &p[..cut] };
            *sums.entry(parent.to_vec()).or_insert(0) += i.size;
            if cut == 0 {
                break;
            }
            p = parent;
        }
    }
    sums
}

/// An indented tree, children under their directory, each line `size  name`; a directory's size
/// is the sum of the files under it.
pub fn tree(out: &mut dyn Write, items: &[Record]) -> io::Result<()> {
    let sums = dir_sizes(items);
    let mut sorted: Vec<&Record> = items.iter().filter(|i| &*i.path != b"/").collect();
    sorted.sort_by(|a, b| {
        a.path
            .split(|c| *c == b'/')
            .cmp(b.path.split(|c| *c == b'/'))
    });
    sorted.dedup_by(|a, b| a.path == b.path);
    writeln!(out, "{:>10}  /", sums[&b"/"[..]])?;
    for i in sorted {
        let depth = i.path.iter().filter(|b| **b == b'/').count();
        let name = i.path.rsplit(|b| *b == b'/').next().unwrap_or_default();
        let (size, suffix) = if file_type(i.mode) == FileType::Dir {
            (
                sums.get(&*i.path).copied().unwrap_or(0).to_string(),
                "/".into(),
            )
        } else if let Some((maj, min)) = i.rdev {
            (format!("{maj},{min}"), String::new())
        } else if let Some(t) = &i.target {
            (i.size.to_string(), format!(" -> {}", escape(t)))
        } else {
            (i.size.to_string(), String::new())
        };
        writeln!(
            out,
            "{size:>10}  {}{}{suffix}",
            "  ".repeat(depth),
            escape(name)
        )?;
    }
    Ok(())
}

/// The JSON document: compression, segments, items, directory sizes and the boot check.
pub fn json(
    out: &mut dyn Write,
    summary: &Summary,
    items: &[Record],
    problems: &[String],
) -> io::Result<()> {
    #[derive(Serialize)]
    struct Doc<'a> {
        /// The last compressed segment's compression, `none` for a plain image.
        compression: &'static str,
        segments: Vec<&'static str>,
        items: &'a [Record],
        dir_sizes: BTreeMap<String, u64>,
        boot_problems: &'a [String],
    }
    let doc = Doc {
        compression: summary
            .segments
            .iter()
            .rev()
            .find(|c| **c != Compression::None)
            .unwrap_or(&Compression::None)
            .name(),
        segments: summary.segments.iter().map(|c| c.name()).collect(),
        items,
        dir_sizes: dir_sizes(items)
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect(),
        boot_problems: problems,
    };
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::from)?;
    writeln!(out)
}
