//! Durations in a filter's config, read with the main config's grammar
//! (`nuncio_config::parse_duration`): `250ms`, `5s`, `1m`, `1h`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use nuncio_config::parse_duration as parse;

/// `deserialize_with` for a duration that must be above zero.
pub(crate) fn positive<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    match parse(&text).map_err(serde::de::Error::custom)? {
        Duration::ZERO => Err(serde::de::Error::custom("must be greater than 0")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_config_forms() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(parse("1.5s").unwrap_err().contains("invalid duration"));
        assert!(parse("10").unwrap_err().contains("missing unit"));
        assert!(parse("s").unwrap_err().contains("invalid duration"));
        assert!(parse("99999999999999999999h").unwrap_err().contains("too long"));
    }
}
