//! Access log (work in progress: the format grammar and writer are being
//! written; this skeleton only fixes the API the config crate uses).

use serde::{Serialize, Serializer};

/// A parsed access-log format: text with `%COMMAND%` fields, or JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    source: FormatSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FormatSource {
    Text(String),
    Json(Vec<(String, String)>),
}

/// Why a format string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

impl Format {
    /// A text format (one line per stream; a newline is added if missing).
    pub fn text(template: &str) -> Result<Format, FormatError> {
        Ok(Format { source: FormatSource::Text(template.to_owned()) })
    }

    /// A JSON format: one object per line, each key's value rendered from
    /// its template.
    pub fn json(fields: &[(String, String)]) -> Result<Format, FormatError> {
        Ok(Format { source: FormatSource::Json(fields.to_vec()) })
    }

    /// Envoy's default text format.
    pub fn default_text() -> Format {
        Format { source: FormatSource::Text(String::new()) }
    }
}

impl Serialize for Format {
    /// As written in the config (a string, or a mapping for JSON).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.source {
            FormatSource::Text(t) => s.serialize_str(t),
            FormatSource::Json(fields) => s.collect_map(fields.iter().map(|(k, v)| (k, v))),
        }
    }
}
