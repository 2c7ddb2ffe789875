//! `POST /v1/runtimes/{id}/exec` body: JSON into `ExecRequest`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<godel_core::ExecRequest>(data) {
        let _ = serde_json::to_vec(&req);
    }
});
