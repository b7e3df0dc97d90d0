//! The header in the repository is the one the Rust definitions write: a
//! change to either without the other fails here. `NUNCIO_BLESS=1`
//! rewrites the file from the definitions.

#[test]
fn the_header_matches_the_rust_definitions() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include/nuncio_filter.h");
    let expected = nuncio_filter_abi::abi::header();
    if std::env::var_os("NUNCIO_BLESS").is_some() {
        std::fs::write(&path, &expected).expect("write the header");
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        let line = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .map_or_else(|| actual.lines().count().min(expected.lines().count()) + 1, |i| i + 1);
        panic!(
            "{} differs from the ABI in crates/filter-abi/src/abi.rs from line {line}:\n  file: {:?}\n  abi:  {:?}\n\
             Change the Rust definitions, then run `NUNCIO_BLESS=1 cargo test -p nuncio-filter-abi --test header` \
             (and rebuild the Go libraries against the new header).",
            path.display(),
            actual.lines().nth(line - 1).unwrap_or(""),
            expected.lines().nth(line - 1).unwrap_or(""),
        );
    }
}
