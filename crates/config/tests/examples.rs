//! Every file in the repository's `examples/` is a valid configuration.

use std::path::Path;

use nuncio_config::{Config, FilterCatalog, FilterCheckError};

/// Takes any filter with any config block: the blocks are the filters'
/// to check, which this crate does not know (`crates/filters` tests check
/// the examples that name built-in filters with the real kinds).
struct AnyFilter;

impl FilterCatalog for AnyFilter {
    fn names(&self) -> Vec<String> {
        Vec::new()
    }

    fn check(&self, _name: &str, _config: &serde_json::Value) -> Result<(), FilterCheckError> {
        Ok(())
    }
}

#[test]
fn every_example_is_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if let Err(errors) = Config::load_with(&path, &AnyFilter) {
                panic!("{} rejected:\n{errors}", path.display());
            }
            seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    for name in ["basic.yaml", "h2-upstream.yaml", "operations.yaml", "single-upstream.yaml"] {
        assert!(seen.iter().any(|s| s == name), "{name} missing from {}", dir.display());
    }
}

#[test]
fn the_readme_config_is_accepted() {
    // The README promises "a config that runs as is": its first YAML block.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let start = readme.find("```yaml\n").expect("README has a YAML block") + "```yaml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    if let Err(errors) = Config::from_yaml(&readme[start..end], "README.md") {
        panic!("README.md's config is rejected:\n{errors}");
    }
}
