//! Route selection: the first route of a listener whose match holds.
//!
//! Built once per config snapshot on main (header names parsed, weights
//! summed), read by every worker. Selection allocates nothing.

use http::{HeaderMap, HeaderName, HeaderValue};
use nuncio_config::{HeaderRule, HostMatch, PathMatch, Route, RouteAction};

/// A listener's routes, ready to match.
#[derive(Debug)]
pub(crate) struct RouteTable {
    routes: Vec<CompiledRoute>,
}

#[derive(Debug)]
pub(crate) struct CompiledRoute {
    host: Option<HostMatch>,
    path: PathMatch,
    headers: Vec<(HeaderName, HeaderRule)>,
    /// The route as configured: the action and its settings.
    pub(crate) route: Route,
    /// Sum of `weighted_clusters` weights (0 for single-cluster routes).
    pub(crate) total_weight: u64,
    /// The forward action's `host_rewrite` as a field value, built once
    /// here rather than per request.
    pub(crate) host_rewrite: Option<HeaderValue>,
}

impl RouteTable {
    /// Compiles `routes`. Config validation already checked every name, so
    /// a header name that does not parse is skipped as "never matches".
    pub(crate) fn new(routes: &[Route]) -> RouteTable {
        let routes = routes
            .iter()
            .map(|route| CompiledRoute {
                host_rewrite: match &route.action {
                    RouteAction::Forward(forward) => {
                        forward.host_rewrite.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
                    }
                    _ => None,
                },
                host: route.matcher.host.clone(),
                path: route.matcher.path.clone(),
                headers: route
                    .matcher
                    .headers
                    .iter()
                    .filter_map(|h| Some((HeaderName::from_bytes(h.name.as_bytes()).ok()?, h.rule.clone())))
                    .collect(),
                total_weight: match &route.action {
                    RouteAction::Forward(f) => match &f.target {
                        nuncio_config::Target::Weighted(w) => w.iter().map(|w| u64::from(w.weight)).sum(),
                        nuncio_config::Target::Cluster(_) => 0,
                    },
                    _ => 0,
                },
                route: route.clone(),
            })
            .collect();
        RouteTable { routes }
    }

    /// The first route matching this request, if any.
    pub(crate) fn select(&self, host: &str, path: &str, headers: &HeaderMap) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.matches(host, path, headers))
    }
}

impl CompiledRoute {
    fn matches(&self, host: &str, path: &str, headers: &HeaderMap) -> bool {
        if let Some(h) = &self.host
            && !h.matches(host)
        {
            return false;
        }
        if !self.path.matches(path) {
            return false;
        }
        self.headers.iter().all(|(name, rule)| match rule {
            HeaderRule::Present => headers.contains_key(name),
            HeaderRule::Absent => !headers.contains_key(name),
            HeaderRule::Exact(value) => headers.get_all(name).iter().any(|v| v.as_bytes() == value.as_bytes()),
        })
    }

    /// The cluster to forward to; `pick` is a uniform random number, used
    /// only for weighted routes.
    pub(crate) fn cluster(&self, pick: u64) -> Option<&str> {
        let RouteAction::Forward(forward) = &self.route.action else { return None };
        match &forward.target {
            nuncio_config::Target::Cluster(name) => Some(name),
            nuncio_config::Target::Weighted(clusters) => {
                let mut point = pick % self.total_weight.max(1);
                for wc in clusters {
                    let w = u64::from(wc.weight);
                    if point < w {
                        return Some(&wc.cluster);
                    }
                    point -= w;
                }
                clusters.last().map(|wc| wc.cluster.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuncio_config::Config;

    fn table(yaml_routes: &str) -> RouteTable {
        let yaml = format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n{yaml_routes}\nclusters:\n  - name: a\n    endpoints: [127.0.0.1:1]\n  - name: b\n    endpoints: [127.0.0.1:2]\n"
        );
        let config = Config::from_yaml(&yaml, "test.yaml").unwrap();
        RouteTable::new(&config.listeners[0].routes)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn first_match_wins_on_host_path_and_headers() {
        let t = table(
            "      - match: { path: /healthz }\n        direct_response: { status: 200 }\n      - match: { host: '*.example.com', prefix: /api/ }\n        cluster: a\n      - match: { prefix: /, headers: [ { name: x-canary, exact: '1' } ] }\n        cluster: b\n      - match: { prefix: / }\n        cluster: a",
        );
        let none = HeaderMap::new();
        let pick = |host, path, h: &HeaderMap| t.select(host, path, h).and_then(|r| r.cluster(0)).unwrap_or("direct");
        assert_eq!(pick("x", "/healthz", &none), "direct");
        assert_eq!(pick("api.example.com:8080", "/api/v1", &none), "a");
        assert_eq!(pick("example.com", "/api/v1", &headers(&[("x-canary", "1")])), "b");
        assert_eq!(pick("other", "/x", &headers(&[("x-canary", "0"), ("x-canary", "1")])), "b");
        assert_eq!(pick("other", "/x", &none), "a");
    }

    #[test]
    fn weighted_clusters_split_by_weight() {
        let t = table(
            "      - match: {}\n        weighted_clusters: [ { cluster: a, weight: 90 }, { cluster: b, weight: 10 } ]",
        );
        let route = t.select("h", "/", &HeaderMap::new()).unwrap();
        let mut counts = [0; 2];
        for pick in 0..1000u64 {
            counts[usize::from(route.cluster(pick) == Some("b"))] += 1;
        }
        assert_eq!(counts, [900, 100]);
    }

    #[test]
    fn nothing_matches_gives_none() {
        let t = table("      - match: { path: /only }\n        cluster: a");
        assert!(t.select("h", "/other", &HeaderMap::new()).is_none());
    }
}
