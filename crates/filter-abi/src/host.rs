//! What the host functions do, in safe Rust: the `extern "C"` entries in
//! `boundary.rs` turn pointers into slices and call these. Every one may
//! run on any thread; none blocks (work for a stream is posted to its
//! worker), none keeps a borrowed slice past its return (what it keeps is
//! copied and checked first).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use nuncio_filter::{DEFAULT_MAX_RESPONSE_BYTES, LocalReply};
use nuncio_runtime::DispatcherHandle;

use crate::abi::{log as level, op, status};
use crate::boundary::Library;
use crate::decision::{self, Decision};
use crate::stream::{HttpRequest, Op};
use crate::table::{self, StreamId};
use crate::wire;

const OK: i32 = status::OK as i32;
const GONE: i32 = status::STREAM_GONE as i32;
const INVALID: i32 = status::INVALID as i32;
const WOULD_BLOCK: i32 = status::WOULD_BLOCK as i32;

/// Whether the calling thread runs a dispatcher: a worker (or main). Code
/// of the library runs there only inside a call nuncio made (a hook), so
/// waiting there for an answer that needs a worker could never end.
fn on_a_worker() -> bool {
    DispatcherHandle::current().is_some()
}

/// `decide`: claims the hook's decision (once), then keeps it for the
/// inline hook running on this thread or posts it to the stream's worker.
pub(crate) fn decide(
    stream: u64,
    hook: u32,
    kind: u32,
    reply_status: u32,
    edits: &[u8],
    body: &[u8],
    flags: u32,
) -> i32 {
    let decision = match Decision::parse(kind, reply_status, edits, body, flags) {
        Ok(decision) => decision,
        Err(error) => {
            tracing::warn!(stream, hook, %error, "a foreign filter's decision is invalid");
            return INVALID;
        }
    };
    let id = StreamId::from_raw(stream);
    let claimed = table::take_pending(id, hook);
    if claimed != OK {
        return claimed;
    }
    if decision::is_inline(id, hook) {
        decision::keep_inline(decision);
        return OK;
    }
    if let Some(dispatcher) = table::dispatcher(id) {
        let _ = dispatcher.post(move || {
            if let Some(cell) = table::lookup(id) {
                cell.deliver(hook, decision);
            }
        });
    }
    OK
}

/// `call`: checks and posts an operation on a stream.
pub(crate) fn call(stream: u64, call: u64, operation: u32, arg: u32, a: &[u8], b: &[u8]) -> i32 {
    let edits = |bytes: &[u8]| wire::edits(bytes).ok();
    let op = match operation {
        op::OP_READ_REQUEST_HEADERS => Some(Op::ReadRequest),
        op::OP_EDIT_REQUEST_HEADERS => edits(a).map(Op::EditRequest),
        op::OP_READ_RESPONSE_HEADERS => Some(Op::ReadResponse),
        op::OP_EDIT_RESPONSE_HEADERS => edits(a).map(Op::EditResponse),
        op::OP_READ_BODY => Some(Op::ReadBody),
        op::OP_REPLACE_BODY => Some(Op::ReplaceBody(wire::owned(a))),
        op::OP_APPEND_BODY => Some(Op::AppendBody(wire::owned(a))),
        op::OP_RESUME => Some(Op::Resume),
        op::OP_REPLY => {
            let code = u16::try_from(arg).ok().filter(|s| (200..=599).contains(s));
            match (code.and_then(|c| StatusCode::from_u16(c).ok()), edits(a)) {
                (Some(status), Some(edits)) => {
                    Some(Op::Reply(LocalReply { status, headers: wire::reply_fields(&edits), body: wire::owned(b) }))
                }
                _ => None,
            }
        }
        _ => None,
    };
    let Some(op) = op else { return INVALID };
    if on_a_worker() {
        return WOULD_BLOCK;
    }
    post(
        stream,
        move |cell, dispatcher| cell.start_call(dispatcher, call, op),
        move |library| {
            library.call_done(call, GONE, &[]);
        },
    )
}

/// `http_call`: checks and posts an HTTP call.
pub(crate) fn http_call(
    stream: u64,
    call: u64,
    cluster: &[u8],
    head: &[u8],
    body: &[u8],
    timeout_ms: u64,
    max_bytes: u64,
) -> i32 {
    let Ok(cluster) = std::str::from_utf8(cluster) else { return INVALID };
    let Ok(head) = wire::request_head(head) else { return INVALID };
    let request = HttpRequest {
        cluster: cluster.to_owned(),
        head,
        body: Bytes::copy_from_slice(body),
        timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
        max_bytes: match max_bytes {
            0 => DEFAULT_MAX_RESPONSE_BYTES,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        },
    };
    if on_a_worker() {
        return WOULD_BLOCK;
    }
    post(
        stream,
        move |cell, dispatcher| cell.start_http(dispatcher, call, request),
        move |library| {
            library.http_done(call, GONE, 0, &[], b"the stream ended");
        },
    )
}

/// `http_cancel`.
pub(crate) fn http_cancel(stream: u64, call: u64) -> i32 {
    post(stream, move |cell, _| cell.cancel_http(call), |_| {})
}

/// Posts `f` to `stream`'s worker, where it runs with the stream's record;
/// `gone` runs instead if the stream ended meanwhile, or if the closure is
/// dropped unrun (its worker stopped with it queued), so that a posted
/// call always gets its one completion. `GONE` at once (and no
/// completion) when the stream already ended or its worker stopped.
fn post<G: FnOnce(Library) + Send + 'static>(
    stream: u64,
    f: impl FnOnce(&std::rc::Rc<crate::stream::StreamCell>, &nuncio_runtime::Dispatcher) + Send + 'static,
    gone: G,
) -> i32 {
    let id = StreamId::from_raw(stream);
    if !table::is_alive(id) {
        return GONE;
    }
    let Some(dispatcher) = table::dispatcher(id) else { return GONE };
    // Refused, the closure is dropped here and its completion sent too:
    // the library forgets a call it got an error for, so that completion
    // finds no one and is dropped.
    let unanswered = Unanswered(Some(gone));
    let posted = dispatcher.post_with(move |d| {
        let mut unanswered = unanswered;
        if let Some(cell) = table::lookup(id) {
            unanswered.0 = None;
            f(&cell, d);
        }
    });
    if posted.is_ok() { OK } else { GONE }
}

/// The completion of a posted call that did not reach its stream: sent
/// when dropped, unless the call reached it.
struct Unanswered<G: FnOnce(Library)>(Option<G>);

impl<G: FnOnce(Library)> Drop for Unanswered<G> {
    fn drop(&mut self) {
        if let Some(gone) = self.0.take()
            && crate::stream::still_running()
            && let Some(library) = crate::library::loaded()
        {
            gone(library);
        }
    }
}

/// `log`.
pub(crate) fn log(lvl: u32, filter: &[u8], message: &[u8]) -> i32 {
    let filter = String::from_utf8_lossy(filter);
    let message = String::from_utf8_lossy(message);
    match lvl {
        level::LOG_ERROR => tracing::error!(filter = %filter, "{message}"),
        level::LOG_WARN => tracing::warn!(filter = %filter, "{message}"),
        level::LOG_INFO => tracing::info!(filter = %filter, "{message}"),
        _ => tracing::debug!(filter = %filter, "{message}"),
    }
    OK
}
