//! Stats (work in progress).
