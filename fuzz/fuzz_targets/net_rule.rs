//! Egress entries (`allow_out`/`deny_out`, E2B `allowOut`/`denyOut`): a
//! parsed rule prints back to an entry that parses to the same rule.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = godel_core::parse_net_rule("allow_out", s) {
        let again =
            godel_core::parse_net_rule("allow_out", &r.to_string()).expect("a printed rule parses");
        assert_eq!(again, r);
    }
});
