//! Active HTTP health checks, run on main: one task per endpoint of every
//! cluster with a `health_check`, a `GET path` every `interval` on a fresh
//! connection (so a check sees what a new connection would). After
//! `unhealthy_threshold` failures in a row the endpoint is marked
//! unhealthy, after `healthy_threshold` passes healthy again; the change
//! reaches every worker through the host slot. Endpoints start healthy, so
//! traffic flows from the first moment (a failing one is out after
//! `unhealthy_threshold × interval`).

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use http::Method;
use nuncio_config::{Cluster, HealthCheck};
use nuncio_http1::{Limits, ResponseDecoder};
use nuncio_runtime::{Dispatcher, Slot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::cluster::hosts::Hosts;
use crate::snapshot::Local;

/// Starts the checkers of `cluster`'s endpoints (none without a
/// `health_check`); aborting the returned tasks stops them (a reload that
/// changed or removed the cluster).
pub(crate) fn start(
    main: &Dispatcher,
    hosts: &Rc<Hosts>,
    local: &Slot<Local>,
    cluster: &Cluster,
) -> Result<Vec<JoinHandle<()>>, nuncio_runtime::Error> {
    let Some(check) = &cluster.health_check else { return Ok(Vec::new()) };
    let mut tasks = Vec::with_capacity(cluster.endpoints.len());
    for (index, endpoint) in cluster.endpoints.iter().enumerate() {
        let host = check.host.clone().unwrap_or_else(|| endpoint.address.clone());
        let checker = Checker {
            hosts: hosts.clone(),
            local: local.clone(),
            cluster: cluster.name.clone(),
            index,
            check: check.clone(),
            host,
        };
        tasks.push(main.spawn_local(checker.run())?);
    }
    Ok(tasks)
}

struct Checker {
    hosts: Rc<Hosts>,
    local: Slot<Local>,
    cluster: String,
    index: usize,
    check: HealthCheck,
    host: String,
}

impl Checker {
    async fn run(self) {
        let (mut passes, mut failures) = (0u32, 0u32);
        loop {
            let Some(endpoint) = self.hosts.endpoints(&self.cluster).get(self.index).cloned() else { return };
            let passed = tokio::time::timeout(self.check.timeout, self.probe(&endpoint.addresses))
                .await
                .unwrap_or_else(|_| Err("timed out".to_owned()));
            self.count(passed.is_ok());
            match passed {
                Ok(()) => {
                    passes += 1;
                    failures = 0;
                    if !endpoint.healthy && passes >= self.check.healthy_threshold {
                        tracing::info!(cluster = %self.cluster, endpoint = %self.host, "endpoint healthy again");
                        self.hosts.update(&self.cluster, self.index, |e| e.healthy = true);
                    }
                }
                Err(why) => {
                    failures += 1;
                    passes = 0;
                    if endpoint.healthy && failures >= self.check.unhealthy_threshold {
                        tracing::warn!(cluster = %self.cluster, endpoint = %self.host, %why, "endpoint unhealthy");
                        self.hosts.update(&self.cluster, self.index, |e| e.healthy = false);
                    }
                }
            }
            tokio::time::sleep(self.check.interval).await;
        }
    }

    /// One check: `GET path` on a new connection; passes on an expected
    /// status.
    async fn probe(&self, addresses: &[SocketAddr]) -> Result<(), String> {
        let mut stream = None;
        for address in addresses {
            if let Ok(s) = TcpStream::connect(address).await {
                stream = Some(s);
                break;
            }
        }
        let mut stream = stream.ok_or("connect failed")?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nuncio-health-check\r\nConnection: close\r\n\r\n",
            self.check.path, self.host
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut decoder = ResponseDecoder::new(Limits::default());
        loop {
            match decoder.decode(&mut buf, &Method::GET) {
                Ok(Some(response)) if response.is_interim() => {}
                Ok(Some(response)) => {
                    let status = response.status.as_u16();
                    return if self.check.is_expected(status) { Ok(()) } else { Err(format!("status {status}")) };
                }
                Ok(None) => {
                    if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                        return Err("closed before a response".to_owned());
                    }
                }
                Err(e) => return Err(format!("bad response: {e}")),
            }
        }
    }

    fn count(&self, passed: bool) {
        let Ok(local) = self.local.get() else { return };
        if let Some(stats) = local.snapshot.stats.clusters.get(&self.cluster) {
            local.stats.inc(if passed { stats.health_check_success } else { stats.health_check_failure });
        }
    }
}
