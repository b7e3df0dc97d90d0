//! The server side of one HTTP/2 connection, sans I/O.
//!
//! [`Connection`] takes the bytes read from the client ([`Connection::recv`]),
//! hands out the requests that open streams ([`Connection::accept`]), and
//! puts everything it sends in one output buffer ([`Connection::output`])
//! that the caller writes to the socket. A stream's side of the exchange —
//! its body read, its response written, its reset awaited — is a method
//! taking the stream's id, with a `poll_` form where it may have to wait:
//! the connection keeps one [`Waker`] per stream (the stream's task) and
//! one for the task that does the I/O.
//!
//! Flow control is end to end: the window a client sends into is reopened
//! only as the stream's body is taken ([`Connection::poll_body`]), and
//! response data is accepted only as the client's window and the output
//! buffer allow ([`Connection::poll_send_data`]), so a slow side slows the
//! other instead of filling memory. What a client can make nuncio do is
//! bounded: streams it resets before they were taken, streams nuncio must
//! reset because of what it sent, header blocks, empty `DATA` frames; past
//! a bound the connection ends with `GOAWAY` `ENHANCE_YOUR_CALM`.

mod recv;
mod send;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use crate::frame::{self, setting};
use crate::hpack::{Decoder, Encoder};
use crate::request::{Fields, Request};
use crate::{Error, Reason};

/// Output past this many bytes stops response data and reading until the
/// client takes some.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// What a connection allows its client.
#[derive(Debug, Clone)]
pub struct Config {
    /// Streams open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`); more are
    /// refused (`REFUSED_STREAM`).
    pub max_concurrent_streams: u32,
    /// Each stream's receive window (`SETTINGS_INITIAL_WINDOW_SIZE`).
    pub stream_window: u32,
    /// The connection's receive window.
    pub connection_window: u32,
    /// Decoded header list size (`SETTINGS_MAX_HEADER_LIST_SIZE`): a
    /// larger request head is answered `431`; a header block more than
    /// twice as large on the wire ends the connection.
    pub max_header_list_size: u32,
    /// Streams the client may reset before they were taken, between two
    /// [`Connection::accept`] rounds (rapid reset, CVE-2023-44487).
    pub max_pending_accept_resets: usize,
    /// Streams nuncio may reset because of what the client sent
    /// (MadeYouReset, CVE-2025-8671), over the connection's life.
    pub max_local_error_resets: usize,
    /// Empty `DATA` frames that do not end their stream, over the
    /// connection's life (CVE-2019-9518).
    pub max_empty_data_frames: usize,
    /// HPACK lets a few bytes on the wire stand for a large header list (an
    /// entry referenced again and again), which a proxy forwards in full.
    /// A connection whose decoded header bytes (HPACK's size: name, value
    /// and 32 bytes a field) pass `min_decoded_for_ratio`, and
    /// `max_decoded_ratio` times the bytes it sent, ends. Ordinary clients
    /// compress well (a cookie sent once, referenced after), but not
    /// 500-fold over a whole connection.
    pub max_decoded_ratio: u64,
    /// See `max_decoded_ratio`.
    pub min_decoded_for_ratio: u64,
}

/// nuncio's values, as the proxy serves clients with them.
impl Default for Config {
    fn default() -> Config {
        Config {
            // nginx's default.
            max_concurrent_streams: 128,
            // Large enough that one stream's upload is not throttled by
            // round trips on a fast link.
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_header_list_size: 64 * 1024,
            // `h2`'s bound on rapid reset, and its MadeYouReset one.
            max_pending_accept_resets: 50,
            max_local_error_resets: 100,
            max_empty_data_frames: 100,
            // 1 MiB decoded, and 500-fold the bytes sent.
            max_decoded_ratio: 500,
            min_decoded_for_ratio: 1 << 20,
        }
    }
}

/// What a stream's body read gives.
#[derive(Debug)]
pub enum BodyItem {
    /// A piece of the body.
    Data(Bytes),
    /// The trailers (the body has ended).
    Trailers(HeaderMap),
}

/// One stream's state, as the connection keeps it.
#[derive(Debug)]
struct Stream {
    /// The client ended its side (`END_STREAM`).
    recv_closed: bool,
    /// nuncio ended its side.
    send_closed: bool,
    /// Reset, with this code.
    reset: Option<Reason>,
    /// The client reset it.
    reset_by_peer: bool,
    /// No longer counted as open (both sides ended, or reset).
    closed: bool,
    /// Taken by [`Connection::accept`].
    accepted: bool,
    /// Body pieces and trailers received, not yet taken.
    recv: VecDeque<BodyItem>,
    /// What the client may still send on it.
    recv_window: i64,
    /// Bytes taken since the window was last reopened.
    recv_unacked: u32,
    content_length: Option<u64>,
    received: u64,
    /// What nuncio may still send on it.
    send_window: i64,
    /// Waiting for window (its own or the connection's).
    send_blocked: bool,
    /// The stream's task, to wake on anything that concerns it.
    waker: Option<Waker>,
}

impl Stream {
    fn new(recv_window: u32, send_window: i64, request: &Request) -> Stream {
        Stream {
            recv_closed: request.end_stream,
            send_closed: false,
            reset: None,
            reset_by_peer: false,
            closed: false,
            accepted: false,
            recv: VecDeque::new(),
            recv_window: i64::from(recv_window),
            recv_unacked: 0,
            content_length: request.content_length,
            received: 0,
            send_window,
            send_blocked: false,
            waker: None,
        }
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Stream ids are small, distinct numbers: used as they are, multiplied
/// to spread them (SipHash cost ~100 instructions a lookup).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A header block that `CONTINUATION` frames are still adding to.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    buf: BytesMut,
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the client's preface.
    Preface,
    /// The preface came; the client's `SETTINGS` must come next.
    Settings,
    Open,
    /// Ended with an error (`GOAWAY` queued).
    Failed,
}

/// The server side of one HTTP/2 connection. See the module docs.
pub struct Connection {
    config: Config,
    state: State,
    out: BytesMut,
    decoder: Decoder,
    encoder: Encoder,
    fields: Fields,
    streams: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    /// Streams opened, not yet taken.
    accepted: VecDeque<Request>,
    /// Streams open (counted against `max_concurrent_streams`).
    active: usize,
    /// The client's `SETTINGS_INITIAL_WINDOW_SIZE`.
    peer_initial_window: i64,
    /// The client's `SETTINGS_MAX_FRAME_SIZE`.
    peer_max_frame_size: usize,
    /// What nuncio may still send on the connection.
    send_window: i64,
    /// What the client may still send on the connection.
    recv_window: i64,
    recv_unacked: u32,
    /// The highest stream id the client used.
    last_stream: u32,
    /// `GOAWAY` sent, with this last stream id: no new stream is taken.
    goaway_sent: Option<u32>,
    /// The client sent `GOAWAY`.
    peer_goaway: bool,
    block: Option<Block>,
    /// Streams nuncio reset or refused lately (see `remember_reset`).
    reset_ids: VecDeque<u32>,
    /// The client acknowledged nuncio's `SETTINGS`.
    settings_acked: bool,
    /// A `HEADERS` that made its stream depend on itself: reset once its
    /// block is decoded.
    priority_error: Option<u32>,
    pending_accept_resets: usize,
    local_error_resets: usize,
    empty_data_frames: usize,
    /// Bytes of frames received, and HPACK's size of the header blocks
    /// decoded from them (see [`Config::max_decoded_ratio`]).
    received: u64,
    decoded: u64,
    /// The task that reads and writes the socket, woken when output is
    /// queued outside [`Connection::recv`].
    io_waker: Option<Waker>,
    /// Streams waiting for the output buffer to drain.
    write_waiters: Vec<Waker>,
}

impl Connection {
    /// A connection whose client has not spoken yet; nuncio's `SETTINGS`
    /// (and the connection window's first update) are queued.
    pub fn new(config: Config) -> Connection {
        let mut out = BytesMut::with_capacity(1024);
        frame::put_settings(
            &mut out,
            &[
                (setting::MAX_CONCURRENT_STREAMS, config.max_concurrent_streams),
                (setting::INITIAL_WINDOW_SIZE, config.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
            ],
        );
        if config.connection_window > frame::DEFAULT_WINDOW {
            frame::put_window_update(&mut out, 0, config.connection_window - frame::DEFAULT_WINDOW);
        }
        Connection {
            state: State::Preface,
            out,
            decoder: Decoder::new(4096),
            encoder: Encoder::new(),
            fields: Fields::default(),
            streams: HashMap::default(),
            accepted: VecDeque::new(),
            active: 0,
            peer_initial_window: i64::from(frame::DEFAULT_WINDOW),
            peer_max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_window: i64::from(config.connection_window.max(frame::DEFAULT_WINDOW)),
            recv_unacked: 0,
            last_stream: 0,
            goaway_sent: None,
            peer_goaway: false,
            block: None,
            reset_ids: VecDeque::new(),
            settings_acked: false,
            priority_error: None,
            pending_accept_resets: 0,
            local_error_resets: 0,
            empty_data_frames: 0,
            received: 0,
            decoded: 0,
            io_waker: None,
            write_waiters: Vec::new(),
            config,
        }
    }

    /// The next request that opened a stream, if any came.
    pub fn accept(&mut self) -> Option<Request> {
        while let Some(request) = self.accepted.pop_front() {
            match self.streams.get_mut(&request.stream) {
                Some(stream) => {
                    stream.accepted = true;
                    return Some(request);
                }
                // Reset before it was taken.
                None => self.pending_accept_resets = self.pending_accept_resets.saturating_sub(1),
            }
        }
        self.pending_accept_resets = 0;
        None
    }

    /// What is to be written to the client; the caller advances it by what
    /// it wrote and then calls [`Connection::written`].
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Some output was written: streams that waited for room go on.
    pub fn written(&mut self) {
        if self.out.len() < OUT_HIGH_WATER {
            for waker in self.write_waiters.drain(..) {
                waker.wake();
            }
        }
    }

    /// Whether reading more from the client is useful now: not while the
    /// output is backed up (a client that sends but does not read — a
    /// `PING` flood — is held back by its own socket), nor once the
    /// connection failed.
    pub fn wants_read(&self) -> bool {
        self.state != State::Failed && self.out.len() < OUT_HIGH_WATER
    }

    /// Whether the connection is over once its output is written: it
    /// failed, or `GOAWAY` went either way and no stream is open.
    pub fn is_done(&self) -> bool {
        self.state == State::Failed || ((self.goaway_sent.is_some() || self.peer_goaway) && self.active == 0)
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.active
    }

    /// Whether the client's preface and `SETTINGS` have come.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// The task to wake when output is queued by a stream.
    pub fn set_io_waker(&mut self, waker: &Waker) {
        match &self.io_waker {
            Some(kept) if kept.will_wake(waker) => {}
            _ => self.io_waker = Some(waker.clone()),
        }
    }

    /// Says goodbye: `GOAWAY` with `reason` and the last stream taken; the
    /// streams open go on, no new one is taken. Once is enough (later calls
    /// do nothing).
    pub fn go_away(&mut self, reason: Reason) {
        if self.goaway_sent.is_some() || self.state == State::Failed {
            return;
        }
        frame::put_goaway(&mut self.out, self.last_stream, reason);
        self.goaway_sent = Some(self.last_stream);
        self.wake_io();
    }

    /// The client's socket is gone: every stream is reset (their tasks
    /// woken), nothing more is sent.
    pub fn close(&mut self) {
        self.state = State::Failed;
        self.out.clear();
        self.reset_all(Reason::CANCEL);
    }

    /// Ends the connection with `GOAWAY` `reason`.
    fn fail(&mut self, reason: Reason, why: &'static str) -> Error {
        if self.state != State::Failed {
            // A GOAWAY's last stream may only go down (RFC 9113 §6.8):
            // streams ignored since a graceful one are not let in.
            let last = self.goaway_sent.map_or(self.last_stream, |sent| sent.min(self.last_stream));
            frame::put_goaway(&mut self.out, last, reason);
            self.state = State::Failed;
            self.reset_all(reason);
        }
        Error::Connection { reason, why }
    }

    fn reset_all(&mut self, reason: Reason) {
        for stream in self.streams.values_mut() {
            if stream.reset.is_none() && !stream.closed {
                stream.reset = Some(reason);
            }
            if !stream.closed {
                stream.closed = true;
                self.active -= 1;
            }
            stream.wake();
        }
        for waker in self.write_waiters.drain(..) {
            waker.wake();
        }
    }

    fn wake_io(&mut self) {
        if let Some(waker) = self.io_waker.take() {
            waker.wake();
        }
    }

    /// Counts the stream out of the open ones once both sides ended or it
    /// was reset; forgets it if its handle is gone too.
    fn settle(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else { return };
        if !stream.closed && (stream.reset.is_some() || (stream.recv_closed && stream.send_closed)) {
            stream.closed = true;
            self.active -= 1;
            if self.active == 0 && (self.goaway_sent.is_some() || self.peer_goaway) {
                self.wake_io();
            }
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state)
            .field("active", &self.active)
            .field("last_stream", &self.last_stream)
            .field("goaway_sent", &self.goaway_sent)
            .field("output", &self.out.len())
            .finish_non_exhaustive()
    }
}
