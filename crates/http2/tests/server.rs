//! Integration tests for nuncio's sans-I/O HTTP/2 server codec.
//!
//! Most tests are byte-level and deterministic: a client's frames are built
//! by hand (`support::Wire`), fed to `Connection::recv`, and the output is
//! parsed back into frames with header blocks decoded (`support::Out`).
//! Streams are driven with a no-op or a counting waker. The `interop`
//! module runs the codec against the `h2` crate's client over an in-memory
//! duplex pipe.

mod support;

use std::task::{Context, Poll};

use bytes::Bytes;
use http::Method;
use nuncio_http2::frame::{PREFACE, flag, kind, setting};
use nuncio_http2::{Config, Error, Reason, StreamError};
use support::*;

/// The connection error `recv` returns, with its reason.
fn connection_error(result: Result<(), Error>) -> Reason {
    match result {
        Err(Error::Connection { reason, .. }) => reason,
        other => panic!("expected a connection error, got {other:?}"),
    }
}

/// `poll_send_data(.., end = true)` queued all of `data` with END_STREAM.
///
/// It then answers `Err(Closed)` instead of `Ok(())` (see
/// `streams::send_data_that_ends_the_stream_is_ready_ok`, ignored as a
/// bug); the frames sent are checked by the callers, so both are taken
/// here to keep the other tests about what they test.
fn assert_last_sent(poll: Poll<Result<(), StreamError>>, data: &Bytes) {
    assert!(data.is_empty(), "{} bytes not sent", data.len());
    assert!(matches!(poll, Poll::Ready(Ok(()))), "{poll:?}");
}

/// The `GOAWAY` a failed connection sent, as the last frame of `out`.
fn last_goaway(out: &[Out]) -> (u32, Reason) {
    match out.last() {
        Some(Out::GoAway { last, reason }) => (*last, *reason),
        other => panic!("expected GOAWAY last, got {other:?} in {out:?}"),
    }
}

mod handshake {
    use super::*;

    #[test]
    fn nuncio_settings_and_connection_window_are_queued_before_the_client_speaks() {
        let config = Config {
            max_concurrent_streams: 7,
            stream_window: 100_000,
            connection_window: 1_000_000,
            max_header_list_size: 9_000,
            ..Config::default()
        };
        let mut peer = Peer::new(config);
        assert!(!peer.conn.is_established());
        assert_eq!(
            peer.out(),
            [
                Out::Settings(vec![
                    (setting::MAX_CONCURRENT_STREAMS, 7),
                    (setting::INITIAL_WINDOW_SIZE, 100_000),
                    (setting::MAX_HEADER_LIST_SIZE, 9_000),
                ]),
                Out::WindowUpdate { stream: 0, increment: 1_000_000 - 65_535 },
            ]
        );
    }

    #[test]
    fn a_connection_window_at_or_below_the_default_sends_no_window_update() {
        let mut peer = Peer::new(Config { connection_window: 65_535, ..Config::default() });
        let out = peer.out();
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Out::Settings(_)));
    }

    #[test]
    fn the_client_settings_are_acknowledged_and_the_connection_is_established() {
        let mut peer = Peer::new(Config::default());
        peer.out();
        peer.recv(Wire::preface(&[(setting::ENABLE_PUSH, 0), (setting::MAX_CONCURRENT_STREAMS, 100)])).unwrap();
        assert_eq!(peer.out(), [Out::SettingsAck]);
        assert!(peer.conn.is_established());
        // A later SETTINGS is acknowledged too; the client's ACK of
        // nuncio's SETTINGS is not answered.
        peer.recv(Wire::new().settings(&[(setting::HEADER_TABLE_SIZE, 4096)]).settings_ack()).unwrap();
        assert_eq!(peer.out(), [Out::SettingsAck]);
    }

    #[test]
    fn a_preface_in_pieces_is_waited_for() {
        let mut peer = Peer::new(Config::default());
        peer.out();
        let mut input = bytes::BytesMut::from(&PREFACE[..10]);
        peer.conn.recv(&mut input).unwrap();
        assert!(!peer.conn.is_established());
        input.extend_from_slice(&PREFACE[10..]);
        input.extend_from_slice(&Wire::new().settings(&[]).0);
        peer.conn.recv(&mut input).unwrap();
        assert!(input.is_empty());
        assert!(peer.conn.is_established());
        assert_eq!(peer.out(), [Out::SettingsAck]);
    }

    #[test]
    fn a_bad_preface_is_a_preface_error_and_nothing_more_is_read() {
        let mut peer = Peer::new(Config::default());
        peer.out();
        let result = peer.recv(Wire::new().bytes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(result, Err(Error::Preface));
        assert!(peer.conn.is_done());
        assert!(!peer.conn.wants_read());
        // A wrong byte late in the preface is caught as well.
        let mut peer = Peer::new(Config::default());
        let mut bad = PREFACE.to_vec();
        bad[20] = b'X';
        assert_eq!(peer.recv(Wire::new().bytes(&bad)), Err(Error::Preface));
        // After the failure the connection takes nothing.
        assert_eq!(peer.conn.recv(&mut Wire::preface(&[]).0), Ok(()));
    }

    #[test]
    fn a_first_frame_other_than_settings_is_goaway_protocol_error() {
        let mut peer = Peer::new(Config::default());
        peer.out();
        let reason = connection_error(peer.recv(Wire::new().bytes(PREFACE).ping([1; 8])));
        assert_eq!(reason, Reason::PROTOCOL_ERROR);
        assert_eq!(peer.out(), [Out::GoAway { last: 0, reason: Reason::PROTOCOL_ERROR }]);
        assert!(peer.conn.is_done());
        // A SETTINGS ACK is not the client's SETTINGS either.
        let mut peer = Peer::new(Config::default());
        peer.out();
        let reason = connection_error(peer.recv(Wire::new().bytes(PREFACE).settings_ack()));
        assert_eq!(reason, Reason::PROTOCOL_ERROR);
        assert_eq!(last_goaway(&peer.out()), (0, Reason::PROTOCOL_ERROR));
    }

    #[test]
    fn invalid_settings_values_end_the_connection() {
        let cases: &[(&[(u16, u32)], Reason)] = &[
            (&[(setting::ENABLE_PUSH, 2)], Reason::PROTOCOL_ERROR),
            (&[(setting::INITIAL_WINDOW_SIZE, 1 << 31)], Reason::FLOW_CONTROL_ERROR),
            (&[(setting::MAX_FRAME_SIZE, 16_383)], Reason::PROTOCOL_ERROR),
            (&[(setting::MAX_FRAME_SIZE, 1 << 24)], Reason::PROTOCOL_ERROR),
        ];
        for (params, want) in cases {
            let mut peer = Peer::start(Config::default());
            let reason = connection_error(peer.recv(Wire::new().settings(params)));
            assert_eq!(reason, *want, "{params:?}");
            assert_eq!(last_goaway(&peer.out()), (0, *want), "{params:?}");
        }
        // Unknown parameters are ignored.
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().settings(&[(0x99, 5)])).unwrap();
        assert_eq!(peer.out(), [Out::SettingsAck]);
        // A length not a multiple of 6, an ACK with a payload, SETTINGS on
        // a stream.
        let mut peer = Peer::start(Config::default());
        let r = connection_error(peer.recv(Wire::new().frame(kind::SETTINGS, 0, 0, &[0; 5])));
        assert_eq!(r, Reason::FRAME_SIZE_ERROR);
        let mut peer = Peer::start(Config::default());
        let r = connection_error(peer.recv(Wire::new().frame(kind::SETTINGS, flag::ACK, 0, &[0; 6])));
        assert_eq!(r, Reason::FRAME_SIZE_ERROR);
        let mut peer = Peer::start(Config::default());
        let r = connection_error(peer.recv(Wire::new().frame(kind::SETTINGS, 0, 1, &[])));
        assert_eq!(r, Reason::PROTOCOL_ERROR);
    }
}

mod streams {
    use super::*;

    #[test]
    fn a_get_is_accepted_with_its_method_uri_headers_and_end_stream() {
        let mut peer = Peer::start(Config::default());
        let fields = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "example.test:8443"),
            (":path", "/index.html?q=1"),
            ("accept", "*/*"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("te", "trailers"),
        ];
        peer.recv(Wire::new().headers(1, &fields, true)).unwrap();
        assert_eq!(peer.out(), []);
        assert_eq!(peer.conn.open_streams(), 1);
        let request = peer.accept();
        assert_eq!(request.stream, 1);
        assert_eq!(request.method, Method::GET);
        assert_eq!(request.uri, "https://example.test:8443/index.html?q=1");
        let headers = request.fields.to_map();
        assert_eq!(headers["accept"], "*/*");
        assert_eq!(headers.get_all("x-multi").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(headers.len(), 4);
        let regular: Vec<_> = request.fields.iter().collect();
        assert_eq!(
            regular,
            [(&b"accept"[..], &b"*/*"[..]), (b"x-multi", b"a"), (b"x-multi", b"b"), (b"te", b"trailers")]
        );
        assert_eq!(request.fields.get(b"te"), Some(&b"trailers"[..]));
        assert!(request.end_stream);
        assert_eq!(request.content_length, None);
        let size: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert_eq!(request.decoded_size, size as u64);
        assert!(peer.conn.accept().is_none());
        // A GET has no body: its read ends at once.
        assert!(peer.conn.body_ended(1));
        assert_eq!(peer.body(1), [Piece::End]);
    }

    #[test]
    fn a_connect_request_has_an_authority_form_uri() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().headers(1, &[(":method", "CONNECT"), (":authority", "db.test:5432")], false)).unwrap();
        let request = peer.accept();
        assert_eq!(request.method, Method::CONNECT);
        assert_eq!(request.uri, "db.test:5432");
        assert!(!request.end_stream);
    }

    #[test]
    fn response_field_names_are_lowered_short_or_long() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        let long = format!("X-{}", "Long-Name".repeat(10));
        let fields = [(&b"Content-Type"[..], &b"text/plain"[..]), (long.as_bytes(), b"v"), (b"x-lower", b"w")];
        peer.conn.send_response(1, 200, fields, true).unwrap();
        let lowered = long.to_ascii_lowercase();
        let expected = [(":status", "200"), ("content-type", "text/plain"), (lowered.as_str(), "v"), ("x-lower", "w")];
        assert_eq!(peer.out(), [Out::headers(1, &expected, true)]);
    }

    #[test]
    fn the_response_head_data_and_end_stream_come_out_in_order() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        peer.conn
            .send_response(1, 200, [(&b"content-type"[..], &b"text/plain"[..]), (b"X-Mixed-Case", b"v")], false)
            .unwrap();
        let mut first = Bytes::from_static(b"hello ");
        assert!(peer.send_data(1, &mut first, false).is_ready());
        assert!(first.is_empty());
        let mut second = Bytes::from_static(b"world");
        assert_last_sent(peer.send_data(1, &mut second, true), &second);
        assert_eq!(
            peer.out(),
            [
                Out::headers(1, &[(":status", "200"), ("content-type", "text/plain"), ("x-mixed-case", "v")], false),
                Out::data(1, b"hello ", false),
                Out::data(1, b"world", true),
            ]
        );
        // Both sides ended: the stream is no longer open, and nothing more
        // can be sent on it.
        assert_eq!(peer.conn.open_streams(), 0);
        assert_eq!(peer.conn.send_response(1, 200, [], true), Err(StreamError::Closed));
        assert_eq!(peer.send_data(1, &mut Bytes::from_static(b"x"), true), Poll::Ready(Err(StreamError::Closed)));
        peer.conn.release(1);
        assert_eq!(peer.out(), []);
    }

    /// `poll_send_data` is documented "ready once all of it is queued";
    /// with `end` and non-empty data it queues every byte and END_STREAM,
    /// then loops once more and `writable()` finds the stream's send side
    /// closed, so it answers `Err(Closed)`. The proxy's `Exchange::send_last`
    /// turns that into a `WriteError` for a response that was delivered.
    #[test]
    fn send_data_that_ends_the_stream_is_ready_ok() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        peer.respond(1, false);
        let mut data = Bytes::from_static(b"all of it");
        assert_eq!(peer.send_data(1, &mut data, true), Poll::Ready(Ok(())));
        assert_eq!(peer.out()[1..], [Out::data(1, b"all of it", true)]);
    }

    #[test]
    fn an_empty_end_sends_an_empty_data_frame_with_end_stream() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        peer.respond(1, false);
        assert_eq!(peer.send_data(1, &mut Bytes::new(), false), Poll::Ready(Ok(())));
        assert_eq!(peer.send_data(1, &mut Bytes::new(), true), Poll::Ready(Ok(())));
        assert_eq!(peer.out(), [Out::headers(1, &[(":status", "200")], false), Out::data(1, b"", true)]);
    }

    #[test]
    fn statuses_outside_the_static_table_and_a_head_that_ends_the_stream() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1).get(3)).unwrap();
        peer.accept();
        peer.accept();
        peer.conn.send_response(1, 418, [], true).unwrap();
        peer.conn.send_response(3, 204, [], true).unwrap();
        assert_eq!(
            peer.out(),
            [Out::headers(1, &[(":status", "418")], true), Out::headers(3, &[(":status", "204")], true)]
        );
        assert_eq!(peer.conn.open_streams(), 0);
    }

    #[test]
    fn an_informational_head_precedes_the_final_response() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().headers(1, &with(POST, &[("expect", "100-continue")]), false)).unwrap();
        peer.accept();
        peer.conn.send_informational(1, 100).unwrap();
        peer.recv(Wire::new().data(1, b"body", true)).unwrap();
        assert_eq!(peer.body(1), [Piece::Data(Bytes::from_static(b"body")), Piece::End]);
        peer.respond(1, true);
        assert_eq!(
            peer.out(),
            [Out::headers(1, &[(":status", "100")], false), Out::headers(1, &[(":status", "200")], true)]
        );
    }

    #[test]
    fn response_trailers_end_the_stream() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        peer.respond(1, false);
        assert!(peer.send_data(1, &mut Bytes::from_static(b"abc"), false).is_ready());
        peer.conn.send_trailers(1, [(&b"grpc-status"[..], &b"0"[..])]).unwrap();
        assert_eq!(
            peer.out(),
            [
                Out::headers(1, &[(":status", "200")], false),
                Out::data(1, b"abc", false),
                Out::headers(1, &[("grpc-status", "0")], true),
            ]
        );
        assert_eq!(peer.conn.open_streams(), 0);
        assert_eq!(peer.conn.send_trailers(1, []), Err(StreamError::Closed));
    }

    #[test]
    fn a_response_head_larger_than_the_frame_size_is_split_into_continuation() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1).get(3)).unwrap();
        peer.accept();
        peer.accept();
        let big = "v".repeat(40_000);
        peer.conn.send_response(1, 200, [(&b"x-big"[..], big.as_bytes())], true).unwrap();
        let frames = peer.raw_out();
        let shape: Vec<_> = frames.iter().map(|f| (f.kind, f.flags, f.stream, f.payload.len())).collect();
        let total: usize = frames.iter().map(|f| f.payload.len()).sum();
        assert_eq!(
            shape,
            [
                (kind::HEADERS, flag::END_STREAM, 1, 16_384),
                (kind::CONTINUATION, 0, 1, 16_384),
                (kind::CONTINUATION, flag::END_HEADERS, 1, total - 2 * 16_384),
            ]
        );
        assert_eq!(
            decode_frames(frames, &mut peer.decoder),
            [Out::headers(1, &[(":status", "200"), ("x-big", &big)], true)]
        );
        // The next head, small, is one HEADERS again.
        peer.respond(3, true);
        assert_eq!(peer.out(), [Out::headers(3, &[(":status", "200")], true)]);
    }

    #[test]
    fn a_larger_client_max_frame_size_keeps_a_large_head_in_one_frame() {
        let mut peer = Peer::start_with(Config::default(), &[(setting::MAX_FRAME_SIZE, 65_536)]);
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        let big = "v".repeat(40_000);
        peer.conn.send_response(1, 200, [(&b"x-big"[..], big.as_bytes())], false).unwrap();
        let frames = peer.raw_out();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].flags, flag::END_HEADERS);
        // Response data frames grow to the client's frame size as well.
        let mut data = pattern(60_000);
        assert_last_sent(peer.send_data(1, &mut data, true), &data);
        let frames = peer.raw_out();
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].kind, frames[0].flags, frames[0].payload.len()), (kind::DATA, flag::END_STREAM, 60_000));
    }

    #[test]
    fn a_client_header_table_size_change_is_signalled_once_at_the_next_block() {
        let mut peer = Peer::start_with(Config::default(), &[(setting::HEADER_TABLE_SIZE, 0)]);
        peer.recv(Wire::new().get(1).get(3)).unwrap();
        peer.accept();
        peer.accept();
        peer.respond(1, true);
        peer.respond(3, true);
        let frames = peer.raw_out();
        // §6.3 dynamic table size update to 0, then :status 200 indexed.
        assert_eq!(&frames[0].payload[..], [0x20, 0x88]);
        assert_eq!(&frames[1].payload[..], [0x88]);
        assert_eq!(decode_frames(frames, &mut peer.decoder).len(), 2);
    }

    #[test]
    fn a_stream_queuing_output_wakes_the_io_task() {
        let mut peer = Peer::start(Config::default());
        let (io, waker) = counting();
        peer.conn.set_io_waker(&waker);
        peer.recv(Wire::new().get(1).get(3)).unwrap();
        peer.accept();
        peer.accept();
        // Output was empty: the first head wakes the I/O task.
        peer.respond(1, false);
        assert_eq!(io.count(), 1);
        // The I/O task was woken and has not run: no second wake.
        peer.respond(3, false);
        assert!(peer.send_data(1, &mut Bytes::from_static(b"x"), true).is_ready());
        assert_eq!(io.count(), 1);
        peer.out();
        peer.conn.set_io_waker(&waker);
        assert!(peer.send_data(3, &mut Bytes::from_static(b"y"), true).is_ready());
        assert_eq!(io.count(), 2);
        // go_away queues output from outside recv: it wakes the task too.
        peer.out();
        peer.conn.set_io_waker(&waker);
        peer.conn.go_away(Reason::NO_ERROR);
        assert_eq!(io.count(), 3);
    }
}

mod request_body {
    use super::*;

    fn small_windows() -> Config {
        Config { stream_window: 1_000, connection_window: 2_000, ..Config::default() }
    }

    #[test]
    fn data_pieces_come_in_order_then_trailers_then_none() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1)).unwrap();
        let request = peer.accept();
        assert!(!request.end_stream);
        let (counter, waker) = counting();
        assert!(peer.conn.poll_body(1, &mut Context::from_waker(&waker)).is_pending());
        peer.recv(Wire::new().data(1, b"abc", false)).unwrap();
        assert_eq!(counter.count(), 1, "DATA wakes the stream's task");
        peer.recv(Wire::new().data(1, b"def", false).headers(1, &[("x-checksum", "123")], true)).unwrap();
        let pieces = peer.body(1);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "123".parse().unwrap());
        assert_eq!(
            pieces,
            [
                Piece::Data(Bytes::from_static(b"abc")),
                Piece::Data(Bytes::from_static(b"def")),
                Piece::Trailers(trailers),
                Piece::End,
            ]
        );
        assert!(peer.conn.body_ended(1));
        // Ended: asking again keeps saying so.
        assert_eq!(peer.body(1), [Piece::End]);
    }

    #[test]
    fn window_updates_are_sent_only_after_half_the_window_was_taken() {
        let mut peer = Peer::start(small_windows());
        peer.recv(Wire::new().post(1).data(1, &[1; 400], false)).unwrap();
        peer.accept();
        // Received but not taken: no window is given back.
        assert_eq!(peer.out(), []);
        assert_eq!(peer.body(1).len(), 1);
        assert_eq!(peer.out(), [], "400 of 1,000 taken: below half the stream window");
        peer.recv(Wire::new().data(1, &[2; 200], false)).unwrap();
        assert_eq!(peer.out(), []);
        assert_eq!(peer.body(1).len(), 1);
        assert_eq!(peer.out(), [Out::WindowUpdate { stream: 1, increment: 600 }]);
        peer.recv(Wire::new().data(1, &[3; 400], false)).unwrap();
        assert_eq!(peer.body(1).len(), 1);
        assert_eq!(
            peer.out(),
            [Out::WindowUpdate { stream: 0, increment: 1_000 }],
            "1,000 taken on the connection: half its configured window"
        );
        // The stream's window is 1,000 - 1,000 + 600 = 600: exactly that
        // is accepted.
        peer.recv(Wire::new().data(1, &[4; 600], false)).unwrap();
        assert_eq!(peer.body(1).len(), 1);
        assert_eq!(peer.out(), [Out::WindowUpdate { stream: 1, increment: 1_000 }]);
    }

    #[test]
    fn no_stream_window_update_is_sent_once_the_body_ended() {
        let mut peer = Peer::start(small_windows());
        peer.recv(Wire::new().post(1).data(1, &[1; 900], true)).unwrap();
        peer.accept();
        assert_eq!(peer.body(1).len(), 2);
        assert_eq!(peer.out(), [], "the client can send no more on the stream; 900 < half the connection's 2,000");
    }

    #[test]
    fn data_past_the_stream_window_is_reset_flow_control_error() {
        let mut peer = Peer::start(small_windows());
        peer.recv(Wire::new().post(1).post(3)).unwrap();
        peer.accept();
        peer.accept();
        let (counter, waker) = counting();
        assert!(peer.conn.poll_body(1, &mut Context::from_waker(&waker)).is_pending());
        peer.recv(Wire::new().data(1, &[0; 1_000], false)).unwrap();
        assert_eq!(peer.out(), []);
        peer.recv(Wire::new().data(1, &[0; 1], false)).unwrap();
        // The reset stream's unread 1,000 bytes and the refused byte go
        // back to the connection: past half its window, so it is updated.
        assert_eq!(
            peer.out(),
            [
                Out::Reset { stream: 1, reason: Reason::FLOW_CONTROL_ERROR },
                Out::WindowUpdate { stream: 0, increment: 1_001 },
            ]
        );
        assert!(counter.count() >= 1);
        assert_eq!(peer.body(1), [Piece::Err(StreamError::Reset(Reason::FLOW_CONTROL_ERROR))]);
        assert!(!peer.conn.reset_by_peer(1));
        // The other stream goes on.
        peer.recv(Wire::new().data(3, b"ok", true)).unwrap();
        assert_eq!(peer.body(3), [Piece::Data(Bytes::from_static(b"ok")), Piece::End]);
    }

    #[test]
    fn data_past_the_connection_window_is_goaway_flow_control_error() {
        let mut peer = Peer::start(Config { connection_window: 65_535, ..Config::default() });
        let chunk = [7u8; 16_384];
        let wire = Wire::new().post(1).data(1, &chunk, false).data(1, &chunk, false).data(1, &chunk, false);
        peer.recv(wire).unwrap();
        peer.accept();
        // 3 * 16,384 = 49,152; 16,383 more is the window's last byte.
        peer.recv(Wire::new().data(1, &chunk[..16_383], false)).unwrap();
        assert_eq!(peer.out(), []);
        let reason = connection_error(peer.recv(Wire::new().data(1, &[1], false)));
        assert_eq!(reason, Reason::FLOW_CONTROL_ERROR);
        assert_eq!(peer.out(), [Out::GoAway { last: 1, reason: Reason::FLOW_CONTROL_ERROR }]);
        assert_eq!(peer.body(1), [Piece::Err(StreamError::Reset(Reason::FLOW_CONTROL_ERROR))]);
    }

    #[test]
    fn padded_data_gives_its_padding_back_at_once_and_delivers_the_data() {
        let mut peer = Peer::start(Config { stream_window: 100, ..Config::default() });
        peer.recv(Wire::new().post(1)).unwrap();
        peer.accept();
        // 1 (pad length) + 5 + 90 = 96 bytes of window.
        peer.recv(Wire::new().padded_data(1, b"hello", 90, false)).unwrap();
        assert_eq!(peer.out(), [Out::WindowUpdate { stream: 1, increment: 91 }]);
        assert_eq!(peer.body(1), [Piece::Data(Bytes::from_static(b"hello"))]);
        // 100 - 96 + 91 + 5 taken: nothing more is owed yet (5 < 50).
        assert_eq!(peer.out(), []);
        // The window is 95 now: 95 bytes pass, with padding 0.
        peer.recv(Wire::new().padded_data(1, &[9; 94], 0, true)).unwrap();
        assert_eq!(peer.out(), []);
        assert_eq!(peer.body(1), [Piece::Data(Bytes::from(vec![9; 94])), Piece::End]);
    }

    #[test]
    fn data_padding_as_long_as_the_frame_is_goaway_protocol_error() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1)).unwrap();
        // Pad length 4 with 4 bytes after it is valid (no data); 5 is not.
        peer.recv(Wire::new().frame(kind::DATA, flag::PADDED, 1, &[4, 0, 0, 0, 0])).unwrap();
        let reason = connection_error(peer.recv(Wire::new().frame(kind::DATA, flag::PADDED, 1, &[5, 0, 0, 0, 0])));
        assert_eq!(reason, Reason::PROTOCOL_ERROR);
        assert_eq!(last_goaway(&peer.out()), (1, Reason::PROTOCOL_ERROR));
    }

    #[test]
    fn padded_headers_with_priority_open_a_stream() {
        let mut peer = Peer::start(Config::default());
        let block = hpack(GET);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 0, 15]); // exclusive on stream 0, weight 16
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0, 0, 0]);
        let flags = flag::END_HEADERS | flag::END_STREAM | flag::PADDED | flag::PRIORITY;
        peer.recv(Wire::new().frame(kind::HEADERS, flags, 1, &payload)).unwrap();
        let request = peer.accept();
        assert_eq!(request.uri, "https://example.test/");
        assert!(request.end_stream);
        // Padding longer than the rest is a connection error.
        let bad = Wire::new().frame(kind::HEADERS, flag::END_HEADERS | flag::PADDED, 3, &[200, 0x82]);
        assert_eq!(connection_error(peer.recv(bad)), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn a_body_that_breaks_its_content_length_is_reset_protocol_error() {
        let mut peer = Peer::start(Config::default());
        let head = with(POST, &[("content-length", "5")]);
        // 1: longer; 3: shorter, then END_STREAM; 5: shorter, then
        // trailers; 7: exact.
        let wire = Wire::new()
            .headers(1, &head, false)
            .headers(3, &head, false)
            .headers(5, &head, false)
            .headers(7, &head, false);
        peer.recv(wire).unwrap();
        for _ in 0..4 {
            assert_eq!(peer.accept().content_length, Some(5));
        }
        let wire = Wire::new()
            .data(1, b"abcdef", false)
            .data(3, b"abc", true)
            .data(5, b"abc", false)
            .headers(5, &[("x-t", "1")], true)
            .data(7, b"ab", false)
            .data(7, b"cde", true);
        peer.recv(wire).unwrap();
        assert_eq!(
            peer.out(),
            [
                Out::Reset { stream: 1, reason: Reason::PROTOCOL_ERROR },
                Out::Reset { stream: 3, reason: Reason::PROTOCOL_ERROR },
                Out::Reset { stream: 5, reason: Reason::PROTOCOL_ERROR },
            ]
        );
        for id in [1, 3, 5] {
            assert_eq!(peer.body(id), [Piece::Err(StreamError::Reset(Reason::PROTOCOL_ERROR))], "stream {id}");
        }
        assert_eq!(
            peer.body(7),
            [Piece::Data(Bytes::from_static(b"ab")), Piece::Data(Bytes::from_static(b"cde")), Piece::End]
        );
    }

    /// RFC 9113 §8.1.1: a request is malformed if its `content-length` does
    /// not equal the sum of its DATA payloads — a HEADERS that ends the
    /// stream has a body of 0 bytes. A proxy that forwards such a head to an
    /// HTTP/1.1 upstream with `content-length: 5` and no body desynchronises
    /// the upstream connection.
    #[test]
    fn headers_ending_the_stream_with_a_nonzero_content_length_are_malformed() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().headers(1, &with(GET, &[("content-length", "5")]), true)).unwrap();
        assert_eq!(peer.out(), [Out::Reset { stream: 1, reason: Reason::PROTOCOL_ERROR }]);
        assert!(peer.conn.accept().is_none());
    }

    #[test]
    fn headers_ending_the_stream_with_content_length_zero_are_fine() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().headers(1, &with(POST, &[("content-length", "0")]), true)).unwrap();
        assert_eq!(peer.out(), []);
        assert_eq!(peer.accept().content_length, Some(0));
    }

    #[test]
    fn data_after_end_stream_is_reset_stream_closed() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1).data(1, b"a", true)).unwrap();
        peer.accept();
        peer.recv(Wire::new().data(1, b"b", false)).unwrap();
        assert_eq!(peer.out(), [Out::Reset { stream: 1, reason: Reason::STREAM_CLOSED }]);
    }

    #[test]
    fn trailers_must_end_the_stream_and_carry_no_pseudo_fields() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1).post(3).post(5)).unwrap();
        for _ in 0..3 {
            peer.accept();
        }
        let wire = Wire::new()
            .headers(1, &[("x-t", "1")], false)
            .headers(3, &[(":path", "/")], true)
            .data(5, b"x", true)
            .headers(5, &[("x-t", "1")], true);
        peer.recv(wire).unwrap();
        assert_eq!(
            peer.out(),
            [
                Out::Reset { stream: 1, reason: Reason::PROTOCOL_ERROR },
                Out::Reset { stream: 3, reason: Reason::PROTOCOL_ERROR },
                Out::Reset { stream: 5, reason: Reason::STREAM_CLOSED },
            ]
        );
    }

    /// RFC 9113 §6.5.3 and §6.9.2: the values of a SETTINGS frame apply once
    /// acknowledged. Until the client's ACK of nuncio's first SETTINGS it
    /// may send up to the default 65,535 bytes on a stream, so a
    /// `stream_window` below 65,535 cannot be enforced before that ACK.
    /// (The proxy configures 1 MiB, so it is not affected today.)
    #[test]
    fn a_small_stream_window_is_enforced_only_once_the_client_acknowledged_it() {
        let mut peer = Peer::new(Config { stream_window: 1_000, ..Config::default() });
        peer.out();
        // The client sends right after its preface, not having read
        // nuncio's SETTINGS: 2,000 bytes is within the default window.
        peer.recv(Wire::preface(&[]).post(1).data(1, &[0; 2_000], true)).unwrap();
        assert_eq!(peer.out(), [Out::SettingsAck]);
        peer.accept();
        let pieces = peer.body(1);
        assert_eq!(pieces, [Piece::Data(Bytes::from(vec![0; 2_000])), Piece::End]);
    }
}

mod send_flow_control {
    use super::*;

    #[test]
    fn response_data_goes_only_as_far_as_the_stream_window_and_a_window_update_wakes_the_stream() {
        let mut peer = Peer::start_with(Config::default(), &[initial_window(100)]);
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        peer.respond(1, false);
        let (counter, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let body = pattern(300);
        let mut data = body.clone();
        assert!(peer.conn.poll_send_data(1, &mut data, true, &mut cx).is_pending());
        assert_eq!(data.len(), 200);
        assert_eq!(peer.out(), [Out::headers(1, &[(":status", "200")], false), Out::data(1, &body[..100], false)]);
        // Each WINDOW_UPDATE wakes the stream, and as much goes as it allows.
        peer.recv(Wire::new().window_update(1, 50)).unwrap();
        assert_eq!(counter.count(), 1);
        assert!(peer.conn.poll_send_data(1, &mut data, true, &mut cx).is_pending());
        assert_eq!(peer.out(), [Out::data(1, &body[100..150], false)]);
        peer.recv(Wire::new().window_update(1, 1_000)).unwrap();
        assert_eq!(counter.count(), 2);
        assert_last_sent(peer.conn.poll_send_data(1, &mut data, true, &mut cx), &data);
        assert_eq!(peer.out(), [Out::data(1, &body[150..], true)]);
    }

    #[test]
    fn response_data_goes_only_as_far_as_the_connection_window_and_its_update_wakes_the_stream() {
        let mut peer = Peer::start_with(Config::default(), &[initial_window(1 << 20)]);
        peer.recv(Wire::new().get(1).get(3)).unwrap();
        peer.accept();
        peer.accept();
        peer.respond(1, false);
        peer.respond(3, false);
        // Stream 1 takes all but 100 bytes of the connection's 65,535.
        let mut data = pattern(65_435);
        while peer.send_data(1, &mut data, false).is_pending() {
            peer.out();
        }
        peer.out();
        let (counter, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let body = pattern(300);
        let mut data = body.clone();
        assert!(peer.conn.poll_send_data(3, &mut data, true, &mut cx).is_pending());
        assert_eq!(peer.out(), [Out::data(3, &body[..100], false)]);
        // A stream's own window does not help when the connection's is
        // spent.
        peer.recv(Wire::new().window_update(3, 10_000)).unwrap();
        assert!(peer.conn.poll_send_data(3, &mut data, true, &mut cx).is_pending());
        assert_eq!(peer.out(), []);
        let before = counter.count();
        peer.recv(Wire::new().window_update(0, 50)).unwrap();
        assert_eq!(counter.count(), before + 1, "a connection WINDOW_UPDATE wakes the blocked stream");
        assert!(peer.conn.poll_send_data(3, &mut data, true, &mut cx).is_pending());
        assert_eq!(peer.out(), [Out::data(3, &body[100..150], false)]);
        peer.recv(Wire::new().window_update(0, 1_000)).unwrap();
        assert_eq!(counter.count(), before + 2);
        assert_last_sent(peer.conn.poll_send_data(3, &mut data, true, &mut cx), &data);
        assert_eq!(peer.out(), [Out::data(3, &body[150..], true)]);
    }

    #[test]
    fn a_settings_change_of_the_initial_window_adjusts_open_streams_through_negative_and_back() {
        let mut peer = Peer::start_with(Config::default(), &[initial_window(100)]);
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        peer.respond(1, false);
        peer.out();
        let (counter, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let body = pattern(200);
        let mut data = body.clone();
        assert!(peer.conn.poll_send_data(1, &mut data, true, &mut cx).is_pending());
        assert_eq!(peer.out(), [Out::data(1, &body[..100], false)]);
        // 100 -> 50: the window is 0 - 50 = -50. A lower window wakes no
        // one.
        peer.recv(Wire::new().settings(&[initial_window(50)])).unwrap();
        assert_eq!(peer.out(), [Out::SettingsAck]);
        assert_eq!(counter.count(), 0);
        // +60: the window is 10.
        peer.recv(Wire::new().window_update(1, 60)).unwrap();
        assert_eq!(counter.count(), 1);
        assert!(peer.conn.poll_send_data(1, &mut data, true, &mut cx).is_pending());
        assert_eq!(peer.out(), [Out::data(1, &body[100..110], false)]);
        // +30 from 0 is not enough to make it positive after another cut.
        peer.recv(Wire::new().settings(&[initial_window(20)])).unwrap(); // 0 - 30 = -30
        peer.recv(Wire::new().window_update(1, 30)).unwrap(); // 0
        assert!(peer.conn.poll_send_data(1, &mut data, true, &mut cx).is_pending());
        assert_eq!(peer.out(), [Out::SettingsAck]);
        // 20 -> 200: +180, the stream is woken and the rest (90) goes.
        let before = counter.count();
        peer.recv(Wire::new().settings(&[initial_window(200)])).unwrap();
        assert_eq!(counter.count(), before + 1);
        assert_last_sent(peer.conn.poll_send_data(1, &mut data, true, &mut cx), &data);
        assert_eq!(peer.out(), [Out::SettingsAck, Out::data(1, &body[110..], true)]);
        // A stream opened now starts with the new initial window.
        peer.recv(Wire::new().get(3)).unwrap();
        peer.accept();
        peer.respond(3, false);
        let mut data = pattern(500);
        assert!(peer.send_data(3, &mut data, true).is_pending());
        assert_eq!(data.len(), 300);
    }

    #[test]
    fn a_settings_change_that_overflows_a_stream_window_is_flow_control_error() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1).window_update(1, (1 << 31) - 1 - 65_535)).unwrap();
        let reason = connection_error(peer.recv(Wire::new().settings(&[initial_window(65_536)])));
        assert_eq!(reason, Reason::FLOW_CONTROL_ERROR);
    }

    #[test]
    fn window_update_overflow_resets_the_stream_or_ends_the_connection() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1).get(3)).unwrap();
        peer.accept();
        peer.recv(Wire::new().window_update(1, (1 << 31) - 1)).unwrap();
        assert_eq!(peer.out(), [Out::Reset { stream: 1, reason: Reason::FLOW_CONTROL_ERROR }]);
        let reason = connection_error(peer.recv(Wire::new().window_update(0, (1 << 31) - 1)));
        assert_eq!(reason, Reason::FLOW_CONTROL_ERROR);
        assert_eq!(peer.out(), [Out::GoAway { last: 3, reason: Reason::FLOW_CONTROL_ERROR }]);
    }

    #[test]
    fn output_past_the_high_water_mark_makes_send_data_wait_for_written() {
        let mut peer = Peer::start_with(Config::default(), &[initial_window(1 << 20)]);
        peer.recv(Wire::new().window_update(0, 1 << 20).get(1)).unwrap();
        peer.accept();
        peer.respond(1, false);
        let (counter, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let body = pattern(200_000);
        let mut data = body.clone();
        assert!(peer.conn.poll_send_data(1, &mut data, true, &mut cx).is_pending());
        let queued = peer.conn.output().len();
        assert!(queued >= 64 * 1024, "{queued}");
        assert!(queued < 64 * 1024 + 16_384 + 100, "{queued}");
        assert!(!peer.conn.wants_read(), "a backed-up output stops reading");
        // Nothing was written yet: no wake, and polling again adds nothing.
        peer.conn.written();
        assert_eq!(counter.count(), 0);
        assert!(peer.conn.poll_send_data(1, &mut data, true, &mut cx).is_pending());
        assert_eq!(peer.conn.output().len(), queued);
        // Written down to the mark exactly: still no wake.
        let mut sent = peer.conn.output().split_to(queued - 64 * 1024).to_vec();
        peer.conn.written();
        assert_eq!(counter.count(), 0);
        assert!(!peer.conn.wants_read());
        // One byte below it: the stream is woken, reading resumes.
        sent.extend_from_slice(&peer.conn.output().split_to(1));
        peer.conn.written();
        assert!(counter.count() >= 1);
        assert!(peer.conn.wants_read());
        // The rest goes as the output drains.
        loop {
            let ready = peer.conn.poll_send_data(1, &mut data, true, &mut cx).is_ready();
            sent.extend_from_slice(&peer.conn.output().split());
            peer.conn.written();
            if ready {
                break;
            }
        }
        let frames = split_frames(Bytes::from(sent));
        assert_eq!(frames[0].kind, kind::HEADERS);
        let data_frames = &frames[1..];
        assert!(data_frames.iter().all(|f| f.kind == kind::DATA && f.payload.len() <= 16_384));
        let all: Vec<u8> = data_frames.iter().flat_map(|f| f.payload.to_vec()).collect();
        assert_eq!(all, body);
        assert_eq!(data_frames.last().unwrap().flags, flag::END_STREAM);
    }
}

mod resets {
    use super::*;

    #[test]
    fn a_client_reset_wakes_poll_reset_and_is_reset_by_peer() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1)).unwrap();
        peer.accept();
        let (counter, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(peer.conn.poll_reset(1, &mut cx).is_pending());
        assert!(!peer.conn.is_reset(1));
        peer.recv(Wire::new().data(1, b"unread", false)).unwrap();
        assert_eq!(counter.count(), 1, "DATA concerns the stream: its task is woken");
        assert!(peer.conn.poll_reset(1, &mut cx).is_pending());
        peer.recv(Wire::new().rst(1, Reason::CANCEL)).unwrap();
        assert_eq!(counter.count(), 2, "RST_STREAM wakes it");
        assert_eq!(peer.conn.poll_reset(1, &mut cx), Poll::Ready(Reason::CANCEL));
        assert!(peer.conn.reset_by_peer(1));
        assert!(peer.conn.is_reset(1));
        assert_eq!(peer.conn.open_streams(), 0);
        assert_eq!(peer.body(1), [Piece::Err(StreamError::Reset(Reason::CANCEL))]);
        assert_eq!(peer.conn.send_response(1, 200, [], true), Err(StreamError::Reset(Reason::CANCEL)));
        // Nothing is sent back for it, not even on release.
        peer.conn.release(1);
        assert_eq!(peer.out(), []);
    }

    #[test]
    fn a_client_reset_wakes_a_stream_waiting_for_window() {
        let mut peer = Peer::start_with(Config::default(), &[initial_window(10)]);
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        peer.respond(1, false);
        let (counter, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut data = pattern(100);
        assert!(peer.conn.poll_send_data(1, &mut data, true, &mut cx).is_pending());
        peer.recv(Wire::new().rst(1, Reason::INTERNAL_ERROR)).unwrap();
        assert_eq!(counter.count(), 1);
        assert_eq!(
            peer.conn.poll_send_data(1, &mut data, true, &mut cx),
            Poll::Ready(Err(StreamError::Reset(Reason::INTERNAL_ERROR)))
        );
    }

    #[test]
    fn body_data_a_client_reset_discarded_is_given_back_to_the_connection() {
        let mut peer = Peer::start(Config { connection_window: 2_000, ..Config::default() });
        peer.recv(Wire::new().post(1).data(1, &[0; 1_000], false)).unwrap();
        peer.accept();
        assert_eq!(peer.out(), []);
        peer.recv(Wire::new().rst(1, Reason::CANCEL)).unwrap();
        assert_eq!(peer.out(), [Out::WindowUpdate { stream: 0, increment: 1_000 }]);
    }

    #[test]
    fn a_reset_by_nuncio_sends_rst_stream_and_wakes_the_stream() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1)).unwrap();
        peer.accept();
        let (counter, waker) = counting();
        assert!(peer.conn.poll_body(1, &mut Context::from_waker(&waker)).is_pending());
        peer.conn.reset(1, Reason::INTERNAL_ERROR);
        assert_eq!(counter.count(), 1);
        assert_eq!(peer.out(), [Out::Reset { stream: 1, reason: Reason::INTERNAL_ERROR }]);
        assert_eq!(peer.conn.poll_reset(1, &mut noop()), Poll::Ready(Reason::INTERNAL_ERROR));
        assert!(!peer.conn.reset_by_peer(1));
        // Once is enough.
        peer.conn.reset(1, Reason::CANCEL);
        peer.conn.release(1);
        assert_eq!(peer.out(), []);
        // The client's DATA still in flight is dropped quietly.
        peer.recv(Wire::new().data(1, b"late", true)).unwrap();
        assert_eq!(peer.out(), []);
    }

    #[test]
    fn releasing_a_stream_whose_response_did_not_end_sends_cancel() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1).get(3)).unwrap();
        peer.accept();
        peer.accept();
        peer.respond(1, false);
        peer.conn.release(1);
        // No response at all.
        peer.conn.release(3);
        assert_eq!(
            peer.out(),
            [
                Out::headers(1, &[(":status", "200")], false),
                Out::Reset { stream: 1, reason: Reason::CANCEL },
                Out::Reset { stream: 3, reason: Reason::CANCEL },
            ]
        );
        assert_eq!(peer.conn.open_streams(), 0);
    }

    #[test]
    fn releasing_after_end_stream_while_the_body_still_comes_sends_no_error() {
        let mut peer = Peer::start(Config { connection_window: 2_000, ..Config::default() });
        peer.recv(Wire::new().post(1).data(1, &[1; 300], false)).unwrap();
        peer.accept();
        peer.respond(1, true);
        assert_eq!(peer.conn.open_streams(), 1, "the client's side is still open");
        peer.conn.release(1);
        assert_eq!(
            peer.out(),
            [Out::headers(1, &[(":status", "200")], true), Out::Reset { stream: 1, reason: Reason::NO_ERROR }]
        );
        assert_eq!(peer.conn.open_streams(), 0);
        // What the client sent before it saw the reset is dropped, its
        // window given back to the connection.
        peer.recv(Wire::new().data(1, &[2; 700], false)).unwrap();
        assert_eq!(peer.out(), [Out::WindowUpdate { stream: 0, increment: 1_000 }]);
        peer.recv(Wire::new().headers(1, &[("x-t", "1")], true).window_update(1, 5).rst(1, Reason::CANCEL)).unwrap();
        assert_eq!(peer.out(), []);
    }

    #[test]
    fn releasing_a_finished_stream_sends_nothing() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        peer.respond(1, true);
        peer.out();
        peer.conn.release(1);
        assert_eq!(peer.out(), []);
        // Releasing twice is harmless.
        peer.conn.release(1);
        assert_eq!(peer.conn.open_streams(), 0);
    }

    #[test]
    fn operations_on_released_or_unknown_streams_are_stream_errors() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1)).unwrap();
        peer.accept();
        peer.conn.release(1);
        peer.out();
        for id in [1, 2, 99, 0, u32::MAX] {
            assert!(matches!(peer.conn.poll_body(id, &mut noop()), Poll::Ready(Some(Err(StreamError::Closed)))));
            assert_eq!(peer.conn.send_response(id, 200, [], false), Err(StreamError::Closed));
            assert_eq!(peer.conn.send_informational(id, 100), Err(StreamError::Closed));
            assert_eq!(peer.conn.send_trailers(id, []), Err(StreamError::Closed));
            assert_eq!(peer.send_data(id, &mut Bytes::from_static(b"x"), true), Poll::Ready(Err(StreamError::Closed)));
            assert_eq!(peer.conn.poll_reset(id, &mut noop()), Poll::Ready(Reason::CANCEL));
            assert!(!peer.conn.reset_by_peer(id));
            assert!(peer.conn.is_reset(id));
            assert!(peer.conn.body_ended(id));
            peer.conn.reset(id, Reason::CANCEL);
            peer.conn.release(id);
        }
        assert_eq!(peer.out(), []);
    }

    #[test]
    fn a_connection_error_resets_every_stream_and_wakes_it() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1)).unwrap();
        peer.accept();
        let (counter, waker) = counting();
        assert!(peer.conn.poll_body(1, &mut Context::from_waker(&waker)).is_pending());
        let reason = connection_error(peer.recv(Wire::new().frame(kind::PUSH_PROMISE, 0, 1, &[0, 0, 0, 2])));
        assert_eq!(reason, Reason::PROTOCOL_ERROR);
        assert_eq!(counter.count(), 1);
        assert_eq!(peer.body(1), [Piece::Err(StreamError::Reset(Reason::PROTOCOL_ERROR))]);
        assert!(peer.conn.send_response(1, 200, [], true).is_err());
        assert_eq!(peer.conn.open_streams(), 0);
        assert!(peer.conn.is_done());
        assert_eq!(peer.out(), [Out::GoAway { last: 1, reason: Reason::PROTOCOL_ERROR }]);
        // Nothing more is read or sent.
        peer.recv(Wire::new().get(3)).unwrap();
        peer.conn.release(1);
        assert!(peer.conn.accept().is_none());
        assert_eq!(peer.out(), []);
    }

    #[test]
    fn close_resets_every_stream_with_cancel_and_drops_the_output() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1)).unwrap();
        peer.accept();
        peer.respond(1, false);
        peer.conn.close();
        assert!(peer.conn.output().is_empty());
        assert_eq!(peer.conn.poll_reset(1, &mut noop()), Poll::Ready(Reason::CANCEL));
        assert!(peer.conn.is_done());
    }
}

mod limits {
    use super::*;

    #[test]
    fn streams_past_max_concurrent_streams_are_refused() {
        let mut peer = Peer::start(Config { max_concurrent_streams: 2, ..Config::default() });
        peer.recv(Wire::new().get(1).get(3).get(5)).unwrap();
        assert_eq!(peer.out(), [Out::Reset { stream: 5, reason: Reason::REFUSED_STREAM }]);
        assert_eq!(peer.accept().stream, 1);
        assert_eq!(peer.accept().stream, 3);
        assert!(peer.conn.accept().is_none());
        // A refused stream's body is dropped quietly.
        peer.recv(Wire::new().data(5, b"x", true)).unwrap();
        assert_eq!(peer.out(), []);
        // Once one ends, a new one is taken.
        peer.respond(1, true);
        peer.recv(Wire::new().get(7)).unwrap();
        assert_eq!(peer.accept().stream, 7);
    }

    #[test]
    fn a_refused_streams_header_block_still_updates_the_dynamic_table() {
        let mut peer = Peer::start(Config { max_concurrent_streams: 1, ..Config::default() });
        peer.recv(Wire::new().post(1)).unwrap();
        peer.accept();
        let mut block = hpack(GET).to_vec();
        block.extend(hpack_insert("x-token", "secret"));
        peer.recv(Wire::new().block(3, &block, true)).unwrap();
        assert_eq!(peer.out(), [Out::Reset { stream: 3, reason: Reason::REFUSED_STREAM }]);
        // Trailers on stream 1 refer to the entry stream 3 added.
        peer.recv(Wire::new().block(1, &hpack_index(62), true)).unwrap();
        match &peer.body(1)[..] {
            [Piece::Trailers(t), Piece::End] => assert_eq!(t["x-token"], "secret"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_even_stream_id_is_goaway_protocol_error() {
        let mut peer = Peer::start(Config::default());
        let reason = connection_error(peer.recv(Wire::new().get(2)));
        assert_eq!(reason, Reason::PROTOCOL_ERROR);
        assert_eq!(peer.out(), [Out::GoAway { last: 0, reason: Reason::PROTOCOL_ERROR }]);
        assert!(peer.conn.accept().is_none());
    }

    #[test]
    fn a_decreasing_stream_id_opens_no_stream() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(5)).unwrap();
        assert_eq!(peer.accept().stream, 5);
        let _ = peer.recv(Wire::new().get(3));
        assert!(peer.conn.accept().is_none());
        assert!(peer.conn.is_done(), "the connection ends (see the next test)");
    }

    /// RFC 9113 §5.1.1: "The identifier of a newly established stream MUST
    /// be numerically greater than all streams that the initiating endpoint
    /// has opened ... An endpoint that receives an unexpected stream
    /// identifier MUST respond with a connection error of type
    /// PROTOCOL_ERROR." (h2spec http2/5.1.1/2.)
    #[test]
    fn a_decreasing_stream_id_is_goaway_protocol_error() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(5)).unwrap();
        peer.accept();
        let reason = connection_error(peer.recv(Wire::new().get(3)));
        assert_eq!(reason, Reason::PROTOCOL_ERROR);
        assert_eq!(last_goaway(&peer.out()), (5, Reason::PROTOCOL_ERROR));
    }

    #[test]
    fn a_header_list_past_max_header_list_size_is_answered_431() {
        let mut peer = Peer::start(Config { max_header_list_size: 200, ..Config::default() });
        let big = "b".repeat(300);
        let head = with(GET, &[("x-big", &big)]);
        peer.recv(Wire::new().headers(1, &head, true)).unwrap();
        assert_eq!(peer.out(), [Out::headers(1, &[(":status", "431")], true)]);
        assert!(peer.conn.accept().is_none());
        assert_eq!(peer.conn.open_streams(), 0);
        // With a body to come, the client is also told to stop.
        peer.recv(Wire::new().headers(3, &head, false)).unwrap();
        assert_eq!(
            peer.out(),
            [Out::headers(3, &[(":status", "431")], true), Out::Reset { stream: 3, reason: Reason::NO_ERROR }]
        );
        peer.recv(Wire::new().data(3, b"body", true)).unwrap();
        assert_eq!(peer.out(), []);
        // The connection goes on.
        peer.recv(Wire::new().get(5)).unwrap();
        assert_eq!(peer.accept().stream, 5);
    }

    #[test]
    fn a_continuation_flood_is_goaway_enhance_your_calm() {
        let mut peer = Peer::start(Config { max_header_list_size: 1_000, ..Config::default() });
        // The block may grow to twice the header list size, no further.
        let wire = Wire::new().frame(kind::HEADERS, flag::END_STREAM, 1, &[0x82; 1_000]).frame(
            kind::CONTINUATION,
            0,
            1,
            &[0x82; 1_000],
        );
        peer.recv(wire).unwrap();
        assert_eq!(peer.out(), []);
        let reason = connection_error(peer.recv(Wire::new().frame(kind::CONTINUATION, 0, 1, &[0x82])));
        assert_eq!(reason, Reason::ENHANCE_YOUR_CALM);
        assert_eq!(last_goaway(&peer.out()).1, Reason::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn a_header_block_split_over_continuations_opens_a_stream() {
        let mut peer = Peer::start(Config::default());
        let block = hpack(&with(GET, &[("x-a", "1"), ("x-b", "2")]));
        let (a, rest) = block.split_at(3);
        let (b, c) = rest.split_at(5);
        let wire = Wire::new()
            .frame(kind::HEADERS, flag::END_STREAM, 1, a)
            .frame(kind::CONTINUATION, 0, 1, b)
            .frame(kind::CONTINUATION, 0, 1, &[])
            .frame(kind::CONTINUATION, flag::END_HEADERS, 1, c);
        peer.recv(wire).unwrap();
        let request = peer.accept();
        assert!(request.end_stream);
        assert_eq!(request.fields.get(b"x-b"), Some(&b"2"[..]));
    }

    #[test]
    fn a_header_block_interrupted_or_a_stray_continuation_is_goaway_protocol_error() {
        let interruptions = [
            Wire::new().ping([0; 8]),
            Wire::new().frame(kind::CONTINUATION, flag::END_HEADERS, 3, &[0x82]),
            Wire::new().frame(0x20, 0, 0, b"unknown"),
            Wire::new().data(1, b"x", false),
        ];
        for interruption in interruptions {
            let mut peer = Peer::start(Config::default());
            peer.recv(Wire::new().frame(kind::HEADERS, 0, 1, &hpack(GET))).unwrap();
            assert_eq!(connection_error(peer.recv(interruption)), Reason::PROTOCOL_ERROR);
        }
        let mut peer = Peer::start(Config::default());
        let stray = Wire::new().frame(kind::CONTINUATION, flag::END_HEADERS, 1, &hpack(GET));
        assert_eq!(connection_error(peer.recv(stray)), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn rapid_reset_past_the_limit_before_accept_is_goaway_enhance_your_calm() {
        let mut peer = Peer::start(Config { max_pending_accept_resets: 3, ..Config::default() });
        let mut wire = Wire::new();
        for id in [1, 3, 5] {
            wire = wire.get(id).rst(id, Reason::CANCEL);
        }
        peer.recv(wire).unwrap();
        assert_eq!(peer.out(), []);
        assert_eq!(peer.conn.open_streams(), 0);
        // Reset before they were taken: accept skips them, and a new round
        // starts.
        assert!(peer.conn.accept().is_none());
        let mut wire = Wire::new();
        for id in [7, 9, 11] {
            wire = wire.get(id).rst(id, Reason::CANCEL);
        }
        peer.recv(wire).unwrap();
        assert_eq!(peer.out(), []);
        let reason = connection_error(peer.recv(Wire::new().get(13).rst(13, Reason::CANCEL)));
        assert_eq!(reason, Reason::ENHANCE_YOUR_CALM);
        assert_eq!(peer.out(), [Out::GoAway { last: 13, reason: Reason::ENHANCE_YOUR_CALM }]);
    }

    #[test]
    fn rst_stream_on_an_idle_stream_or_stream_zero_is_goaway_protocol_error() {
        let mut peer = Peer::start(Config::default());
        assert_eq!(connection_error(peer.recv(Wire::new().rst(1, Reason::CANCEL))), Reason::PROTOCOL_ERROR);
        let mut peer = Peer::start(Config::default());
        assert_eq!(connection_error(peer.recv(Wire::new().rst(0, Reason::CANCEL))), Reason::PROTOCOL_ERROR);
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1)).unwrap();
        let short = Wire::new().frame(kind::RST_STREAM, 0, 1, &[0, 0, 8]);
        assert_eq!(connection_error(peer.recv(short)), Reason::FRAME_SIZE_ERROR);
    }

    #[test]
    fn window_update_zero_on_streams_is_reset_and_then_goaway() {
        let mut peer = Peer::start(Config { max_local_error_resets: 2, ..Config::default() });
        peer.recv(Wire::new().get(1).get(3).get(5)).unwrap();
        for _ in 0..3 {
            peer.accept();
        }
        peer.recv(Wire::new().window_update(1, 0).window_update(3, 0)).unwrap();
        assert_eq!(
            peer.out(),
            [
                Out::Reset { stream: 1, reason: Reason::PROTOCOL_ERROR },
                Out::Reset { stream: 3, reason: Reason::PROTOCOL_ERROR },
            ]
        );
        // On a stream already reset it costs nothing.
        peer.recv(Wire::new().window_update(1, 0)).unwrap();
        assert_eq!(peer.out(), []);
        let reason = connection_error(peer.recv(Wire::new().window_update(5, 0)));
        assert_eq!(reason, Reason::ENHANCE_YOUR_CALM);
        assert_eq!(
            peer.out(),
            [
                Out::Reset { stream: 5, reason: Reason::PROTOCOL_ERROR },
                Out::GoAway { last: 5, reason: Reason::ENHANCE_YOUR_CALM },
            ]
        );
    }

    #[test]
    fn window_update_zero_on_the_connection_or_bad_lengths_end_it() {
        let mut peer = Peer::start(Config::default());
        assert_eq!(connection_error(peer.recv(Wire::new().window_update(0, 0))), Reason::PROTOCOL_ERROR);
        let mut peer = Peer::start(Config::default());
        let bad = Wire::new().frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1]);
        assert_eq!(connection_error(peer.recv(bad)), Reason::FRAME_SIZE_ERROR);
        let mut peer = Peer::start(Config::default());
        assert_eq!(connection_error(peer.recv(Wire::new().window_update(9, 1))), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn malformed_requests_past_the_local_error_limit_are_goaway() {
        let mut peer = Peer::start(Config { max_local_error_resets: 1, ..Config::default() });
        let bad = with(GET, &[("connection", "close")]);
        peer.recv(Wire::new().headers(1, &bad, true)).unwrap();
        let reason = connection_error(peer.recv(Wire::new().headers(3, &bad, true)));
        assert_eq!(reason, Reason::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn empty_data_frames_past_the_limit_are_goaway_enhance_your_calm() {
        let mut peer = Peer::start(Config { max_empty_data_frames: 3, ..Config::default() });
        peer.recv(Wire::new().post(1).post(3)).unwrap();
        peer.recv(Wire::new().data(1, b"", false).data(1, b"", false).data(3, b"", false)).unwrap();
        // An empty frame that ends its stream is not counted.
        peer.recv(Wire::new().data(3, b"", true)).unwrap();
        assert_eq!(peer.out(), []);
        let reason = connection_error(peer.recv(Wire::new().data(1, b"", false)));
        assert_eq!(reason, Reason::ENHANCE_YOUR_CALM);
        assert_eq!(last_goaway(&peer.out()).1, Reason::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn hpack_amplification_past_the_ratio_is_goaway_enhance_your_calm() {
        let config = Config { max_decoded_ratio: 20, min_decoded_for_ratio: 50_000, ..Config::default() };
        let mut peer = Peer::start(config);
        // One 1,000-byte field in the dynamic table...
        let value = "v".repeat(1_000);
        let mut block = hpack(GET).to_vec();
        block.extend(hpack_insert("x-big", &value));
        peer.recv(Wire::new().block(1, &block, true)).unwrap();
        assert_eq!(peer.accept().fields.get(b"x-big"), Some(value.as_bytes()));
        // ...referred to a few times is fine (under the minimum)...
        let mut block = hpack(GET).to_vec();
        for _ in 0..5 {
            block.extend(hpack_index(62));
        }
        peer.recv(Wire::new().block(3, &block, true)).unwrap();
        assert_eq!(peer.accept().fields.iter().filter(|(n, _)| *n == b"x-big").count(), 5);
        // ...but 50 one-byte references decode to ~50 KB: far past 20 times
        // the ~1.3 KB the client sent.
        let mut block = hpack(GET).to_vec();
        for _ in 0..50 {
            block.extend(hpack_index(62));
        }
        let reason = connection_error(peer.recv(Wire::new().block(5, &block, true)));
        assert_eq!(reason, Reason::ENHANCE_YOUR_CALM);
        assert_eq!(last_goaway(&peer.out()).1, Reason::ENHANCE_YOUR_CALM);
        assert!(peer.conn.accept().is_none());
    }

    #[test]
    fn a_header_block_that_does_not_decode_is_goaway_compression_error() {
        let mut peer = Peer::start(Config::default());
        // Index 70: past the static table, the dynamic one is empty.
        let reason = connection_error(peer.recv(Wire::new().block(1, &hpack_index(70), true)));
        assert_eq!(reason, Reason::COMPRESSION_ERROR);
        assert_eq!(last_goaway(&peer.out()).1, Reason::COMPRESSION_ERROR);
    }

    #[test]
    fn a_frame_larger_than_16384_is_goaway_frame_size_error_as_soon_as_its_head_arrives() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1)).unwrap();
        let mut head = bytes::BytesMut::new();
        nuncio_http2::frame::put_head(&mut head, 16_385, kind::DATA, 0, 1);
        let reason = connection_error(peer.conn.recv(&mut head));
        assert_eq!(reason, Reason::FRAME_SIZE_ERROR);
        assert_eq!(peer.out(), [Out::GoAway { last: 1, reason: Reason::FRAME_SIZE_ERROR }]);
        // Exactly 16,384 is fine.
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1).data(1, &[0; 16_384], true)).unwrap();
        assert_eq!(peer.out(), []);
    }

    #[test]
    fn frames_on_the_wrong_stream_end_the_connection() {
        let cases = [
            (Wire::new().data(0, b"x", false), Reason::PROTOCOL_ERROR),
            (Wire::new().headers(0, GET, true), Reason::PROTOCOL_ERROR),
            (Wire::new().frame(kind::PRIORITY, 0, 0, &[0, 0, 0, 1, 16]), Reason::PROTOCOL_ERROR),
            (Wire::new().frame(kind::PING, 0, 1, &[0; 8]), Reason::PROTOCOL_ERROR),
            (Wire::new().frame(kind::GOAWAY, 0, 1, &[0; 8]), Reason::PROTOCOL_ERROR),
            (Wire::new().data(1, b"x", false), Reason::PROTOCOL_ERROR),
            (Wire::new().frame(kind::PING, 0, 0, &[0; 7]), Reason::FRAME_SIZE_ERROR),
            (Wire::new().frame(kind::GOAWAY, 0, 0, &[0; 7]), Reason::FRAME_SIZE_ERROR),
        ];
        for (wire, want) in cases {
            let mut peer = Peer::start(Config::default());
            assert_eq!(connection_error(peer.recv(wire)), want);
        }
    }

    #[test]
    fn priority_frames_are_ignored_but_a_self_dependency_resets_the_stream() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1)).unwrap();
        peer.accept();
        // On an open and on an idle stream: ignored.
        peer.recv(Wire::new().frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 16])).unwrap();
        peer.recv(Wire::new().frame(kind::PRIORITY, 0, 9, &[0, 0, 0, 1, 16])).unwrap();
        assert_eq!(peer.out(), []);
        peer.recv(Wire::new().frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 1, 16])).unwrap();
        assert_eq!(peer.out(), [Out::Reset { stream: 1, reason: Reason::PROTOCOL_ERROR }]);
        // A HEADERS that depends on itself: reset, its block still decoded.
        let mut payload = vec![0, 0, 0, 3, 16];
        payload.extend_from_slice(&hpack(GET));
        peer.recv(Wire::new().frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM | flag::PRIORITY, 3, &payload))
            .unwrap();
        assert_eq!(peer.out(), [Out::Reset { stream: 3, reason: Reason::PROTOCOL_ERROR }]);
        assert!(peer.conn.accept().is_none());
    }
    /// RFC 9113 §5.4.2 / §5.1: after nuncio resets a stream, frames the
    /// client sent on it before it knew must be ignored. A HEADERS whose
    /// priority depends on itself is reset (stream error, §5.3.1), but its
    /// id is never recorded as used (`header_block` returns before
    /// `last_stream = id`), so the client's DATA on it is taken for a frame
    /// on an idle stream and ends the connection.
    #[test]
    fn data_following_a_headers_reset_for_self_dependency_is_ignored() {
        let mut peer = Peer::start(Config::default());
        let mut payload = vec![0, 0, 0, 1, 16];
        payload.extend_from_slice(&hpack(POST));
        let wire =
            Wire::new().frame(kind::HEADERS, flag::END_HEADERS | flag::PRIORITY, 1, &payload).data(1, b"body", true);
        assert_eq!(peer.recv(wire), Ok(()));
        assert_eq!(peer.out(), [Out::Reset { stream: 1, reason: Reason::PROTOCOL_ERROR }]);
    }
}

mod malformed {
    use super::*;

    #[test]
    fn malformed_requests_are_reset_protocol_error_and_the_connection_goes_on() {
        let cases: &[&[(&str, &str)]] = &[
            &[(":method", "GET"), (":scheme", "https"), (":authority", "a.test")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("X-Upper", "1")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("connection", "keep-alive")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("keep-alive", "5")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("transfer-encoding", "chunked")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("upgrade", "websocket")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("te", "gzip")],
            &[(":method", "GET"), (":scheme", "https"), ("x-a", "1"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), (":status", "200")],
            &[(":method", "GET"), (":method", "GET"), (":scheme", "https"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "")],
            &[(":scheme", "https"), (":path", "/")],
            &[(":method", "GET"), (":path", "/")],
            &[(":method", "CONNECT"), (":authority", "a.test:443"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("content-length", "x")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "/"), ("x-bad", "a\nb")],
        ];
        let mut peer = Peer::start(Config::default());
        let mut id = 1;
        for fields in cases {
            peer.recv(Wire::new().headers(id, fields, true)).unwrap();
            assert_eq!(peer.out(), [Out::Reset { stream: id, reason: Reason::PROTOCOL_ERROR }], "{fields:?}");
            assert!(peer.conn.accept().is_none(), "{fields:?}");
            id += 2;
        }
        assert_eq!(peer.conn.open_streams(), 0);
        peer.recv(Wire::new().get(id)).unwrap();
        assert_eq!(peer.accept().stream, id);
    }
}

mod connection {
    use super::*;

    #[test]
    fn ping_is_answered_with_the_same_payload_and_a_ping_ack_is_not() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().ping(*b"12345678")).unwrap();
        assert_eq!(peer.out(), [Out::Ping { ack: true, payload: *b"12345678" }]);
        peer.recv(Wire::new().frame(kind::PING, flag::ACK, 0, b"abcdefgh")).unwrap();
        assert_eq!(peer.out(), []);
    }

    #[test]
    fn unknown_frame_types_are_ignored() {
        let mut peer = Peer::start(Config::default());
        let wire = Wire::new()
            .frame(0x20, 0xff, 0, b"whatever")
            .get(1)
            .frame(0xfa, 0, 1, &[1; 100])
            .frame(0x0a, 0, 0, b"altsvc?")
            .frame(0x10, 0, 77, &[]);
        peer.recv(wire).unwrap();
        assert_eq!(peer.out(), []);
        assert_eq!(peer.accept().stream, 1);
    }

    #[test]
    fn a_client_goaway_ends_the_connection_once_its_open_streams_end() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().get(1).get(3)).unwrap();
        peer.accept();
        peer.accept();
        peer.recv(Wire::new().goaway(3, Reason::NO_ERROR)).unwrap();
        assert!(!peer.conn.is_done());
        peer.respond(1, true);
        assert!(!peer.conn.is_done());
        // Output is queued already (so queuing more wakes no one): the wake
        // that comes is for the last stream's end.
        let (io, waker) = counting();
        peer.conn.set_io_waker(&waker);
        peer.respond(3, true);
        assert_eq!(io.count(), 1, "the last stream's end wakes the I/O task");
        assert!(peer.conn.is_done());
        assert_eq!(
            peer.out(),
            [Out::headers(1, &[(":status", "200")], true), Out::headers(3, &[(":status", "200")], true)]
        );
    }

    #[test]
    fn a_client_goaway_with_no_stream_open_is_done_at_once() {
        let mut peer = Peer::start(Config::default());
        assert!(!peer.conn.is_done());
        peer.recv(Wire::new().goaway(0, Reason::NO_ERROR)).unwrap();
        assert!(peer.conn.is_done());
    }

    #[test]
    fn go_away_sends_the_last_stream_and_later_streams_are_ignored_but_still_decoded() {
        let mut peer = Peer::start(Config::default());
        peer.recv(Wire::new().post(1)).unwrap();
        peer.accept();
        peer.conn.go_away(Reason::NO_ERROR);
        assert_eq!(peer.out(), [Out::GoAway { last: 1, reason: Reason::NO_ERROR }]);
        // Once is enough.
        peer.conn.go_away(Reason::ENHANCE_YOUR_CALM);
        assert_eq!(peer.out(), []);
        // Stream 3 is ignored, but its block adds to the dynamic table.
        let mut block = hpack(GET).to_vec();
        block.extend(hpack_insert("x-token", "secret"));
        peer.recv(Wire::new().block(3, &block, false).data(3, b"ignored", true)).unwrap();
        assert!(peer.conn.accept().is_none());
        assert_eq!(peer.out(), []);
        // Stream 1's trailers refer to that entry.
        peer.recv(Wire::new().data(1, b"body", false).block(1, &hpack_index(62), true)).unwrap();
        match &peer.body(1)[..] {
            [Piece::Data(d), Piece::Trailers(t), Piece::End] => {
                assert_eq!(&d[..], b"body");
                assert_eq!(t["x-token"], "secret");
            }
            other => panic!("{other:?}"),
        }
        assert!(!peer.conn.is_done());
        peer.respond(1, true);
        assert!(peer.conn.is_done());
    }

    #[test]
    fn frames_split_at_every_byte_boundary_give_the_same_result_as_one_recv() {
        let config = Config { stream_window: 1_000, connection_window: 2_000, ..Config::default() };
        let exchange = || {
            let post = with(POST, &[("content-length", "10")]);
            let block = hpack(&post);
            let (a, b) = block.split_at(block.len() / 2);
            let mut indexed = hpack(GET).to_vec();
            indexed.extend(hpack_insert("x-token", "t0k3n"));
            let mut reuse =
                hpack(&[(":method", "GET"), (":scheme", "http"), (":authority", "b.test"), (":path", "/again")])
                    .to_vec();
            reuse.extend(hpack_index(62));
            Wire::preface(&[initial_window(100), (setting::HEADER_TABLE_SIZE, 256)])
                .headers(1, &with(GET, &[("accept", "*/*")]), true)
                .frame(kind::HEADERS, 0, 3, a)
                .frame(kind::CONTINUATION, flag::END_HEADERS, 3, b)
                .padded_data(3, b"01234", 7, false)
                .ping(*b"pingpong")
                .frame(0x33, 0, 3, b"unknown")
                .data(3, b"56789", false)
                .headers(3, &[("x-sum", "45")], true)
                .headers(5, &with(GET, &[("te", "gzip")]), true)
                .get(7)
                .rst(7, Reason::CANCEL)
                .post(9)
                .data(9, &[9; 600], false)
                .window_update(0, 1_000)
                .window_update(9, 100)
                .block(11, &indexed, true)
                .block(13, &reuse, true)
                .settings(&[initial_window(200)])
        };
        /// A request as accepted: stream, method, URI, fields, length,
        /// end, decoded size.
        type Seen = (u32, Method, http::Uri, http::HeaderMap, Option<u64>, bool, u64);
        #[derive(Debug, PartialEq)]
        struct Outcome {
            error: Option<Error>,
            requests: Vec<Seen>,
            bodies: Vec<Vec<Piece>>,
            output: Bytes,
        }
        let finish = |mut peer: Peer, error: Option<Error>| {
            let mut requests = Vec::new();
            while let Some(r) = peer.conn.accept() {
                requests.push((
                    r.stream,
                    r.method,
                    r.uri,
                    r.fields.to_map(),
                    r.content_length,
                    r.end_stream,
                    r.decoded_size,
                ));
            }
            let bodies = requests.iter().map(|r| peer.body(r.0)).collect();
            Outcome { error, requests, bodies, output: peer.out_bytes() }
        };
        let mut whole = Peer::new(config.clone());
        let error = whole.recv(exchange()).err();
        let whole = finish(whole, error);
        let mut split = Peer::new(config);
        let mut input = bytes::BytesMut::new();
        let mut error = None;
        for byte in exchange().0 {
            input.extend_from_slice(&[byte]);
            if let Err(e) = split.conn.recv(&mut input) {
                error.get_or_insert(e);
            }
        }
        assert!(input.is_empty());
        let split = finish(split, error);
        assert_eq!(whole, split);
        // And the outcome is the one expected.
        assert_eq!(whole.error, None);
        let streams: Vec<_> = whole.requests.iter().map(|r| r.0).collect();
        assert_eq!(streams, [1, 3, 9, 11, 13]);
        assert_eq!(whole.requests[4].2, "http://b.test/again");
        assert_eq!(whole.requests[4].3["x-token"], "t0k3n");
        assert_eq!(
            whole.bodies[1],
            [
                Piece::Data(Bytes::from_static(b"01234")),
                Piece::Data(Bytes::from_static(b"56789")),
                Piece::Trailers(
                    [(http::header::HeaderName::from_static("x-sum"), "45".parse().unwrap())].into_iter().collect()
                ),
                Piece::End,
            ]
        );
        let out = decode_frames(split_frames(whole.output), &mut nuncio_http2::hpack::Decoder::new(4096));
        assert!(out.contains(&Out::Ping { ack: true, payload: *b"pingpong" }));
        assert!(out.contains(&Out::Reset { stream: 5, reason: Reason::PROTOCOL_ERROR }));
        assert!(out.contains(&Out::WindowUpdate { stream: 9, increment: 600 }));
        assert_eq!(out.iter().filter(|o| **o == Out::SettingsAck).count(), 2);
    }
}

/// The codec against the `h2` crate's client, over an in-memory pipe: a
/// small driver (as the proxy's connection task, reduced) reads into the
/// codec, writes its output and runs each request's handler as a local
/// task that reaches the codec through `Rc<RefCell<_>>`.
mod interop {
    use std::cell::{Cell, RefCell};
    use std::future::{Future, poll_fn};
    use std::pin::Pin;
    use std::rc::Rc;
    use std::task::Waker;
    use std::time::Duration;

    use bytes::{Buf, BytesMut};
    use http::HeaderMap;
    use nuncio_http2::{BodyItem, Connection, Request};
    use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

    use super::*;

    type Shared = Rc<RefCell<Connection>>;

    /// Runs `test` on a current-thread runtime in a `LocalSet`, bounded.
    fn run<F: Future<Output = ()>>(test: F) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            tokio::time::timeout(Duration::from_secs(10), test).await.expect("the exchange did not finish in 10 s");
        });
    }

    /// Serves one connection on `io`, each request by `handler` in a task
    /// of its own. Returns the shared codec.
    fn serve<H, F>(io: DuplexStream, config: Config, handler: H) -> Shared
    where
        H: Fn(Shared, Request) -> F + 'static,
        F: Future<Output = ()> + 'static,
    {
        let conn = Rc::new(RefCell::new(Connection::new(config)));
        let shared = conn.clone();
        tokio::task::spawn_local(async move {
            let mut io = io;
            let mut input = BytesMut::new();
            while let Some(request) = poll_fn(|cx| drive(&shared, &mut io, &mut input, cx)).await {
                tokio::task::spawn_local(handler(shared.clone(), request));
            }
        });
        conn
    }

    /// One turn of the connection's I/O: write what is queued, read what
    /// came, until a request opens a stream or the connection is over.
    fn drive(
        conn: &Shared,
        io: &mut DuplexStream,
        input: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Request>> {
        let mut c = conn.borrow_mut();
        loop {
            if let Some(request) = c.accept() {
                return Poll::Ready(Some(request));
            }
            let mut flushed = true;
            while !c.output().is_empty() {
                match Pin::new(&mut *io).poll_write(cx, c.output()) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        c.output().advance(n);
                        c.written();
                    }
                    Poll::Ready(_) => {
                        c.close();
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {
                        flushed = false;
                        break;
                    }
                }
            }
            if flushed && c.is_done() {
                return Poll::Ready(None);
            }
            if !c.wants_read() {
                break;
            }
            let mut buf = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    input.extend_from_slice(read.filled());
                    // An error queued GOAWAY: it is written on the next turn.
                    let _ = c.recv(input);
                }
                Poll::Ready(_) => {
                    c.close();
                    return Poll::Ready(None);
                }
                Poll::Pending => break,
            }
        }
        c.set_io_waker(cx.waker());
        Poll::Pending
    }

    /// A request's whole body and its trailers.
    async fn read_body(conn: &Shared, id: u32) -> (Vec<u8>, Option<HeaderMap>) {
        let mut body = Vec::new();
        let mut trailers = None;
        while let Some(item) = poll_fn(|cx| conn.borrow_mut().poll_body(id, cx)).await {
            match item.expect("the request body") {
                BodyItem::Data(data) => body.extend_from_slice(&data),
                BodyItem::Trailers(t) => trailers = Some(t),
            }
        }
        (body, trailers)
    }

    /// Queues `data` as the client's window and the output allow.
    async fn send_data(conn: &Shared, id: u32, mut data: Bytes, end: bool) -> Result<(), StreamError> {
        let result = poll_fn(|cx| conn.borrow_mut().poll_send_data(id, &mut data, end, cx)).await;
        match result {
            // All of it went, with END_STREAM (see
            // `streams::send_data_that_ends_the_stream_is_ready_ok`).
            Err(StreamError::Closed) if end && data.is_empty() => Ok(()),
            other => other,
        }
    }

    /// A one-shot slot a handler fills and the test awaits.
    struct Slot<T> {
        value: RefCell<Option<T>>,
        waker: RefCell<Option<Waker>>,
    }

    impl<T> Slot<T> {
        fn new() -> Rc<Slot<T>> {
            Rc::new(Slot { value: RefCell::new(None), waker: RefCell::new(None) })
        }

        fn put(&self, value: T) {
            *self.value.borrow_mut() = Some(value);
            if let Some(waker) = self.waker.borrow_mut().take() {
                waker.wake();
            }
        }

        async fn take(&self) -> T {
            poll_fn(|cx| match self.value.borrow_mut().take() {
                Some(value) => Poll::Ready(value),
                None => {
                    *self.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await
        }
    }

    /// An h2 client on `io`, its connection driven by a local task.
    async fn client(io: DuplexStream) -> h2::client::SendRequest<Bytes> {
        let (send, connection) = h2::client::handshake(io).await.expect("the h2 handshake");
        tokio::task::spawn_local(async move {
            let _ = connection.await;
        });
        send
    }

    fn request(method: &str, path: &str) -> http::Request<()> {
        http::Request::builder().method(method).uri(format!("http://example.test{path}")).body(()).unwrap()
    }

    /// A response body read to its end, its window released as it is.
    async fn read_response(body: &mut h2::RecvStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("a response body chunk");
            body.flow_control().release_capacity(chunk.len()).unwrap();
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[test]
    fn h2_client_gets_a_100_kb_response_through_its_64_kib_windows() {
        run(async {
            let (client_io, server_io) = tokio::io::duplex(16 * 1024);
            let body = pattern(100_000);
            let served = body.clone();
            serve(server_io, Config::default(), move |conn, request| {
                let body = served.clone();
                async move {
                    let id = request.stream;
                    assert_eq!(request.method, Method::GET);
                    assert_eq!(request.uri, "http://example.test/big");
                    conn.borrow_mut()
                        .send_response(id, 200, [(&b"content-type"[..], &b"application/octet-stream"[..])], false)
                        .unwrap();
                    send_data(&conn, id, body, true).await.unwrap();
                    conn.borrow_mut().release(id);
                }
            });
            let mut send = client(client_io).await;
            let (response, _) = send.send_request(request("GET", "/big"), true).unwrap();
            let response = response.await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "application/octet-stream");
            let got = read_response(&mut response.into_body()).await;
            assert_eq!(got.len(), body.len());
            assert!(got == body, "the body came back altered");
        });
    }

    #[test]
    fn h2_client_posts_1_mb_and_gets_it_echoed() {
        run(async {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            serve(server_io, Config::default(), |conn, request| async move {
                let id = request.stream;
                assert_eq!(request.content_length, Some(1 << 20));
                conn.borrow_mut().send_response(id, 200, [], false).unwrap();
                // Echo each piece as it comes.
                while let Some(item) = poll_fn(|cx| conn.borrow_mut().poll_body(id, cx)).await {
                    match item.unwrap() {
                        BodyItem::Data(data) => send_data(&conn, id, data, false).await.unwrap(),
                        BodyItem::Trailers(_) => panic!("no trailers were sent"),
                    }
                }
                send_data(&conn, id, Bytes::new(), true).await.unwrap();
                conn.borrow_mut().release(id);
            });
            let mut send = client(client_io).await;
            let upload = pattern(1 << 20);
            let mut head = request("POST", "/echo");
            head.headers_mut().insert("content-length", (1u32 << 20).into());
            let (response, mut stream) = send.send_request(head, false).unwrap();
            let to_send = upload.clone();
            // The upload goes as h2 gets capacity, while the echo is read.
            let uploader = tokio::task::spawn_local(async move {
                let mut left = to_send;
                while !left.is_empty() {
                    stream.reserve_capacity(left.len().min(64 * 1024));
                    let capacity = poll_fn(|cx| stream.poll_capacity(cx)).await.unwrap().unwrap();
                    let n = capacity.min(left.len());
                    let chunk = left.split_to(n);
                    stream.send_data(chunk, left.is_empty()).unwrap();
                }
            });
            let response = response.await.unwrap();
            assert_eq!(response.status(), 200);
            let echoed = read_response(&mut response.into_body()).await;
            uploader.await.unwrap();
            assert_eq!(echoed.len(), upload.len());
            assert!(echoed == upload, "the echo came back altered");
        });
    }

    #[test]
    fn h2_client_runs_50_concurrent_streams_on_one_connection() {
        const STREAMS: usize = 50;
        run(async {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            // Handlers answer only once all 50 streams are open at once.
            let open = Rc::new(Cell::new(0usize));
            let waiters: Rc<RefCell<Vec<Waker>>> = Rc::default();
            let peak = Rc::new(Cell::new(0usize));
            let (open2, waiters2, peak2) = (open.clone(), waiters.clone(), peak.clone());
            let conn = serve(server_io, Config::default(), move |conn, request| {
                let (open, waiters, peak) = (open2.clone(), waiters2.clone(), peak2.clone());
                async move {
                    let id = request.stream;
                    open.set(open.get() + 1);
                    peak.set(peak.get().max(conn.borrow().open_streams()));
                    poll_fn(|cx| {
                        if open.get() >= STREAMS {
                            for waker in waiters.borrow_mut().drain(..) {
                                waker.wake();
                            }
                            Poll::Ready(())
                        } else {
                            waiters.borrow_mut().push(cx.waker().clone());
                            Poll::Pending
                        }
                    })
                    .await;
                    let path = request.uri.path().to_owned();
                    conn.borrow_mut().send_response(id, 200, [], false).unwrap();
                    send_data(&conn, id, Bytes::from(path.repeat(100)), true).await.unwrap();
                    conn.borrow_mut().release(id);
                }
            });
            let send = client(client_io).await;
            let mut tasks = Vec::new();
            for i in 0..STREAMS {
                let send = send.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let mut send = send.ready().await.unwrap();
                    let (response, _) = send.send_request(request("GET", &format!("/s{i}")), true).unwrap();
                    let response = response.await.unwrap();
                    assert_eq!(response.status(), 200);
                    let body = read_response(&mut response.into_body()).await;
                    assert_eq!(body, format!("/s{i}").repeat(100).into_bytes());
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(peak.get(), STREAMS);
            assert_eq!(conn.borrow().open_streams(), 0);
        });
    }

    #[test]
    fn h2_client_request_trailers_and_response_trailers() {
        run(async {
            let (client_io, server_io) = tokio::io::duplex(16 * 1024);
            serve(server_io, Config::default(), |conn, request| async move {
                let id = request.stream;
                let (body, trailers) = read_body(&conn, id).await;
                assert_eq!(body, b"hello");
                let trailers = trailers.expect("request trailers");
                let checksum = trailers["x-checksum"].as_bytes().to_vec();
                conn.borrow_mut().send_response(id, 200, [(&b"trailer"[..], &b"x-echo"[..])], false).unwrap();
                send_data(&conn, id, Bytes::from_static(b"world"), false).await.unwrap();
                conn.borrow_mut().send_trailers(id, [(&b"x-echo"[..], &checksum[..]), (b"x-done", b"yes")]).unwrap();
                conn.borrow_mut().release(id);
            });
            let mut send = client(client_io).await;
            let (response, mut stream) = send.send_request(request("POST", "/t"), false).unwrap();
            stream.send_data(Bytes::from_static(b"hello"), false).unwrap();
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", "abc123".parse().unwrap());
            stream.send_trailers(trailers).unwrap();
            let response = response.await.unwrap();
            let mut body = response.into_body();
            assert_eq!(read_response(&mut body).await, b"world");
            let trailers = body.trailers().await.unwrap().expect("response trailers");
            assert_eq!(trailers["x-echo"], "abc123");
            assert_eq!(trailers["x-done"], "yes");
        });
    }

    #[test]
    fn h2_client_reset_of_an_in_flight_stream_reaches_its_handler_and_the_connection_goes_on() {
        run(async {
            let (client_io, server_io) = tokio::io::duplex(16 * 1024);
            // The reset's code, whether the client sent it, and what a
            // send after it gave.
            type Seen = (Reason, bool, Result<(), StreamError>);
            let seen: Rc<Slot<Seen>> = Slot::new();
            let slot = seen.clone();
            serve(server_io, Config::default(), move |conn, request| {
                let slot = slot.clone();
                async move {
                    let id = request.stream;
                    conn.borrow_mut().send_response(id, 200, [], false).unwrap();
                    if request.uri.path() == "/fine" {
                        send_data(&conn, id, Bytes::from_static(b"fine"), true).await.unwrap();
                        conn.borrow_mut().release(id);
                        return;
                    }
                    send_data(&conn, id, Bytes::from_static(b"partial"), false).await.unwrap();
                    let reason = poll_fn(|cx| conn.borrow_mut().poll_reset(id, cx)).await;
                    let by_peer = conn.borrow().reset_by_peer(id);
                    let after = send_data(&conn, id, Bytes::from_static(b"more"), false).await;
                    conn.borrow_mut().release(id);
                    slot.put((reason, by_peer, after));
                }
            });
            let mut send = client(client_io).await;
            let (response, mut stream) = send.send_request(request("GET", "/slow"), true).unwrap();
            let response = response.await.unwrap();
            let mut body = response.into_body();
            let first = body.data().await.unwrap().unwrap();
            assert_eq!(&first[..], b"partial");
            stream.send_reset(h2::Reason::CANCEL);
            let (reason, by_peer, after) = seen.take().await;
            assert_eq!(reason, Reason::CANCEL);
            assert!(by_peer);
            assert_eq!(after, Err(StreamError::Reset(Reason::CANCEL)));
            // The connection serves the next request.
            let mut send = send.ready().await.unwrap();
            let (response, _) = send.send_request(request("GET", "/fine"), true).unwrap();
            let response = response.await.unwrap();
            assert_eq!(read_response(&mut response.into_body()).await, b"fine");
        });
    }
}
