//! Which request a log line is about: while a request's future is polled,
//! a thread-local slot says its request id and trace id, and the log
//! formatter (the `nuncio` command's) writes them into every line logged
//! meanwhile — by the stream, the filters' hooks, the upstream code.
//!
//! Envoy does the same for its crash dumps (the dispatcher's stack of
//! "scope tracked objects", set while an active stream is worked on). It
//! costs nothing per log call site, and little per poll: [`InRequest`]
//! wraps the task that serves requests (an HTTP/1.1 connection's, an
//! HTTP/2 stream's: wrapped once, where it is spawned) and marks the slot
//! around each of its polls (a byte written and read back while the task
//! has no ids; the ids copied in once it has them). What a poll leaves in
//! the slot stays with the task: a request sets its ids as it starts and
//! clears them as it ends ([`set_log_ids`]), and an id it gets while it is
//! served ([`note_request_id`]: nuncio makes one when it forwards a
//! request that has none) is said by every later line about it.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::context::TraceId;

/// The longest request id kept for log lines (longer ones are cut).
pub const MAX_LOGGED_ID: usize = 64;

/// What a log line says about the request it was logged for.
#[derive(Clone, Copy)]
pub struct LogIds {
    request_id: [u8; MAX_LOGGED_ID],
    request_id_len: u8,
    trace_id: Option<TraceId>,
}

impl LogIds {
    /// The ids of a request: its `x-request-id` (cut at [`MAX_LOGGED_ID`]
    /// bytes; said only if it is visible ASCII) and, when it is traced, its
    /// trace.
    pub fn new(request_id: Option<&[u8]>, trace_id: Option<TraceId>) -> LogIds {
        let mut ids = LogIds { request_id: [0; MAX_LOGGED_ID], request_id_len: 0, trace_id };
        if let Some(id) = request_id {
            ids.set_request_id(id);
        }
        ids
    }

    fn set_request_id(&mut self, id: &[u8]) {
        let len = id.len().min(MAX_LOGGED_ID);
        self.request_id[..len].copy_from_slice(&id[..len]);
        self.request_id_len = len as u8;
    }

    /// Whether there is nothing to say (an id that is not visible ASCII
    /// counts as one here; it is left out when said).
    pub fn is_empty(&self) -> bool {
        self.request_id_len == 0 && self.trace_id.is_none()
    }

    /// The request id, if the request has one (and it is visible ASCII).
    pub fn request_id(&self) -> Option<&str> {
        let id = &self.request_id[..usize::from(self.request_id_len)];
        if id.is_empty() || !id.iter().all(u8::is_ascii_graphic) {
            return None;
        }
        std::str::from_utf8(id).ok()
    }

    /// The trace id, if the request is traced.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace_id
    }
}

impl std::fmt::Debug for LogIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIds").field("request_id", &self.request_id()).field("trace_id", &self.trace_id).finish()
    }
}

/// What the slot holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// No request is being polled, or the one polled has no ids.
    None,
    /// `IDS` are the polled task's, as the poll began.
    Set,
    /// `IDS` were set during this poll: the task keeps them.
    Changed,
    /// The ids were cleared during this poll: the task has none now.
    Cleared,
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::None) };
    static IDS: Cell<LogIds> = const {
        Cell::new(LogIds { request_id: [0; MAX_LOGGED_ID], request_id_len: 0, trace_id: None })
    };
}

/// The ids of the request being worked on by this thread right now, if
/// any: for log formatters. Any thread (off the workers it is `None`).
pub fn current_log_ids() -> Option<LogIds> {
    matches!(STATE.with(Cell::get), State::Set | State::Changed)
        .then(|| IDS.with(Cell::get))
        .filter(|ids| !ids.is_empty())
}

/// Makes `ids` the current request's (`None`: no request), for the task
/// being polled on this thread and its later polls: a request's code calls
/// it as the request starts, and with `None` as it ends.
pub fn set_log_ids(ids: Option<LogIds>) {
    match ids.filter(|ids| !ids.is_empty()) {
        Some(ids) => {
            IDS.with(|c| c.set(ids));
            STATE.with(|c| c.set(State::Changed));
        }
        None => STATE.with(|c| c.set(State::Cleared)),
    }
}

/// Gives the request being polled on this thread the id `id` unless it
/// has one: for the code that makes a request's id (when it forwards one
/// without `x-request-id`). Outside [`InRequest`] it is forgotten at the
/// next poll of any request.
pub fn note_request_id(id: &[u8]) {
    let mut ids = match STATE.with(Cell::get) {
        State::None | State::Cleared => LogIds::new(None, None),
        State::Set | State::Changed => IDS.with(Cell::get),
    };
    if ids.request_id_len > 0 {
        return;
    }
    ids.set_request_id(id);
    IDS.with(|c| c.set(ids));
    STATE.with(|c| c.set(State::Changed));
}

/// Runs `f` with `ids` as this thread's current request (restored after,
/// even if `f` panics); returns what `f` returned and the ids as `f` left
/// them ([`set_log_ids`] and [`note_request_id`] included).
pub fn with_log_ids<R>(ids: Option<LogIds>, f: impl FnOnce() -> R) -> (R, Option<LogIds>) {
    /// Puts the outer request back.
    struct Restore(State, Option<LogIds>);
    impl Drop for Restore {
        fn drop(&mut self) {
            STATE.with(|c| c.set(self.0));
            if let Some(ids) = self.1 {
                IDS.with(|c| c.set(ids));
            }
        }
    }
    // Nested requests (none in nuncio today) keep the outer one's ids.
    let outer = STATE.with(Cell::get);
    let _restore = Restore(outer, (outer != State::None).then(|| IDS.with(Cell::get)));
    match ids {
        Some(ids) => {
            IDS.with(|c| c.set(ids));
            STATE.with(|c| c.set(State::Set));
        }
        None => STATE.with(|c| c.set(State::None)),
    }
    let result = f();
    let after = match STATE.with(Cell::get) {
        State::Changed => Some(IDS.with(Cell::get)),
        State::Cleared => None,
        State::None | State::Set => ids,
    };
    (result, after)
}

pin_project_lite::pin_project! {
    /// A task that serves requests, with the ids of the request it serves
    /// as the thread's current ones while it is polled (see the module
    /// docs).
    pub struct InRequest<F> {
        ids: Option<LogIds>,
        #[pin]
        inner: F,
    }
}

impl<F> InRequest<F> {
    /// `inner` under `ids` (`None`: none yet; the task sets them).
    pub fn new(ids: Option<LogIds>, inner: F) -> InRequest<F> {
        InRequest { ids: ids.filter(|ids| !ids.is_empty()), inner }
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    // `with_log_ids` by hand, without copying the ids in and out when there
    // are none: this runs on every poll of every connection.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Puts the outer state back, even if the poll panics.
        struct Restore(State, Option<LogIds>);
        impl Drop for Restore {
            #[inline]
            fn drop(&mut self) {
                STATE.with(|c| c.set(self.0));
                if let Some(ids) = self.1 {
                    IDS.with(|c| c.set(ids));
                }
            }
        }
        let this = self.project();
        let outer = STATE.with(Cell::get);
        let _restore = Restore(outer, if outer == State::None { None } else { Some(IDS.with(Cell::get)) });
        match this.ids {
            Some(ids) => {
                IDS.with(|c| c.set(*ids));
                STATE.with(|c| c.set(State::Set));
            }
            None => STATE.with(|c| c.set(State::None)),
        }
        let poll = this.inner.poll(cx);
        match STATE.with(Cell::get) {
            State::Changed => *this.ids = Some(IDS.with(Cell::get)),
            State::Cleared => *this.ids = None,
            State::None | State::Set => {}
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_set_around_polls_only() {
        let ids = LogIds::new(Some(b"req-1"), None);
        assert!(current_log_ids().is_none());
        let (seen, _) = with_log_ids(Some(ids), || current_log_ids().and_then(|i| i.request_id().map(str::to_owned)));
        assert_eq!(seen.as_deref(), Some("req-1"));
        assert!(current_log_ids().is_none(), "restored");
        assert_eq!(LogIds::new(Some(b"has space"), None).request_id(), None, "not visible ASCII: not logged");
        let long = [b'x'; 100];
        assert_eq!(LogIds::new(Some(&long), None).request_id().unwrap().len(), MAX_LOGGED_ID);
    }

    #[test]
    fn an_id_noted_during_a_poll_stays_with_the_request() {
        let mut request = std::pin::pin!(InRequest::new(None, async {
            assert!(current_log_ids().is_none());
            note_request_id(b"made-here");
            note_request_id(b"ignored: it has one");
            std::future::pending::<()>().await;
        }));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(request.as_mut().poll(&mut cx).is_pending());
        assert!(current_log_ids().is_none(), "not past the poll");
        let seen = Cell::new(None);
        let mut probe = std::pin::pin!(InRequest::new(None, async {
            seen.set(current_log_ids().and_then(|i| i.request_id().map(str::len)));
        }));
        assert!(probe.as_mut().poll(&mut cx).is_ready());
        assert_eq!(seen.get(), None, "another request does not see it");
        assert_eq!(request.ids.and_then(|i| i.request_id().map(str::to_owned)).as_deref(), Some("made-here"));
        // And the next poll of the request says it.
        let mut again = std::pin::pin!(InRequest::new(request.ids, async {
            current_log_ids().and_then(|i| i.request_id().map(str::to_owned))
        }));
        assert!(matches!(again.as_mut().poll(&mut cx), Poll::Ready(Some(id)) if id == "made-here"));
    }

    #[test]
    fn a_task_sets_and_clears_its_requests_ids() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut task = std::pin::pin!(InRequest::new(None, async {
            set_log_ids(Some(LogIds::new(Some(b"first"), None)));
            std::future::poll_fn(|_| Poll::Ready(())).await;
            tx.send(current_log_ids().and_then(|i| i.request_id().map(str::to_owned))).unwrap();
            set_log_ids(None);
            tx.send(current_log_ids().and_then(|i| i.request_id().map(str::to_owned))).unwrap();
        }));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(task.as_mut().poll(&mut cx).is_ready());
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [Some("first".to_owned()), None]);
        assert!(task.ids.is_none(), "cleared with the request");
    }
}
