//! What happened to a stream, gathered as it is served: for stats, the
//! access log and (later) filters — Envoy's `StreamInfo`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use nuncio_accesslog::ResponseFlags;
use tokio::time::Instant;

use crate::cluster::ClusterState;

/// A stream's record.
pub(crate) struct StreamInfo {
    /// When its head was decoded.
    pub(crate) start: Instant,
    /// The same moment on the wall clock (read only when a log needs it).
    pub(crate) start_time: Option<SystemTime>,
    /// Why nuncio answered itself, or how the upstream failed.
    pub(crate) flags: ResponseFlags,
    /// Upstream tries made.
    pub(crate) attempts: u32,
    /// Whether tries were hedged, and whether a hedge answered.
    pub(crate) hedge_won: Option<bool>,
    /// The cluster the route chose: the worker's own handle on it (a
    /// non-atomic count), not a copy of its name, which only the access
    /// log and the span read.
    pub(crate) cluster: Option<Rc<ClusterState>>,
    /// The address of the upstream that answered (or was tried last).
    pub(crate) upstream_host: Option<SocketAddr>,
    /// From sending the request upstream to its response head.
    pub(crate) upstream_service_time: Option<Duration>,
    /// From the start to the response head sent downstream (measured only
    /// when the stream is logged: only the access log reads it).
    pub(crate) response_duration: Option<Duration>,
    /// The response's fields as sent, kept only when the access log may
    /// need them.
    pub(crate) response_headers: Option<HeaderMap>,
    /// The listener logs its streams: keep `response_headers` and measure
    /// `response_duration`.
    pub(crate) logged: bool,
}

impl StreamInfo {
    /// The record of a stream whose head arrived at `start`.
    pub(crate) fn new(logged: bool, start: Instant) -> StreamInfo {
        StreamInfo {
            start,
            start_time: logged.then(SystemTime::now),
            flags: ResponseFlags::NONE,
            attempts: 0,
            hedge_won: None,
            cluster: None,
            upstream_host: None,
            upstream_service_time: None,
            response_duration: None,
            response_headers: None,
            logged,
        }
    }

    /// The name of the cluster the route chose.
    pub(crate) fn cluster_name(&self) -> Option<&str> {
        self.cluster.as_deref().map(|cluster| cluster.config().name.as_str())
    }
}
