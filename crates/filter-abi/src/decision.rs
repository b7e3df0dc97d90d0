//! A hook's decision, as the library gives it (`decide`): parsed and
//! checked on the calling thread, owned from then on.

use std::cell::RefCell;

use bytes::Bytes;
use http::StatusCode;

use crate::abi::{decision, decision_flags};
use crate::table::StreamId;
use crate::wire::{self, Edit, WireError};

/// What a decision says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Continue,
    Stop,
    Buffer,
    Watermark,
    Reply(StatusCode),
}

/// A checked decision.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) kind: Kind,
    pub(crate) edits: Vec<Edit>,
    /// The new body piece (with `DECISION_BODY`), or a reply's body.
    pub(crate) body: Option<Bytes>,
    pub(crate) panicked: bool,
    /// The filter does not implement the hook.
    pub(crate) default: bool,
}

impl Decision {
    /// Parses and checks a decision; copies what it keeps.
    pub(crate) fn parse(kind: u32, status: u32, edits: &[u8], body: &[u8], flags: u32) -> Result<Decision, WireError> {
        let kind = match kind {
            decision::CONTINUE => Kind::Continue,
            decision::STOP => Kind::Stop,
            decision::BUFFER => Kind::Buffer,
            decision::WATERMARK => Kind::Watermark,
            decision::REPLY => {
                let code = u16::try_from(status).ok().filter(|s| (200..=599).contains(s));
                let code = code.and_then(|c| StatusCode::from_u16(c).ok());
                Kind::Reply(code.ok_or_else(|| WireError(format!("a reply's status is 200 to 599, not {status}")))?)
            }
            other => return Err(WireError(format!("unknown decision {other}"))),
        };
        let known =
            decision_flags::DECISION_BODY | decision_flags::DECISION_PANICKED | decision_flags::DECISION_DEFAULT;
        if flags & !known != 0 {
            return Err(WireError(format!("unknown decision flags {flags:#x}")));
        }
        let body =
            (flags & decision_flags::DECISION_BODY != 0 || matches!(kind, Kind::Reply(_))).then(|| wire::owned(body));
        Ok(Decision {
            kind,
            edits: wire::edits(edits)?,
            body,
            panicked: flags & decision_flags::DECISION_PANICKED != 0,
            default: flags & decision_flags::DECISION_DEFAULT != 0,
        })
    }
}

/// The hook running inline on this thread: a decision made during it is
/// kept here rather than posted.
struct Inline {
    stream: StreamId,
    hook: u32,
    decided: Option<Decision>,
}

thread_local! {
    static INLINE: RefCell<Option<Inline>> = const { RefCell::new(None) };
}

/// Runs `call` (a hook's call into the library) with `(stream, hook)`
/// marked as running inline on this thread; returns the decision made
/// during it, if any.
pub(crate) fn inline(stream: StreamId, hook: u32, call: impl FnOnce()) -> Option<Decision> {
    INLINE.with(|slot| *slot.borrow_mut() = Some(Inline { stream, hook, decided: None }));
    call();
    INLINE.with(|slot| slot.borrow_mut().take()).and_then(|inline| inline.decided)
}

/// Whether `(stream, hook)` runs inline on this thread right now.
pub(crate) fn is_inline(stream: StreamId, hook: u32) -> bool {
    INLINE
        .try_with(|slot| slot.borrow().as_ref().is_some_and(|i| i.stream == stream && i.hook == hook))
        .unwrap_or(false)
}

/// Keeps the inline hook's decision (the caller claimed it first).
pub(crate) fn keep_inline(decision: Decision) {
    INLINE.with(|slot| {
        if let Some(inline) = slot.borrow_mut().as_mut() {
            inline.decided = Some(decision);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_checked() {
        assert!(Decision::parse(decision::REPLY, 99, &[], &[], 0).is_err());
        assert!(Decision::parse(decision::REPLY, 600, &[], &[], 0).is_err());
        assert!(Decision::parse(0, 0, &[], &[], 0).is_err());
        assert!(Decision::parse(decision::CONTINUE, 0, &[], &[], 64).is_err());
        let d = Decision::parse(decision::REPLY, 403, &[], b"no", 0).unwrap();
        assert_eq!(d.kind, Kind::Reply(StatusCode::FORBIDDEN));
        assert_eq!(d.body.as_deref(), Some(&b"no"[..]));
        let d = Decision::parse(decision::CONTINUE, 0, &[], b"ignored", 0).unwrap();
        assert!(d.body.is_none());
    }
}
