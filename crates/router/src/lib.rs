//! Route selection: the first route of a listener whose match holds.
//!
//! # The concept
//!
//! A [`RouteTable`] is a listener's routes compiled once, when a config
//! snapshot is built (header names parsed, weights summed, the `host_rewrite`
//! value made), with an index so that selecting a route does not test every
//! route in turn: routes whose match is an exact `path` are found by a hash
//! lookup, `prefix` routes by walking the request path through a byte trie,
//! and only the others (any path, `regex`) are tested for every request.
//! Of the candidates, the first in file order whose whole match holds (host,
//! headers, methods, query) wins — the same answer a scan in file order
//! gives. Small tables are scanned (cheaper than the index below a few
//! routes).
//!
//! # Threading
//!
//! Built on main; read-only afterwards and shared by every worker (a
//! snapshot holds it behind an `Arc`). Selection allocates nothing unless
//! more than [`INLINE_CANDIDATES`] routes are candidates for one request.
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, Method};
//! use nuncio_config::Config;
//! use nuncio_router::{Request, RouteTable};
//!
//! let config = Config::from_yaml(
//!     "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n      \
//!      - match: { path: /healthz }\n        direct_response: { status: 200 }\n      \
//!      - match: { prefix: /api/, methods: [GET] }\n        cluster: api\n\
//!      clusters:\n  - name: api\n    endpoints: [127.0.0.1:1]\n",
//!     "nuncio.yaml",
//! )
//! .unwrap();
//! let table = RouteTable::new(&config.listeners[0].routes);
//! let headers = HeaderMap::new();
//! let get = Request { method: &Method::GET, host: "h", path: "/api/users", query: None, headers: &headers };
//! assert_eq!(table.select(&get).and_then(|r| r.cluster(0)), Some("api"));
//! let post = Request { method: &Method::POST, ..get };
//! assert!(table.select(&post).is_none());
//! ```

#![forbid(unsafe_code)]

mod index;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use nuncio_config::{HeaderRule, HostMatch, PathMatch, QueryMatch, Route, RouteAction, Target};

use crate::index::Index;

/// Up to this many candidate routes for one request are gathered without
/// allocating.
pub const INLINE_CANDIDATES: usize = 16;

/// Tables with at most this many routes are scanned in order rather than
/// indexed.
const SCAN_BELOW: usize = 8;

/// A listener's routes, ready to match.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
    /// `None` for a small table (scanned).
    index: Option<Index>,
}

/// One route, compiled.
#[derive(Debug)]
pub struct CompiledRoute {
    host: Option<HostMatch>,
    headers: Vec<(HeaderName, HeaderRule)>,
    methods: Vec<Method>,
    query: Vec<QueryMatch>,
    /// The route as configured: the action and its settings.
    pub route: Route,
    /// Sum of `weighted_clusters` weights (0 for single-cluster routes).
    pub total_weight: u64,
    /// The forward action's `host_rewrite` as a field value, built once
    /// here rather than per request.
    pub host_rewrite: Option<HeaderValue>,
}

/// What of a request routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    /// The method.
    pub method: &'r Method,
    /// The host (`Host` or `:authority`), possibly with a port.
    pub host: &'r str,
    /// The path, without the query.
    pub path: &'r str,
    /// The query, without the `?`.
    pub query: Option<&'r str>,
    /// The fields.
    pub headers: &'r dyn Fields,
}

/// The header fields of a request, as route matchers look at them: a
/// `HeaderMap`, or whatever else a proxy keeps a head's fields in.
pub trait Fields {
    /// Whether a field is called `name`.
    fn has(&self, name: &HeaderName) -> bool;
    /// Whether a field called `name` has exactly `value`.
    fn has_value(&self, name: &HeaderName, value: &[u8]) -> bool;
}

impl Fields for HeaderMap {
    fn has(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }

    fn has_value(&self, name: &HeaderName, value: &[u8]) -> bool {
        self.get_all(name).iter().any(|v| v.as_bytes() == value)
    }
}

impl std::fmt::Debug for dyn Fields + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fields")
    }
}

impl RouteTable {
    /// Compiles `routes`. Config validation already checked every name, so
    /// a header name or method that does not parse is kept as "never
    /// matches".
    pub fn new(routes: &[Route]) -> RouteTable {
        let routes: Vec<CompiledRoute> = routes.iter().map(CompiledRoute::new).collect();
        let index = (routes.len() > SCAN_BELOW).then(|| Index::new(routes.iter().map(|r| &r.route.matcher.path)));
        RouteTable { routes, index }
    }

    /// How many routes the table has.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first route matching `request`, if any.
    pub fn select(&self, request: &Request<'_>) -> Option<&CompiledRoute> {
        let Some(index) = &self.index else {
            return self.routes.iter().find(|r| r.matches(request));
        };
        index.first(request.path, |i| {
            let route = &self.routes[i];
            route.matches(request).then_some(route)
        })
    }
}

impl CompiledRoute {
    fn new(route: &Route) -> CompiledRoute {
        let matcher = &route.matcher;
        CompiledRoute {
            host_rewrite: match &route.action {
                RouteAction::Forward(forward) => {
                    forward.host_rewrite.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
                }
                _ => None,
            },
            host: matcher.host.clone(),
            headers: matcher
                .headers
                .iter()
                .filter_map(|h| Some((HeaderName::from_bytes(h.name.as_bytes()).ok()?, h.rule.clone())))
                .collect(),
            methods: matcher.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect(),
            query: matcher.query.clone(),
            total_weight: match &route.action {
                RouteAction::Forward(f) => match &f.target {
                    Target::Weighted(w) => w.iter().map(|w| u64::from(w.weight)).sum(),
                    Target::Cluster(_) => 0,
                },
                _ => 0,
            },
            route: route.clone(),
        }
    }

    /// Whether the whole match holds for `request`.
    fn matches(&self, request: &Request<'_>) -> bool {
        let matcher = &self.route.matcher;
        if !matcher.methods.is_empty() && !self.methods.contains(request.method) {
            return false;
        }
        if let Some(h) = &self.host
            && !h.matches(request.host)
        {
            return false;
        }
        if !path_matches(&matcher.path, request.path) {
            return false;
        }
        let headers = request.headers;
        self.headers.iter().all(|(name, rule)| match rule {
            HeaderRule::Present => headers.has(name),
            HeaderRule::Absent => !headers.has(name),
            HeaderRule::Exact(value) => headers.has_value(name, value.as_bytes()),
        }) && self.query.iter().all(|q| query_matches(q, request.query))
    }

    /// The cluster to forward to; `pick` is a uniform random number, used
    /// only for weighted routes.
    pub fn cluster(&self, pick: u64) -> Option<&str> {
        let RouteAction::Forward(forward) = &self.route.action else { return None };
        match &forward.target {
            Target::Cluster(name) => Some(name),
            Target::Weighted(clusters) => {
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

/// The path match without `PathMatch::matches`'s query split: routing
/// hands the path without its query.
fn path_matches(path_match: &PathMatch, path: &str) -> bool {
    match path_match {
        PathMatch::Any => true,
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        PathMatch::Regex(r) => r.is_match(path),
    }
}

/// Whether `query` (`a=1&b`, undecoded) meets `rule`: a parameter named
/// `rule.name` present (any value, or none), absent, or with exactly the
/// value (any one, if repeated).
fn query_matches(rule: &QueryMatch, query: Option<&str>) -> bool {
    let mut values = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == rule.name).then_some(value)
        })
        .peekable();
    match &rule.rule {
        HeaderRule::Present => values.peek().is_some(),
        HeaderRule::Absent => values.peek().is_none(),
        HeaderRule::Exact(expected) => values.any(|v| v == expected),
    }
}

#[cfg(test)]
mod tests;
