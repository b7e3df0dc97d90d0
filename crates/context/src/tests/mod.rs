#[cfg(not(nuncio_loom))]
mod context;
#[cfg(nuncio_loom)]
mod loom_context;
