//! The module load list fledge-init reads: every accepted line prints back to a line that
//! parses to the same entry, and parsing never stops early.
#![no_main]

use fledge_abi::modules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut seen = 0usize;
    for item in modules::parse(text) {
        seen += 1;
        let Ok(m) = item else { continue };
        assert!(m.is_valid());
        let line = m.to_string();
        let mut back = modules::parse(&line);
        let again = back
            .next()
            .expect("a printed entry parses")
            .expect("and is valid");
        assert_eq!(again, m, "line {line:?}");
        assert!(
            back.next().is_none(),
            "one entry prints as one line: {line:?}"
        );
    }
    let lines = text.lines().count();
    assert!(seen <= lines, "{seen} entries from {lines} lines");
});
