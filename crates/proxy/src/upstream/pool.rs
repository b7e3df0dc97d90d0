//! This worker's connections to one cluster's endpoints: idle HTTP/1.1
//! keep-alive connections and multiplexed HTTP/2 connections, per endpoint.
//!
//! One owner: only this module takes connections from the pool and puts
//! them back. A pool lives on its worker (`Rc`, `Cell`: never shared) for as
//! long as the worker serves the cluster's config unchanged; dropping it
//! closes what it holds.
//!
//! Idle HTTP/1.1 connections are closed when their `idle_timeout` passes,
//! by a timer of the pool's own (one per endpoint, armed while anything is
//! idle), not only when one is next taken: a burst that leaves hundreds of
//! connections behind does not keep their sockets open for ever. A taken
//! connection is checked for a peer that closed it meanwhile.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::Duration;

use nuncio_runtime::clock;

use h2::client::SendRequest;
use tokio::time::Instant;

use super::TryError;
use super::http1::Http1Connection;
use super::http2::{H2Connection, StreamSlot};
use crate::cluster::{ActiveRequest, ConnectError, Connected};

/// A stream to open on an HTTP/2 connection: a sender ready for it, the
/// slot that counts it, and whether the connection carried streams before.
pub(crate) type H2Stream = (SendRequest<bytes::Bytes>, StreamSlot, bool);

/// A connection for one try, in the protocol it speaks.
pub(crate) enum Pooled {
    Http1(Http1Connection),
    Http2(H2Stream),
}

/// Most idle HTTP/1.1 connections kept per endpoint per worker; past it the
/// oldest is closed.
const MAX_IDLE: usize = 1024;

/// A worker's connections to one cluster, by endpoint index.
pub(crate) struct ClusterPools {
    endpoints: Vec<EndpointPool>,
    /// The cluster's `idle_timeout` (`None`: idle connections stay).
    idle_timeout: Option<Duration>,
}

/// A worker's connections to one endpoint.
#[derive(Default)]
struct EndpointPool {
    /// Idle keep-alive connections: the most recently used last (taken
    /// first: the warmest), the oldest first (expired first).
    idle: RefCell<VecDeque<Idle>>,
    /// The idle timer runs for this endpoint.
    reaping: Cell<bool>,
    /// HTTP/2 connections (`protocol: http2`); a stream goes on the first
    /// with room under the peer's `max_concurrent_streams`.
    h2: RefCell<Vec<Rc<H2Connection>>>,
    /// The endpoint's addresses can change (`cluster::dns::re_resolved`):
    /// an idle connection is reused only to an address still listed. For
    /// the rest the check is skipped (a hash lookup a request).
    re_resolved: bool,
}

struct Idle {
    conn: Http1Connection,
    /// When it stops being reusable (released + the idle timeout): a
    /// comparison to tell, where the time idle was a subtraction.
    expires: Option<Instant>,
}

impl ClusterPools {
    /// Empty pools for a cluster's endpoints, one for each item of
    /// `re_resolved`: whether that endpoint's addresses can change
    /// (`cluster::dns::re_resolved`).
    pub(crate) fn new(re_resolved: impl IntoIterator<Item = bool>, idle_timeout: Option<Duration>) -> Rc<ClusterPools> {
        let endpoints = re_resolved.into_iter().map(|re_resolved| EndpointPool { re_resolved, ..Default::default() });
        Rc::new(ClusterPools { endpoints: endpoints.collect(), idle_timeout })
    }

    /// A pooled connection to `active`'s endpoint if a live one is idle (to
    /// an address the endpoint still has: DNS may have moved it), else a
    /// new one.
    pub(crate) async fn http1(&self, active: &ActiveRequest<'_>) -> Result<Http1Connection, ConnectError> {
        if let Some(conn) = self.idle_http1(active) {
            return Ok(conn);
        }
        let connected = active.connect().await?;
        Ok(Http1Connection::new(connected.io, connected.guard))
    }

    /// A live idle HTTP/1.1 connection to `active`'s endpoint, if any.
    fn idle_http1(&self, active: &ActiveRequest<'_>) -> Option<Http1Connection> {
        let pool = &self.endpoints[active.index()];
        loop {
            let Idle { mut conn, expires } = pool.idle.borrow_mut().pop_back()?;
            let fresh = expires.is_none_or(|at| clock::now() < at);
            let listed =
                |conn: &Http1Connection| !pool.re_resolved || conn.peer().is_some_and(|p| active.has_address(p));
            if fresh && conn.is_reusable() && listed(&conn) {
                return Some(conn);
            }
        }
    }

    /// For a TLS cluster whose ALPN offers both versions: a stream on an
    /// HTTP/2 connection with room, else an idle HTTP/1.1 connection, else
    /// a new connection, which speaks what the endpoint picked.
    pub(crate) async fn negotiated(&self, active: &ActiveRequest<'_>) -> Result<Pooled, TryError> {
        if let Some(stream) = self.h2_with_room(active).await {
            return Ok(Pooled::Http2(stream));
        }
        if let Some(conn) = self.idle_http1(active) {
            return Ok(Pooled::Http1(conn));
        }
        let connected = active.connect().await.map_err(TryError::Connect)?;
        if connected.h2 {
            Ok(Pooled::Http2(self.h2_new(active, connected).await?))
        } else {
            Ok(Pooled::Http1(Http1Connection::new(connected.io, connected.guard)))
        }
    }

    /// Puts back a connection whose exchange ended cleanly (to endpoint
    /// `index`), and arms the idle timer if it is not running.
    pub(crate) fn release(self: &Rc<Self>, index: usize, conn: Http1Connection) {
        let Some(pool) = self.endpoints.get(index) else { return };
        let oldest = {
            let mut idle = pool.idle.borrow_mut();
            let oldest = (idle.len() >= MAX_IDLE).then(|| idle.pop_front()).flatten();
            let expires = self.idle_timeout.and_then(clock::after);
            idle.push_back(Idle { conn, expires });
            oldest
        };
        drop(oldest);
        if let Some(timeout) = self.idle_timeout
            && !pool.reaping.replace(true)
        {
            tokio::task::spawn_local(reap(Rc::downgrade(self), index, timeout));
        }
    }

    /// Idle HTTP/1.1 connections to endpoint `index` (for tests and admin).
    #[cfg(test)]
    fn idle(&self, index: usize) -> usize {
        self.endpoints[index].idle.borrow().len()
    }

    /// A sender for a new stream on an HTTP/2 connection to `active`'s
    /// endpoint with room for one (opening one when all are full), the slot
    /// that counts the stream on it, and whether the connection carried
    /// streams before.
    pub(crate) async fn h2(&self, active: &ActiveRequest<'_>) -> Result<H2Stream, TryError> {
        if let Some(stream) = self.h2_with_room(active).await {
            return Ok(stream);
        }
        let connected = active.connect().await.map_err(TryError::Connect)?;
        self.h2_new(active, connected).await
    }

    /// A stream on a pooled HTTP/2 connection with room, if there is one.
    async fn h2_with_room(&self, active: &ActiveRequest<'_>) -> Option<H2Stream> {
        let pool = &self.endpoints[active.index()];
        loop {
            let with_room = {
                let mut connections = pool.h2.borrow_mut();
                connections.retain(|c| !c.is_closed());
                connections.iter().find(|c| c.has_room()).cloned()
            };
            let connection = with_room?;
            let slot = StreamSlot::new(&connection);
            match connection.ready().await {
                Ok(ready) => return Some((ready, slot, true)),
                Err(e) => {
                    tracing::debug!(endpoint = %active.endpoint_name(), error = %e, "HTTP/2 upstream connection closed");
                    connection.mark_closed();
                }
            }
        }
    }

    /// The HTTP/2 handshake on a new connection, pooled, and its first
    /// stream.
    async fn h2_new(&self, active: &ActiveRequest<'_>, connected: Connected) -> Result<H2Stream, TryError> {
        let pool = &self.endpoints[active.index()];
        let connection = H2Connection::handshake(connected.io, connected.guard, active.endpoint_name()).await?;
        pool.h2.borrow_mut().push(connection.clone());
        let slot = StreamSlot::new(&connection);
        let ready = connection.ready().await.map_err(|e| super::http2::try_error(&e, false))?;
        Ok((ready, slot, false))
    }
}

/// The idle timer of endpoint `index`: closes connections as their idle
/// timeout passes, oldest first; ends when none is idle (the next release
/// starts it again) or the pool is gone.
async fn reap(pools: Weak<ClusterPools>, index: usize, timeout: Duration) {
    loop {
        let next = {
            let Some(pools) = pools.upgrade() else { return };
            let pool = &pools.endpoints[index];
            let now = Instant::now();
            let expired: Vec<Idle> = {
                let mut idle = pool.idle.borrow_mut();
                let keep_from = idle.iter().position(|i| i.expires.is_none_or(|at| now < at)).unwrap_or(idle.len());
                idle.drain(..keep_from).collect()
            };
            drop(expired);
            let next = pool.idle.borrow().front().map(|i| i.expires.unwrap_or(now + timeout));
            if next.is_none() {
                pool.reaping.set(false);
                return;
            }
            next
        };
        if let Some(at) = next {
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: ours (pooled) and the peer's.
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (ours, theirs) = tokio::join!(ours, listener.accept());
        (ours.unwrap(), theirs.unwrap().0)
    }

    #[test]
    fn idle_connections_close_when_their_timeout_passes_without_being_taken() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let pools = ClusterPools::new([false], Some(Duration::from_millis(50)));
            let mut peers = Vec::new();
            for _ in 0..3 {
                let (ours, theirs) = pair().await;
                pools.release(0, Http1Connection::unaccounted(ours));
                peers.push(theirs);
            }
            assert_eq!(pools.idle(0), 3);
            // The peers see each connection closed (EOF), with nobody taking
            // them from the pool.
            for mut peer in peers {
                let mut buf = [0u8; 1];
                let read =
                    tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut peer, &mut buf));
                assert_eq!(read.await.expect("closed within the bound").unwrap(), 0);
            }
            assert_eq!(pools.idle(0), 0);
            assert!(!pools.endpoints[0].reaping.get(), "the timer stops when nothing is idle");
        });
    }

    #[test]
    fn without_an_idle_timeout_no_timer_runs() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let pools = ClusterPools::new([false], None);
            let (ours, _theirs) = pair().await;
            pools.release(0, Http1Connection::unaccounted(ours));
            assert_eq!(pools.idle(0), 1);
            assert!(!pools.endpoints[0].reaping.get());
        });
    }
}
