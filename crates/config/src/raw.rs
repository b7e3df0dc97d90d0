//! The file's shape, as serde reads it.
//!
//! Only structure is checked here (mappings, lists, field names): every
//! field is optional and every scalar is kept as its text, so that missing
//! fields and bad values are found by the validator, which reports all of
//! them at once, instead of by serde, which stops at the first.
//! `deny_unknown_fields` everywhere; no `flatten` (it breaks positions).

use serde::Deserialize;

pub(crate) type Text = Option<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with listeners (and admin, workers, clusters)")]
pub(crate) struct Config {
    pub(crate) admin: Option<Admin>,
    pub(crate) workers: Text,
    pub(crate) listeners: Option<Vec<Listener>>,
    pub(crate) clusters: Option<Vec<Cluster>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with address")]
pub(crate) struct Admin {
    pub(crate) address: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a listener mapping (name, address, routes, ...)")]
pub(crate) struct Listener {
    pub(crate) name: Text,
    pub(crate) address: Text,
    pub(crate) protocol: Text,
    pub(crate) routes: Option<Vec<Route>>,
    pub(crate) max_connections: Text,
    pub(crate) max_request_headers_bytes: Text,
    pub(crate) max_request_headers: Text,
    pub(crate) request_headers_timeout: Text,
    pub(crate) idle_timeout: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a route mapping (match and one action)")]
pub(crate) struct Route {
    #[serde(rename = "match")]
    pub(crate) matcher: Option<Match>,
    pub(crate) cluster: Text,
    pub(crate) weighted_clusters: Option<Vec<WeightedCluster>>,
    pub(crate) direct_response: Option<DirectResponse>,
    pub(crate) redirect: Option<Redirect>,
    pub(crate) timeout: Text,
    pub(crate) retries: Option<Retries>,
    pub(crate) prefix_rewrite: Text,
    pub(crate) host_rewrite: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a match mapping (host, path or prefix, headers)")]
pub(crate) struct Match {
    pub(crate) host: Text,
    pub(crate) path: Text,
    pub(crate) prefix: Text,
    pub(crate) headers: Option<Vec<Header>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a header match mapping (name, and exact or present)")]
pub(crate) struct Header {
    pub(crate) name: Text,
    pub(crate) exact: Text,
    pub(crate) present: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with cluster and weight")]
pub(crate) struct WeightedCluster {
    pub(crate) cluster: Text,
    pub(crate) weight: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with status (and body)")]
pub(crate) struct DirectResponse {
    pub(crate) status: Text,
    pub(crate) body: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a redirect mapping (path or prefix_rewrite, host, status)")]
pub(crate) struct Redirect {
    pub(crate) path: Text,
    pub(crate) prefix_rewrite: Text,
    pub(crate) host: Text,
    pub(crate) status: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a retries mapping (attempts, on, per_try_timeout)")]
pub(crate) struct Retries {
    pub(crate) attempts: Text,
    pub(crate) on: Option<Vec<String>>,
    pub(crate) per_try_timeout: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a cluster mapping (name, endpoints, ...)")]
pub(crate) struct Cluster {
    pub(crate) name: Text,
    pub(crate) endpoints: Option<Vec<String>>,
    pub(crate) lb: Text,
    pub(crate) connect_timeout: Text,
    pub(crate) protocol: Text,
    pub(crate) idle_timeout: Text,
    pub(crate) max_connections: Text,
    pub(crate) health_check: Option<HealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a health_check mapping (path, interval, timeout, ...)")]
pub(crate) struct HealthCheck {
    pub(crate) path: Text,
    pub(crate) interval: Text,
    pub(crate) timeout: Text,
    pub(crate) unhealthy_threshold: Text,
    pub(crate) healthy_threshold: Text,
    pub(crate) expected_statuses: Option<Vec<String>>,
}
