//! HPACK (RFC 7541): the header compression of HTTP/2.
//!
//! [`Decoder`] decodes the client's header blocks into `(name, value)`
//! callbacks, with the full dynamic table, strictly (every malformation is
//! a [`DecodeError`], which ends the connection with COMPRESSION_ERROR).
//! [`Encoder`] writes nuncio's response blocks using only the static table
//! and raw strings: no table bookkeeping or Huffman pass per request.
//! Neither allocates per field once its buffers have grown.
//!
//! ```
//! use bytes::BytesMut;
//! use nuncio_http2::hpack::{Decoder, Encoder};
//!
//! let mut encoder = Encoder::new();
//! let mut block = BytesMut::new();
//! encoder.start_block(&mut block);
//! encoder.encode_status(200, &mut block);
//! encoder.encode_field(b"content-type", b"text/plain", &mut block);
//!
//! let mut decoder = Decoder::new(4096);
//! let mut fields = Vec::new();
//! decoder.decode(&block, |name, value| fields.push((name.to_vec(), value.to_vec())))?;
//! assert_eq!(
//!     fields,
//!     [(b":status".to_vec(), b"200".to_vec()), (b"content-type".to_vec(), b"text/plain".to_vec())]
//! );
//! # Ok::<(), nuncio_http2::hpack::DecodeError>(())
//! ```

mod decoder;
mod encoder;
mod error;
pub mod huffman;
mod integer;
mod table;

#[cfg(test)]
mod tests;

pub use decoder::Decoder;
pub use encoder::Encoder;
pub use error::DecodeError;
