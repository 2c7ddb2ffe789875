//! The E2B `POST /sandboxes` body: JSON into `NewSandbox`, and what parses
//! serializes and parses back to the same value.
#![no_main]

use godel_e2b::wire::NewSandbox;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<NewSandbox>(data) {
        let text = serde_json::to_vec(&req).expect("serializes");
        let again: NewSandbox = serde_json::from_slice(&text).expect("parses back");
        assert_eq!(again, req);
    }
});
