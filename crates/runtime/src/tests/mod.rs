//! Loom models of the dispatcher's post queue and the slot machinery. Run
//! with `scripts/test` (or see its loom line): release mode,
//! `LOOM_MAX_PREEMPTIONS=2`, `--cfg nuncio_loom`.

mod loom_dispatcher;
mod loom_slots;
