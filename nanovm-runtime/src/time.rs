//! Times as people type and read them: milliseconds since the Unix epoch to and from UTC text
//! (proleptic Gregorian, no leap seconds). One parser and one printer for the CLI, the server,
//! the metrics and the evidence, so a date accepted by one command is accepted by all.

/// Days since 1970-01-01 of the civil date `y-m-d` (Howard Hinnant's `days_from_civil`; `m`
/// 1–12, `d` 1–31, not checked).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day number since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Each is within 1..=31 and 1..=12 by construction.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn split(ms: u64) -> (i64, u32, u32, u64) {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, secs % 86_400)
}

/// `ms` as RFC 3339 UTC to the second, `YYYY-MM-DDTHH:MM:SSZ` (the milliseconds dropped).
pub fn utc(ms: u64) -> String {
    let (y, m, d, rem) = split(ms);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `ms` as RFC 3339 UTC to the millisecond, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc_millis(ms: u64) -> String {
    let (y, m, d, rem) = split(ms);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Milliseconds since the Unix epoch of a time a person typed: plain milliseconds, a date
/// `YYYY-MM-DD` (its midnight, UTC), or an instant `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC). Dates
/// are checked against the calendar (no 2026-02-30) and the epoch (no year before 1970); the
/// error names what is accepted.
pub fn parse_utc(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let bad =
        || format!("`{s}` is not milliseconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[.fff]Z (UTC)");
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let num = |t: &str, len: usize| -> Result<i64, String> {
        if t.len() == len && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else {
        return Err(bad());
    };
    let (y, m, d) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&m) || !(1..=days_in).contains(&d) || y < 1970 {
        return Err(bad());
    }
    let ms = match time {
        None => 0,
        Some(t) => {
            let (t, frac) = match t.split_once('.') {
                Some((t, f)) if (1..=9).contains(&f.len()) => (t, f),
                Some(_) => return Err(bad()),
                None => (t, ""),
            };
            let parts: Vec<&str> = t.split(':').collect();
            let [h, mi, se] = parts[..] else {
                return Err(bad());
            };
            let (h, mi, se) = (num(h, 2)?, num(mi, 2)?, num(se, 2)?);
            if h > 23 || mi > 59 || se > 59 {
                return Err(bad());
            }
            // The fraction to whole milliseconds, rounded down.
            let millis = if frac.is_empty() {
                0
            } else {
                let f = &frac[..frac.len().min(3)];
                num(f, f.len())? * 10_i64.pow(3 - f.len() as u32)
            };
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            (h * 3600 + mi * 60 + se) * 1000 + millis
        }
    };
    u64::try_from(days_from_civil(y, m, d) * 86_400_000 + ms).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_print() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(utc(4_102_444_799_000), "2099-12-31T23:59:59Z");
        assert_eq!(utc(1_796_667_000_000), "2026-12-07T18:10:00Z");
        assert_eq!(utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn times_people_type_parse() {
        assert_eq!(parse_utc("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_utc("1970-01-01"), Ok(0));
        assert_eq!(parse_utc("2000-02-29"), Ok(951_782_400_000));
        assert_eq!(parse_utc("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_utc("2026-12-07T18:10:00.5Z"), Ok(1_796_667_000_500));
        assert_eq!(
            parse_utc("2023-11-14T22:13:20.1239Z"),
            Ok(1_700_000_000_123)
        );
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-02-29",
            "2026-04-31",
            "1969-12-31",
            "2026-12-07T18:10:00",
            "2026-12-07T24:00:00Z",
            "2026-12-07T18:10:60Z",
            "2026-12-07T18:10:00.Z",
            "2026-12-07T18:10:00.5xZ",
            "26-12-07",
            "2026-1-07",
            "",
        ] {
            assert!(parse_utc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_two_directions_agree() {
        for days in [-1_000_000, -1, 0, 1, 59, 365, 10_957, 20_000, 1_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
        for ms in [0, 951_782_400_000, 1_700_000_000_123, 4_102_444_799_999] {
            assert_eq!(parse_utc(&utc_millis(ms)), Ok(ms));
        }
    }
}
