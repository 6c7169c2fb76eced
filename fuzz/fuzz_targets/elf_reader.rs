//! The ELF reader behind the library closure (`libs::elf::read`): whatever the bytes, it answers
//! (an ELF file, a script, neither, or an error), the same way twice, with names that hold no
//! NUL and no more entries than the reader's bounds.
#![no_main]

use std::io::Cursor;

use fledge::libs::elf::{self, Exec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = elf::read(Cursor::new(data));
    let second = elf::read(Cursor::new(data));
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("two reads of the same bytes differ: {first:?} / {second:?}"),
    }
    match first {
        Ok(Exec::Elf(e)) => {
            let d = &e.dynamic;
            assert!(d.needed.len() <= 1 << 16);
            let names = d.needed.iter().chain(
                [&d.interp, &d.soname, &d.rpath, &d.runpath]
                    .into_iter()
                    .flatten(),
            );
            for n in names {
                assert!(!n.contains('\0'), "{n:?}");
            }
            assert!(data.starts_with(b"\x7fELF"));
        }
        Ok(Exec::Script { interp, arg }) => {
            assert!(data.starts_with(b"#!"));
            assert!(
                !interp.is_empty() && !interp.contains(['\n', ' ', '\t']),
                "{interp:?}"
            );
            assert!(arg.is_none_or(|a| !a.is_empty() && !a.contains('\n')));
            // Lossy UTF-8: each byte is at most one character.
            assert!(interp.chars().count() <= elf::SHEBANG_MAX);
        }
        Ok(Exec::Other) | Err(_) => {}
    }
});
