//! `POST /v1/runtimes` body: JSON into `SpawnSpec` (deny_unknown_fields), then
//! its validation. Must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<godel_core::SpawnSpec>(data) {
        let _ = spec.validate();
        let _ = serde_json::to_vec(&spec);
    }
});
