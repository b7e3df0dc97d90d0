//! What a listener's `filters` are checked against.
//!
//! The filters themselves live outside this crate (it must not depend on
//! them), so the caller hands [`Config::from_yaml_with`] a catalog that
//! knows their names and can check their config blocks.
//!
//! [`Config::from_yaml_with`]: crate::Config::from_yaml_with

/// What the config checks filter names and config blocks against.
///
/// ```
/// use nuncio_config::{Config, FilterCatalog, FilterCheckError};
/// use serde_json::Value;
///
/// /// Knows one filter, `deny`, whose config needs a `status` number.
/// struct Catalog;
///
/// impl FilterCatalog for Catalog {
///     fn names(&self) -> Vec<String> {
///         vec!["deny".to_owned()]
///     }
///
///     fn check(&self, name: &str, config: &Value) -> Result<(), FilterCheckError> {
///         if name != "deny" {
///             return Err(FilterCheckError::UnknownName);
///         }
///         match config.get("status") {
///             Some(status) if status.is_u64() => Ok(()),
///             Some(_) => Err(FilterCheckError::Config { path: "status".into(), message: "not a number".into() }),
///             None => Err(FilterCheckError::Config { path: String::new(), message: "missing status".into() }),
///         }
///     }
/// }
///
/// let yaml = "
/// listeners:
///   - name: public
///     address: 127.0.0.1:8080
///     filters:
///       - name: deny
///         config: { status: nope }
///     routes: [ { match: {}, direct_response: { status: 200 } } ]
/// ";
/// let errors = Config::from_yaml_with(yaml, "nuncio.yaml", &Catalog).unwrap_err();
/// assert_eq!(
///     errors.to_string(),
///     "nuncio.yaml:7:27: listeners[0].filters[0].config.status: not a number",
/// );
/// let config = Config::from_yaml_with(&yaml.replace("nope", "403"), "nuncio.yaml", &Catalog).unwrap();
/// assert_eq!(config.listeners[0].filters[0].config["status"], 403);
/// ```
pub trait FilterCatalog {
    /// Every filter name it knows, for the error message.
    fn names(&self) -> Vec<String>;

    /// `Ok` if `name` is known and `config` is valid for it; else where and
    /// what. `config` is [`serde_json::Value::Null`] when the block is
    /// absent.
    fn check(&self, name: &str, config: &serde_json::Value) -> Result<(), FilterCheckError>;

    /// [`check`](Self::check), and the clusters the block names (a filter
    /// that calls other services): the config refuses a name that is not
    /// one of its clusters, at the field that names it. This is what the
    /// config calls; the default checks and names no cluster.
    fn check_with_clusters(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Vec<FilterClusterRef>, FilterCheckError> {
        self.check(name, config).map(|()| Vec::new())
    }
}

/// A cluster a filter's config block names
/// ([`FilterCatalog::check_with_clusters`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterClusterRef {
    /// The field naming it, as a dotted path within the block (`cluster`,
    /// `services[1].cluster`).
    pub path: String,
    /// The cluster's name.
    pub name: String,
}

/// Why a [`FilterCatalog`] refused a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterCheckError {
    /// The catalog knows no filter of that name.
    UnknownName,
    /// The config block is wrong.
    Config {
        /// Where within the block, as a dotted path (`limits.burst`,
        /// `headers[2].name`); empty for the block itself.
        path: String,
        /// What is wrong, for an operator.
        message: String,
    },
}

/// The catalog of [`Config::from_yaml`] and [`Config::load`]: it knows no
/// filter, so any `filters` entry is an error.
///
/// [`Config::from_yaml`]: crate::Config::from_yaml
/// [`Config::load`]: crate::Config::load
pub(crate) struct NoFilters;

impl FilterCatalog for NoFilters {
    fn names(&self) -> Vec<String> {
        Vec::new()
    }

    fn check(&self, _name: &str, _config: &serde_json::Value) -> Result<(), FilterCheckError> {
        Err(FilterCheckError::UnknownName)
    }
}
