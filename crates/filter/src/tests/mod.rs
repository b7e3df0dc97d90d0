//! Loom models of the stream handle. Run with
//! `RUSTFLAGS="--cfg nuncio_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p nuncio-filter --lib loom`
//! (`scripts/test` runs it with the other crates' models).

mod loom_handle;
