//! Counters a filter declares when it is configured and bumps per stream
//! (the concept and an example are on [`CounterSet`]).

use crate::factory::ConfigError;

/// The most counters one filter may declare: far more than any filter
/// needs, and it keeps an id a `u32`.
const MAX_COUNTERS: usize = 1024;

/// A counter declared by a filter: its name (without the
/// `nuncio_filter_<KIND>_` the proxy puts before it) and help text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    name: String,
    help: String,
}

impl CounterSpec {
    /// The name as declared, e.g. `allowed_total`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it counts, for `/stats/prometheus`'s `# HELP`.
    pub fn help(&self) -> &str {
        &self.help
    }
}

/// A declared counter's id: its index in the factory's
/// [`CounterSet`]. `Copy`; keep it in the factory and in each filter, and
/// count with [`StreamCx::inc`](crate::StreamCx::inc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FilterCounter(u32);

impl FilterCounter {
    /// Its index in [`FilterFactory::counters`](crate::FilterFactory::counters).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The counters of one configured filter, declared in
/// [`FilterKind::configure`](crate::FilterKind::configure); the factory
/// hands [`CounterSet::specs`] to the proxy through
/// [`FilterFactory::counters`](crate::FilterFactory::counters).
///
/// # The concept
///
/// A filter's stats are declared at config time, like every stat of
/// nuncio: [`FilterKind::configure`](crate::FilterKind::configure) makes a
/// [`CounterSet`], [`declare`](CounterSet::declare)s each counter (a name
/// and a help text) and keeps the small `Copy` id it gets back, a
/// [`FilterCounter`]. The factory reports the set through
/// [`FilterFactory::counters`](crate::FilterFactory::counters). When the
/// proxy builds a config version it declares each listener filter's
/// counters among its own stats, as
/// `nuncio_filter_<KIND>_<NAME>{filter="<KIND>",listener="<LISTENER>"}`
/// (`<KIND>` the factory's name, with any character other than ASCII
/// letters, digits and `_` written `_`; the `filter` label gets
/// `[<POSITION>]` appended, the filter's index in the listener's chain,
/// when the same kind appears more than once in it). A hook then counts
/// with [`StreamCx::inc`](crate::StreamCx::inc) and
/// [`StreamCx::add`](crate::StreamCx::add).
///
/// # The threading rule
///
/// Declaring is plain data, on whatever thread configures (main, or the
/// thread validating a config). Counting goes through the [`StreamCx`]
/// (`!Send`), so it happens on the stream's worker, which writes its own
/// copy of the stats without a lock (the admin sums the workers'). Code off
/// the worker has no `StreamCx`: it reports back to the filter (the result
/// of the work a hook awaits, or state the filter reads in a later hook or
/// in [`Filter::on_complete`](crate::Filter::on_complete), which always
/// runs on the worker), and the filter counts there.
///
/// [`StreamCx`]: crate::StreamCx
///
/// # Example
///
/// ```
/// use std::sync::Arc;
///
/// use nuncio_filter::{
///     ConfigError, CounterSet, CounterSpec, Filter, FilterCounter, FilterFactory, FilterKind, Hook, RequestHead,
///     Status, StreamCx,
/// };
///
/// /// Refuses requests without an API key, and counts them.
/// struct RequireKeyKind;
///
/// impl FilterKind for RequireKeyKind {
///     fn name(&self) -> &'static str {
///         "require_key"
///     }
///
///     fn configure(&self, _config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
///         let mut counters = CounterSet::new();
///         // Exposed as nuncio_filter_require_key_refused_total{filter="require_key",listener="..."}.
///         let refused = counters.declare("refused_total", "Requests refused for lack of an x-api-key field.")?;
///         Ok(Arc::new(RequireKeyFactory { counters, refused }))
///     }
/// }
///
/// struct RequireKeyFactory {
///     counters: CounterSet,
///     refused: FilterCounter,
/// }
///
/// impl FilterFactory for RequireKeyFactory {
///     fn name(&self) -> &str {
///         "require_key"
///     }
///
///     fn create(&self) -> Box<dyn Filter> {
///         Box::new(RequireKey { refused: self.refused })
///     }
///
///     fn counters(&self) -> &[CounterSpec] {
///         self.counters.specs()
///     }
/// }
///
/// struct RequireKey {
///     refused: FilterCounter,
/// }
///
/// impl Filter for RequireKey {
///     fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
///         if head.headers.contains_key("x-api-key") {
///             return Status::Continue.into();
///         }
///         cx.inc(self.refused);
///         Status::local_reply(http::StatusCode::UNAUTHORIZED, "missing x-api-key\n").into()
///     }
/// }
///
/// // A name must follow the conventions: a bad one is a config error.
/// let error = CounterSet::new().declare("refused", "Refused requests.").unwrap_err();
/// assert!(error.message.contains("end in `_total`"), "{error}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSet {
    specs: Vec<CounterSpec>,
}

impl CounterSet {
    /// No counters yet.
    pub fn new() -> CounterSet {
        CounterSet::default()
    }

    /// Declares a counter. `name` is lower-case ASCII letters, digits and
    /// `_`, starts with a letter and ends in `_total` (a Prometheus
    /// counter), e.g. `allowed_total`; the proxy exposes it as
    /// `nuncio_filter_<KIND>_<name>`. `help` says what it counts, in one
    /// line, and is the same text for every config (series of one name
    /// share it). A name that breaks these rules, or is declared twice, is
    /// an error of the filter block as a whole (path `""`), so a filter
    /// with a bad name never loads.
    pub fn declare(&mut self, name: &str, help: &str) -> Result<FilterCounter, ConfigError> {
        let problem = if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            Some("must start with a lower-case ASCII letter")
        } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            Some("may hold only lower-case ASCII letters, digits and `_`")
        } else if !name.ends_with("_total") {
            Some("must end in `_total` (it is a Prometheus counter)")
        } else if help.contains(['\n', '\r']) {
            Some("its help text must be one line")
        } else if self.specs.iter().any(|s| s.name == name) {
            Some("is declared twice")
        } else if self.specs.len() >= MAX_COUNTERS {
            Some("is one too many (a filter declares at most 1024 counters)")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ConfigError::at("", format!("the filter's counter {name:?} {problem} (a bug in the filter)")));
        }
        let id = FilterCounter(u32::try_from(self.specs.len()).expect("at most MAX_COUNTERS"));
        self.specs.push(CounterSpec { name: name.to_owned(), help: help.to_owned() });
        Ok(id)
    }

    /// Every counter declared, in order: a [`FilterCounter`] is an index
    /// into this.
    pub fn specs(&self) -> &[CounterSpec] {
        &self.specs
    }
}

/// Where a stream's filter counters go: the proxy's side of
/// [`StreamCx::add`](crate::StreamCx::add), given to the stream's context
/// with [`StreamCx::set_counters`](crate::StreamCx::set_counters). Called
/// on the stream's worker only.
///
/// A test that drives a filter directly may give its own, to see what the
/// filter counted.
pub trait CounterSink {
    /// Adds `n` to the counter `counter` of the filter at position `filter`
    /// in the stream's chain. An id the filter did not declare is ignored.
    fn add(&self, filter: usize, counter: FilterCounter, n: u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_indexes_in_declaration_order() {
        let mut set = CounterSet::new();
        let a = set.declare("allowed_total", "Allowed.").unwrap();
        let b = set.declare("denied_2_total", "Denied.").unwrap();
        assert_eq!((a.index(), b.index()), (0, 1));
        assert_eq!(set.specs()[1].name(), "denied_2_total");
        assert_eq!(set.specs()[1].help(), "Denied.");
    }

    #[test]
    fn bad_names_are_config_errors() {
        let mut set = CounterSet::new();
        set.declare("allowed_total", "Allowed.").unwrap();
        for (name, help, problem) in [
            ("allowed", "h", "end in `_total`"),
            ("_total", "h", "start with a lower-case"),
            ("9_total", "h", "start with a lower-case"),
            ("Allowed_total", "h", "start with a lower-case"),
            ("al-lowed_total", "h", "only lower-case ASCII"),
            ("aLLowed_total", "h", "only lower-case ASCII"),
            ("", "h", "start with a lower-case"),
            ("other_total", "two\nlines", "one line"),
            ("allowed_total", "Allowed.", "declared twice"),
        ] {
            let error = set.declare(name, help).unwrap_err();
            assert_eq!(error.path, "", "{name}");
            assert!(error.message.contains(problem), "{name}: {error}");
            assert!(error.message.contains("a bug in the filter"), "{name}: {error}");
        }
        assert_eq!(set.specs().len(), 1, "nothing refused was declared");
    }
}
