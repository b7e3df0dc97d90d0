//! cargo-fuzz target; the checks live in `nuncio_http2::fuzzing::hpack`,
//! which the stable test suite (`tests/fuzzing.rs`) also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nuncio_http2::fuzzing::hpack(data));
