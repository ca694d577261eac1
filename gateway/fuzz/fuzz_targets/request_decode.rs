//! Arbitrary bytes as one request frame through the gateway's decoding path: the prefix, API key,
//! advertised range, header, shape check and body (`keen_gateway::decode::decode_request`), and
//! for a Produce `keen_gateway::records::decode_batch` on each partition's records. See
//! `../harness.rs`; seed a corpus with
//! `cargo run -p keen-gateway --example fuzz_decode -- --write-corpus gateway/fuzz/corpus/request_decode`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::one_input(data);
});
