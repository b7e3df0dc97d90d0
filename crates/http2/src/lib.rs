//! nuncio's HTTP/2 server codec (RFC 9113, HPACK RFC 7541), sans I/O.
//!
//! Work in progress: see the modules.

mod error;
pub mod frame;
pub mod hpack;
mod request;
pub mod server;

pub use error::{Error, Reason, StreamError};
pub use request::Request;
pub use server::{BodyItem, Config, Connection};
