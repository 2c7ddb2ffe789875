//! The E2B envd Connect protocol: the stream envelope decoder fed the bytes
//! in two chunks, then each codec decoding a process start request.
#![no_main]

use godel_e2b::connect::{Codec, EnvelopeDecoder};
use godel_e2b::pb::process::StartRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut d = EnvelopeDecoder::new();
    d.push(&data[..cut]);
    d.push(&data[cut..]);
    while let Ok(Some(e)) = d.next_envelope() {
        let _ = e.is_end();
        let _ = e.data();
    }
    for codec in [Codec::Json, Codec::Proto] {
        let _ = codec.decode::<StartRequest>(data);
    }
});
