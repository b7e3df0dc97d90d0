//! The cancellation tree: one [`Scope`] per `with_cancel` / `with_deadline` /
//! `with_timeout`.
//!
//! Locking rule: at most one scope lock is held at a time, and no foreign code
//! (wakers, `after_func` callbacks, destructors of user values) runs under one.
//!
//! The state byte says whether the scope is done, why, and with which default
//! cause; it also has a `REGISTERED` bit, set (under the lock, never cleared)
//! before anything that a cancellation must deal with is put in `Inner`
//! (a child, a waker, a callback, a timer). While that bit is clear, and the
//! cause is a default one, cancelling is a single compare-and-swap; otherwise
//! it takes the lock and drains `Inner`. A `DELEGATED` bit records that the
//! parent's deadline timer stands in for ours.

use std::{mem, sync::PoisonError, task::Waker};

use crate::{
    Cause, Error, Instant,
    error::SharedCause,
    registry::Registry,
    sync::{Arc, AtomicU8, Mutex, MutexGuard, Ordering},
    timer::{self, TimerHandle},
};

/// Bits 0-1 of the state: `LIVE`, or the `Error`.
const ERR: u8 = 0b0_0011;
const LIVE: u8 = 0;
const CANCELED: u8 = 1;
const DEADLINE_EXCEEDED: u8 = 2;
/// Bits 2-3: the cause, as `Cause::code` (0: the one in `Inner::cause`).
const CAUSE_SHIFT: u32 = 2;
const CAUSE: u8 = 0b0_1100;
/// Bit 4: `Inner` may hold something a cancellation must drain.
const REGISTERED: u8 = 0b01_0000;
/// Bit 5: our deadline is the parent's, and the parent's timer is armed (its
/// cancellation reaches us), so we need no timer of our own. Set under the
/// lock, after `REGISTERED`.
const DELEGATED: u8 = 0b10_0000;

/// A callback registered with [`Context::after_func`](crate::Context::after_func).
pub(crate) type AfterFn = Box<dyn FnOnce() + Send>;

pub(crate) struct Scope {
    /// See the module docs.
    state: AtomicU8,
    /// The effective deadline: the earlier of our own and the parent's.
    deadline: Option<Instant>,
    /// The parent, if we were linked at birth, and our key in its
    /// `registered` (a `u32` beside `state`: every connection has a scope,
    /// and 112 bytes keep its allocation within 128). The key is only ever
    /// removed by us (`cancel` unlinking) or drained by a cancelling parent,
    /// and a cancelled parent never links again, so it stays valid.
    parent: Option<Arc<Scope>>,
    key_in_parent: u32,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Set when done with a cause that has no code of its own. Boxed: rare,
    /// and one word here instead of two (see `Scope::parent`).
    cause: Option<Box<SharedCause>>,
    /// Children, `done()` wakers and `after_func` callbacks, in one key
    /// space (the first two inline: most scopes register no more).
    registered: Registry<Registered>,
    /// Our deadline timer task, once armed.
    timer: Option<TimerHandle>,
}

/// Something a cancellation must deal with.
enum Registered {
    /// A linked child scope: cancel it.
    Child(Arc<Scope>),
    /// The waker of a pending `Done`: wake it.
    Waiter(Waker),
    /// An `after_func` callback: run it.
    AfterFunc(AfterFn),
}

/// What a cancellation takes out of a scope, to be dealt with outside the lock.
struct Drained {
    /// What the children are cancelled with.
    child_cause: Cause,
    registered: Registry<Registered>,
    timer: Option<TimerHandle>,
}

fn done_state(err: Error, cause: &Cause) -> u8 {
    let err = match err {
        Error::Canceled => CANCELED,
        Error::DeadlineExceeded => DEADLINE_EXCEEDED,
    };
    err | cause.code() << CAUSE_SHIFT
}

fn decode(state: u8) -> Option<Error> {
    match state & ERR {
        LIVE => None,
        CANCELED => Some(Error::Canceled),
        _ => Some(Error::DeadlineExceeded),
    }
}

fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Scope {
    fn new(state: u8, deadline: Option<Instant>, parent: Option<(Arc<Scope>, usize)>) -> Scope {
        let (parent, key_in_parent) = match parent {
            // A scope's children are counted in memory (each takes a slot
            // of its registry): four billion of them cannot exist.
            Some((parent, key)) => (Some(parent), u32::try_from(key).expect("fewer than 2^32 children of a context")),
            None => (None, 0),
        };
        Scope { state: AtomicU8::new(state), deadline, parent, key_in_parent, inner: Mutex::new(Inner::default()) }
    }

    /// A new scope under `parent` (`None`: under a context that is never
    /// done), with `deadline` or the parent's, whichever comes first.
    ///
    /// If the parent is already done the child is born done, with the
    /// parent's error and cause, and is not linked.
    pub(crate) fn derive(parent: Option<&Arc<Scope>>, deadline: Option<Instant>) -> Arc<Scope> {
        let Some(parent) = parent else {
            return Arc::new(Scope::new(LIVE, deadline, None));
        };
        let deadline = earlier(deadline, parent.deadline);
        let mut inner = parent.lock();
        if parent.mark_registered() {
            let key = inner.registered.vacant_key();
            let child = Arc::new(Scope::new(LIVE, deadline, Some((Arc::clone(parent), key))));
            let inserted = inner.registered.insert(Registered::Child(Arc::clone(&child)));
            debug_assert_eq!(inserted, key, "the key the child was told");
            return child;
        }
        let state = parent.state.load(Ordering::Acquire) & (ERR | CAUSE);
        let cause = inner.cause.clone();
        drop(inner);
        let child = Scope::new(state, deadline, None);
        child.lock().cause = cause;
        Arc::new(child)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No foreign code runs under the lock, so a poisoned lock can only
        // come from a panic in slab bookkeeping; the data is still coherent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets `REGISTERED` unless the scope is done; true if it is live. Call
    /// with the lock held, before putting something in `Inner` that a
    /// cancellation must deal with.
    fn mark_registered(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state & ERR != LIVE {
            return false;
        }
        // Under the lock, only a lock-free cancellation can change the state
        // (to done) and it only does so while `REGISTERED` is clear.
        state & REGISTERED != 0
            || self.state.compare_exchange(state, state | REGISTERED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// `None` while live; checks the clock only when there is a deadline, and
    /// cancels the scope with `DeadlineExceeded` if it has passed.
    #[inline]
    pub(crate) fn err(&self) -> Option<Error> {
        match decode(self.state.load(Ordering::Acquire)) {
            None => self.check_deadline(),
            err => err,
        }
    }

    /// The state without looking at the clock (for `Debug`).
    pub(crate) fn peek_err(&self) -> Option<Error> {
        decode(self.state.load(Ordering::Acquire))
    }

    #[inline]
    fn check_deadline(&self) -> Option<Error> {
        let deadline = self.deadline?;
        if Instant::now() < deadline {
            return None;
        }
        self.expire()
    }

    #[cold]
    fn expire(&self) -> Option<Error> {
        self.cancel(Error::DeadlineExceeded, Cause::DEADLINE_EXCEEDED);
        // A concurrent cancel may have won: report what is recorded.
        self.peek_err()
    }

    pub(crate) fn cause(&self) -> Option<Cause> {
        self.err()?;
        let state = self.state.load(Ordering::Acquire);
        match Cause::from_code((state & CAUSE) >> CAUSE_SHIFT) {
            Some(cause) => Some(cause),
            // Stored under the lock together with the state.
            None => self.lock().cause.as_deref().cloned().map(Cause::from_shared),
        }
    }

    /// Cancels this scope and its subtree, then unlinks it from its parent.
    /// Does nothing if it is already done.
    pub(crate) fn cancel(&self, err: Error, cause: Cause) {
        self.cancel_inner(err, cause, true);
    }

    /// `unlink` is false when the parent is draining its children: it has
    /// taken our entry already.
    fn cancel_inner(&self, err: Error, cause: Cause, unlink: bool) {
        let done = done_state(err, &cause);
        let mut state = self.state.load(Ordering::Acquire);
        // Fast path: nothing to drain and nothing to store but the state.
        while state & (ERR | REGISTERED) == LIVE && done & CAUSE != 0 {
            match self.state.compare_exchange_weak(state, done, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if unlink {
                        self.unlink();
                    }
                    return;
                }
                Err(now) => state = now,
            }
        }
        if state & ERR != LIVE {
            return;
        }
        let drained = {
            let mut inner = self.lock();
            let state = self.state.load(Ordering::Acquire);
            if state & ERR != LIVE {
                return;
            }
            if state & REGISTERED != 0 {
                // No lock-free cancellation can race us any more.
                self.state.store(done, Ordering::Release);
            } else if self.state.compare_exchange(state, done, Ordering::AcqRel, Ordering::Acquire).is_err() {
                return; // a lock-free cancellation won
            }
            let child_cause = cause.clone();
            inner.cause = cause.into_shared().map(Box::new);
            Drained { child_cause, registered: mem::take(&mut inner.registered), timer: mem::take(&mut inner.timer) }
        };
        // Bookkeeping first, so a panicking callback leaves no link behind.
        if let Some(timer) = drained.timer {
            timer.abort();
        }
        if unlink {
            self.unlink();
        }
        // Then the subtree and the waiters, and the callbacks last.
        let mut registered = drained.registered;
        for entry in registered.iter_mut() {
            match entry {
                Registered::Child(child) => child.cancel_inner(err, drained.child_cause.clone(), false),
                Registered::Waiter(waker) => waker.wake_by_ref(),
                Registered::AfterFunc(_) => {}
            }
        }
        for entry in registered.into_values() {
            if let Registered::AfterFunc(f) = entry {
                f();
            }
        }
    }

    /// Removes us from our parent's children (after we were cancelled).
    fn unlink(&self) {
        if let Some(parent) = &self.parent {
            // Released at the end of the statement; our entry is dropped after.
            let ours = parent.lock().registered.try_remove(self.key_in_parent as usize);
            drop(ours);
        }
    }

    /// Registers `f` to run when the scope is done, or runs it now if it is.
    /// Returns its key, or `None` if it ran.
    pub(crate) fn add_after_func(this: &Arc<Self>, f: AfterFn) -> Option<usize> {
        let mut inner = this.lock();
        if !this.mark_registered() {
            drop(inner);
            f();
            return None;
        }
        let key = inner.registered.insert(Registered::AfterFunc(f));
        drop(inner);
        if this.deadline.is_some() {
            Scope::arm_timer(this);
        }
        Some(key)
    }

    /// Unregisters the `after_func` callback with this key; true if it was
    /// still registered (so it will never run).
    pub(crate) fn remove_after_func(&self, key: usize) -> bool {
        if self.state.load(Ordering::Acquire) & ERR != LIVE {
            return false; // drained
        }
        // The guard is released at the end of the statement; `f` (foreign
        // code in its captures) is dropped after it.
        let f = self.lock().registered.try_remove(key);
        matches!(f, Some(Registered::AfterFunc(_)))
    }

    /// The body of `Done::poll`. `key` is the waiter slot of that future;
    /// `arm_timer`: make sure a timer cancels the scope at its deadline.
    pub(crate) fn poll_done(this: &Arc<Self>, key: &mut Option<usize>, waker: &Waker, arm_timer: bool) -> bool {
        if this.err().is_some() {
            *key = None;
            return true;
        }
        let (replaced, arm) = {
            let mut inner = this.lock();
            if !this.mark_registered() {
                *key = None;
                return true;
            }
            let replaced = match *key {
                Some(k) => match inner.registered.get_mut(k) {
                    Some(Registered::Waiter(slot)) if !slot.will_wake(waker) => Some(mem::replace(slot, waker.clone())),
                    _ => None,
                },
                None => {
                    *key = Some(inner.registered.insert(Registered::Waiter(waker.clone())));
                    None
                }
            };
            let arm = arm_timer && this.deadline.is_some() && !this.has_timer(&inner);
            (replaced, arm)
        };
        drop(replaced);
        if arm {
            Scope::arm_timer(this);
        }
        false
    }

    /// Forgets the waiter slot of a dropped `Done`.
    pub(crate) fn remove_waiter(&self, key: usize) {
        if self.state.load(Ordering::Acquire) & ERR != LIVE {
            return; // drained
        }
        let waker = self.lock().registered.try_remove(key);
        drop(waker);
    }

    /// Whether a timer will cancel us at the deadline (ours or the parent's).
    fn has_timer(&self, inner: &Inner) -> bool {
        inner.timer.is_some() || self.state.load(Ordering::Acquire) & DELEGATED != 0
    }

    /// Makes sure something will cancel this scope at its deadline: our own
    /// timer task, or the parent's if the deadline is the parent's. Returns
    /// false if no timer could be armed (no tokio runtime on this thread).
    fn arm_timer(this: &Arc<Self>) -> bool {
        let Some(deadline) = this.deadline else {
            return false;
        };
        if let Some(parent) = &this.parent
            && parent.deadline == Some(deadline)
        {
            if !Scope::arm_timer(parent) {
                return false;
            }
            let inner = this.lock();
            if !this.has_timer(&inner) && this.mark_registered() {
                // Under the lock, with `REGISTERED` set: nothing else
                // changes the state now.
                this.state.fetch_or(DELEGATED, Ordering::AcqRel);
            }
            return true;
        }
        let mut inner = this.lock();
        if this.has_timer(&inner) || !this.mark_registered() {
            return true;
        }
        // Spawning runs no code of ours inline, so holding the lock is fine;
        // it makes sure there is at most one timer per scope.
        match timer::spawn(this, deadline) {
            Some(handle) => {
                inner.timer = Some(handle);
                true
            }
            None => false,
        }
    }

    /// How many children are linked (tests check that none leak).
    #[cfg(test)]
    pub(crate) fn children_len(&self) -> usize {
        self.lock().registered.iter().filter(|r| matches!(r, Registered::Child(_))).count()
    }

    /// Whether this scope was linked to a parent at birth.
    #[cfg(all(test, nuncio_loom))]
    pub(crate) fn has_parent(&self) -> bool {
        self.parent.is_some()
    }

    /// How many `done()` futures are registered.
    #[cfg(all(test, not(nuncio_loom)))]
    pub(crate) fn waiters_len(&self) -> usize {
        self.lock().registered.iter().filter(|r| matches!(r, Registered::Waiter(_))).count()
    }

    /// Whether a deadline timer task of this very scope is armed.
    #[cfg(all(test, not(nuncio_loom)))]
    pub(crate) fn timer_armed(&self) -> bool {
        self.lock().timer.is_some()
    }

    /// Whether this scope relies on its parent's timer.
    #[cfg(all(test, not(nuncio_loom)))]
    pub(crate) fn timer_delegated(&self) -> bool {
        self.state.load(Ordering::Acquire) & DELEGATED != 0
    }
}
