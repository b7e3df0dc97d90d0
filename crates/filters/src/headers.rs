//! `headers`: sets, adds and removes request and response fields, with
//! values that may name the client's address or another request field.
//!
//! ```yaml
//! filters:
//!   - name: headers
//!     config:
//!       request:
//!         set:    [ { name: x-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" } ]
//!         add:    [ { name: x-route-tag, value: "edge" } ]
//!         remove: [ x-debug ]
//!       response:
//!         set:    [ { name: x-served-for, value: "%REQ(:authority)%" } ]
//!         remove: [ server ]
//! ```
//!
//! Both sections, and each of `set`, `add`, `remove`, are optional.
//!
//! * `set` replaces every field of that name (or adds it); `add` appends a
//!   field, keeping any there were; `remove` drops every field of that
//!   name. Within a section they apply in that order — `set`, then `add`,
//!   each in the order written, then `remove` — and a name may not be both
//!   removed and set or added in one section (`set` already replaces).
//! * A value is text with variables: `%DOWNSTREAM_REMOTE_ADDRESS%` (the
//!   client's `ip:port`, as in the access log),
//!   `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%` (its IP), `%REQ(name)%` (the
//!   first request field `name`, or `:method`, `:path`, `:authority`,
//!   `:scheme`; empty when absent), `%%` for `%`. In the request section
//!   `%REQ(...)%` reads the request as this filter has changed it so far
//!   (earlier `set`s and `add`s are visible, removals come last, so
//!   `set x-original-foo: %REQ(foo)%` + `remove foo` moves a field); in the
//!   response section it reads the request as this filter passed it on.
//! * A value that renders empty (`%REQ(x)%` with no `x`) is not written,
//!   as in Envoy: a `set` then leaves the field as it was.
//!
//! Checked at load: names are field names (`http::HeaderName`), literal
//! text is valid field-value text with no leading or trailing whitespace,
//! variables are known; framing and hop-by-hop fields (`content-length`,
//! `transfer-encoding`, `connection`, `te`, `upgrade`, ...) are the
//! proxy's and may not be named, nor may `host` in the request section
//! (routing uses the authority; rewrite the host with the route's
//! `host_rewrite`).
//!
//! Synchronous hooks. On the worker a constant value is a reference-count
//! increment; a value with variables allocates the value itself and
//! nothing else. Response values that read the request keep those request
//! fields (a clone each) from the request hook.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use nuncio_filter::{
    ConfigError, Filter, FilterFactory, FilterKind, Hook, RequestHead, ResponseHead, Status, StreamCx, parse_config,
};
use serde::Deserialize;

use crate::template::{Lookup, Name, Source, Template};

/// The `headers` filter kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadersKind;

impl FilterKind for HeadersKind {
    fn name(&self) -> &'static str {
        "headers"
    }

    fn configure(&self, config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
        let config: Config = parse_config(config)?;
        let request = Section::new(config.request, "request", true)?;
        let response = Section::new(config.response, "response", false)?;
        let mut captures: Vec<Source> = Vec::new();
        for source in response.rules().flat_map(|rule| rule.value.sources()) {
            if !captures.contains(source) {
                captures.push(source.clone());
            }
        }
        Ok(Arc::new(HeadersFactory { rules: Arc::new(Rules { request, response, captures: captures.into() }) }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `request` and/or `response`")]
struct Config {
    #[serde(default)]
    request: SectionConfig,
    #[serde(default)]
    response: SectionConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a map with `set`, `add` and/or `remove`")]
struct SectionConfig {
    #[serde(default)]
    set: Vec<RuleConfig>,
    #[serde(default)]
    add: Vec<RuleConfig>,
    #[serde(default)]
    remove: Vec<Name>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `name` and `value`")]
struct RuleConfig {
    name: Name,
    value: Template,
}

/// One field to write.
#[derive(Debug, Clone)]
struct Rule {
    name: HeaderName,
    value: Template,
}

/// What to do to one direction's fields.
#[derive(Debug, Default, Clone)]
struct Section {
    set: Box<[Rule]>,
    add: Box<[Rule]>,
    remove: Box<[HeaderName]>,
}

impl Section {
    /// Whether it edits nothing.
    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Checks what serde could not: `host`, and names both removed and
    /// written.
    fn new(config: SectionConfig, path: &str, request: bool) -> Result<Section, ConfigError> {
        let rules = |list: Vec<RuleConfig>, op: &str| -> Result<Box<[Rule]>, ConfigError> {
            list.into_iter()
                .enumerate()
                .map(|(i, rule)| {
                    if request && rule.name.0 == http::header::HOST {
                        return Err(host_error(format!("{path}.{op}[{i}].name")));
                    }
                    Ok(Rule { name: rule.name.0, value: rule.value })
                })
                .collect()
        };
        let set = rules(config.set, "set")?;
        let add = rules(config.add, "add")?;
        let mut remove = Vec::with_capacity(config.remove.len());
        for (i, Name(name)) in config.remove.into_iter().enumerate() {
            let at = format!("{path}.remove[{i}]");
            if request && name == http::header::HOST {
                return Err(host_error(at));
            }
            if set.iter().chain(add.iter()).any(|rule| rule.name == name) {
                return Err(ConfigError::at(
                    at,
                    format!("`{name}` is also set or added in `{path}`: removals apply last and would undo it"),
                ));
            }
            remove.push(name);
        }
        Ok(Section { set, add, remove: remove.into() })
    }

    fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.set.iter().chain(self.add.iter())
    }

    /// Applies the section to a request head; values read the request as
    /// it is at that point (see the module docs).
    fn apply_to_request(&self, head: &mut RequestHead, client: SocketAddr) {
        for rule in &self.set {
            if let Some(value) = rule.value.render(client, &*head) {
                head.headers.insert(&rule.name, value);
            }
        }
        for rule in &self.add {
            if let Some(value) = rule.value.render(client, &*head) {
                head.headers.append(&rule.name, value);
            }
        }
        for name in &self.remove {
            head.headers.remove(name);
        }
    }

    /// Applies the section to response fields; values read `request`.
    fn apply_to_response(&self, fields: &mut HeaderMap, client: SocketAddr, request: &dyn Lookup) {
        for rule in &self.set {
            if let Some(value) = rule.value.render(client, request) {
                fields.insert(&rule.name, value);
            }
        }
        for rule in &self.add {
            if let Some(value) = rule.value.render(client, request) {
                fields.append(&rule.name, value);
            }
        }
        for name in &self.remove {
            fields.remove(name);
        }
    }
}

fn host_error(at: String) -> ConfigError {
    ConfigError::at(
        at,
        "`host` may not be changed by this filter (routing uses the authority; use the route's `host_rewrite`)",
    )
}

/// A loaded config, read by every stream (each worker has its copy:
/// [`FilterFactory::for_worker`]).
#[derive(Debug, Clone)]
struct Rules {
    request: Section,
    response: Section,
    /// What the response values read of the request, kept per stream by
    /// the request hook.
    captures: Box<[Source]>,
}

#[derive(Debug)]
struct HeadersFactory {
    rules: Arc<Rules>,
}

impl FilterFactory for HeadersFactory {
    fn name(&self) -> &str {
        "headers"
    }

    fn for_worker(&self) -> Option<Arc<dyn FilterFactory>> {
        Some(Arc::new(HeadersFactory { rules: Arc::new((*self.rules).clone()) }))
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(HeadersFilter { rules: self.rules.clone(), captured: Vec::new() })
    }

    /// Only when its `request` section edits something, or a response
    /// value reads the request (`%REQ(name)%`: kept by the request hook).
    fn acts_on_request(&self) -> bool {
        !self.rules.request.is_empty() || !self.rules.captures.is_empty()
    }

    /// Only when its `response` section edits something.
    fn acts_on_response(&self) -> bool {
        !self.rules.response.is_empty()
    }
}

/// One stream's `headers` filter.
struct HeadersFilter {
    rules: Arc<Rules>,
    /// The values of `rules.captures`, in order (empty when there are none).
    captured: Vec<Option<HeaderValue>>,
}

/// What response values read of the request: the kept values.
struct Captured<'a> {
    sources: &'a [Source],
    values: &'a [Option<HeaderValue>],
}

impl Lookup for Captured<'_> {
    fn get(&self, source: &Source) -> Option<&[u8]> {
        let i = self.sources.iter().position(|s| s == source)?;
        self.values.get(i)?.as_ref().map(HeaderValue::as_bytes)
    }
}

impl Filter for HeadersFilter {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        let rules = &*self.rules;
        rules.request.apply_to_request(head, cx.downstream_address());
        if !rules.captures.is_empty() {
            self.captured = rules.captures.iter().map(|source| source.capture(head)).collect();
        }
        Status::Continue.into()
    }

    fn response_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut ResponseHead, _eos: bool) -> Hook<'a> {
        let rules = &*self.rules;
        let captured = Captured { sources: &rules.captures, values: &self.captured };
        rules.response.apply_to_response(&mut head.headers, cx.downstream_address(), &captured);
        Status::Continue.into()
    }
}

#[cfg(test)]
mod tests {
    use nuncio_filter::Context;
    use serde_json::json;

    use super::*;

    fn filter(config: serde_json::Value) -> Box<dyn Filter> {
        HeadersKind.configure(config).unwrap().create()
    }

    fn error(config: serde_json::Value) -> ConfigError {
        HeadersKind.configure(config).err().expect("a config error")
    }

    fn request() -> RequestHead {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("shop.example"));
        headers.insert("x-debug", HeaderValue::from_static("1"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        headers.append("x-tag", HeaderValue::from_static("a"));
        RequestHead {
            method: http::Method::GET,
            uri: "/cart?item=7".parse().unwrap(),
            version: http::Version::HTTP_11,
            headers,
            authority: Some("shop.example".parse().unwrap()),
        }
    }

    fn cx() -> StreamCx {
        StreamCx::new(Context::background(), "192.0.2.7:5555".parse().unwrap())
    }

    fn done(hook: Hook<'_>) -> Status {
        match hook {
            Hook::Done(status) => status,
            Hook::Pending(_) => panic!("the headers filter is synchronous"),
        }
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn sets_adds_and_removes_request_fields_in_that_order() {
        let mut f = filter(json!({
            "request": {
                "set": [
                    { "name": "X-Client", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" },
                    { "name": "x-forwarded-for", "value": "%REQ(x-forwarded-for)%, %DOWNSTREAM_REMOTE_ADDRESS%" },
                    { "name": "x-original-debug", "value": "%REQ(x-debug)%" },
                    { "name": "x-missing", "value": "%REQ(x-nothing)%" },
                ],
                "add": [
                    { "name": "x-tag", "value": "b" },
                    { "name": "x-where", "value": "%REQ(:method)% %REQ(:authority)%%REQ(:path)% as %REQ(x-client)%" },
                ],
                "remove": ["x-debug"],
            }
        }));
        let (mut cx, mut head) = (cx(), request());
        assert!(matches!(done(f.request_headers(&mut cx, &mut head, true)), Status::Continue));
        let h = &head.headers;
        assert_eq!(values(h, "x-client"), ["192.0.2.7"]);
        assert_eq!(values(h, "x-forwarded-for"), ["198.51.100.1, 192.0.2.7:5555"]);
        assert_eq!(values(h, "x-original-debug"), ["1"], "values are read before the removals");
        assert!(!h.contains_key("x-debug"));
        assert!(!h.contains_key("x-missing"), "an empty value is not written");
        assert_eq!(values(h, "x-tag"), ["a", "b"]);
        assert_eq!(values(h, "x-where"), ["GET shop.example/cart?item=7 as 192.0.2.7"]);
    }

    #[test]
    fn response_values_read_the_request_as_it_was_passed_on() {
        let mut f = filter(json!({
            "request": { "set": [ { "name": "x-user", "value": "ada" } ] },
            "response": {
                "set": [
                    { "name": "x-served-for", "value": "%REQ(x-user)% at %REQ(:authority)%" },
                    { "name": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS%" },
                ],
                "add": [ { "name": "via", "value": "nuncio" } ],
                "remove": ["server"],
            }
        }));
        let (mut cx, mut head) = (cx(), request());
        done(f.request_headers(&mut cx, &mut head, true));
        // Later changes to the request do not matter to the response values.
        head.headers.insert("x-user", HeaderValue::from_static("eve"));
        let mut response = ResponseHead { status: http::StatusCode::OK, headers: HeaderMap::new() };
        response.headers.insert("server", HeaderValue::from_static("app/1.0"));
        response.headers.insert("via", HeaderValue::from_static("1.1 cdn"));
        assert!(matches!(done(f.response_headers(&mut cx, &mut response, false)), Status::Continue));
        let h = &response.headers;
        assert_eq!(values(h, "x-served-for"), ["ada at shop.example"]);
        assert_eq!(values(h, "x-client"), ["192.0.2.7:5555"]);
        assert_eq!(values(h, "via"), ["1.1 cdn", "nuncio"]);
        assert!(!h.contains_key("server"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = error(
            json!({ "request": { "set": [ { "name": "ok", "value": "a" }, { "name": "bad name", "value": "a" } ] } }),
        );
        assert_eq!(e.path, "request.set[1].name");
        assert!(e.message.contains("invalid field name \"bad name\""), "{e}");

        let e = error(json!({ "response": { "add": [ { "name": "x", "value": "line\nbreak" } ] } }));
        assert_eq!(e.path, "response.add[0].value");
        assert!(e.message.contains("control character"), "{e}");

        let e = error(json!({ "request": { "set": [ { "name": "x", "value": "%NOPE%" } ] } }));
        assert_eq!(e.path, "request.set[0].value");
        assert!(e.message.contains("unknown variable `%NOPE%`"), "{e}");

        let e = error(json!({ "request": { "remove": ["content-length"] } }));
        assert_eq!(e.path, "request.remove[0]");
        assert!(e.message.contains("managed by the proxy"), "{e}");

        let e = error(json!({ "request": { "set": [ { "name": "Host", "value": "a" } ] } }));
        assert_eq!(e.path, "request.set[0].name");
        assert!(e.message.contains("host_rewrite"), "{e}");

        let e = error(json!({ "request": { "add": [ { "name": "x-a", "value": "1" } ], "remove": ["x-b", "X-A"] } }));
        assert_eq!(e.path, "request.remove[1]");
        assert!(e.message.contains("also set or added"), "{e}");

        let e = error(json!({ "request": { "sett": [] } }));
        assert!(e.message.contains("unknown field `sett`"), "{e}");

        let e = error(json!({ "request": { "set": [ { "name": "x" } ] } }));
        assert_eq!(e.path, "request.set[0]");
        assert!(e.message.contains("missing field `value`"), "{e}");

        // `host` is fine on the response side; an empty config does nothing.
        HeadersKind.configure(json!({ "response": { "set": [ { "name": "host", "value": "x" } ] } })).unwrap();
        HeadersKind.configure(json!({})).unwrap();
    }
}
