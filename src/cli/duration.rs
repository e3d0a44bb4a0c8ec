//! Duration flags: what humantime reads (`250ms`, `10s`, `5m`, `1h 30m`,
//! `7d`) or a bare number of seconds, parsed at the edge and never zero.

use std::time::Duration;

/// The one message for a zero duration, whichever flag it was given to.
pub const ZERO_DURATION: &str =
    "a duration must be more than zero; omit the flag for its default (or for no limit)";

/// The longest duration a flag takes (about 31 years); longer ones are
/// refused rather than risk overflowing a deadline computed from now.
const MAX: Duration = Duration::from_secs(1_000_000_000);

/// Parses a duration flag: anything `humantime` reads, or a bare number of
/// seconds (`10`, `1.5`). Zero is refused for every duration flag: it meant
/// the default for one flag, "fail at once" for another and an OS error for
/// a third, so no flag takes it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match bare_seconds(s) {
        Some(d) => d,
        None => humantime::parse_duration(s).map_err(|e| mistake(s, &e))?,
    };
    if d.is_zero() {
        return Err(ZERO_DURATION.to_string());
    }
    if d > MAX {
        return Err(format!("{s:?} is too long a duration"));
    }
    Ok(d)
}

/// The one-line message for a value humantime refuses (its own name byte
/// offsets, which mean little on a command line).
fn mistake(s: &str, e: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    match e {
        E::UnknownUnit { unit, .. } if !unit.is_empty() => {
            format!("unknown duration unit {unit:?} (use ms, s, m, h or d)")
        }
        E::NumberOverflow => format!("{s:?} is too long a duration, or finer than a nanosecond"),
        _ => format!("{s:?} is not a duration (examples: 500ms, 10s, 5m, 1h, 7d)"),
    }
}

/// A bare number (`10`, `1.5`) is seconds, as pincat has always read it;
/// humantime wants a unit. A value past `Duration::MAX` saturates, so the
/// caller's length check refuses it.
fn bare_seconds(s: &str) -> Option<Duration> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = s.parse().ok()?;
    Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn every_form_the_docs_and_tests_use_parses() {
        let secs = |n| Ok(Duration::from_secs(n));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("5s"), secs(5));
        assert_eq!(parse_duration("20s"), secs(20));
        assert_eq!(parse_duration("61s"), secs(61));
        assert_eq!(parse_duration("10m"), secs(600));
        assert_eq!(parse_duration("5min"), secs(300));
        assert_eq!(parse_duration("1h"), secs(3600));
        assert_eq!(parse_duration("7d"), secs(7 * 86400));
        assert_eq!(parse_duration("3650d"), secs(3650 * 86400));
        assert_eq!(parse_duration(" 10 s "), secs(10));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        // humantime's wider forms come along.
        assert_eq!(parse_duration("1h 30m"), secs(5400));
        assert_eq!(parse_duration("2w"), secs(14 * 86400));
    }

    #[test]
    fn zero_durations_are_refused() {
        for zero in ["0", "0s", "0ms", "0.0", "0m", "0h", "0.0000000001"] {
            assert_eq!(
                parse_duration(zero),
                Err(ZERO_DURATION.to_string()),
                "{zero}"
            );
        }
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn mistakes_are_one_line_naming_the_value() {
        for bad in [
            "ten",
            "",
            "1.2.3",
            "99999999999",
            "40y",
            "s",
            "1.0000000001s",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(!e.contains('\n') && e.contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(
            parse_duration("5x"),
            Err("unknown duration unit \"x\" (use ms, s, m, h or d)".to_string())
        );
        assert_eq!(
            parse_duration("1000000000"),
            Ok(Duration::from_secs(1_000_000_000))
        );
    }
}
