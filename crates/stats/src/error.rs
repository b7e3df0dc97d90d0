use thiserror::Error;

/// Why a stat could not be declared.
///
/// Declarations happen on main at config time, so each of these is a bug in
/// the declaring code (or a config value used as a name): the message names
/// the stat and what to change.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The full name (prefix included) breaks Prometheus naming rules or
    /// conventions.
    #[error("stat `{name}`: {reason}")]
    Name {
        /// The full name, prefix included.
        name: String,
        /// What is wrong and what to use instead.
        reason: &'static str,
    },

    /// A label name is invalid, reserved, or given twice.
    #[error("stat `{name}`: label `{label}`: {reason}")]
    Label {
        /// The stat's full name.
        name: String,
        /// The offending label name.
        label: String,
        /// What is wrong and what to use instead.
        reason: &'static str,
    },

    /// The name was declared before with another kind, help text or buckets.
    /// Every series of one name is one Prometheus family and must agree.
    #[error("stat `{name}` is already declared with a different kind, help text or buckets")]
    Conflict {
        /// The stat's full name.
        name: String,
    },

    /// Histogram bucket bounds are empty, not finite, negative, or not
    /// strictly increasing once rounded to nanoseconds.
    #[error(
        "histogram `{name}`: buckets must be finite, non-negative seconds, strictly increasing at nanosecond \
         precision (e.g. nuncio_stats::DURATION_BUCKETS)"
    )]
    Buckets {
        /// The histogram's full name.
        name: String,
    },
}
