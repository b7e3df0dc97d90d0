//! Loom models of the scope tree. Run with
//! `RUSTFLAGS="--cfg nuncio_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p nuncio-context --release --lib loom`.
//!
//! Loom also fails a model if any `Arc` is leaked at its end, which is how
//! "no link left behind" is checked beyond the explicit counts.

use loom::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use crate::{Context, Error, HandleDropped};

fn children(ctx: &Context) -> usize {
    ctx.scope().unwrap().children_len()
}

fn counter() -> (Arc<AtomicUsize>, impl FnOnce() + Send + 'static) {
    let count = Arc::new(AtomicUsize::new(0));
    let bump = {
        let count = Arc::clone(&count);
        move || {
            count.fetch_add(1, Ordering::SeqCst);
        }
    };
    (count, bump)
}

/// A child derived while its parent is being cancelled ends up cancelled,
/// with the parent's cause, and is not kept by the parent.
#[test]
fn loom_cancel_races_derive() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let deriving = thread::spawn({
            let parent = parent.clone();
            move || parent.with_cancel()
        });
        cancel.cancel();
        let (child, child_handle) = deriving.join().unwrap();

        assert_eq!(child.err(), Some(Error::Canceled));
        assert_eq!(child.cause().unwrap().downcast_ref(), Some(&Error::Canceled));
        assert_eq!(children(&parent), 0);
        // Held by `child` and `child_handle` only.
        assert_eq!(Arc::strong_count(child.scope().unwrap()), 2);
        drop(child_handle);
    });
}

/// An `after_func` registered while the context is being cancelled runs
/// exactly once.
#[test]
fn loom_cancel_races_after_func() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (count, bump) = counter();
        let registering = thread::spawn(move || drop(ctx.after_func(bump)));
        cancel.cancel();
        registering.join().unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
    });
}

/// `stop()` racing the cancellation: `f` runs iff `stop()` returned false.
#[test]
fn loom_stop_races_cancel() {
    loom::model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (count, bump) = counter();
        let registration = ctx.after_func(bump);
        let cancelling = thread::spawn(move || cancel.cancel());
        let stopped = registration.stop();
        cancelling.join().unwrap();
        assert_eq!(count.load(Ordering::SeqCst), usize::from(!stopped));
    });
}

/// The parent's cancel (draining its children) racing the child's handle
/// drop (unlinking itself): either way the child is cancelled once and
/// unlinked.
#[test]
fn loom_parent_cancel_races_child_drop() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_handle) = parent.with_cancel();
        let (count, bump) = counter();
        drop(child.after_func(bump));
        let dropping = thread::spawn(move || drop(child_handle));
        cancel.cancel();
        dropping.join().unwrap();

        assert_eq!(child.err(), Some(Error::Canceled));
        let cause = child.cause().unwrap();
        assert!(cause.downcast_ref::<HandleDropped>().is_some() || cause.downcast_ref() == Some(&Error::Canceled));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(children(&parent), 0);
        assert_eq!(Arc::strong_count(child.scope().unwrap()), 1);
    });
}

/// A `done()` future waiting on one thread is woken by a cancel on another.
#[test]
fn loom_done_races_cancel() {
    loom::model(|| {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, _child) = parent.with_cancel();
        let waiting = thread::spawn(move || {
            loom::future::block_on(child.done());
            child.err()
        });
        cancel.cancel();
        assert_eq!(waiting.join().unwrap(), Some(Error::Canceled));
    });
}

/// Three threads on a three-level tree: the root is cancelled, a grandchild
/// is derived, and the middle handle is dropped, all at once. Everything ends
/// cancelled and unlinked.
#[test]
fn loom_cancel_derive_and_drop_across_levels() {
    loom::model(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let (middle, middle_handle) = root.with_cancel();
        let deriving = thread::spawn({
            let middle = middle.clone();
            move || middle.with_cancel()
        });
        let cancelling = thread::spawn(move || cancel_root.cancel());
        drop(middle_handle);
        let (leaf, leaf_handle) = deriving.join().unwrap();
        cancelling.join().unwrap();

        assert_eq!(leaf.err(), Some(Error::Canceled));
        assert_eq!(middle.err(), Some(Error::Canceled));
        assert_eq!(children(&root), 0);
        assert_eq!(children(&middle), 0);
        assert_eq!(Arc::strong_count(middle.scope().unwrap()), 1 + usize::from(leaf_linked(&leaf)));
        drop(leaf_handle);
    });
}

/// Whether the leaf still points at its parent (born-done leaves do not).
fn leaf_linked(leaf: &Context) -> bool {
    leaf.scope().unwrap().has_parent()
}

/// A cancel with a custom cause (which takes the lock) racing a plain one
/// (lock-free while nothing is registered, so test it with and without a
/// child): exactly one wins, the child sees the winner's cause, and the loser
/// does not unlink a second time (which could remove a sibling that reused
/// the key in the parent).
#[test]
fn loom_custom_cause_races_plain_cancel() {
    for with_child in [false, true] {
        loom::model(move || {
            let (parent, _parent) = Context::background().with_cancel();
            let (ctx, handle) = parent.with_cancel();
            let handle = Arc::new(handle);
            let child = with_child.then(|| ctx.with_cancel());
            let cancelling = thread::spawn({
                let handle = Arc::clone(&handle);
                move || handle.cancel_with_cause(crate::Cause::new("custom"))
            });
            handle.cancel();
            let (sibling, _sibling) = parent.with_cancel();
            cancelling.join().unwrap();

            let cause = ctx.cause().unwrap().to_string();
            assert!(cause == "custom" || cause == "context canceled", "{cause}");
            if let Some((child, _child_handle)) = child {
                assert_eq!(child.cause().unwrap().to_string(), cause);
            }
            assert_eq!(sibling.err(), None);
            assert_eq!(children(&parent), 1);
        });
    }
}
