//! fledge-init's options (the baked file and the kernel command line): what is kept is valid,
//! every warning is for one token, and applying the same text again changes nothing but the
//! repeatable `fledge.env` list, which grows by the same entries.
#![no_main]

use fledge_abi::workload;
use fledge_init::cmdline::Options;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut once = Options::default();
    let mut warnings = Vec::new();
    once.apply(text, &mut warnings);
    if let Some(cwd) = &once.cwd {
        assert!(cwd.starts_with('/'), "cwd {cwd:?}");
    }
    if let Some(name) = &once.hostname {
        assert!(workload::valid_hostname(name), "hostname {name:?}");
    }
    assert!(
        once.env.iter().all(|e| workload::valid_env(e)),
        "{:?}",
        once.env
    );
    assert!(once.nofile != Some(0));
    let tokens = text.split_whitespace().count();
    assert!(
        warnings.len() <= tokens,
        "{} warnings, {tokens} tokens",
        warnings.len()
    );

    let mut twice = once.clone();
    let mut again = Vec::new();
    twice.apply(text, &mut again);
    assert_eq!(again, warnings);
    let n = once.env.len();
    assert_eq!(twice.env.len(), 2 * n);
    assert_eq!(twice.env[..n], once.env[..]);
    assert_eq!(twice.env[n..], once.env[..]);
    twice.env.truncate(n);
    assert_eq!(twice, once);
});
