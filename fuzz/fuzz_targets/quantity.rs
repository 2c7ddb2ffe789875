//! Quantities in request bodies and flags: CPU (`500m`, `2`) and bytes
//! (`512Mi`, `10G`). Parsing never panics or overflows; a parsed value
//! prints back to something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = godel_core::parse_cpu(s) {
        let again = godel_core::parse_cpu(&c.to_string()).expect("a printed CPU parses");
        assert_eq!(again, c);
    }
    if let Ok(b) = godel_core::parse_bytes(s) {
        let again = godel_core::parse_bytes(&b.to_string()).expect("printed bytes parse");
        assert_eq!(again, b);
    }
});
