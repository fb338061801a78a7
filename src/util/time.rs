//! Wall-clock timestamps in traces ("2023-11-16 18:17:03.9799600", "2024-05-12 00:00:00+00:00")
//! to nanoseconds since the Unix epoch, without a date-time dependency.

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.fraction][Z|±HH:MM]` (fraction of up to 9 digits; a missing
/// zone means UTC). Returns nanoseconds since 1970-01-01T00:00:00Z, or a message saying what is
/// wrong.
pub fn parse_datetime_ns(s: &str) -> Result<i128, String> {
    let s = s.trim();
    let b = s.as_bytes();
    let bad = || format!("expected a time like 2023-11-16 18:17:03.97996, found {s:?}");
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |a: usize, z: usize| -> Result<i64, String> {
        // `get`, not indexing: a multi-byte character may straddle a field's end.
        let t = s.get(a..z).ok_or_else(bad)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse::<i64>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return Err(format!("{s:?} is not a valid date and time"));
    }
    let mut i = 19;
    let mut frac_ns: i64 = 0;
    if i < b.len() && b[i] == b'.' {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let digits = &s[start..end];
        if digits.is_empty() || digits.len() > 9 {
            return Err(bad());
        }
        frac_ns = digits.parse::<i64>().map_err(|_| bad())? * 10i64.pow(9 - digits.len() as u32);
        i = end;
    }
    let mut offset_s: i64 = 0;
    if i < b.len() {
        match b[i] {
            b'Z' if i + 1 == b.len() => {}
            b'+' | b'-' if b.len() == i + 6 && b[i + 3] == b':' => {
                let oh = num(i + 1, i + 3)?;
                let om = num(i + 4, i + 6)?;
                offset_s = (oh * 3600 + om * 60) * if b[i] == b'-' { -1 } else { 1 };
            }
            _ => return Err(bad()),
        }
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Ok(secs as i128 * 1_000_000_000 + frac_ns as i128)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_azure_2023_and_2024_forms() {
        // 2023-11-16 18:17:03 UTC = 1700158623 s.
        assert_eq!(
            parse_datetime_ns("2023-11-16 18:17:03.9799600").unwrap(),
            1_700_158_623_979_960_000
        );
        assert_eq!(
            parse_datetime_ns("2024-05-12 00:00:00.001163+00:00").unwrap(),
            1_715_472_000_001_163_000
        );
        assert_eq!(
            parse_datetime_ns("2024-05-12 00:00:00+00:00").unwrap(),
            1_715_472_000_000_000_000
        );
        assert_eq!(parse_datetime_ns("1970-01-01T01:00:00+01:00").unwrap(), 0);
        assert_eq!(
            parse_datetime_ns("2000-02-29 00:00:00Z").unwrap(),
            951_782_400_000_000_000
        );
    }

    #[test]
    fn rejects_malformed_times() {
        for s in [
            "",
            "2023-11-16",
            "2023-13-01 00:00:00",
            "2023-02-29 00:00:00",
            "2023-11-16 18:17:03.",
            "2023-11-16 18:17:03.1234567890",
            "2023-11-16 18:17:03+0100",
            "2023-11-16 18:17:03 junk",
            "2O23-11-16 18:17:03",
            // Found by fuzzing: 'к' takes bytes 18..20, so the seconds field ends inside it.
            "2024-05-10 00:00:0к",
        ] {
            assert!(parse_datetime_ns(s).is_err(), "{s:?}");
        }
    }
}
