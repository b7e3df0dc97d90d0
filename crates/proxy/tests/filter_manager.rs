//! The filter manager's statuses on every hook, through the real proxy:
//! stopping at a filter and resuming at the next (through the stream's
//! handle, from another thread), local replies from each point of the
//! path, buffering a response, watermarking both ways with backpressure,
//! panics on these paths, and the precise errors a handle call gets.

use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use nuncio_filter::{Error, Filter, Hook, LocalReply, RequestHead, ResponseHead, Status, StreamCx, StreamHandle};
use nuncio_proxy::FilterFactory;
use nuncio_test_support::{Admin, Proxy, RawClient, TIMEOUT, Upstream, rt, wait_until};

/// The most the proxy keeps for one filter (its documented
/// `PER_STREAM_BUFFER_LIMIT`): the buffering limit and the high watermark.
const LIMIT: usize = 1024 * 1024;

/// A filter's hooks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum On {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

impl On {
    fn name(self) -> &'static str {
        match self {
            On::RequestHeaders => "request_headers",
            On::RequestBody => "request_body",
            On::RequestTrailers => "request_trailers",
            On::ResponseHeaders => "response_headers",
            On::ResponseBody => "response_body",
            On::ResponseTrailers => "response_trailers",
        }
    }
}

/// Work done on the stream's handle from another thread.
type Driver = Arc<dyn Fn(StreamHandle) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + Sync>;

fn driver<F, Fut>(f: F) -> Driver
where
    F: Fn(StreamHandle) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    Arc::new(move |handle| Box::pin(f(handle)))
}

/// What a scripted filter does on its hook.
#[derive(Clone)]
enum Act {
    /// `StopIteration` the first time, and the driver runs off the worker.
    Stop(Driver),
    /// This status, every time (given `end_of_stream`).
    Return(fn(bool) -> Status),
    /// The hook changes the body, then returns the status.
    Body(fn(&mut Bytes, bool) -> Status),
    /// `LocalReply` 403 "denied by NAME".
    Reply,
    Panic,
}

/// Records `NAME:HOOK` for every hook call; acts on one hook.
struct Scripted {
    name: &'static str,
    on: On,
    act: Act,
    stopped: bool,
    shared: Shared,
}

/// What a test's filters share with it.
#[derive(Clone, Default)]
struct Shared {
    journal: Arc<Mutex<Vec<String>>>,
    results: Arc<Mutex<Vec<Result<(), Error>>>>,
}

impl Shared {
    fn journal(&self) -> Vec<String> {
        self.journal.lock().unwrap().clone()
    }

    /// The driver results, once `n` drivers finished.
    fn results(&self, n: usize) -> Vec<Result<(), Error>> {
        wait_until("the drivers to finish", || self.results.lock().unwrap().len() >= n);
        self.results.lock().unwrap().clone()
    }
}

impl Scripted {
    fn hook<'a>(&'a mut self, cx: &StreamCx, on: On, body: Option<&'a mut Bytes>, eos: bool) -> Hook<'a> {
        self.shared.journal.lock().unwrap().push(format!("{}:{}", self.name, on.name()));
        if on != self.on {
            return Status::Continue.into();
        }
        match &self.act {
            Act::Stop(_) if self.stopped => Status::Continue.into(),
            Act::Stop(drive) => {
                self.stopped = true;
                let (drive, handle, results) = (drive.clone(), cx.handle().unwrap(), self.shared.results.clone());
                rt().spawn(async move {
                    let outcome = drive(handle).await;
                    results.lock().unwrap().push(outcome);
                });
                Status::StopIteration.into()
            }
            Act::Return(status) => status(eos).into(),
            Act::Body(change) => change(body.expect("a body hook"), eos).into(),
            Act::Reply => Status::local_reply(StatusCode::FORBIDDEN, format!("denied by {}\n", self.name)).into(),
            Act::Panic => panic!("{} broke on {}", self.name, on.name()),
        }
    }
}

impl Filter for Scripted {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, _h: &'a mut RequestHead, eos: bool) -> Hook<'a> {
        self.hook(cx, On::RequestHeaders, None, eos)
    }

    fn request_body<'a>(&'a mut self, cx: &'a mut StreamCx, body: &'a mut Bytes, eos: bool) -> Hook<'a> {
        self.hook(cx, On::RequestBody, Some(body), eos)
    }

    fn request_trailers<'a>(&'a mut self, cx: &'a mut StreamCx, _t: &'a mut HeaderMap) -> Hook<'a> {
        self.hook(cx, On::RequestTrailers, None, true)
    }

    fn response_headers<'a>(&'a mut self, cx: &'a mut StreamCx, _h: &'a mut ResponseHead, eos: bool) -> Hook<'a> {
        self.hook(cx, On::ResponseHeaders, None, eos)
    }

    fn response_body<'a>(&'a mut self, cx: &'a mut StreamCx, body: &'a mut Bytes, eos: bool) -> Hook<'a> {
        self.hook(cx, On::ResponseBody, Some(body), eos)
    }

    fn response_trailers<'a>(&'a mut self, cx: &'a mut StreamCx, _t: &'a mut HeaderMap) -> Hook<'a> {
        self.hook(cx, On::ResponseTrailers, None, true)
    }
}

struct ScriptedFactory {
    name: &'static str,
    on: On,
    act: Act,
    shared: Shared,
}

impl FilterFactory for ScriptedFactory {
    fn name(&self) -> &str {
        self.name
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(Scripted {
            name: self.name,
            on: self.on,
            act: self.act.clone(),
            stopped: false,
            shared: self.shared.clone(),
        })
    }
}

/// Filters `a`, `b`, `c`, where `b` does `act` on hook `on` (the others
/// only record), in front of `upstream`.
fn chain(upstream: &Upstream, on: On, act: Act) -> (Proxy, Shared) {
    let shared = Shared::default();
    let mut act = Some(act);
    let factories = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let act = match act.take() {
                Some(act) if name == "b" => act,
                other => {
                    act = other;
                    Act::Return(|_| Status::Continue)
                }
            };
            Arc::new(ScriptedFactory { name, on, act, shared: shared.clone() }) as Arc<dyn FilterFactory>
        })
        .collect();
    (Proxy::with_filters(upstream, 1, factories), shared)
}

/// An upstream that keeps the raw bytes of each request (trailers and
/// all) and answers a chunked `world` with a trailer.
fn trailing_upstream(seen: Arc<Mutex<Vec<u8>>>) -> Upstream {
    Upstream::raw("trailing", move |mut conn| {
        let seen = seen.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            // A chunked request ends with its last chunk and trailer section.
            while !ends_chunked(&request) {
                match conn.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            *seen.lock().unwrap() = request;
            conn.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\nx-resp-trailer: yes\r\n\r\n",
            )
            .await;
        }
    })
}

fn ends_chunked(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.find("\r\n0\r\n").is_some_and(|last| text[last..].ends_with("\r\n\r\n"))
}

const CHUNKED_WITH_TRAILERS: &str =
    "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-req-trailer: yes\r\n\r\n";

/// The driver for a stop on `on`: changes what is held there through the
/// handle, then resumes.
fn change_and_resume(on: On) -> Driver {
    let x_driver = || (HeaderName::from_static("x-driver"), HeaderValue::from_static("b"));
    match on {
        On::RequestHeaders => driver(move |h| async move {
            let mut headers = h.take_request_headers().await?;
            let (name, value) = x_driver();
            headers.insert(name, value);
            h.put_request_headers(headers).await?;
            h.resume().await
        }),
        On::RequestBody | On::ResponseBody => driver(move |h| async move {
            let body = h.take_body().await?;
            h.replace_body(body.to_ascii_uppercase()).await?;
            if on == On::ResponseBody {
                // The head is still held back: its fields can change.
                let (name, value) = x_driver();
                h.set_response_header(name, value).await?;
            }
            h.resume().await
        }),
        On::RequestTrailers | On::ResponseTrailers => driver(|h| async move {
            // Stopped at the trailers: what is appended goes before them.
            h.append_body("+tail").await?;
            h.resume().await
        }),
        On::ResponseHeaders => driver(move |h| async move {
            let (name, value) = x_driver();
            h.set_response_header(name, value).await?;
            h.resume().await
        }),
    }
}

#[test]
fn stop_iteration_on_every_hook_resumes_at_the_next_filter() {
    for on in [
        On::RequestHeaders,
        On::RequestBody,
        On::RequestTrailers,
        On::ResponseHeaders,
        On::ResponseBody,
        On::ResponseTrailers,
    ] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = trailing_upstream(seen.clone());
        let (proxy, shared) = chain(&upstream, on, Act::Stop(change_and_resume(on)));
        let mut client = RawClient::connect(proxy.addr());
        client.send(CHUNKED_WITH_TRAILERS);
        let reply = client.response();
        assert_eq!(shared.results(1), [Ok(())], "{on:?}");
        assert_eq!(reply.status, 200, "{on:?}");

        // Nothing ran while b was stopped; the chain went on at the next
        // filter (c on the way in, a on the way out).
        let journal = shared.journal();
        let stop = journal.iter().position(|e| *e == format!("b:{}", on.name())).unwrap();
        let next = if matches!(on, On::RequestHeaders | On::RequestBody | On::RequestTrailers) { "c" } else { "a" };
        let resumed_at = match on {
            // What was appended at the trailers reaches the next body hook first.
            On::RequestTrailers => format!("{next}:request_body"),
            On::ResponseTrailers => format!("{next}:response_body"),
            _ => format!("{next}:{}", on.name()),
        };
        assert_eq!(journal[stop + 1], resumed_at, "{on:?}: {journal:?}");

        // What the other thread did to the held message arrived.
        let request = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        match on {
            On::RequestHeaders => assert!(request.contains("x-driver: b\r\n"), "{request}"),
            On::RequestBody => assert!(request.contains("\r\nHELLO\r\n"), "{request}"),
            On::RequestTrailers => {
                assert!(request.contains("\r\nhello\r\n") && request.contains("\r\n+tail\r\n"), "{request}");
                assert!(request.contains("x-req-trailer: yes"), "{request}");
            }
            On::ResponseHeaders => assert_eq!(reply.header("x-driver"), "b"),
            On::ResponseBody => assert_eq!((reply.text().as_str(), reply.header("x-driver")), ("WORLD", "b")),
            On::ResponseTrailers => assert_eq!(reply.text(), "world+tail"),
        }
        assert_eq!(reply.trailers.get("x-resp-trailer").map(|v| v.to_str().unwrap()), Some("yes"), "{on:?}");
    }
}

#[test]
fn a_local_reply_from_the_request_body_runs_only_the_response_hooks_before_it() {
    let upstream = Upstream::echo("up");
    let (proxy, shared) = chain(&upstream, On::RequestBody, Act::Reply);
    let reply = proxy.exchange("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!((reply.status, reply.text().as_str()), (403, "denied by b\n"));
    let journal = shared.journal();
    assert!(journal.contains(&"a:response_headers".to_owned()), "{journal:?}");
    assert!(!journal.iter().any(|e| e.starts_with("b:response") || e.starts_with("c:response")), "{journal:?}");
    assert_eq!(upstream.requests().len(), 0, "a small body is read before anything goes upstream");
}

#[test]
fn a_local_reply_from_the_response_path_replaces_the_response_while_its_head_is_held() {
    for on in [On::ResponseHeaders, On::ResponseBody] {
        let upstream = Upstream::echo("up");
        let (proxy, _shared) = chain(&upstream, on, Act::Reply);
        let reply = proxy.get("/");
        assert_eq!((reply.status, reply.text().as_str()), (403, "denied by b\n"), "{on:?}");
        // The worker serves on.
        assert_eq!(proxy.get("/").status, 403);
    }
}

/// An upstream that sends a response head (`content-length: 10`), then
/// the body only once `go` is released.
fn head_then_body(go: Arc<(Mutex<bool>, std::sync::Condvar)>) -> Upstream {
    Upstream::raw("slow-body", move |mut conn| {
        let go = go.clone();
        async move {
            if conn.read_request().await.is_none() {
                return;
            }
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n").await;
            tokio::task::spawn_blocking(move || {
                let (released, signal) = &*go;
                let mut released = released.lock().unwrap();
                while !*released {
                    released = signal.wait(released).unwrap();
                }
            })
            .await
            .unwrap();
            conn.write(b"0123456789").await;
        }
    })
}

/// Reads a response head from `client` (the raw socket), then everything
/// until the connection ends; returns (head, body bytes).
fn head_then_rest(client: &mut std::net::TcpStream, go: &(Mutex<bool>, std::sync::Condvar)) -> (String, Vec<u8>) {
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = client.read(&mut chunk).expect("a response head");
        assert!(n > 0, "closed before a response head");
        bytes.extend_from_slice(&chunk[..n]);
    };
    // The head is out: now the upstream sends the body.
    *go.0.lock().unwrap() = true;
    go.1.notify_all();
    loop {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    (String::from_utf8_lossy(&bytes[..head_end]).into_owned(), bytes[head_end..].to_vec())
}

#[test]
fn a_local_reply_once_the_head_went_out_cuts_the_response() {
    let go = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let upstream = head_then_body(go.clone());
    let (proxy, _shared) = chain(&upstream, On::ResponseBody, Act::Reply);
    let mut client = std::net::TcpStream::connect(proxy.addr()).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (head, body) = head_then_rest(&mut client, &go);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 10"), "{head}");
    assert!(body.len() < 10, "the client must see the response end short: {body:?}");
}

#[test]
fn a_local_reply_through_the_handle_while_stopped() {
    let reply_418 = driver(|h| async move {
        let reply = LocalReply { status: StatusCode::IM_A_TEAPOT, headers: HeaderMap::new(), body: "tea\n".into() };
        h.local_reply(reply).await
    });
    for on in [On::RequestBody, On::ResponseHeaders, On::ResponseBody] {
        let upstream = Upstream::echo("up");
        let (proxy, shared) = chain(&upstream, on, Act::Stop(reply_418.clone()));
        let reply = proxy.exchange("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((reply.status, reply.text().as_str()), (418, "tea\n"), "{on:?}");
        assert_eq!(shared.results(1), [Ok(())]);
        if on == On::RequestBody {
            let journal = shared.journal();
            assert!(journal.contains(&"a:response_headers".to_owned()), "{journal:?}");
            assert!(!journal.iter().any(|e| e.starts_with("b:response") || e.starts_with("c:response")), "{journal:?}");
        }
    }
}

/// Up-cases a whole body and adds `!` (its length changes).
fn shout_whole(body: &mut Bytes, eos: bool) -> Status {
    if !eos {
        return Status::StopAndBuffer;
    }
    let mut whole = body.to_ascii_uppercase();
    whole.push(b'!');
    *body = whole.into();
    Status::Continue
}

fn count(journal: &[String], entry: &str) -> usize {
    journal.iter().filter(|e| *e == entry).count()
}

/// Appends `!` to the last call's data (which may hold the body's last
/// bytes, or be empty).
fn add_a_tail_at_the_end(body: &mut Bytes, eos: bool) -> Status {
    if eos {
        let mut tailed = body.to_vec();
        tailed.push(b'!');
        *body = tailed.into();
    }
    Status::Continue
}

/// Takes every piece of data away, the last one included: only the end
/// goes on.
fn drop_the_data(body: &mut Bytes, _eos: bool) -> Status {
    *body = Bytes::new();
    Status::Continue
}

/// Body pieces take a short path while every hook passes them on as they
/// came; these are the ways a `Continue` can still change what the next
/// filter sees (request order: a, b, c). The request body is changed on
/// its way up; the upstream's answer says what arrived.
#[test]
fn a_continue_that_changes_the_pieces_is_what_the_next_filter_sees() {
    let body = "xyz".repeat(1000);
    let send = |proxy: &Proxy| {
        let mut client = RawClient::connect(proxy.addr());
        // Chunked: a filter may change the length.
        client.send(format!(
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ));
        client.response()
    };

    // Data given at the end: the next filter gets it with the end, in one
    // call (as many calls as the filter before it).
    let upstream = Upstream::echo("up");
    let (proxy, shared) = chain(&upstream, On::RequestBody, Act::Body(add_a_tail_at_the_end));
    let reply = send(&proxy);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), format!("{body}!"));
    let journal = shared.journal();
    assert_eq!(count(&journal, "c:request_body"), count(&journal, "a:request_body"), "{journal:?}");
    drop(proxy);

    // Data taken away: nothing of it goes on, only the end.
    let (proxy, shared) = chain(&upstream, On::RequestBody, Act::Body(drop_the_data));
    let reply = send(&proxy);
    assert_eq!(reply.status, 200);
    // The echo upstream greets when a request has no body.
    assert_eq!(reply.text(), "hello from up\n");
    let journal = shared.journal();
    assert!(count(&journal, "a:request_body") >= 1, "{journal:?}");
    assert_eq!(count(&journal, "c:request_body"), 1, "{journal:?}");
}

#[test]
fn stop_and_buffer_on_a_response_holds_its_head_until_the_whole_body() {
    let upstream = Upstream::echo("up");
    let (proxy, _shared) = chain(&upstream, On::ResponseBody, Act::Body(shout_whole));
    let body = "abc".repeat(30_000);
    let mut client = RawClient::connect(proxy.addr());
    client.send(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    let reply = client.response();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), format!("{}!", body.to_ascii_uppercase()));
    // The head waited for the whole body, so it carries its exact length.
    assert_eq!(reply.header("content-length"), (body.len() + 1).to_string());

    // Over the limit, before anything went out: 500, and the worker serves on.
    let big = "y".repeat(2 * LIMIT);
    let mut client = RawClient::connect(proxy.addr());
    client.send(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{big}", big.len()));
    let reply = client.response();
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.text().contains("larger than filter b may buffer"), "{}", reply.text());
    assert_eq!(proxy.get("/").text(), "HELLO FROM UP\n!");
}

/// A filter that answers `StopAndWatermark` to every chunk of both
/// bodies (and `Continue` at their end), with a thread that resumes the
/// stream whenever the filter holds the limit or more.
struct Watermark {
    calls: Arc<AtomicUsize>,
    most_held: Arc<AtomicUsize>,
}

impl Filter for Watermark {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, _h: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        let (handle, most_held) = (cx.handle().unwrap(), self.most_held.clone());
        rt().spawn(async move {
            let deadline = Instant::now() + TIMEOUT * 6;
            while Instant::now() < deadline {
                // One call, so that nothing comes in between on the worker.
                let held = handle
                    .call(|ops| {
                        let body = ops.take_body()?;
                        let held = body.len();
                        ops.replace_body(body)?;
                        if held >= LIMIT {
                            ops.resume()?;
                        }
                        Ok(held)
                    })
                    .await;
                match held {
                    Ok(held) => {
                        most_held.fetch_max(held, Ordering::SeqCst);
                    }
                    Err(Error::NotStopped) => {}
                    Err(Error::StreamGone) => return,
                    Err(e) => panic!("unexpected {e}"),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Status::Continue.into()
    }

    fn request_body<'a>(&'a mut self, _cx: &'a mut StreamCx, _body: &'a mut Bytes, eos: bool) -> Hook<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (if eos { Status::Continue } else { Status::StopAndWatermark }).into()
    }

    fn response_body<'a>(&'a mut self, _cx: &'a mut StreamCx, _body: &'a mut Bytes, eos: bool) -> Hook<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (if eos { Status::Continue } else { Status::StopAndWatermark }).into()
    }
}

struct WatermarkFactory(Arc<AtomicUsize>, Arc<AtomicUsize>);

impl FilterFactory for WatermarkFactory {
    fn name(&self) -> &str {
        "watermark"
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(Watermark { calls: self.0.clone(), most_held: self.1.clone() })
    }
}

#[test]
fn stop_and_watermark_passes_a_body_larger_than_the_limit_with_backpressure() {
    let upstream = Upstream::echo("up");
    let (calls, most_held) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let factory: Arc<dyn FilterFactory> = Arc::new(WatermarkFactory(calls.clone(), most_held.clone()));
    let proxy = Proxy::with_filters(&upstream, 1, vec![factory]);
    // 8 × the limit, up and echoed back down: both bodies through the filter.
    let body: Vec<u8> = (0..8 * LIMIT).map(|i| b'a' + (i % 26) as u8).collect();
    let mut client = RawClient::connect(proxy.addr());
    client.send(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()));
    client.send(&body);
    let reply = client.response();
    assert_eq!(reply.status, 200);
    assert!(upstream.last_request().body == body, "the upstream got the body intact");
    assert!(reply.body == body, "the client got it back intact");
    // The filter saw the bodies chunk by chunk, held up to the limit (so
    // the resumes were needed) and never much more: the senders were
    // stopped at the watermark rather than buffered in full.
    assert!(calls.load(Ordering::SeqCst) > 4, "{calls:?}");
    let most = most_held.load(Ordering::SeqCst);
    assert!((LIMIT..2 * LIMIT).contains(&most), "most held {most}");
}

#[test]
fn panics_on_body_and_trailer_hooks_cost_the_stream_a_500() {
    for on in [On::RequestBody, On::ResponseHeaders, On::ResponseBody] {
        let upstream = Upstream::echo("up");
        let (proxy, _shared) = chain(&upstream, on, Act::Panic);
        let post = || proxy.exchange("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
        let reply = post();
        assert_eq!(reply.status, 500, "{on:?}");
        assert!(reply.text().contains("filter b failed"), "{}", reply.text());
        // The worker lives on (and the next stream panics too).
        assert_eq!(post().status, 500);
        let stats = || proxy.stats();
        wait_until("two filter panics counted", || stats().contains("nuncio_filter_panics_total: 2\n"));
    }
    // Once the head went out, a panic can only cut the response.
    let upstream = trailing_upstream(Arc::default());
    let (proxy, _shared) = chain(&upstream, On::ResponseTrailers, Act::Panic);
    let mut client = std::net::TcpStream::connect(proxy.addr()).unwrap();
    client.write_all(CHUNKED_WITH_TRAILERS.as_bytes()).unwrap();
    let mut got = Vec::new();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = client.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200") && !got.ends_with("0\r\n\r\n"), "{got}");
}

#[test]
fn a_body_status_from_a_headers_hook_is_a_500() {
    let upstream = Upstream::echo("up");
    let (proxy, _shared) = chain(&upstream, On::RequestHeaders, Act::Return(|_| Status::StopAndBuffer));
    let reply = proxy.get("/");
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("it is for body hooks"), "{}", reply.text());
}

/// What the probing driver saw, call by call.
type Seen = Arc<Mutex<Vec<Result<(), Error>>>>;

fn note(seen: &Seen, result: Result<impl Sized, Error>) {
    seen.lock().unwrap().push(result.map(|_| ()));
}

#[test]
fn handle_calls_get_precise_errors_for_where_the_stream_stands() {
    // Stopped at the response head: no body held, the request long gone.
    let seen: Seen = Arc::default();
    let probe = seen.clone();
    let at_head = driver(move |h| {
        let seen = probe.clone();
        async move {
            let s = seen.clone();
            h.call(move |ops| {
                note(&s, ops.take_body());
                note(&s, ops.take_request_headers());
                note(&s, ops.request_headers());
                note(&s, ops.response_headers());
                note(&s, ops.resume());
                // Resumed: nothing is stopped any more.
                note(&s, ops.resume());
                Ok(())
            })
            .await?;
            // After the stream, every call finds it gone.
            h.context().done().await;
            note(&seen, h.set_response_header(HeaderName::from_static("x-late"), HeaderValue::from_static("1")).await);
            Ok(())
        }
    });
    let upstream = Upstream::echo("up");
    let (proxy, shared) = chain(&upstream, On::ResponseHeaders, Act::Stop(at_head));
    assert_eq!(proxy.get("/").status, 200);
    assert_eq!(shared.results(1), [Ok(())]);
    use Error::{HeadersAlreadySent, NotStopped, StreamGone};
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Err(NotStopped),
            Err(HeadersAlreadySent),
            Err(HeadersAlreadySent),
            Ok(()),
            Ok(()),
            Err(NotStopped),
            Err(StreamGone)
        ]
    );

    // Stopped on the response body once the head went out: too late to
    // answer or change the head; the chunk is there to take.
    let seen: Seen = Arc::default();
    let probe = seen.clone();
    let after_head = driver(move |h| {
        let s = probe.clone();
        async move {
            h.call(move |ops| {
                note(
                    &s,
                    ops.local_reply(LocalReply {
                        status: StatusCode::OK,
                        headers: HeaderMap::new(),
                        body: Bytes::new(),
                    }),
                );
                note(&s, ops.response_headers());
                let chunk = ops.take_body()?;
                note(&s, ops.replace_body(chunk));
                note(&s, ops.resume());
                Ok(())
            })
            .await
        }
    });
    let go = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let upstream = head_then_body(go.clone());
    let (proxy, shared) = chain(&upstream, On::ResponseBody, Act::Stop(after_head));
    let mut client = std::net::TcpStream::connect(proxy.addr()).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let (head, body) = head_then_rest(&mut client, &go);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"0123456789");
    assert_eq!(shared.results(1), [Ok(())]);
    assert_eq!(*seen.lock().unwrap(), [Err(HeadersAlreadySent), Err(HeadersAlreadySent), Ok(()), Ok(())]);
}

#[test]
fn a_client_that_leaves_while_a_body_is_stopped_ends_the_stream() {
    for on in [On::RequestBody, On::ResponseBody] {
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel::<()>();
        let stopped_tx = Arc::new(Mutex::new(stopped_tx));
        let wait_then_resume = driver(move |h| {
            let stopped = stopped_tx.clone();
            async move {
                stopped.lock().unwrap().send(()).unwrap();
                h.context().done().await;
                h.resume().await
            }
        });
        let upstream = Upstream::echo("up");
        let (proxy, shared) = chain(&upstream, on, Act::Stop(wait_then_resume));
        let mut client = RawClient::connect(proxy.addr());
        client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
        stopped_rx.recv_timeout(TIMEOUT).expect("the stream stopped at b");
        drop(client);
        assert_eq!(shared.results(1), [Err(Error::StreamGone)], "{on:?}");
    }
}

/// Records what each body hook call is given.
struct BodyRecorder {
    name: &'static str,
    calls: Arc<Mutex<Vec<String>>>,
}

impl BodyRecorder {
    fn record(&self, body: &Bytes, eos: bool) -> Hook<'static> {
        let body = String::from_utf8_lossy(body);
        self.calls.lock().unwrap().push(format!("{}:{body:?}:{}", self.name, if eos { "end" } else { "more" }));
        Status::Continue.into()
    }
}

impl Filter for BodyRecorder {
    fn request_body<'a>(&'a mut self, _cx: &'a mut StreamCx, body: &'a mut Bytes, eos: bool) -> Hook<'a> {
        self.record(body, eos)
    }

    fn response_body<'a>(&'a mut self, _cx: &'a mut StreamCx, body: &'a mut Bytes, eos: bool) -> Hook<'a> {
        self.record(body, eos)
    }
}

/// A proxy in front of `upstream` with two [`BodyRecorder`]s, `a` then
/// `b`, and the calls they record.
fn recording_proxy(upstream: &Upstream) -> (Proxy, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let factories = ["a", "b"]
        .into_iter()
        .map(|name| Arc::new(BodyRecorderFactory { name, calls: calls.clone() }) as Arc<dyn FilterFactory>)
        .collect();
    (Proxy::with_filters(upstream, 1, factories), calls)
}

struct BodyRecorderFactory {
    name: &'static str,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FilterFactory for BodyRecorderFactory {
    fn name(&self) -> &str {
        self.name
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(BodyRecorder { name: self.name, calls: self.calls.clone() })
    }
}

/// An upstream that answers each request with `first`, then, after a
/// pause, `rest` (nothing if empty).
fn answering_in_two(first: &'static [u8], rest: &'static [u8]) -> Upstream {
    Upstream::raw("two-writes", move |mut conn| async move {
        while conn.read_request().await.is_some() {
            conn.write(first).await;
            if !rest.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn.write(rest).await;
            }
        }
    })
}

/// A response split over two writes, and the body hook calls it makes.
type Case = (&'static str, &'static [u8], &'static [u8], &'static [&'static str]);

/// A response body whose last data arrives together with its end (a
/// known length reached; a chunked body's last chunk and terminator in
/// one read) reaches each body hook once, with the data and
/// `end_of_stream`; data that arrives before the end comes without it,
/// and an end that comes alone comes as an empty chunk.
#[test]
fn the_last_response_data_comes_with_the_end_of_stream() {
    // (case, the upstream's first write, its second, each filter's calls)
    let cases: [Case; 4] = [
        ("length, at once", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nworld", b"", &["\"world\":end"]),
        ("length, in two", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwor", b"ld", &["\"wor\":more", "\"ld\":end"]),
        (
            "chunked, at once",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
            b"",
            &["\"world\":end"],
        ),
        (
            "chunked, end alone",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nworld\r\n",
            b"0\r\n\r\n",
            &["\"world\":more", "\"\":end"],
        ),
    ];
    for (case, first, rest, per_filter) in cases {
        let upstream = answering_in_two(first, rest);
        let (proxy, calls) = recording_proxy(&upstream);
        let reply = proxy.get("/");
        assert_eq!((reply.status, reply.text().as_str()), (200, "world"), "{case}");
        // Response hooks run last filter first, each piece through both.
        let expected: Vec<String> =
            per_filter.iter().flat_map(|call| [format!("b:{call}"), format!("a:{call}")]).collect();
        assert_eq!(*calls.lock().unwrap(), expected, "{case}");
    }
}

/// The same on the request path: a request body whose last data the
/// client sent with its end reaches each request body hook once, with
/// `end_of_stream`; an end sent later comes as an empty chunk.
#[test]
fn the_last_request_data_comes_with_the_end_of_stream() {
    let length = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n";
    let chunked = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: [(&str, String, &str, &[&str]); 4] = [
        ("length, at once", format!("{length}hello"), "", &["\"hello\":end"]),
        ("length, in two", format!("{length}hel"), "lo", &["\"hel\":more", "\"lo\":end"]),
        ("chunked, at once", format!("{chunked}5\r\nhello\r\n0\r\n\r\n"), "", &["\"hello\":end"]),
        ("chunked, end alone", format!("{chunked}5\r\nhello\r\n"), "0\r\n\r\n", &["\"hello\":more", "\"\":end"]),
    ];
    let upstream = Upstream::echo("up");
    for (case, first, rest, per_filter) in cases {
        let (proxy, calls) = recording_proxy(&upstream);
        let mut client = RawClient::connect(proxy.addr());
        client.send(first);
        if !rest.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
            client.send(rest);
        }
        let reply = client.response();
        assert_eq!((reply.status, reply.text().as_str()), (200, "hello"), "{case}");
        // Request hooks run first filter first; the response's own calls
        // (the echoed body) follow.
        let expected: Vec<String> =
            per_filter.iter().flat_map(|call| [format!("a:{call}"), format!("b:{call}")]).collect();
        let recorded = calls.lock().unwrap().clone();
        assert_eq!(recorded[..expected.len()], expected[..], "{case}: {recorded:?}");
    }
}
