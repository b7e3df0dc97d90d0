//! A stream's side of the exchange, as its task drives it: the request
//! body taken (its window reopened as it is), the response head, data and
//! trailers queued in the connection's output, resets either way.

use std::task::{Context, Poll};

use bytes::{Buf, Bytes};

use super::{BodyItem, Connection, OUT_HIGH_WATER, State};
use crate::frame::{self, flag, kind};
use crate::{Reason, StreamError};

impl Connection {
    /// The next piece of stream `id`'s body: `None` once it ended. The
    /// window it took is reopened for the client as it is taken.
    pub fn poll_body(&mut self, id: u32, cx: &mut Context<'_>) -> Poll<Option<Result<BodyItem, StreamError>>> {
        let Some(stream) = self.streams.get_mut(&id) else { return Poll::Ready(Some(Err(StreamError::Closed))) };
        if let Some(reason) = stream.reset {
            return Poll::Ready(Some(Err(StreamError::Reset(reason))));
        }
        match stream.recv.pop_front() {
            Some(BodyItem::Data(data)) => {
                let len = data.len() as u32;
                self.give_back(id, len);
                Poll::Ready(Some(Ok(BodyItem::Data(data))))
            }
            Some(trailers) => Poll::Ready(Some(Ok(trailers))),
            None if stream.recv_closed => Poll::Ready(None),
            None => {
                set_waker(&mut stream.waker, cx);
                Poll::Pending
            }
        }
    }

    /// Whether stream `id`'s body has ended with what was taken (nothing
    /// more will come).
    pub fn body_ended(&self, id: u32) -> bool {
        self.streams.get(&id).is_none_or(|s| s.recv_closed && s.recv.is_empty())
    }

    /// Reopens `n` bytes of window on stream `id` and the connection; the
    /// update is sent once half a window was taken (fewer, larger updates).
    pub(super) fn give_back(&mut self, id: u32, n: u32) {
        if self.state == State::Failed {
            // Nothing follows the GOAWAY.
            return;
        }
        if let Some(stream) = self.streams.get_mut(&id)
            && !stream.recv_closed
        {
            stream.recv_unacked += n;
            if stream.recv_unacked >= self.config.stream_window / 2 {
                frame::put_window_update(&mut self.out, id, stream.recv_unacked);
                stream.recv_window += i64::from(stream.recv_unacked);
                stream.recv_unacked = 0;
                self.wake_io();
            }
        }
        self.give_back_connection(n);
    }

    /// Reopens `n` bytes of the connection's window.
    pub(super) fn give_back_connection(&mut self, n: u32) {
        if self.state == State::Failed {
            return;
        }
        self.recv_unacked += n;
        if self.recv_unacked >= self.config.connection_window / 2 {
            frame::put_window_update(&mut self.out, 0, self.recv_unacked);
            self.recv_window += i64::from(self.recv_unacked);
            self.recv_unacked = 0;
            self.wake_io();
        }
    }

    /// Sends an informational head (`100 Continue`) on stream `id`.
    pub fn send_informational(&mut self, id: u32, status: u16) -> Result<(), StreamError> {
        self.writable(id)?;
        self.put_block(id, Some(status), std::iter::empty(), false);
        Ok(())
    }

    /// Sends stream `id`'s response head: `status` and `fields` (names
    /// lower-cased as HTTP/2 asks; connection-specific fields are the
    /// caller's to remove). `end`: there is no body.
    pub fn send_response<'a>(
        &mut self,
        id: u32,
        status: u16,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        end: bool,
    ) -> Result<(), StreamError> {
        self.writable(id)?;
        self.put_block(id, Some(status), fields, end);
        if end {
            self.end_send(id);
        }
        Ok(())
    }

    /// Sends stream `id`'s trailers, which end it.
    pub fn send_trailers<'a>(
        &mut self,
        id: u32,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<(), StreamError> {
        self.writable(id)?;
        self.put_block(id, None, fields, true);
        self.end_send(id);
        Ok(())
    }

    /// Sends all of `data` on stream `id` as the client's windows and the
    /// output buffer allow (`data` is advanced by what went); ready once
    /// all of it is queued. `end`: the last frame ends the stream (an empty
    /// one if `data` is empty).
    pub fn poll_send_data(
        &mut self,
        id: u32,
        data: &mut Bytes,
        end: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), StreamError>> {
        loop {
            if let Err(e) = self.writable(id) {
                return Poll::Ready(Err(e));
            }
            if data.is_empty() {
                if end {
                    self.put_data(id, &[], true);
                }
                return Poll::Ready(Ok(()));
            }
            if self.out.len() >= OUT_HIGH_WATER {
                if !self.write_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    self.write_waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let Some(stream) = self.streams.get_mut(&id) else { return Poll::Ready(Err(StreamError::Closed)) };
            let window = stream.send_window.min(self.send_window).max(0) as usize;
            let n = data.len().min(window).min(self.peer_max_frame_size).min(OUT_HIGH_WATER);
            if n == 0 {
                stream.send_blocked = true;
                set_waker(&mut stream.waker, cx);
                return Poll::Pending;
            }
            stream.send_window -= n as i64;
            self.send_window -= n as i64;
            let last = end && n == data.len();
            self.put_data(id, &data[..n], last);
            data.advance(n);
            if last {
                // The stream's send side is closed now: nothing to check.
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Resets stream `id` (nuncio gives up on it): `RST_STREAM` with
    /// `reason`, unless it is already over.
    pub fn reset(&mut self, id: u32, reason: Reason) {
        let Some(stream) = self.streams.get(&id) else { return };
        if stream.closed || self.state == State::Failed {
            return;
        }
        let _ = self.reset_stream(id, reason, false);
        self.wake_io();
    }

    /// Ready with the code once stream `id` is reset (by the client, by
    /// nuncio, or by the connection's end), or gone.
    pub fn poll_reset(&mut self, id: u32, cx: &mut Context<'_>) -> Poll<Reason> {
        let Some(stream) = self.streams.get_mut(&id) else { return Poll::Ready(Reason::CANCEL) };
        match stream.reset {
            Some(reason) => Poll::Ready(reason),
            None => {
                set_waker(&mut stream.waker, cx);
                Poll::Pending
            }
        }
    }

    /// Whether the client reset stream `id`.
    pub fn reset_by_peer(&self, id: u32) -> bool {
        self.streams.get(&id).is_some_and(|s| s.reset_by_peer)
    }

    /// Whether stream `id` is reset or gone.
    pub fn is_reset(&self, id: u32) -> bool {
        self.streams.get(&id).is_none_or(|s| s.reset.is_some())
    }

    /// The stream's task is done with stream `id`: a stream whose response
    /// did not end is reset (`CANCEL`); one whose request body is still
    /// coming is told to stop (`NO_ERROR`, RFC 9113 §8.1); then it is
    /// forgotten.
    pub fn release(&mut self, id: u32) {
        let Some(stream) = self.streams.get(&id) else { return };
        if self.state != State::Failed && stream.reset.is_none() {
            if !stream.send_closed {
                let _ = self.reset_stream(id, Reason::CANCEL, false);
                self.wake_io();
            } else if !stream.recv_closed {
                let _ = self.reset_stream(id, Reason::NO_ERROR, false);
                self.wake_io();
            }
        }
        self.drop_received(id);
        if let Some(stream) = self.streams.remove(&id)
            && !stream.closed
        {
            self.active -= 1;
        }
        if self.active == 0 && (self.goaway_sent.is_some() || self.peer_goaway) {
            self.wake_io();
        }
    }

    /// Stream `id` can still send.
    fn writable(&self, id: u32) -> Result<(), StreamError> {
        match self.streams.get(&id) {
            _ if self.state == State::Failed => Err(StreamError::Reset(Reason::CANCEL)),
            Some(stream) => match stream.reset {
                Some(reason) => Err(StreamError::Reset(reason)),
                None if stream.send_closed => Err(StreamError::Closed),
                None => Ok(()),
            },
            None => Err(StreamError::Closed),
        }
    }

    fn end_send(&mut self, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.send_closed = true;
        }
        self.settle(id);
    }

    fn put_data(&mut self, id: u32, data: &[u8], end: bool) {
        self.wake_io_if_idle();
        frame::put_head(&mut self.out, data.len(), kind::DATA, if end { flag::END_STREAM } else { 0 }, id);
        self.out.extend_from_slice(data);
        if end {
            self.end_send(id);
        }
    }

    /// One header block (a response head with `status`, or trailers),
    /// split into `HEADERS` and `CONTINUATION` frames by the client's frame
    /// size.
    fn put_block<'a>(
        &mut self,
        id: u32,
        status: Option<u16>,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        end: bool,
    ) {
        self.wake_io_if_idle();
        let at = self.out.len();
        frame::put_head(&mut self.out, 0, kind::HEADERS, 0, id);
        self.encoder.start_block(&mut self.out);
        if let Some(status) = status {
            self.encoder.encode_status(status, &mut self.out);
        }
        // HTTP/1.1 names keep the case their sender wrote; HTTP/2 ones are
        // lower case. Each name is lowered as it is copied, in one pass
        // (cheaper than looking for upper case first); most fit the stack
        // buffer.
        let mut short = [0u8; 64];
        let mut long = Vec::new();
        for (name, value) in fields {
            let lower = match short.get_mut(..name.len()) {
                Some(lower) => {
                    for (to, from) in lower.iter_mut().zip(name) {
                        *to = from.to_ascii_lowercase();
                    }
                    &*lower
                }
                None => {
                    long.clear();
                    long.extend(name.iter().map(u8::to_ascii_lowercase));
                    &long[..]
                }
            };
            self.encoder.encode_field(lower, value, &mut self.out);
        }
        let end_stream = if end { flag::END_STREAM } else { 0 };
        let len = self.out.len() - at - frame::HEAD_LEN;
        if len <= self.peer_max_frame_size {
            frame::patch_head(&mut self.out, at, len, kind::HEADERS, flag::END_HEADERS | end_stream, id);
            return;
        }
        // Rare: a head larger than a frame. The block is framed again.
        let block = self.out.split_off(at + frame::HEAD_LEN);
        self.out.truncate(at);
        let mut chunks = block.chunks(self.peer_max_frame_size).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let end_headers = if last { flag::END_HEADERS } else { 0 };
            if first {
                frame::put_head(&mut self.out, chunk.len(), kind::HEADERS, end_headers | end_stream, id);
                first = false;
            } else {
                frame::put_head(&mut self.out, chunk.len(), kind::CONTINUATION, end_headers, id);
            }
            self.out.extend_from_slice(chunk);
        }
    }

    /// Output queued while the I/O task may be waiting for the client:
    /// wake it to write.
    fn wake_io_if_idle(&mut self) {
        if self.out.is_empty() {
            self.wake_io();
        }
    }
}

/// Keeps the waker of the task that polls, cloning only a new one.
fn set_waker(slot: &mut Option<std::task::Waker>, cx: &Context<'_>) {
    match slot {
        Some(kept) if kept.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}
