//! cargo-fuzz target; the checks live in `nuncio_http1::fuzzing::connection`,
//! which the proptest suite also runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nuncio_http1::fuzzing::connection(data));
