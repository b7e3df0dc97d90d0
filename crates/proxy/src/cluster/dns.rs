//! Endpoint names re-resolved on main every `dns_refresh`: a changed set of
//! addresses reaches workers through the host slot. Requests in flight keep
//! their connections; new connections go to the new addresses, and pooled
//! connections to addresses no longer listed are not reused.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;

use nuncio_config::Cluster;
use nuncio_runtime::Dispatcher;
use tokio::task::JoinHandle;

use super::hosts::Hosts;
use crate::options::Resolver;

/// Starts a refresher for each of `cluster`'s endpoints given by name (an
/// IP address never changes, so it gets none); aborting the returned tasks
/// stops them (a reload that changed or removed the cluster).
pub(crate) fn start(
    main: &Dispatcher,
    hosts: &Rc<Hosts>,
    cluster: &Cluster,
    resolver: Option<&Resolver>,
) -> Result<Vec<JoinHandle<()>>, nuncio_runtime::Error> {
    let mut tasks = Vec::new();
    let Some(every) = cluster.dns_refresh else { return Ok(tasks) };
    let resolver: Resolver = resolver.cloned().unwrap_or_else(|| Arc::new(system_resolve));
    for (index, endpoint) in cluster.endpoints.iter().enumerate() {
        if endpoint.address.parse::<SocketAddr>().is_ok() {
            continue;
        }
        let (hosts, resolver) = (hosts.clone(), resolver.clone());
        let (cluster, name) = (cluster.name.clone(), endpoint.address.clone());
        tasks.push(main.spawn_local(async move {
            loop {
                tokio::time::sleep(every).await;
                let lookup = {
                    let (resolver, name) = (resolver.clone(), name.clone());
                    tokio::task::spawn_blocking(move || resolver(&name)).await
                };
                match lookup {
                    Ok(Ok(mut addresses)) if !addresses.is_empty() => {
                        dedup_in_order(&mut addresses);
                        hosts.update(&cluster, index, |e| {
                            if *e.addresses != *addresses {
                                tracing::info!(%cluster, endpoint = %name, ?addresses, "endpoint addresses changed");
                                e.addresses = Arc::from(addresses.as_slice());
                            }
                        });
                    }
                    // Keep serving the last good answer.
                    Ok(Ok(_)) => tracing::warn!(%cluster, endpoint = %name, "name resolved to no address"),
                    Ok(Err(e)) => tracing::warn!(%cluster, endpoint = %name, error = %e, "cannot resolve"),
                    Err(e) => tracing::warn!(%cluster, endpoint = %name, error = %e, "resolver task failed"),
                }
            }
        })?);
    }
    Ok(tasks)
}

fn system_resolve(name: &str) -> std::io::Result<Vec<SocketAddr>> {
    Ok(name.to_socket_addrs()?.collect())
}

fn dedup_in_order(addresses: &mut Vec<SocketAddr>) {
    let mut seen = std::collections::HashSet::new();
    addresses.retain(|a| seen.insert(*a));
}
