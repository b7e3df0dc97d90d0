//! Passive outlier detection, decided on main: workers count runs of 5xx
//! and connect failures per endpoint (shared atomics, see
//! [`ActiveRequest::report_status`](crate::cluster::ActiveRequest::report_status)) and send a [`HostEvent`] when a
//! run reaches the cluster's threshold; main ejects the endpoint for
//! `base_ejection_time × times ejected` (at most `max_ejection_time`),
//! within `max_ejection_percent` (one endpoint may always be ejected), and
//! publishes the change through the host slot.

use std::rc::Rc;

use nuncio_runtime::Slot;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cluster::hosts::{HostEvent, Hosts};
use crate::snapshot::Local;

/// Handles workers' reports until every worker is gone.
pub(crate) async fn run(hosts: Rc<Hosts>, local: Slot<Local>, mut events: UnboundedReceiver<HostEvent>) {
    while let Some(event) = events.recv().await {
        let HostEvent::ConsecutiveFailures { config, cluster, endpoint, reason } = event;
        // Counted under a config of the cluster a reload replaced: its
        // positions may name other endpoints now.
        if !hosts.is_current(&config) {
            continue;
        }
        let Ok(local) = local.get() else { continue };
        let Some(shared) = local.snapshot.clusters.get(&cluster) else { continue };
        let Some(detection) = &shared.config.outlier_detection else { continue };
        let endpoints = hosts.endpoints(&cluster);
        if endpoints.get(endpoint).is_none_or(|e| e.ejected) {
            continue;
        }
        let ejected = endpoints.iter().filter(|e| e.ejected).count();
        let allowed = (endpoints.len() * detection.max_ejection_percent as usize / 100).max(1);
        if ejected >= allowed {
            tracing::info!(%cluster, endpoint = %shared.config.endpoints[endpoint].address, reason,
                "outlier not ejected: max_ejection_percent reached");
            // A new run must reach the threshold again to be reconsidered
            // (the workers report a run only when it equals the threshold).
            if let Some(counters) = shared.runtime.endpoints.get(endpoint) {
                counters.reset();
            }
            continue;
        }
        let duration =
            hosts.next_ejection(&cluster, endpoint, detection.base_ejection_time, detection.max_ejection_time);
        tracing::warn!(%cluster, endpoint = %shared.config.endpoints[endpoint].address, reason, ?duration,
            "endpoint ejected");
        hosts.update(&cluster, endpoint, |e| e.ejected = true);
        if let Some(stats) = local.snapshot.stats.clusters.get(&cluster) {
            local.stats.inc(stats.outlier_ejections);
        }
        if let Some(counters) = shared.runtime.endpoints.get(endpoint) {
            counters.reset();
        }
        let hosts = hosts.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(duration).await;
            hosts.update(&cluster, endpoint, |e| e.ejected = false);
            tracing::info!(%cluster, endpoint, "endpoint back from ejection");
        });
    }
}
