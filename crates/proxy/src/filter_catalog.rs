//! The filter kinds a running nuncio knows, as the config checks them
//! (`filters: [ { name, config } ]`) and as snapshots build them into a
//! listener's chain of factories.

use std::sync::Arc;

use nuncio_config::{FilterCatalog, FilterCheckError, FilterClusterRef, FilterSpec};
use nuncio_filter::{FilterFactory, FilterKind};

/// The filters of a listener, in order: the factories that make each
/// stream's filters.
pub type FilterChainFactory = Arc<[Arc<dyn FilterFactory>]>;

/// A set of filter kinds, by name.
#[derive(Clone, Default)]
pub struct FilterKinds {
    kinds: Vec<Arc<dyn FilterKind>>,
}

impl FilterKinds {
    /// These kinds (a later one with the same name wins).
    pub fn new(kinds: Vec<Arc<dyn FilterKind>>) -> FilterKinds {
        FilterKinds { kinds }
    }

    fn find(&self, name: &str) -> Option<&Arc<dyn FilterKind>> {
        self.kinds.iter().rev().find(|k| k.name() == name)
    }

    /// The factory for one configured filter.
    pub(crate) fn build(&self, spec: &FilterSpec) -> Result<Arc<dyn FilterFactory>, String> {
        let kind = self.find(&spec.name).ok_or_else(|| format!("unknown filter \"{}\"", spec.name))?;
        kind.configure(spec.config.clone()).map_err(|e| format!("filter {}: {}: {}", spec.name, e.path, e.message))
    }
}

impl FilterCatalog for FilterKinds {
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.kinds.iter().map(|k| k.name().to_owned()).collect();
        names.sort();
        names.dedup();
        names
    }

    fn check(&self, name: &str, config: &serde_json::Value) -> Result<(), FilterCheckError> {
        self.check_with_clusters(name, config).map(drop)
    }

    /// Configures the kind (the factory is dropped: snapshots make their
    /// own) and reports the clusters the factory says it calls.
    fn check_with_clusters(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Vec<FilterClusterRef>, FilterCheckError> {
        let kind = self.find(name).ok_or(FilterCheckError::UnknownName)?;
        let factory = kind
            .configure(config.clone())
            .map_err(|e| FilterCheckError::Config { path: e.path, message: e.message })?;
        Ok(factory.clusters().into_iter().map(|c| FilterClusterRef { path: c.path, name: c.name }).collect())
    }
}

impl std::fmt::Debug for FilterKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.iter().map(|k| k.name())).finish()
    }
}
