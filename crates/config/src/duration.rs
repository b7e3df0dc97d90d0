//! Durations as written in the file: `250ms`, `5s`, `1m`, `1h`, `0`.

use std::time::Duration;

/// The accepted forms, for error messages.
pub(crate) const FORMS: &str = "use 250ms, 5s, 1m or 1h";

/// Parses a whole number followed by `ms`, `s`, `m` or `h`, or a bare `0`.
pub fn parse(text: &str) -> Result<Duration, String> {
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

/// Formats a duration the way [`parse`] reads it, with the largest exact
/// unit (sub-millisecond parts are dropped).
pub(crate) fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0".to_owned()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// `serialize_with` for a [`Duration`].
pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// `serialize_with` for an optional timeout: `None` (no timeout) is `0`.
pub(crate) fn serialize_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(d.unwrap_or(Duration::ZERO)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejected_forms() {
        for bad in ["5x", "", "s", "1.5s", "5", "-1s", " 5s", "5 s", "5S", "1d", "99999999999999999999s"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse("5x").unwrap_err(), r#"invalid duration "5x" (use 250ms, 5s, 1m or 1h)"#);
    }

    #[test]
    fn format_round_trips() {
        for text in ["0", "250ms", "1500ms", "5s", "90s", "1m", "61m", "2h"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
