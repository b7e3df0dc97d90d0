//! Behaviour of `Context`: the tree, causes, deadlines (on tokio's paused
//! clock), values, `done()` and `after_func`.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context as TaskContext, Poll, Waker},
    time::Duration,
};

use crate::{Cause, Context, Error, HandleDropped, Instant};

fn children(ctx: &Context) -> usize {
    ctx.scope().expect("scoped context").children_len()
}

fn counter() -> (Arc<AtomicUsize>, impl Fn() + Send + Clone + 'static) {
    let count = Arc::new(AtomicUsize::new(0));
    let bump = {
        let count = Arc::clone(&count);
        move || {
            count.fetch_add(1, Ordering::SeqCst);
        }
    };
    (count, bump)
}

/// Polls once with a no-op waker.
fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut TaskContext::from_waker(Waker::noop()))
}

#[test]
fn background_is_never_done() {
    let bg = Context::background();
    assert_eq!(bg.err(), None);
    assert!(bg.cause().is_none());
    assert_eq!(bg.deadline(), None);
    assert!(poll_once(&mut bg.done()).is_pending());
}

#[test]
fn cancelling_a_parent_cancels_the_subtree() {
    let (root, cancel_root) = Context::background().with_cancel();
    let (a, _a) = root.with_cancel();
    let (b, _b) = root.with_cancel();
    let (a1, _a1) = a.with_cancel();
    let (unrelated, _u) = Context::background().with_cancel();
    assert_eq!(children(&root), 2);

    cancel_root.cancel();

    for ctx in [&root, &a, &b, &a1] {
        assert_eq!(ctx.err(), Some(Error::Canceled));
        assert!(ctx.is_done());
    }
    assert_eq!(unrelated.err(), None);
    assert_eq!(children(&root), 0);
    assert_eq!(children(&a), 0);
}

#[test]
fn cancelling_a_child_leaves_the_parent_alone() {
    let (parent, _p) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    let (sibling, _s) = parent.with_cancel();
    cancel_child.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(parent.err(), None);
    assert_eq!(sibling.err(), None);
    assert_eq!(children(&parent), 1);
}

#[test]
fn causes_default_and_propagate() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_cancel();
    assert!(parent.cause().is_none());
    cancel.cancel_with_cause(Cause::new("downstream reset"));
    cancel.cancel(); // second cancel changes nothing
    assert_eq!(parent.cause().unwrap().to_string(), "downstream reset");
    assert_eq!(child.cause().unwrap().to_string(), "downstream reset");

    // Born done: a child of a done parent carries the parent's cause.
    let (late, _l) = parent.with_cancel();
    assert_eq!(late.err(), Some(Error::Canceled));
    assert_eq!(late.cause().unwrap().to_string(), "downstream reset");
    assert_eq!(children(&parent), 0);

    let (plain, cancel) = Context::background().with_cancel();
    cancel.cancel();
    assert_eq!(plain.cause().unwrap().downcast_ref(), Some(&Error::Canceled));
    assert_eq!(plain.cause().unwrap().to_string(), "context canceled");
}

#[test]
fn custom_cause_downcasts() {
    #[derive(Debug, PartialEq)]
    struct Reset(u32);
    impl std::fmt::Display for Reset {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "stream reset with code {}", self.0)
        }
    }
    impl std::error::Error for Reset {}

    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with_cause(Cause::new(Reset(8)));
    let cause = ctx.cause().unwrap();
    assert_eq!(cause.downcast_ref::<Reset>(), Some(&Reset(8)));
    let copy = cause.clone();
    assert!(cause.downcast_ref::<Error>().is_none());
    drop(cause);
    assert_eq!(copy.to_string(), "stream reset with code 8");
}

#[test]
fn dropping_the_handle_cancels_and_unlinks() {
    let (parent, _p) = Context::background().with_cancel();
    let (child, handle) = parent.with_cancel();
    let (grandchild, _g) = child.with_cancel();
    assert_eq!(children(&parent), 1);

    drop(handle);

    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(grandchild.err(), Some(Error::Canceled));
    let cause = grandchild.cause().unwrap();
    assert_eq!(cause.downcast_ref(), Some(&HandleDropped));
    assert_eq!(cause.to_string(), "context cancel handle dropped");
    assert_eq!(children(&parent), 0);
    assert_eq!(parent.err(), None);
}

#[test]
fn forgotten_children_do_not_accumulate() {
    let (parent, _p) = Context::background().with_cancel();
    for _ in 0..1000 {
        let (child, _cancel) = parent.with_timeout(Duration::from_secs(60));
        drop(child);
    }
    assert_eq!(children(&parent), 0);
    // The scope of a dropped child is freed: only our clones hold it.
    let (child, handle) = parent.with_cancel();
    let scope = Arc::clone(child.scope().unwrap());
    drop((child, handle));
    assert_eq!(Arc::strong_count(&scope), 1);
}

#[test]
fn handle_context_is_the_same_context() {
    #[derive(Debug, PartialEq)]
    struct Tag(&'static str);
    let base = Context::background().with_value(Tag("x"));
    let (ctx, handle) = base.with_cancel();
    let again = handle.context();
    assert_eq!(again.value::<Tag>(), Some(&Tag("x")));
    let lent = handle.as_context();
    assert_eq!(lent.value::<Tag>(), Some(&Tag("x")));
    assert!(!lent.is_done());
    handle.cancel();
    assert_eq!(again.err(), Some(Error::Canceled));
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(handle.as_context().err(), Some(Error::Canceled));
}

#[test]
fn values_shadow_and_are_found_at_any_depth() {
    #[derive(Debug, PartialEq)]
    struct RequestId(u64);
    #[derive(Debug, PartialEq)]
    struct Route(&'static str);

    let root = Context::background().with_value(RequestId(1));
    let (mid, _m) = root.with_cancel();
    let mid = mid.with_value(Route("/api"));
    let mut deep = mid;
    let mut handles = Vec::new();
    for _ in 0..10 {
        let (ctx, h) = deep.with_cancel();
        deep = ctx;
        handles.push(h);
    }
    assert_eq!(deep.value::<RequestId>(), Some(&RequestId(1)));
    assert_eq!(deep.value::<Route>(), Some(&Route("/api")));
    assert_eq!(deep.value::<u32>(), None);

    let shadowed = deep.with_value(RequestId(2));
    assert_eq!(shadowed.value::<RequestId>(), Some(&RequestId(2)));
    assert_eq!(shadowed.value::<Route>(), Some(&Route("/api")));
    assert_eq!(deep.value::<RequestId>(), Some(&RequestId(1)));
    assert_eq!(root.value::<Route>(), None);
    assert!(format!("{shadowed:?}").contains("values: 2"));

    // with_value shares the scope: cancelling reaches the valued context.
    let (c, cancel) = Context::background().with_cancel();
    let v = c.with_value(7u8);
    cancel.cancel();
    assert_eq!(v.err(), Some(Error::Canceled));
}

#[test]
fn many_values_are_all_found() {
    #[derive(Debug, PartialEq)]
    struct V<const N: usize>(usize);
    macro_rules! set_and_check {
        ($($n:literal)*) => {{
            let mut ctx = Context::background();
            $( ctx = ctx.with_value(V::<$n>($n)); )*
            $( assert_eq!(ctx.value::<V<$n>>(), Some(&V::<$n>($n))); )*
            $( ctx = ctx.with_value(V::<$n>($n + 100)); )*
            $( assert_eq!(ctx.value::<V<$n>>(), Some(&V::<$n>($n + 100))); )*
            assert_eq!(ctx.value::<V<999>>(), None);
            let count = [$($n),*].len();
            assert!(format!("{ctx:?}").contains(&format!("values: {count}")));
        }};
    }
    set_and_check!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32);
}

#[test]
fn without_cancel_keeps_values_only() {
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(1));
    let ctx = ctx.with_value("tenant-a");
    let detached = ctx.without_cancel();
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(detached.err(), None);
    assert_eq!(detached.deadline(), None);
    assert_eq!(detached.value::<&str>(), Some(&"tenant-a"));
    assert!(poll_once(&mut detached.done()).is_pending());
    let (child, _c) = detached.with_cancel();
    assert_eq!(child.err(), None);
}

#[test]
fn child_deadline_is_never_later_than_parents() {
    let now = Instant::now();
    let (parent, _p) = Context::background().with_deadline(now + Duration::from_secs(5));
    let (later, _l) = parent.with_deadline(now + Duration::from_secs(50));
    let (earlier, _e) = parent.with_deadline(now + Duration::from_secs(1));
    let (plain, _c) = parent.with_cancel();
    let (from_std, _s) = parent.with_deadline(std::time::Instant::now());
    assert_eq!(later.deadline(), parent.deadline());
    assert_eq!(plain.deadline(), parent.deadline());
    assert_eq!(earlier.deadline(), Some(now + Duration::from_secs(1)));
    assert!(from_std.deadline() <= parent.deadline());
    let (huge, _h) = Context::background().with_timeout(Duration::MAX);
    assert_eq!(huge.deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn err_reports_the_deadline_without_any_timer() {
    let (parent, _p) = Context::background().with_timeout(Duration::from_secs(10));
    let (child, _c) = parent.with_timeout(Duration::from_secs(2));
    let (grandchild, _g) = child.with_cancel();
    let (_sibling, _s) = parent.with_cancel();

    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(child.err(), None);
    tokio::time::advance(Duration::from_secs(1)).await;
    // Nobody waited: no timer anywhere, the clock is read lazily.
    assert!(!parent.scope().unwrap().timer_armed());
    assert!(!child.scope().unwrap().timer_armed());
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(child.cause().unwrap().downcast_ref(), Some(&Error::DeadlineExceeded));
    assert_eq!(child.cause().unwrap().to_string(), "context deadline exceeded");
    // The lazy check cancelled the child's subtree and unlinked it.
    assert_eq!(grandchild.scope().unwrap().peek_err(), Some(Error::DeadlineExceeded));
    assert_eq!(children(&parent), 1);
    assert_eq!(parent.err(), None);

    tokio::time::advance(Duration::from_secs(8)).await;
    assert_eq!(parent.err(), Some(Error::DeadlineExceeded));
    assert_eq!(children(&parent), 0);
}

#[tokio::test(start_paused = true)]
async fn done_resolves_at_the_deadline() {
    let start = Instant::now();
    let (ctx, _c) = Context::background().with_timeout(Duration::from_secs(3));
    ctx.done().await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn done_resolves_on_cancel() {
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
    let waiter = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            ctx.done().await;
            ctx.err()
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ctx.scope().unwrap().timer_armed());
    cancel.cancel();
    assert_eq!(waiter.await.unwrap(), Some(Error::Canceled));
    // Cancelling aborted the timer.
    assert!(!ctx.scope().unwrap().timer_armed());

    // Already done: resolves at once.
    assert!(poll_once(&mut ctx.done()).is_ready());
}

#[tokio::test(start_paused = true)]
async fn done_unless_deadline_arms_no_timer_but_sees_cancel_and_a_passed_deadline() {
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(2));
    let mut waiting = ctx.done_unless_deadline();
    assert!(poll_once(&mut waiting).is_pending());
    assert!(!ctx.scope().unwrap().timer_armed());
    // Nothing wakes it at the deadline, but a poll after it sees it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(poll_once(&mut waiting).is_ready());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    drop(cancel);

    // Cancellation wakes it.
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
    let waiter = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            ctx.done_unless_deadline().await;
            ctx.err()
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!ctx.scope().unwrap().timer_armed());
    cancel.cancel();
    assert_eq!(waiter.await.unwrap(), Some(Error::Canceled));
}

#[tokio::test(start_paused = true)]
async fn an_inherited_deadline_uses_the_parents_timer() {
    let (parent, _p) = Context::background().with_timeout(Duration::from_secs(5));
    let (child, _c) = parent.with_cancel();
    let (own, _o) = parent.with_timeout(Duration::from_secs(1));
    let mut wait_child = child.done();
    let mut wait_own = own.done();
    assert!(poll_once(&mut wait_child).is_pending());
    assert!(poll_once(&mut wait_own).is_pending());
    assert!(parent.scope().unwrap().timer_armed());
    assert!(child.scope().unwrap().timer_delegated());
    assert!(own.scope().unwrap().timer_armed());

    wait_child.await;
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(parent.err(), Some(Error::DeadlineExceeded));
    assert!(poll_once(&mut wait_own).is_ready());
}

#[tokio::test(start_paused = true)]
async fn after_func_fires_at_the_deadline() {
    let (count, bump) = counter();
    let (ctx, _c) = Context::background().with_timeout(Duration::from_secs(2));
    let _registration = ctx.after_func(bump);
    assert!(ctx.scope().unwrap().timer_armed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Fired by the timer task: nobody called err().
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(ctx.scope().unwrap().peek_err(), Some(Error::DeadlineExceeded));
}

#[test]
fn after_func_and_stop() {
    let (count, bump) = counter();

    // Runs once on cancel; stop() afterwards reports it did not prevent it.
    let (ctx, cancel) = Context::background().with_cancel();
    let registration = ctx.after_func(bump.clone());
    cancel.cancel();
    cancel.cancel();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(!registration.stop());

    // Stopped in time: never runs.
    let (ctx, cancel) = Context::background().with_cancel();
    let registration = ctx.after_func(bump.clone());
    assert!(registration.stop());
    cancel.cancel();
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Already done: runs at once, here.
    let registration = ctx.after_func(bump.clone());
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(!registration.stop());

    // Never done: never runs, stop() says it prevented it.
    let registration = Context::background().after_func(bump.clone());
    assert!(registration.stop());

    // A dropped registration stays registered; a parent's cancel fires it.
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_cancel();
    drop(child.after_func(bump));
    cancel.cancel();
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn after_func_may_use_the_context() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, child_cancel) = parent.with_cancel();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let _r = child.after_func({
        let child = child.clone();
        let seen = Arc::clone(&seen);
        move || {
            // No lock of ours is held while f runs.
            *seen.lock().unwrap() = Some((child.err(), child.cause().unwrap().to_string()));
            let (grandchild, _g) = child.with_cancel();
            assert!(grandchild.is_done());
            drop(child_cancel);
        }
    });
    cancel.cancel_with_cause(Cause::new("shutdown"));
    assert_eq!(*seen.lock().unwrap(), Some((Some(Error::Canceled), "shutdown".to_owned())));
}

#[test]
fn dropping_done_deregisters_its_waker() {
    let (ctx, cancel) = Context::background().with_cancel();
    let waiters = |ctx: &Context| ctx.scope().unwrap().waiters_len();
    let mut first = ctx.done();
    let mut second = ctx.done();
    assert!(poll_once(&mut first).is_pending());
    assert!(poll_once(&mut second).is_pending());
    assert!(poll_once(&mut second).is_pending()); // same slot, re-polled
    assert_eq!(waiters(&ctx), 2);
    drop(first);
    assert_eq!(waiters(&ctx), 1);
    cancel.cancel();
    assert!(poll_once(&mut second).is_ready());
    drop(second);
}

#[test]
fn a_done_is_two_words() {
    // Connections keep one for their life, idle ones included.
    assert_eq!(size_of::<crate::Done>(), 2 * size_of::<usize>());
}

#[test]
fn a_scope_with_its_counts_fits_sixteen_words() {
    // Every connection and every request has one: with `Arc`'s two counts
    // it stays within an allocator's 128-byte class, not the next (160
    // with mimalloc): the registry's overflow and a custom cause are boxed,
    // the key in the parent is a `u32`.
    let scope = size_of::<crate::scope::Scope>();
    assert!(scope + 2 * size_of::<usize>() <= 16 * size_of::<usize>(), "a scope is {scope} bytes");
}

#[tokio::test(start_paused = true)]
async fn done_says_whether_its_context_is_done_without_registering() {
    assert!(!Context::background().done().is_done(), "background: never");
    let (ctx, cancel) = Context::background().with_cancel();
    let done = ctx.done();
    assert!(!done.is_done());
    assert_eq!(ctx.scope().unwrap().waiters_len(), 0, "asking registers nothing");
    cancel.cancel();
    assert!(done.is_done());
    // A passed deadline counts, though no timer fired.
    let (timed, _t) = Context::background().with_timeout(Duration::from_secs(1));
    let done = timed.done();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(done.is_done());
}

#[tokio::test]
async fn done_is_woken_from_another_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut done = ctx.done();
    assert!(poll_once(&mut done).is_pending());
    std::thread::spawn(move || cancel.cancel()).join().unwrap();
    done.await;
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn deadline_without_a_runtime_is_still_reported() {
    // No tokio runtime here: nothing can be armed, nothing panics.
    let (ctx, _c) = Context::background().with_deadline(Instant::now() + Duration::from_millis(20));
    let (count, bump) = counter();
    let _r = ctx.after_func(bump);
    let mut done = ctx.done();
    assert!(poll_once(&mut done).is_pending());
    assert!(!ctx.scope().unwrap().timer_armed());
    std::thread::sleep(Duration::from_millis(30));
    assert!(poll_once(&mut done).is_ready());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn contexts_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Context>();
    check::<crate::CancelHandle>();
    check::<crate::Done>();
    check::<crate::AfterFunc>();
    check::<Cause>();
}
