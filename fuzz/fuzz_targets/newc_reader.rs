//! The reader behind `fledge inspect`: any bytes (segments of any compression, padding, garbage)
//! either walk to entries whose paths are absolute and free of `.`/`..` components, or fail with
//! a message; nothing panics and memory stays bounded. The hashing walk `fledge verify` uses
//! sees the same entries.
#![no_main]

use std::io::Write;

use fledge::inspect::reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::tempfile().expect("a temporary file");
    file.write_all(data).expect("write the input");
    let file = rewind(file);
    let mut count = 0u64;
    let walked = reader::walk(file, &mut |e| {
        count += 1;
        assert!(e.path.starts_with(b"/"), "relative path {:?}", e.path);
        for c in e.path.split(|&b| b == b'/').skip(1) {
            assert!(
                c != b"." && c != b"..",
                "path {:?} keeps a dot component",
                e.path
            );
        }
        Ok(())
    });
    if let Ok(summary) = &walked {
        assert_eq!(
            summary.entries, count,
            "summary disagrees with the entries seen"
        );
    }
    // `fledge verify` walks with hashing: the same entries, the same verdict, a digest for
    // every regular file.
    let mut again = tempfile::tempfile().expect("a temporary file");
    again.write_all(data).expect("write the input");
    let mut hashed = 0u64;
    let walked_hashing = reader::walk_hashing(rewind(again), &mut |e| {
        hashed += 1;
        let regular = e.mode & 0o170000 == 0o100000;
        assert_eq!(e.sha256.is_some(), regular, "digest of {:?}", e.path);
        Ok(())
    });
    assert_eq!(
        walked.is_ok(),
        walked_hashing.is_ok(),
        "hashing changes the verdict"
    );
    assert_eq!(count, hashed, "hashing changes the entries seen");
});

fn rewind(mut f: std::fs::File) -> std::fs::File {
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(0)).expect("rewind");
    f
}
