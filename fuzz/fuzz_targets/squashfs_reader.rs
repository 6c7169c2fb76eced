//! The squashfs reader behind `fledge inspect` and `fledge verify` of a disk: any bytes either
//! walk to entries whose paths are absolute and free of empty, `.` and `..` components, parents
//! first, or fail with a message; nothing panics, loops or grows without bound. Hashing changes
//! nothing a walk that passes sees.
#![no_main]

use std::io::Cursor;

use fledge::squashfs::read;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut paths: Vec<Vec<u8>> = Vec::new();
    let walked = read::walk(Cursor::new(data), false, &mut |e| {
        assert!(e.path.starts_with(b"/"), "relative path {:?}", e.path);
        for c in e.path.split(|&b| b == b'/').skip(1) {
            assert!(
                !c.is_empty() && c != b"." && c != b"..",
                "path {:?} has an empty or dot component",
                e.path
            );
        }
        if let Some(cut) = e.path.iter().rposition(|&b| b == b'/').filter(|&i| i > 0) {
            assert!(
                paths.iter().any(|p| p[..] == e.path[..cut]),
                "{:?} comes before its parent",
                e.path
            );
        }
        paths.push(e.path.to_vec());
        Ok(())
    });
    let mut hashed = 0usize;
    let again = read::walk(Cursor::new(data), true, &mut |e| {
        hashed += 1;
        assert_eq!(
            e.sha256.is_some(),
            e.mode & 0o170000 == 0o100000,
            "digest of {:?}",
            e.path
        );
        Ok(())
    });
    // Hashing reads every body, so it may find a corrupt block the listing never reads; when
    // it passes, the listing passes with the same entries.
    if again.is_ok() {
        assert!(walked.is_ok(), "hashing passes where the listing fails");
        assert_eq!(paths.len(), hashed, "hashing changes the entries seen");
    }
});
