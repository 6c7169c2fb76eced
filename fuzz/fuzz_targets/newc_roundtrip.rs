//! Writer and reader agree: any list of entries, written by the newc writer and compressed as
//! `fledge build` does, reads back through the `inspect` reader as the same entries in the same
//! order (path, mode, owner, size, link target, device numbers).
#![no_main]

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use arbitrary::Arbitrary;
use fledge::archive::{Content, Entry, Kind};
use fledge::compress::{self, Compression, Options};
use fledge::inspect::reader;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Shape {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev(u8, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    compression: u8,
    threads: u8,
    entries: Vec<(String, Shape, u16, u16, u16)>,
}

/// A path the writer accepts: non-empty components without NUL, `.` or `..`, and not the
/// trailer's name (the writer refuses it: the kernel would not create it).
fn clean(name: &str) -> Option<String> {
    let parts: Vec<&str> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect();
    if parts.is_empty() || name.contains('\0') || parts == [fledge::archive::TRAILER] {
        return None;
    }
    Some(parts.join("/"))
}

fuzz_target!(|input: Input| {
    let compression = Compression::ALL[input.compression as usize % Compression::ALL.len()];
    let mut entries = Vec::new();
    for (i, (name, shape, perm, uid, gid)) in input.entries.into_iter().take(64).enumerate() {
        let Some(path) = clean(&name) else { continue };
        let kind = match shape {
            Shape::Dir => Kind::Dir,
            Shape::File(b) => Kind::File(Content::Bytes(Arc::from(b))),
            Shape::Symlink(t) if !t.is_empty() && !t.contains('\0') => Kind::Symlink(t),
            Shape::Symlink(_) => continue,
            Shape::CharDev(major, minor) => Kind::CharDev {
                major: major.into(),
                minor: minor.into(),
            },
        };
        entries.push(Entry {
            path: fledge::archive::Name::new(&path),
            kind,
            perm: u32::from(perm) & 0o7777,
            uid: uid.into(),
            gid: gid.into(),
            ino: i as u32 + 1,
            nlink: 1,
            mtime: 1_704_067_200,
        });
    }
    if entries.is_empty() {
        return;
    }
    let opts = Options {
        compression,
        level: None,
        threads: usize::from(input.threads % 3) + 1,
        cache: None,
        body_sha1: false,
    };
    let mut file = tempfile::tempfile().expect("a temporary file");
    compress::write_image(&entries, &opts, &mut file).expect("the writer takes clean entries");
    file.flush().unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut i = 0usize;
    reader::walk(file, &mut |got| {
        let want = &entries[i];
        i += 1;
        assert_eq!(got.path, format!("/{}", want.path).as_bytes());
        assert_eq!(got.mode, want.mode(), "{}", want.path);
        assert_eq!((got.uid, got.gid), (want.uid, want.gid), "{}", want.path);
        assert_eq!(got.size, want.body_len(), "{}", want.path);
        match &want.kind {
            Kind::Symlink(t) => assert_eq!(got.target, Some(t.as_bytes())),
            Kind::CharDev { major, minor } => assert_eq!(got.rdev, Some((*major, *minor))),
            _ => {}
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{compression:?} archive does not read back: {e:?}"));
    assert_eq!(i, entries.len(), "entries lost");
});
