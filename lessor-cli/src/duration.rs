//! Durations as people type and read them: `10s`, `500ms`, `2m`, `1m30s`, `9.8s`.
//!
//! Parsing accepts a plain number of seconds or one or more `NUMBER UNIT` parts, so that
//! everything [`format()`] prints parses back. Formatting rounds down: a lease shown with `9.8s`
//! left has at least that long.

use std::time::Duration;

/// Units `parse` accepts, with their length in nanoseconds. Longest names first, so that `ms`
/// is not read as `m` followed by garbage.
const UNITS: [(&str, u128); 7] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses `10`, `10s`, `1.5s`, `500ms`, `2m`, `1h`, `1m30s`, `2d`, ...: a plain number is
/// seconds. Used by clap as a value parser, so the error is the message shown to the user.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || {
        format!(
            "invalid duration {text:?}: write e.g. 10s, 500ms, 2m, 1h, 1m30s (units: ns, us, ms, s, m, h, d)"
        )
    };
    if text.is_empty() {
        return Err(invalid());
    }
    if let Some(nanos) = number_nanos(text, 1_000_000_000) {
        return to_duration(nanos).ok_or_else(invalid);
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(digits);
        let letters = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(letters);
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(invalid)?;
        let part = number_nanos(number, scale).ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = after;
    }
    to_duration(total).ok_or_else(invalid)
}

/// `number` (digits with at most one `.`) times `scale` nanoseconds, rounded down to a
/// nanosecond; `None` if it is not such a number or overflows.
fn number_nanos(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty()
        || !all_digits(whole)
        || !all_digits(fraction)
        || number.ends_with('.')
    {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(scale)?;
    let mut unit = scale;
    for digit in fraction.bytes().take(30) {
        unit /= 10;
        nanos = nanos.checked_add(u128::from(digit - b'0') * unit)?;
    }
    Some(nanos)
}

fn to_duration(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    // The remainder is below 10^9, so it fits.
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

/// A duration for people, rounded down: `0ms`, `350ms`, `9.8s`, `10s`, `1m05s`, `2h03m04s`,
/// `3d04h05m06s`.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.subsec_millis());
    }
    if secs < 60 {
        let tenths = d.subsec_millis() / 100;
        return if tenths == 0 {
            format!("{secs}s")
        } else {
            format!("{secs}.{tenths}s")
        };
    }
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d{hours:02}h{minutes:02}m{seconds:02}s")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m{seconds:02}s")
    } else {
        format!("{minutes}m{seconds:02}s")
    }
}

/// Whole milliseconds, for JSON output.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_what_people_type() {
        assert_eq!(parse("10").unwrap(), ms(10_000));
        assert_eq!(parse("10s").unwrap(), ms(10_000));
        assert_eq!(parse(" 1.5s ").unwrap(), ms(1_500));
        assert_eq!(parse("0.25").unwrap(), ms(250));
        assert_eq!(parse("500ms").unwrap(), ms(500));
        assert_eq!(parse("2m").unwrap(), ms(120_000));
        assert_eq!(parse("1h").unwrap(), ms(3_600_000));
        assert_eq!(parse("2d").unwrap(), ms(172_800_000));
        assert_eq!(parse("1m30s").unwrap(), ms(90_000));
        assert_eq!(parse("1h02m03s").unwrap(), ms(3_723_000));
        assert_eq!(parse("750us").unwrap(), Duration::from_micros(750));
        assert_eq!(parse("3ns").unwrap(), Duration::from_nanos(3));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            " ",
            "s",
            "10x",
            "ten",
            "-5s",
            "1.2.3s",
            "5.",
            ".",
            "1m30",
            "10 s",
            "1e3",
            "99999999999999999999999999999999999999d",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("invalid duration"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn formats_for_people_rounding_down() {
        assert_eq!(format(Duration::ZERO), "0ms");
        assert_eq!(format(Duration::from_micros(999)), "0ms");
        assert_eq!(format(ms(350)), "350ms");
        assert_eq!(format(ms(999)), "999ms");
        assert_eq!(format(ms(1_000)), "1s");
        assert_eq!(format(ms(9_899)), "9.8s");
        assert_eq!(format(ms(10_000)), "10s");
        assert_eq!(format(ms(59_999)), "59.9s");
        assert_eq!(format(ms(65_000)), "1m05s");
        assert_eq!(format(ms(3_723_000)), "1h02m03s");
        assert_eq!(format(ms(273_906_000)), "3d04h05m06s");
        assert_eq!(format(lessor::MAX_TTL), "104166d16h00m00s");
    }

    #[test]
    fn what_is_printed_parses_back() {
        for d in [
            ms(350),
            ms(9_800),
            ms(10_000),
            ms(65_000),
            ms(3_723_000),
            ms(273_906_000),
        ] {
            assert_eq!(parse(&format(d)).unwrap(), d, "{}", format(d));
        }
    }
}
