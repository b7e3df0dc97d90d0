//! Endpoint names re-resolved on main every `dns_refresh`: a changed set of
//! addresses reaches workers through the host slot. Requests in flight keep
//! their connections; new connections go to the new addresses, and pooled
//! connections to addresses no longer listed are not reused.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;

use nuncio_config::{Cluster, Endpoint};
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
        if !re_resolved(cluster, endpoint) {
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

/// Whether `endpoint`'s addresses can change while `cluster`'s config
/// runs: a name (an IP address never changes) in a cluster with
/// `dns_refresh`. Only then must a pooled connection be checked against
/// the endpoint's current addresses before it is reused.
pub(crate) fn re_resolved(cluster: &Cluster, endpoint: &Endpoint) -> bool {
    cluster.dns_refresh.is_some() && endpoint.address.parse::<SocketAddr>().is_err()
}

fn system_resolve(name: &str) -> std::io::Result<Vec<SocketAddr>> {
    Ok(name.to_socket_addrs()?.collect())
}

fn dedup_in_order(addresses: &mut Vec<SocketAddr>) {
    let mut seen = std::collections::HashSet::new();
    addresses.retain(|a| seen.insert(*a));
}

#[cfg(test)]
mod tests {
    use nuncio_config::Config;

    use super::re_resolved;

    #[test]
    fn only_names_with_a_refresh_are_re_resolved() {
        let config = |refresh: &str| {
            let yaml = format!(
                "listeners: [{{ name: l, address: '127.0.0.1:0', routes: [{{ match: {{}}, cluster: c }}] }}]\n\
                 clusters: [{{ name: c, {refresh} endpoints: ['127.0.0.1:9', 'localhost:9', '[::1]:9'] }}]\n"
            );
            Config::from_yaml(&yaml, "test.yaml").unwrap()
        };
        let refreshed = config("dns_refresh: 5s,");
        let cluster = &refreshed.clusters[0];
        let flags: Vec<bool> = cluster.endpoints.iter().map(|e| re_resolved(cluster, e)).collect();
        assert_eq!(flags, [false, true, false], "an IP address never moves");
        let by_default = config("");
        let cluster = &by_default.clusters[0];
        let flags: Vec<bool> = cluster.endpoints.iter().map(|e| re_resolved(cluster, e)).collect();
        assert_eq!(flags, [false, true, false], "names are resolved again every 30 s by default");
        let never = config("dns_refresh: 0s,");
        let cluster = &never.clusters[0];
        assert!(cluster.endpoints.iter().all(|e| !re_resolved(cluster, e)), "resolved once, at load");
    }
}
