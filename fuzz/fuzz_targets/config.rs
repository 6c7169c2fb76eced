//! `fledge.toml` parsing and validation: no input panics, and every error message is one line
//! that names the file.
#![no_main]

use std::path::Path;

use fledge::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let file = Path::new("/fuzz/fledge.toml");
    if let Err(e) = Config::from_str(text, file) {
        let msg = e.to_string();
        assert!(msg.contains("fledge.toml"), "error without the file: {msg}");
    }
});
