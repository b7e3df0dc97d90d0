//! Helpers shared by the config test files.

#![allow(dead_code, unreachable_pub)]

use nuncio_config::Config;

/// `yaml`, accepted (the test fails with every error otherwise).
pub fn ok(yaml: &str) -> Config {
    match Config::from_yaml(yaml, "nuncio.yaml") {
        Ok(config) => config,
        Err(errors) => panic!("rejected:\n{errors}\n---\n{yaml}"),
    }
}

/// Every error, displayed, one string each.
pub fn errors(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml, "nuncio.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The one error of `yaml`, displayed.
pub fn error(yaml: &str) -> String {
    let all = errors(yaml);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.into_iter().next().unwrap()
}
