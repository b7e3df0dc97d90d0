//! Built-in filters (work in progress).
