//! The file's shape, as serde reads it.
//!
//! Only structure is checked here (mappings, lists, field names): every
//! field is optional and every scalar is kept as its text, so that missing
//! fields and bad values are found by the validator, which reports all of
//! them at once, instead of by serde, which stops at the first.
//! `deny_unknown_fields` everywhere; no `flatten` (it breaks positions).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de};

pub(crate) type Text = Option<String>;

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with listeners (and admin, workers, drain_timeout, tracing, clusters, overload)"
)]
pub(crate) struct Config {
    pub(crate) admin: Option<Admin>,
    pub(crate) workers: Text,
    pub(crate) drain_timeout: Text,
    pub(crate) tracing: Option<Tracing>,
    pub(crate) listeners: Option<Vec<Listener>>,
    pub(crate) clusters: Option<Vec<Cluster>>,
    pub(crate) overload: Option<Overload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an overload mapping (downstream_connections, memory)")]
pub(crate) struct Overload {
    pub(crate) downstream_connections: Option<Thresholds>,
    pub(crate) memory: Option<Thresholds>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with shed and/or refuse")]
pub(crate) struct Thresholds {
    pub(crate) shed: Text,
    pub(crate) refuse: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an admin mapping (address, allow_remote)")]
pub(crate) struct Admin {
    pub(crate) address: Text,
    pub(crate) allow_remote: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a tracing mapping (otlp_endpoint, sampling, service_name, queue_size)")]
pub(crate) struct Tracing {
    pub(crate) otlp_endpoint: Text,
    pub(crate) sampling: Text,
    pub(crate) service_name: Text,
    pub(crate) queue_size: Text,
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
    pub(crate) stream_idle_timeout: Text,
    pub(crate) request_body_timeout: Text,
    pub(crate) request_body_min_rate: Text,
    pub(crate) idle_timeout: Text,
    pub(crate) time_left_header: Text,
    pub(crate) access_log: Option<AccessLog>,
    pub(crate) filters: Option<Vec<Filter>>,
    pub(crate) tls: Option<ListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a listener tls mapping (certificates, alpn, min_version, client_ca, handshake_timeout)"
)]
pub(crate) struct ListenerTls {
    pub(crate) certificates: Option<Vec<CertificatePair>>,
    pub(crate) alpn: Option<Vec<String>>,
    pub(crate) min_version: Text,
    pub(crate) client_ca: Text,
    pub(crate) handshake_timeout: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a certificate mapping (cert_chain, private_key)")]
pub(crate) struct CertificatePair {
    pub(crate) cert_chain: Text,
    pub(crate) private_key: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a cluster tls mapping (sni, ca, verify, client_certificate, alpn)")]
pub(crate) struct ClusterTls {
    pub(crate) sni: Text,
    pub(crate) ca: Text,
    pub(crate) verify: Text,
    pub(crate) client_certificate: Option<CertificatePair>,
    pub(crate) alpn: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a filter mapping (name, and config)")]
pub(crate) struct Filter {
    pub(crate) name: Text,
    pub(crate) config: Option<Json>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an access_log mapping (path, and format or json_format)")]
pub(crate) struct AccessLog {
    pub(crate) path: Text,
    pub(crate) format: Text,
    pub(crate) json_format: Option<Fields>,
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
    pub(crate) mirror: Option<Vec<Mirror>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a match mapping (host, path, prefix or regex, headers, methods, query)")]
pub(crate) struct Match {
    pub(crate) host: Text,
    pub(crate) path: Text,
    pub(crate) prefix: Text,
    pub(crate) regex: Text,
    pub(crate) headers: Option<Vec<Header>>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) query: Option<Vec<Header>>,
}

#[derive(Debug, Deserialize)]
/// A header or query parameter condition.
#[serde(deny_unknown_fields, expecting = "a mapping with name, and exact or present")]
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
#[serde(deny_unknown_fields, expecting = "a redirect mapping (path or prefix_rewrite, host, https, status)")]
pub(crate) struct Redirect {
    pub(crate) path: Text,
    pub(crate) prefix_rewrite: Text,
    pub(crate) host: Text,
    pub(crate) https: Text,
    pub(crate) status: Text,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a retries mapping (attempts, on, per_try_timeout, backoff, hedge_on_per_try_timeout)"
)]
pub(crate) struct Retries {
    pub(crate) attempts: Text,
    pub(crate) on: Option<Vec<String>>,
    pub(crate) per_try_timeout: Text,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) hedge_on_per_try_timeout: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a backoff mapping (base, max)")]
pub(crate) struct Backoff {
    pub(crate) base: Text,
    pub(crate) max: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mirror mapping (cluster, percent, timeout)")]
pub(crate) struct Mirror {
    pub(crate) cluster: Text,
    pub(crate) percent: Text,
    pub(crate) timeout: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a retry_budget mapping (percent, min_retry_concurrency)")]
pub(crate) struct RetryBudget {
    pub(crate) percent: Text,
    pub(crate) min_retry_concurrency: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a cluster mapping (name, endpoints, ...)")]
pub(crate) struct Cluster {
    pub(crate) name: Text,
    pub(crate) endpoints: Option<Vec<ScalarOr<Endpoint>>>,
    pub(crate) lb: Text,
    pub(crate) hash_on: Option<ScalarOr<HashOn>>,
    pub(crate) connect_timeout: Text,
    pub(crate) protocol: Text,
    pub(crate) idle_timeout: Text,
    pub(crate) dns_refresh: Text,
    pub(crate) max_connections: Text,
    pub(crate) max_pending_requests: Text,
    pub(crate) max_requests: Text,
    pub(crate) max_retries: Text,
    pub(crate) retry_budget: Option<RetryBudget>,
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) when_all_unhealthy: Text,
    pub(crate) outlier_detection: Option<OutlierDetection>,
    pub(crate) tls: Option<ClusterTls>,
}

/// The mapping form of an endpoint (the scalar form is `HOST:PORT`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an endpoint: HOST:PORT, or a mapping with address (and weight)")]
pub(crate) struct Endpoint {
    pub(crate) address: Text,
    pub(crate) weight: Text,
}

impl Expecting for Endpoint {
    const EXPECTING: &'static str = "an endpoint: HOST:PORT, or a mapping with address (and weight)";
}

/// The mapping form of `hash_on` (the scalar form is `source_ip`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "hash_on: source_ip, or a mapping with header")]
pub(crate) struct HashOn {
    pub(crate) header: Text,
}

impl Expecting for HashOn {
    const EXPECTING: &'static str = "hash_on: source_ip, or a mapping with header";
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a health_check mapping (path, interval, timeout, ...)")]
pub(crate) struct HealthCheck {
    pub(crate) path: Text,
    pub(crate) host: Text,
    pub(crate) interval: Text,
    pub(crate) timeout: Text,
    pub(crate) unhealthy_threshold: Text,
    pub(crate) healthy_threshold: Text,
    pub(crate) expected_statuses: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an outlier_detection mapping (consecutive_5xx, base_ejection_time, ...)")]
pub(crate) struct OutlierDetection {
    pub(crate) consecutive_5xx: Text,
    pub(crate) consecutive_connect_failures: Text,
    pub(crate) base_ejection_time: Text,
    pub(crate) max_ejection_time: Text,
    pub(crate) max_ejection_percent: Text,
}

// ---- shapes serde's derive cannot express without losing positions ----

/// What a [`ScalarOr`] expects, for serde's "expected ..." messages.
pub(crate) trait Expecting {
    const EXPECTING: &'static str;
}

/// A field written either as a scalar (kept as text, like every [`Text`])
/// or as a mapping `M`.
///
/// Not `#[serde(untagged)]`: that buffers the value and, when no variant
/// fits, reports only "did not match any variant", without the field inside
/// the mapping that was wrong. Deserializing the mapping in place keeps
/// `deny_unknown_fields` messages and `serde_path_to_error` paths.
#[derive(Debug)]
pub(crate) enum ScalarOr<M> {
    Scalar(String),
    Map(M),
}

impl<'de, M: Deserialize<'de> + Expecting> Deserialize<'de> for ScalarOr<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<M>(PhantomData<M>);

        impl<'de, M: Deserialize<'de> + Expecting> Visitor<'de> for V<M> {
            type Value = ScalarOr<M>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(M::EXPECTING)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ScalarOr::Scalar(v.to_owned()))
            }

            // Other scalars become text too, so the validator reports them
            // with the rest (YAML has already typed them; the text is
            // rebuilt, which is exact for what an error message needs).
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ScalarOr::Scalar(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ScalarOr::Scalar(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ScalarOr::Scalar(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ScalarOr::Scalar(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                M::deserialize(MapAccessDeserializer::new(map)).map(ScalarOr::Map)
            }
        }

        deserializer.deserialize_any(V(PhantomData))
    }
}

/// A mapping of names to text, in file order (`json_format`).
///
/// A `HashMap` would lose the order, which is the order of the keys in each
/// logged object. Keys given twice are all kept: the validator reports the
/// second one at its own position.
#[derive(Debug, Default)]
pub(crate) struct Fields(pub(crate) Vec<(String, Text)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> Visitor<'de> for V {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of field names to format strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<Text>()?;
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }

        deserializer.deserialize_map(V)
    }
}

/// A filter's `config` block: any YAML value, read into the JSON data model
/// (mappings → objects, sequences → arrays, scalars typed as YAML 1.2 types
/// them). Only what JSON cannot hold is refused: `.inf`, `.nan`, integers
/// beyond 64 bits, tagged values. Keys given twice are left to the
/// validator (the last one wins here), which reports the second at its own
/// position.
///
/// Not `serde_json::Value`'s own `Deserialize`: that turns `.nan` into
/// `null` without a word.
#[derive(Debug)]
pub(crate) struct Json(pub(crate) serde_json::Value);

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> Visitor<'de> for V {
            type Value = Json;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML value that JSON can hold")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
                Ok(Json(v.into()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
                Ok(Json(v.into()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
                Ok(Json(v.into()))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Json, E> {
                match (i64::try_from(v), u64::try_from(v)) {
                    (Ok(n), _) => self.visit_i64(n),
                    (_, Ok(n)) => self.visit_u64(n),
                    _ => Err(E::custom(format!("integer {v} is out of range (a filter config holds 64-bit integers)"))),
                }
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Json, E> {
                match u64::try_from(v) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => {
                        Err(E::custom(format!("integer {v} is out of range (a filter config holds 64-bit integers)")))
                    }
                }
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
                match serde_json::Number::from_f64(v) {
                    Some(n) => Ok(Json(serde_json::Value::Number(n))),
                    None => {
                        let yaml = if v.is_nan() {
                            ".nan"
                        } else if v > 0.0 {
                            ".inf"
                        } else {
                            "-.inf"
                        };
                        Err(E::custom(format!("{yaml} cannot be used in a filter config (JSON has no such number)")))
                    }
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                Ok(Json(v.into()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
                Ok(Json(v.into()))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json(serde_json::Value::Null))
            }

            fn visit_none<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json(serde_json::Value::Null))
            }

            fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
                Json::deserialize(deserializer)
            }

            fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Json, A::Error> {
                Err(de::Error::custom("a tagged value (!TAG) cannot be used in a filter config"))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(Json(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json(serde_json::Value::Array(items)))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let Json(value) = map.next_value()?;
                    object.insert(key, value);
                }
                Ok(Json(serde_json::Value::Object(object)))
            }
        }

        deserializer.deserialize_any(V)
    }
}
