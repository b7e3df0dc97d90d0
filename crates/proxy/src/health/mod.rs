//! Endpoint health, decided on main: active health checks ([`checks`]) and
//! passive outlier detection ([`outlier`]). Both change an endpoint's
//! status in `cluster::hosts`, which reaches every worker through the host
//! slot; workers only read it (and report runs of failures).
//!
//! Apart from `cluster` because they follow the running config (the
//! snapshot slot), which itself is built from `cluster`'s shared state.

pub(crate) mod checks;
pub(crate) mod outlier;
