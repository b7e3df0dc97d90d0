//! cargo-fuzz target; the checks live in `nuncio_fuzz_checks::abi`,
//! which the test suite also runs on stable (fuzz/checks/tests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nuncio_fuzz_checks::abi(data));
