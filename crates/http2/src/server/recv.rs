//! What the client sends: the preface, then frames, each checked as RFC
//! 9113 asks and turned into stream state, requests and answers (`SETTINGS`
//! and `PING` acknowledgements, window updates, resets).

use bytes::{Buf, BytesMut};

use super::{Block, BodyItem, Connection, State, Stream};
use crate::frame::{self, Head, flag, kind, setting};
use crate::{Error, Reason};

/// The largest frame nuncio accepts (it does not raise
/// `SETTINGS_MAX_FRAME_SIZE`).
const MAX_FRAME_SIZE: usize = frame::DEFAULT_MAX_FRAME_SIZE;
/// How many of the streams nuncio reset are remembered (as many as may be
/// open at once, by default).
const RESET_IDS_KEPT: usize = 128;

impl Connection {
    /// Takes the complete frames at the front of `input` (what was read from
    /// the client), leaving a partial one for the next read. On an error,
    /// `GOAWAY` is queued: write the output and close.
    pub fn recv(&mut self, input: &mut BytesMut) -> Result<(), Error> {
        if self.state == State::Failed {
            return Ok(());
        }
        if self.state == State::Preface {
            let n = input.len().min(frame::PREFACE.len());
            if input[..n] != frame::PREFACE[..n] {
                self.state = State::Failed;
                return Err(Error::Preface);
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            input.advance(n);
            self.state = State::Settings;
        }
        while input.len() >= frame::HEAD_LEN {
            let head = Head::parse(input);
            if head.len > MAX_FRAME_SIZE {
                return Err(self.fail(Reason::FRAME_SIZE_ERROR, "a frame larger than SETTINGS_MAX_FRAME_SIZE"));
            }
            if input.len() < frame::HEAD_LEN + head.len {
                input.reserve(frame::HEAD_LEN + head.len - input.len());
                return Ok(());
            }
            input.advance(frame::HEAD_LEN);
            self.received += (frame::HEAD_LEN + head.len) as u64;
            self.check_order(head)?;
            if head.kind == kind::DATA {
                // The payload is kept (as the body's piece): split off,
                // not copied.
                self.data(head, input.split_to(head.len))?;
            } else {
                let result = self.frame(head, &input[..head.len]);
                input.advance(head.len);
                result?;
            }
            if self.state == State::Failed {
                break;
            }
        }
        Ok(())
    }

    /// The frames that must come first or next: `SETTINGS` after the
    /// preface, `CONTINUATION` until a header block ends.
    fn check_order(&mut self, head: Head) -> Result<(), Error> {
        if self.state == State::Settings && (head.kind != kind::SETTINGS || head.has(flag::ACK)) {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "the preface was not followed by SETTINGS"));
        }
        if let Some(block) = &self.block
            && (head.kind != kind::CONTINUATION || head.stream != block.stream)
        {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "a header block interrupted by another frame"));
        }
        Ok(())
    }

    /// One frame other than `DATA`, and its payload.
    fn frame(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        match head.kind {
            kind::HEADERS => self.headers(head, payload),
            kind::CONTINUATION => self.continuation(head, payload),
            kind::PRIORITY => self.priority(head, payload),
            kind::RST_STREAM => self.rst_stream(head, payload),
            kind::SETTINGS => self.settings(head, payload),
            kind::PUSH_PROMISE => Err(self.fail(Reason::PROTOCOL_ERROR, "a client sent PUSH_PROMISE")),
            kind::PING => {
                let payload: [u8; 8] =
                    payload.try_into().map_err(|_| self.fail(Reason::FRAME_SIZE_ERROR, "a PING not of 8 bytes"))?;
                self.ping(head, payload)
            }
            kind::GOAWAY => {
                if head.stream != 0 {
                    return Err(self.fail(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
                }
                if head.len < 8 {
                    return Err(self.fail(Reason::FRAME_SIZE_ERROR, "a GOAWAY shorter than 8 bytes"));
                }
                self.peer_goaway = true;
                Ok(())
            }
            kind::WINDOW_UPDATE => self.window_update(head, payload),
            // Unknown types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }
}

impl Connection {
    fn data(&mut self, head: Head, mut payload: BytesMut) -> Result<(), Error> {
        if head.stream == 0 {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        // The whole frame counts against the windows, padding included.
        let flow = head.len as i64;
        if flow > self.recv_window {
            return Err(self.fail(Reason::FLOW_CONTROL_ERROR, "DATA past the connection's window"));
        }
        self.recv_window -= flow;
        let data_len =
            unpad(head, &mut payload).ok_or_else(|| self.fail(Reason::PROTOCOL_ERROR, "bad DATA padding"))?;
        let end = head.has(flag::END_STREAM);
        if data_len == 0 && !end {
            self.empty_data_frames += 1;
            if self.empty_data_frames > self.config.max_empty_data_frames {
                return Err(self.fail(Reason::ENHANCE_YOUR_CALM, "too many empty DATA frames"));
            }
        }
        let id = head.stream;
        let Some(stream) = self.streams.get_mut(&id) else {
            if id > self.last_stream {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "DATA on a stream never opened"));
            }
            // A stream nuncio closed or reset: what the client sent before
            // it knew is dropped, its window given back.
            self.give_back_connection(head.len as u32);
            return Ok(());
        };
        if stream.recv_closed || stream.reset.is_some() {
            let was_reset = stream.reset.is_some();
            self.give_back_connection(head.len as u32);
            if !was_reset {
                return self.reset_stream(id, Reason::STREAM_CLOSED, true);
            }
            return Ok(());
        }
        if flow > stream.recv_window {
            self.give_back_connection(head.len as u32);
            return self.reset_stream(id, Reason::FLOW_CONTROL_ERROR, true);
        }
        stream.recv_window -= flow;
        stream.received += data_len as u64;
        let length_broken = match stream.content_length {
            Some(n) => stream.received > n || (end && stream.received != n),
            None => false,
        };
        if length_broken {
            self.give_back_connection(head.len as u32);
            return self.reset_stream(id, Reason::PROTOCOL_ERROR, true);
        }
        if data_len > 0 {
            payload.truncate(data_len);
            stream.recv.push_back(BodyItem::Data(payload.freeze()));
        }
        if end {
            stream.recv_closed = true;
        }
        stream.wake();
        // Padding is given back at once: nobody takes it.
        let padding = (head.len - data_len) as u32;
        if padding > 0 {
            self.give_back(id, padding);
        }
        if end {
            self.settle(id);
        }
        Ok(())
    }

    fn headers(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        if head.stream == 0 {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let mut fragment = payload;
        if head.has(flag::PADDED) {
            let Some((&pad, rest)) = fragment.split_first() else {
                return Err(self.fail(Reason::FRAME_SIZE_ERROR, "a padded HEADERS without its pad length"));
            };
            if usize::from(pad) > rest.len() {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "HEADERS padding longer than the frame"));
            }
            fragment = &rest[..rest.len() - usize::from(pad)];
        }
        if head.has(flag::PRIORITY) {
            if fragment.len() < 5 {
                return Err(self.fail(Reason::FRAME_SIZE_ERROR, "HEADERS too short for its priority"));
            }
            let dependency = u32::from_be_bytes([fragment[0], fragment[1], fragment[2], fragment[3]]) & 0x7fff_ffff;
            if dependency == head.stream {
                // A stream error; the block must still be decoded below.
                self.priority_error = Some(head.stream);
            }
            fragment = &fragment[5..];
        }
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            return self.header_block(head.stream, end_stream, fragment);
        }
        self.check_block_size(fragment.len())?;
        self.block = Some(Block { stream: head.stream, end_stream, buf: BytesMut::from(fragment) });
        Ok(())
    }

    fn continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        let Some(mut block) = self.block.take() else {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "CONTINUATION without a header block"));
        };
        self.check_block_size(block.buf.len() + payload.len())?;
        block.buf.extend_from_slice(payload);
        if head.has(flag::END_HEADERS) {
            return self.header_block(block.stream, block.end_stream, &block.buf);
        }
        self.block = Some(block);
        Ok(())
    }

    /// A header block far larger than any head nuncio takes is not read to
    /// its end (a `CONTINUATION` flood).
    fn check_block_size(&mut self, len: usize) -> Result<(), Error> {
        if len > 2 * self.config.max_header_list_size as usize {
            return Err(self.fail(Reason::ENHANCE_YOUR_CALM, "a header block far past the header list size"));
        }
        Ok(())
    }

    /// A complete header block: a request opening a stream, or trailers.
    fn header_block(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), Error> {
        // Decoded in every case: the decoder's table must follow the
        // client's, whatever becomes of the stream.
        self.fields.start();
        let limit = u64::from(self.config.max_header_list_size);
        let fields = &mut self.fields;
        if self.decoder.decode(block, |name, value| fields.push(name, value, limit)).is_err() {
            return Err(self.fail(Reason::COMPRESSION_ERROR, "a header block that does not decode"));
        }
        self.decoded += self.fields.size;
        if self.decoded > self.config.min_decoded_for_ratio
            && self.decoded > self.config.max_decoded_ratio.saturating_mul(self.received)
        {
            return Err(self.fail(
                Reason::ENHANCE_YOUR_CALM,
                "header compression that expands far more than an ordinary client's",
            ));
        }
        let priority_error = self.priority_error.take() == Some(id);
        if self.streams.contains_key(&id) {
            if priority_error {
                return self.reset_stream(id, Reason::PROTOCOL_ERROR, true);
            }
            return self.trailers(id, end_stream);
        }
        if id <= self.last_stream {
            if self.reset_recently(id) {
                // Trailers the client sent before it saw nuncio's reset:
                // ignored (HPACK state was kept above).
                return Ok(());
            }
            return Err(self.fail(
                Reason::PROTOCOL_ERROR,
                "HEADERS on a closed stream, or on a stream id lower than one already used",
            ));
        }
        if id.is_multiple_of(2) {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "a client opened an even-numbered stream"));
        }
        self.last_stream = id;
        // From here on the stream is nuncio's to refuse: each refusal is
        // remembered, so that what the client sent before it knew is
        // ignored.
        if self.goaway_sent.is_some() {
            // After GOAWAY new streams are ignored; the client may retry
            // them elsewhere.
            self.remember_reset(id);
            return Ok(());
        }
        if priority_error {
            self.remember_reset(id);
            frame::put_reset(&mut self.out, id, Reason::PROTOCOL_ERROR);
            return self.count_local_error();
        }
        if self.fields.too_large {
            self.remember_reset(id);
            self.answer_too_large(id, end_stream);
            return Ok(());
        }
        if self.active >= self.config.max_concurrent_streams as usize {
            self.remember_reset(id);
            frame::put_reset(&mut self.out, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let request = match self.fields.request(id, end_stream) {
            Ok(request) => request,
            Err(_malformed) => {
                self.remember_reset(id);
                frame::put_reset(&mut self.out, id, Reason::PROTOCOL_ERROR);
                return self.count_local_error();
            }
        };
        let recv_window = if self.settings_acked {
            self.config.stream_window
        } else {
            self.config.stream_window.max(frame::DEFAULT_WINDOW)
        };
        let stream = Stream::new(recv_window, self.peer_initial_window, &request);
        self.streams.insert(id, stream);
        self.active += 1;
        self.accepted.push_back(request);
        Ok(())
    }

    fn trailers(&mut self, id: u32, end_stream: bool) -> Result<(), Error> {
        let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
        if stream.reset.is_some() {
            return Ok(());
        }
        if stream.recv_closed {
            return self.reset_stream(id, Reason::STREAM_CLOSED, true);
        }
        let length_broken = stream.content_length.is_some_and(|n| n != stream.received);
        if !end_stream || self.fields.too_large || length_broken {
            return self.reset_stream(id, Reason::PROTOCOL_ERROR, true);
        }
        let Ok(trailers) = self.fields.trailers() else {
            return self.reset_stream(id, Reason::PROTOCOL_ERROR, true);
        };
        let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
        stream.recv.push_back(BodyItem::Trailers(trailers));
        stream.recv_closed = true;
        stream.wake();
        self.settle(id);
        Ok(())
    }

    /// A request head larger than nuncio takes: answered `431` at once,
    /// as HTTP/1.1 would be. No stream is kept for it.
    fn answer_too_large(&mut self, id: u32, end_stream: bool) {
        let at = self.out.len();
        frame::put_head(&mut self.out, 0, kind::HEADERS, 0, id);
        self.encoder.start_block(&mut self.out);
        self.encoder.encode_status(431, &mut self.out);
        let len = self.out.len() - at - frame::HEAD_LEN;
        frame::patch_head(&mut self.out, at, len, kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, id);
        if !end_stream {
            // Nothing more is wanted from the client on it.
            frame::put_reset(&mut self.out, id, Reason::NO_ERROR);
        }
    }

    fn priority(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        if head.stream == 0 {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
        }
        // A stream the client opened (or closed since) can be reset; an
        // idle one may not be (RFC 9113 §6.4): PRIORITY does not open it.
        let opened = head.stream <= self.last_stream && !head.stream.is_multiple_of(2);
        if payload.len() != 5 {
            if !opened {
                return Err(self.fail(Reason::FRAME_SIZE_ERROR, "a PRIORITY not of 5 bytes"));
            }
            return self.reset_stream(head.stream, Reason::FRAME_SIZE_ERROR, true);
        }
        let dependency = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
        if dependency == head.stream && opened {
            return self.reset_stream(head.stream, Reason::PROTOCOL_ERROR, true);
        }
        // Priorities are not acted on (RFC 9113 deprecates them).
        Ok(())
    }

    fn rst_stream(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        if head.stream == 0 {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
        }
        let Ok(code) = <[u8; 4]>::try_from(payload) else {
            return Err(self.fail(Reason::FRAME_SIZE_ERROR, "an RST_STREAM not of 4 bytes"));
        };
        let id = head.stream;
        if id > self.last_stream {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "RST_STREAM on a stream never opened"));
        }
        let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
        if stream.closed {
            return Ok(());
        }
        if !self.mark_reset(id, Reason(u32::from_be_bytes(code)), true) {
            // Reset before nuncio took it: counted, as each cost a decode
            // (rapid reset).
            self.pending_accept_resets += 1;
            if self.pending_accept_resets > self.config.max_pending_accept_resets {
                return Err(self.fail(Reason::ENHANCE_YOUR_CALM, "too many streams reset before they were taken"));
            }
        }
        Ok(())
    }

    fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        if head.stream != 0 {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(self.fail(Reason::FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload"));
            }
            if !self.settings_acked {
                // nuncio's stream window holds from now on (RFC 9113
                // §6.5.3); until now a smaller one was the default's.
                self.settings_acked = true;
                let shrink = i64::from(frame::DEFAULT_WINDOW.saturating_sub(self.config.stream_window));
                if shrink > 0 {
                    for stream in self.streams.values_mut() {
                        stream.recv_window -= shrink;
                    }
                }
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(self.fail(Reason::FRAME_SIZE_ERROR, "a SETTINGS payload not a multiple of 6 bytes"));
        }
        for param in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([param[0], param[1]]);
            let value = u32::from_be_bytes([param[2], param[3], param[4], param[5]]);
            match id {
                setting::HEADER_TABLE_SIZE => self.encoder.set_max_table_size(value as usize),
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(self.fail(Reason::PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH other than 0 or 1"));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > frame::MAX_WINDOW {
                        return Err(self.fail(Reason::FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1"));
                    }
                    let delta = i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                    let mut overflow = false;
                    for stream in self.streams.values_mut() {
                        stream.send_window += delta;
                        overflow |= stream.send_window > frame::MAX_WINDOW;
                        if delta > 0 && stream.send_blocked {
                            stream.send_blocked = false;
                            stream.wake();
                        }
                    }
                    if overflow {
                        return Err(self.fail(Reason::FLOW_CONTROL_ERROR, "a stream window past 2^31-1"));
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE as u32..1 << 24).contains(&value) {
                        return Err(self.fail(Reason::PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range"));
                    }
                    self.peer_max_frame_size = value as usize;
                }
                _ => {}
            }
        }
        frame::put_head(&mut self.out, 0, kind::SETTINGS, flag::ACK, 0);
        if self.state == State::Settings {
            self.state = State::Open;
        }
        Ok(())
    }

    fn ping(&mut self, head: Head, payload: [u8; 8]) -> Result<(), Error> {
        if head.stream != 0 {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "PING on a stream"));
        }
        if !head.has(flag::ACK) {
            frame::put_head(&mut self.out, 8, kind::PING, flag::ACK, 0);
            self.out.extend_from_slice(&payload);
        }
        Ok(())
    }

    fn window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), Error> {
        let Ok(raw) = <[u8; 4]>::try_from(payload) else {
            return Err(self.fail(Reason::FRAME_SIZE_ERROR, "a WINDOW_UPDATE not of 4 bytes"));
        };
        let increment = i64::from(u32::from_be_bytes(raw) & 0x7fff_ffff);
        let id = head.stream;
        if id == 0 {
            if increment == 0 {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "a WINDOW_UPDATE of 0 for the connection"));
            }
            self.send_window += increment;
            if self.send_window > frame::MAX_WINDOW {
                return Err(self.fail(Reason::FLOW_CONTROL_ERROR, "the connection window past 2^31-1"));
            }
            for stream in self.streams.values_mut() {
                if stream.send_blocked {
                    stream.send_blocked = false;
                    stream.wake();
                }
            }
            return Ok(());
        }
        if id > self.last_stream {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on a stream never opened"));
        }
        let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
        if stream.reset.is_some() {
            return Ok(());
        }
        if increment == 0 {
            return self.reset_stream(id, Reason::PROTOCOL_ERROR, true);
        }
        stream.send_window += increment;
        if stream.send_window > frame::MAX_WINDOW {
            return self.reset_stream(id, Reason::FLOW_CONTROL_ERROR, true);
        }
        if stream.send_blocked {
            stream.send_blocked = false;
            stream.wake();
        }
        Ok(())
    }

    /// Resets a stream because of what the client sent (`local_error`) or
    /// for nuncio's own reasons; its task is woken.
    pub(super) fn reset_stream(&mut self, id: u32, reason: Reason, local_error: bool) -> Result<(), Error> {
        frame::put_reset(&mut self.out, id, reason);
        self.remember_reset(id);
        if self.streams.get(&id).is_some_and(|stream| stream.reset.is_none()) {
            self.mark_reset(id, reason, false);
        }
        if local_error {
            return self.count_local_error();
        }
        Ok(())
    }

    /// Marks stream `id` reset with `reason` (by the client, or by nuncio),
    /// wakes its task, gives its unread body's window back and counts it
    /// out of the open streams; one not taken yet is forgotten. Whether it
    /// had been taken.
    fn mark_reset(&mut self, id: u32, reason: Reason, by_peer: bool) -> bool {
        let Some(stream) = self.streams.get_mut(&id) else { return true };
        stream.reset = Some(reason);
        stream.reset_by_peer = by_peer;
        stream.wake();
        let accepted = stream.accepted;
        self.drop_received(id);
        self.settle(id);
        if !accepted {
            self.streams.remove(&id);
        }
        accepted
    }

    /// Keeps `id` among the streams nuncio reset lately (a bounded list:
    /// the client's frames in flight for them are ignored, not errors).
    fn remember_reset(&mut self, id: u32) {
        if self.reset_ids.len() == RESET_IDS_KEPT {
            self.reset_ids.pop_front();
        }
        self.reset_ids.push_back(id);
    }

    fn reset_recently(&self, id: u32) -> bool {
        self.reset_ids.contains(&id)
    }

    fn count_local_error(&mut self) -> Result<(), Error> {
        self.local_error_resets += 1;
        if self.local_error_resets > self.config.max_local_error_resets {
            return Err(self.fail(Reason::ENHANCE_YOUR_CALM, "too many streams reset for what the client sent"));
        }
        Ok(())
    }

    /// Body received for a stream that will not be read: its bytes go back
    /// to the connection's window.
    pub(super) fn drop_received(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else { return };
        let bytes: usize = stream
            .recv
            .drain(..)
            .map(|item| match item {
                BodyItem::Data(data) => data.len(),
                BodyItem::Trailers(_) => 0,
            })
            .sum();
        self.give_back_connection(bytes as u32);
    }
}

/// Strips `DATA` padding; the data's length, or `None` if the padding is
/// malformed.
fn unpad(head: Head, payload: &mut BytesMut) -> Option<usize> {
    if !head.has(flag::PADDED) {
        return Some(payload.len());
    }
    let pad = usize::from(*payload.first()?);
    payload.advance(1);
    payload.len().checked_sub(pad)
}
