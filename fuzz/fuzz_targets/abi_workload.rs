//! The workload spec fledge-init reads: whatever decodes re-encodes to a spec that decodes to
//! the same value.
#![no_main]

use fledge_abi::workload::Workload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(spec) = Workload::decode(text) else {
        return;
    };
    let again = spec
        .encode()
        .unwrap_or_else(|e| panic!("a decoded spec does not encode: {e:?}\n{spec:?}"));
    let back = Workload::decode(&again)
        .unwrap_or_else(|e| panic!("an encoded spec does not decode: {e:?}\n{again}"));
    assert_eq!(back, spec, "round trip changed the spec");
});
