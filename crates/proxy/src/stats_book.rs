//! Every stats store of the process, kept on main: the admin sums them on
//! read, and the config manager tidies them at each reload.
//!
//! Each thread gets a store of its own with each snapshot it serves (so
//! counting never writes a line another worker writes); the stores reach
//! main through a channel. A store the workers no longer hold is folded
//! into the carried totals and freed ([`Stats::read`] does it). Folding only
//! when someone reads `/stats` would keep every reload's stores, 7–16 KB per
//! worker each, for as long as nobody reads: a process reloaded every few
//! seconds and never scraped would grow without bound. So each reload folds
//! too ([`StatsBook::collect`]), and what is kept is bounded by the
//! snapshots still served (draining connections hold theirs).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use nuncio_stats::{Stats, Store, Summary};

/// The stores and the channel they arrive by. Main only (`RefCell`).
pub(crate) struct StatsBook {
    stats: RefCell<Stats>,
    arriving: Receiver<Arc<Store>>,
    sender: Sender<Arc<Store>>,
}

impl StatsBook {
    pub(crate) fn new() -> StatsBook {
        let (sender, arriving) = channel();
        StatsBook { stats: RefCell::new(Stats::new()), arriving, sender }
    }

    /// Where a thread sends a store it was given (any thread).
    pub(crate) fn sender(&self) -> Sender<Arc<Store>> {
        self.sender.clone()
    }

    /// Attaches the stores that arrived and folds those nobody else holds
    /// into the totals, freeing them.
    pub(crate) fn collect(&self) {
        self.attach_arrived();
        self.stats.borrow_mut().retire();
    }

    /// Every store summed (`Stats::read` folds the dead ones itself).
    pub(crate) fn read(&self) -> Summary {
        self.attach_arrived();
        self.stats.borrow_mut().read()
    }

    /// Each worker's stores summed apart.
    pub(crate) fn read_by_worker(&self) -> BTreeMap<String, Summary> {
        self.attach_arrived();
        self.stats.borrow_mut().read_by_worker()
    }

    fn attach_arrived(&self) {
        let mut stats = self.stats.borrow_mut();
        while let Ok(store) = self.arriving.try_recv() {
            stats.attach(store);
        }
    }
}
