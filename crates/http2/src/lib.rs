//! nuncio's HTTP/2 server codec (RFC 9113, with HPACK, RFC 7541), sans
//! I/O: what serves a client's HTTP/2 connection, h2c or `h2` over TLS.
//!
//! **Why nuncio's own.** The `h2` crate's server cost ~25,000 instructions
//! a request on top of nuncio's HTTP/1.1 path (`bench/instructions --h2`:
//! its stream store and prioritisation queues, an HPACK encoder that
//! indexes every value, frames moved by value through several layers).
//! A proxy relaying one request at a time per stream needs less: frames
//! decoded in place, header values sharing one buffer, a response head
//! encoded straight into the output, no prioritisation. The upstream side
//! (nuncio as an HTTP/2 client) still uses `h2`.
//!
//! **Sans I/O.** [`Connection`] owns no socket and spawns nothing: the
//! caller reads into a `BytesMut` and hands it to [`Connection::recv`],
//! takes the requests that opened streams with [`Connection::accept`], and
//! writes [`Connection::output`]. Each stream's side is a method taking the
//! stream's id, with a `poll_` form where it may have to wait (the body,
//! window for response data, a reset): the connection keeps one
//! [`std::task::Waker`] per stream and one for the I/O task.
//!
//! **Threading rule.** A connection is used by the one worker that owns it
//! (nuncio shares it between the connection's task and its streams' tasks
//! through an `Rc<RefCell<_>>`, never borrowed across an `.await`). Nothing
//! is shared between connections: no locks, no atomics.
//!
//! **Hostile clients** are bounded in the codec: streams reset before they
//! were taken (rapid reset), streams nuncio must reset for what the client
//! sent (MadeYouReset), `CONTINUATION` floods, HPACK bombs and
//! amplification, empty `DATA` frames, windows past 2^31-1; past a bound
//! the connection ends with `GOAWAY` `ENHANCE_YOUR_CALM`. `PING` and
//! `SETTINGS` floods are held back by the client's own socket: nothing is
//! read while the output is backed up.
//!
//! ```
//! use bytes::BytesMut;
//! use nuncio_http2::{Config, Connection, frame, hpack};
//!
//! let mut conn = Connection::new(Config::default());
//! // A client: the preface, its SETTINGS, a GET on stream 1.
//! let mut input = BytesMut::from(frame::PREFACE);
//! frame::put_settings(&mut input, &[]);
//! let mut block = BytesMut::new();
//! let mut encoder = hpack::Encoder::new();
//! encoder.start_block(&mut block);
//! for (name, value) in [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "/")] {
//!     encoder.encode_field(name.as_bytes(), value.as_bytes(), &mut block);
//! }
//! frame::put_head(&mut input, block.len(), frame::kind::HEADERS, frame::flag::END_HEADERS | frame::flag::END_STREAM, 1);
//! input.extend_from_slice(&block);
//!
//! conn.recv(&mut input)?;
//! let request = conn.accept().expect("a request");
//! assert_eq!(request.uri, "http://a.test/");
//! assert!(request.end_stream);
//!
//! // The answer: a head and no body. It joins nuncio's SETTINGS and the
//! // acknowledgement of the client's in the output, to be written.
//! conn.send_response(request.stream, 204, [(&b"server"[..], &b"nuncio"[..])], true)?;
//! assert!(!conn.output().is_empty());
//! conn.release(request.stream);
//! assert_eq!(conn.open_streams(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
pub mod frame;
pub mod fuzzing;
pub mod hpack;
mod request;
pub mod server;

pub use error::{Error, Reason, StreamError};
pub use request::Request;
pub use server::{BodyItem, Config, Connection};
