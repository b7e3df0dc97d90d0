//! Durations in a filter's config, written as nuncio's config writes them:
//! a whole number and a unit, `250ms`, `5s`, `1m`, `1h`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The accepted forms, for error messages.
const FORMS: &str = "use 250ms, 5s, 1m or 1h";

/// Parses a whole number followed by `ms`, `s`, `m` or `h`, or a bare `0`
/// (the same grammar and messages as the main config's durations).
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} ({FORMS})");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(invalid());
    }
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("invalid duration {text:?}: missing unit ({FORMS})")),
        _ => return Err(invalid()),
    };
    let too_long = || format!("duration {text:?} is too long");
    let n: u64 = number.parse().map_err(|_| too_long())?;
    let millis = n.checked_mul(millis_per_unit).ok_or_else(too_long)?;
    Ok(Duration::from_millis(millis))
}

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
