//! Reading initramfs images back: `fledge inspect` lists, draws as a tree, prints as JSON or
//! boot-checks any image the kernel would unpack, ours or not.
//!
//! Three parts, one concern each: [`reader`] walks the segments and entries the way
//! `init/initramfs.c` does (it shares nothing with the writer on purpose, so tests can check
//! one against the other); [`format`] prints them with every name escaped; [`check`] decides
//! what would stop a boot. Memory stays bounded: the listing is written as the image is read,
//! `--tree` and `--json` keep one small record per entry, and the boot check a hash and a mode
//! per entry plus the symlinks.

pub mod check;
pub mod format;
pub mod reader;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use format::mode_string;
use reader::{Summary, WalkError};

/// An image that cannot be read, or a listing that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {problem}", path.display())]
    Format { path: PathBuf, problem: String },
    #[error("cannot write the listing of {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// What `fledge inspect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// One `ls -l` style line per entry.
    List,
    /// An indented tree with each directory's summed size.
    Tree,
    /// One JSON document.
    Json,
    /// Nothing: only the boot check.
    Check,
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub summary: Summary,
    /// The boot check's problems, one sentence each.
    pub problems: Vec<String>,
    /// The kernel modules of the load list, in order (printable lines); `None` without one.
    pub modules: Option<Vec<String>>,
    /// Default mode: fledge-init starts Volant's agent (and whether it supervises it).
    pub agent: Option<check::AgentStart>,
    /// The guest architecture `/init` is built for, when it is an ELF program of one.
    pub arch: Option<crate::arch::Arch>,
}

/// Reads the image at `path` and writes `view` of it to `out`.
pub fn run(path: &Path, view: View, out: &mut dyn Write) -> Result<Report, InspectError> {
    let read_err = |source| InspectError::Read {
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    if is_squashfs(&mut file).map_err(read_err)? {
        return run_walk(
            |sink| crate::squashfs::read::walk(file, false, sink),
            path,
            view,
            out,
        );
    }
    run_on(file, path, view, out)
}

/// Whether `file` starts with the squashfs magic (the position is left at the start).
pub fn is_squashfs(file: &mut File) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(n == 4 && &magic == crate::squashfs::MAGIC)
}

/// [`run`] on an image read from `image`; `path` names it in messages.
pub fn run_on(
    image: impl io::Read,
    path: &Path,
    view: View,
    out: &mut dyn Write,
) -> Result<Report, InspectError> {
    run_walk(|sink| reader::walk(image, sink), path, view, out)
}

type Sink<'s> = dyn FnMut(&reader::Entry<'_>) -> io::Result<()> + 's;

/// Lists, draws or checks what `walk` hands to its sink.
fn run_walk(
    walk: impl FnOnce(&mut Sink<'_>) -> Result<Summary, WalkError>,
    path: &Path,
    view: View,
    out: &mut dyn Write,
) -> Result<Report, InspectError> {
    let mut index = check::Index::default();
    let mut records = format::Records::default();
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let walked = walk(&mut |e| {
        index.add(e);
        match view {
            View::List => format::line(&mut out, e),
            View::Tree | View::Json => {
                records.add(e);
                Ok(())
            }
            View::Check => Ok(()),
        }
    });
    let summary = walked.map_err(|e| match e {
        WalkError::Read(source) => InspectError::Read {
            path: path.into(),
            source,
        },
        WalkError::Format(problem) => InspectError::Format {
            path: path.into(),
            problem,
        },
        WalkError::Sink(source) => InspectError::Write {
            path: path.into(),
            source,
        },
    })?;
    let problems = index.problems();
    let modules = index.modules();
    let items = records.finish();
    let written = match view {
        View::Tree => format::tree(&mut out, &items),
        View::Json => format::json(&mut out, &summary, &items, &problems),
        View::List | View::Check => Ok(()),
    };
    let written = match (&modules, view) {
        (Some(list), View::List | View::Tree) => {
            written.and_then(|()| module_section(&mut out, list))
        }
        _ => written,
    };
    written
        .and_then(|()| out.flush())
        .map_err(|source| InspectError::Write {
            path: path.into(),
            source,
        })?;
    Ok(Report {
        summary,
        problems,
        modules,
        agent: index.agent_start(),
        arch: index.init_arch(),
    })
}

/// The load list after the listing: `kernel modules (PATH, load order):` and one line each.
fn module_section(out: &mut dyn Write, lines: &[String]) -> io::Result<()> {
    let list = fledge_abi::paths::MODULES_LOAD;
    writeln!(out, "kernel modules ({list}, load order):")?;
    lines.iter().try_for_each(|l| writeln!(out, "  {l}"))
}

/// The type of an entry, from its `st_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
    /// Type bits no Linux file has.
    Unknown,
}

/// Each type's `st_mode` bits, `ls` letter and name in sentences.
const TYPES: [(u32, FileType, char, &str); 7] = [
    (0o100000, FileType::File, '-', "a regular file"),
    (0o040000, FileType::Dir, 'd', "a directory"),
    (0o120000, FileType::Symlink, 'l', "a symlink"),
    (0o020000, FileType::CharDev, 'c', "a character device"),
    (0o060000, FileType::BlockDev, 'b', "a block device"),
    (0o010000, FileType::Fifo, 'p', "a FIFO"),
    (0o140000, FileType::Socket, 's', "a socket"),
];

/// The file type bits of `st_mode`.
const S_IFMT: u32 = 0o170000;

/// The type `mode` says.
pub fn file_type(mode: u32) -> FileType {
    TYPES
        .iter()
        .find(|t| t.0 == mode & S_IFMT)
        .map_or(FileType::Unknown, |t| t.1)
}

impl FileType {
    fn row(self) -> Option<&'static (u32, FileType, char, &'static str)> {
        TYPES.iter().find(|t| t.1 == self)
    }

    /// The `ls -l` letter.
    pub fn letter(self) -> char {
        self.row().map_or('?', |t| t.2)
    }

    /// `a directory`, `a symlink`, ...
    pub fn name(self) -> &'static str {
        self.row().map_or("of an unknown type", |t| t.3)
    }
}

#[cfg(test)]
mod tests;
