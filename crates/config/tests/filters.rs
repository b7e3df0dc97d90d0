//! A listener's `filters`: shape, order, config blocks, and their errors,
//! checked against a small catalog standing in for nuncio's.

use nuncio_config::{Config, FilterCatalog, FilterCheckError, FilterClusterRef, FilterSpec};
use serde::Deserialize;
use serde_json::{Value, json};

/// Knows three filters, checking their blocks with serde the way real
/// filters do (`nuncio_filter::parse_config`): `headers` needs
/// `add: [ { name, value } ]`; `local_ratelimit` needs `limits: { burst }`
/// (and takes `rate`); `noop` takes anything, or nothing.
struct TestCatalog;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Headers {
    add: Vec<Header>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Header {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RateLimit {
    limits: Limits,
    rate: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Limits {
    burst: u32,
}

fn parse<T: for<'de> Deserialize<'de>>(config: &Value) -> Result<(), FilterCheckError> {
    match serde_path_to_error::deserialize::<_, T>(config.clone()) {
        Ok(_) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err(FilterCheckError::Config { path, message: e.into_inner().to_string() })
        }
    }
}

impl FilterCatalog for TestCatalog {
    fn names(&self) -> Vec<String> {
        vec!["headers".into(), "local_ratelimit".into(), "noop".into()]
    }

    fn check(&self, name: &str, config: &Value) -> Result<(), FilterCheckError> {
        match name {
            "headers" => parse::<Headers>(config),
            "local_ratelimit" => parse::<RateLimit>(config),
            "noop" => Ok(()),
            _ => Err(FilterCheckError::UnknownName),
        }
    }
}

/// One listener with `filters` (indented for its place: six spaces).
fn listener_with(filters: &str) -> String {
    format!(
        "\
listeners:
  - name: public
    address: 127.0.0.1:18080
    filters:
{filters}
    routes:
      - match: {{ prefix: / }}
        direct_response: {{ status: 200 }}
"
    )
}

fn ok(yaml: &str) -> Config {
    Config::from_yaml_with(yaml, "nuncio.yaml", &TestCatalog).unwrap_or_else(|e| panic!("rejected:\n{e}\n---\n{yaml}"))
}

fn errors(yaml: &str) -> Vec<String> {
    match Config::from_yaml_with(yaml, "nuncio.yaml", &TestCatalog) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn error(yaml: &str) -> String {
    let all = errors(yaml);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.into_iter().next().unwrap()
}

const CHAIN: &str = r#"      - name: headers
        config:
          add:
            - { name: x-request-source, value: nuncio }
            - name: x-env
              value: "5"
      - name: local_ratelimit
        config: { limits: { burst: 10 }, rate: 2.5 }
      - name: noop
      - name: headers
        config: { add: [] }"#;

#[test]
fn a_chain_is_kept_in_order_with_its_config() {
    let config = ok(&listener_with(CHAIN));
    let filters = &config.listeners[0].filters;
    let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["headers", "local_ratelimit", "noop", "headers"]);
    assert_eq!(
        filters[0].config,
        json!({ "add": [ { "name": "x-request-source", "value": "nuncio" }, { "name": "x-env", "value": "5" } ] })
    );
    assert_eq!(filters[1].config, json!({ "limits": { "burst": 10 }, "rate": 2.5 }));
    assert_eq!(filters[2], FilterSpec { name: "noop".into(), config: Value::Null });
    assert_eq!(filters[3].config, json!({ "add": [] }));
}

#[test]
fn no_filters_is_an_empty_chain() {
    let yaml = listener_with("      []");
    assert!(ok(&yaml).listeners[0].filters.is_empty());
    let yaml = yaml.replace("    filters:\n      []\n", "");
    assert!(ok(&yaml).listeners[0].filters.is_empty());
    assert!(Config::from_yaml(&yaml, "nuncio.yaml").unwrap().listeners[0].filters.is_empty());
}

#[test]
fn scalars_are_typed_as_yaml_1_2_types_them() {
    let yaml = listener_with(
        r#"      - name: noop
        config:
          int: 42
          negative: -7
          hex: 0x1f
          big: 18446744073709551615
          float: 1.5
          exp: 1e3
          yes_is_a_string: yes
          true_is_a_bool: true
          quoted: "42"
          tilde: ~
          empty:
          zero_padded: 012
          date: 2024-01-01
          nested: [ 1, [ a, { b: null } ] ]"#,
    );
    let config = &ok(&yaml).listeners[0].filters[0].config;
    assert_eq!(
        config,
        &json!({
            "int": 42, "negative": -7, "hex": 31, "big": u64::MAX, "float": 1.5, "exp": 1000.0,
            "yes_is_a_string": "yes", "true_is_a_bool": true, "quoted": "42", "tilde": null, "empty": null,
            "zero_padded": "012", "date": "2024-01-01", "nested": [1, ["a", { "b": null }]],
        })
    );
}

#[test]
fn any_yaml_value_is_a_config_block() {
    for (text, value) in [("[1, 2]", json!([1, 2])), ("hello", json!("hello")), ("3", json!(3)), ("{}", json!({}))] {
        let yaml = listener_with(&format!("      - {{ name: noop, config: {text} }}"));
        assert_eq!(ok(&yaml).listeners[0].filters[0].config, value, "{text}");
    }
}

#[test]
fn an_unknown_name_lists_the_known_ones() {
    let yaml = listener_with("      - name: noop\n      - name: header\n        config: { add: [] }");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:6:15: listeners[0].filters[1].name: unknown filter \"header\"; \
         known: headers, local_ratelimit, noop"
    );
}

#[test]
fn without_a_catalog_every_filter_is_unknown() {
    let yaml = listener_with("      - name: headers\n        config: { add: [] }");
    let errors = Config::from_yaml(&yaml, "nuncio.yaml").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "nuncio.yaml:5:15: listeners[0].filters[0].name: unknown filter \"headers\"; known: (none)"
    );
}

#[test]
fn a_bad_nested_field_is_reported_where_it_is() {
    let yaml = listener_with(
        "      - name: headers
        config:
          add:
            - { name: x-a, value: a }
            - name: [ not, a, string ]
              value: b",
    );
    let e = error(&yaml);
    assert!(
        e.starts_with("nuncio.yaml:9:21: listeners[0].filters[0].config.add[1].name: invalid type: sequence"),
        "{e}"
    );
}

#[test]
fn a_missing_nested_field_points_at_the_deepest_node_there_is() {
    // `add[0].value` is not in the file: the error points at `add[0]`.
    let yaml = listener_with("      - name: headers\n        config:\n          add:\n            - name: x-a");
    let e = error(&yaml);
    assert_eq!(e, "nuncio.yaml:8:15: listeners[0].filters[0].config.add[0]: missing field `value`");

    // `limits.burst` is not there either: the error points at `limits`.
    let yaml =
        listener_with("      - name: local_ratelimit\n        config:\n          limits: { }\n          rate: 1");
    let e = error(&yaml);
    assert_eq!(e, "nuncio.yaml:7:19: listeners[0].filters[0].config.limits: missing field `burst`");
}

#[test]
fn an_unknown_field_points_at_its_key() {
    let yaml = listener_with("      - name: local_ratelimit\n        config: { limits: { burts: 5 } }");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:6:29: listeners[0].filters[0].config.limits.burts: unknown field `burts`, expected `burst`"
    );
    let yaml = listener_with("      - name: headers\n        config:\n          remove: [ x-a ]");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:7:11: listeners[0].filters[0].config.remove: unknown field `remove`, expected `add`"
    );
}

#[test]
fn a_wrong_block_points_at_its_config_key() {
    let yaml = listener_with("      - name: headers\n        config: {}");
    assert_eq!(error(&yaml), "nuncio.yaml:6:9: listeners[0].filters[0].config: missing field `add`");
    let yaml = listener_with("      - name: headers\n        config:\n          add");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:6:9: listeners[0].filters[0].config: invalid type: string \"add\", expected struct Headers"
    );
}

#[test]
fn a_missing_block_points_at_the_filter() {
    let yaml = listener_with("      - name: local_ratelimit");
    let e = error(&yaml);
    assert!(e.starts_with("nuncio.yaml:5:9: listeners[0].filters[0].config: invalid type: null"), "{e}");
}

#[test]
fn a_missing_name_is_a_missing_field() {
    let yaml = listener_with("      - config: { add: [] }");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:5:9: listeners[0].filters[0].name: \
         missing (the filter to run, one of: headers, local_ratelimit, noop)"
    );
    let yaml = listener_with("      - name: \"\"");
    assert_eq!(error(&yaml), "nuncio.yaml:5:15: listeners[0].filters[0].name: must not be empty");
}

#[test]
fn every_bad_filter_is_reported_at_once() {
    let yaml = listener_with(
        "      - name: nope
      - name: headers
        config: { add: [ { name: x } ] }
      - { config: {} }
      - name: local_ratelimit
        config: { limits: { burst: -1 } }",
    );
    let all = errors(&yaml);
    assert_eq!(all.len(), 4, "{all:#?}");
    assert!(all[0].starts_with("nuncio.yaml:5:15: listeners[0].filters[0].name: unknown filter \"nope\""), "{all:#?}");
    assert!(all[1].starts_with("nuncio.yaml:7:26: listeners[0].filters[1].config.add[0]: missing field"), "{all:#?}");
    assert!(all[2].starts_with("nuncio.yaml:8:9: listeners[0].filters[2].name: missing"), "{all:#?}");
    assert!(all[3].starts_with("nuncio.yaml:10:36: listeners[0].filters[3].config.limits.burst:"), "{all:#?}");
}

#[test]
fn the_shape_of_a_filter_is_checked() {
    let e = error(&listener_with("      - headers"));
    assert!(e.contains("listeners[0].filters[0]: invalid type: string \"headers\""), "{e}");
    assert!(e.contains("expected a filter mapping (name, and config)"), "{e}");

    let e = error(&listener_with("      - { name: noop, conf: {} }"));
    assert!(e.starts_with("nuncio.yaml:5:"), "{e}");
    assert!(e.contains("unknown field `conf`, expected `name` or `config`"), "{e}");
}

#[test]
fn what_json_cannot_hold_is_refused() {
    for (text, what) in [
        (".nan", ".nan cannot be used"),
        ("-.inf", "-.inf cannot be used"),
        ("340282366920938463463374607431768211455", "out of range"),
        ("!point { x: 1 }", "a tagged value (!TAG) cannot be used"),
    ] {
        let yaml = listener_with(&format!("      - name: noop\n        config: {{ x: {text} }}"));
        let e = error(&yaml);
        assert!(e.starts_with("nuncio.yaml:6:"), "{e}");
        assert!(e.contains("listeners[0].filters[0].config.x"), "{e}");
        assert!(e.contains(what), "{e}");
    }
}

#[test]
fn a_key_given_twice_in_a_block_is_an_error() {
    let yaml = listener_with(
        "      - name: noop\n        config:\n          a: 1\n          b: { c: 1, c: 2 }\n          a: 3",
    );
    assert_eq!(
        errors(&yaml),
        [
            "nuncio.yaml:8:22: listeners[0].filters[0].config.b.c: given twice in the same mapping",
            "nuncio.yaml:9:11: listeners[0].filters[0].config.a: given twice in the same mapping",
        ]
    );
}

#[test]
fn the_dump_reads_back_equal() {
    let yaml = listener_with(&format!(
        "{CHAIN}
      - name: noop
        config:
          strings: [ \"5\", \"true\", \"~\", \"\", \"yes\", \"0o17\", \"1e3\", \".inf\", \"null\", \"- x\", \"a: b\", \"#c\" ]
          numbers: [ 0, -1, 1.5, 1e300, 18446744073709551615, -9223372036854775808 ]
          nested: {{ deeper: [ {{ x: [] }}, {{}} ] }}
          nothing: ~"
    ));
    let config = ok(&yaml);
    let dump = config.to_yaml();
    let again = Config::from_yaml_with(&dump, "dump.yaml", &TestCatalog)
        .unwrap_or_else(|e| panic!("the dump is rejected:\n{e}\n---\n{dump}"));
    assert_eq!(again, config, "{dump}");
    // A filter without a block is written without one.
    assert!(dump.contains("- name: noop\n"), "{dump}");
}

#[test]
fn filters_on_two_listeners_are_independent() {
    let yaml = "
listeners:
  - name: a
    address: 127.0.0.1:18080
    filters:
      - name: headers
        config: { add: [ { name: x-from, value: a } ] }
    routes: [ { match: {}, direct_response: { status: 200 } } ]
  - name: b
    address: 127.0.0.1:18081
    filters:
      - name: noop
      - name: headers
        config: { add: [ { name: x-from, value: b } ] }
    routes: [ { match: {}, direct_response: { status: 200 } } ]
  - name: c
    address: 127.0.0.1:18082
    routes: [ { match: {}, direct_response: { status: 200 } } ]
";
    let config = ok(yaml);
    let chain = |name: &str| -> Vec<(String, Value)> {
        config.listener(name).unwrap().filters.iter().map(|f| (f.name.clone(), f.config.clone())).collect()
    };
    assert_eq!(chain("a"), [("headers".to_owned(), json!({ "add": [ { "name": "x-from", "value": "a" } ] }))]);
    assert_eq!(
        chain("b"),
        [
            ("noop".to_owned(), Value::Null),
            ("headers".to_owned(), json!({ "add": [ { "name": "x-from", "value": "b" } ] })),
        ]
    );
    assert!(chain("c").is_empty());

    // An error in one listener's chain names that listener only.
    let bad = yaml.replace("value: b", "value: [ b ]");
    let e = error(&bad);
    assert!(e.starts_with("nuncio.yaml:14:49: listeners[1].filters[1].config.add[0].value: invalid type"), "{e}");
}

/// Knows `caller`, whose block names the clusters it calls under
/// `services: [ { cluster } ]`.
struct CallerCatalog;

impl FilterCatalog for CallerCatalog {
    fn names(&self) -> Vec<String> {
        vec!["caller".into()]
    }

    fn check(&self, name: &str, config: &Value) -> Result<(), FilterCheckError> {
        self.check_with_clusters(name, config).map(drop)
    }

    fn check_with_clusters(&self, name: &str, config: &Value) -> Result<Vec<FilterClusterRef>, FilterCheckError> {
        if name != "caller" {
            return Err(FilterCheckError::UnknownName);
        }
        let services = config["services"].as_array().cloned().unwrap_or_default();
        let named = services.iter().enumerate().filter_map(|(i, s)| {
            let name = s["cluster"].as_str()?.to_owned();
            Some(FilterClusterRef { path: format!("services[{i}].cluster"), name })
        });
        Ok(named.collect())
    }
}

#[test]
fn a_cluster_a_filter_names_must_exist_and_is_reported_at_its_field() {
    let yaml = "\
listeners:
  - name: public
    address: 127.0.0.1:18080
    filters:
      - name: caller
        config:
          services:
            - { cluster: app }
            - { cluster: nope }
    routes:
      - match: { prefix: / }
        cluster: app
clusters:
  - name: app
    endpoints: [ 127.0.0.1:9000 ]
";
    let errors: Vec<String> = match Config::from_yaml_with(yaml, "nuncio.yaml", &CallerCatalog) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    let line = yaml.lines().position(|l| l.contains("cluster: nope")).unwrap() + 1;
    let column = yaml.lines().nth(line - 1).unwrap().find("nope").unwrap() + 1;
    assert_eq!(
        errors,
        [format!(
            "nuncio.yaml:{line}:{column}: listeners[0].filters[0].config.services[1].cluster: \
             unknown cluster \"nope\" (defined: app)"
        )]
    );
    assert!(Config::from_yaml_with(&yaml.replace("nope", "app"), "nuncio.yaml", &CallerCatalog).is_ok());
}
